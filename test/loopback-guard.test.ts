// The test processes' network guard (test/support/loopback-guard.ts, preloaded by `npm test`).
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { isLoopback } from './support/loopback-guard.ts';

describe('loopback guard', () => {
  it('knows loopback from everything else', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1']) assert.equal(isLoopback(h), true, h);
    for (const h of ['10.0.0.5', '192.168.1.1', '0.0.0.0', '::', 'api.utilmeta.com', 'evil.localhost', '::ffff:10.0.0.1']) assert.equal(isLoopback(h), false, h);
  });

  it('is active in this process: a connection to a non-loopback address fails before any packet', async () => {
    // 0.0.0.0 stays on this machine even if the guard were missing.
    for (const connect of [() => net.connect({ host: '0.0.0.0', port: 9 }), () => net.connect(9, '0.0.0.0'), () => net.connect({ host: 'api.utilmeta.com', port: 443 })]) {
      const err = await new Promise<NodeJS.ErrnoException>((resolve) => connect().once('error', resolve));
      assert.equal(err.code, 'ENOTFOUND');
      assert.match(err.message, /loopback guard/);
    }
  });

  it('lets loopback through', async () => {
    const server = net.createServer((s) => s.end('hi'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as net.AddressInfo;
    for (const host of ['127.0.0.1', 'localhost']) {
      const data = await new Promise<string>((resolve, reject) => {
        const s = net.connect(port, host);
        let got = '';
        s.on('data', (d) => (got += d)).on('end', () => resolve(got)).on('error', reject);
      });
      assert.equal(data, 'hi');
    }
    server.close();
  });
});
