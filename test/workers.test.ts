// UTILMETA_PROXY_WORKERS=2 as users run it: one process, two uWebSockets.js
// listener threads on one port, one metrics endpoint that sums them, and a
// SIGTERM that stops both.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { Agent, request } from 'undici';
import { freshDatabases, PG_HOST, PG_PORT, PG_USER, type TestDatabases } from './support/env.ts';
import { CLI_ARGS } from './support/cli.ts';

const root = new URL('..', import.meta.url).pathname;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
    s.once('error', reject);
  });
}

describe('listener threads (UTILMETA_PROXY_WORKERS=2)', () => {
  let dbs: TestDatabases;
  let child: ReturnType<typeof spawn>;
  const lines: Array<Record<string, unknown>> = [];
  let origin = '';
  let metricsPort = 0;

  before(async () => {
    dbs = freshDatabases();
    const port = await freePort();
    metricsPort = await freePort();
    child = spawn(process.execPath, [...CLI_ARGS, 'start'], {
      cwd: root,
      env: {
        PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp',
        UTILMETA_PROXY_DB_HOST: PG_HOST, UTILMETA_PROXY_DB_PORT: String(PG_PORT), UTILMETA_PROXY_DB_USER: PG_USER,
        UTILMETA_PROXY_DB_NAME: dbs.registryName, UTILMETA_PROXY_OPS_DB_NAME: dbs.opsName,
        UTILMETA_PROXY_BIND_PORT: String(port), UTILMETA_PROXY_METRICS_PORT: String(metricsPort),
        UTILMETA_PROXY_WORKERS: '2', UTILMETA_PROXY_SERVER: 'uws', UTILMETA_PROXY_LOG_LEVEL: 'info',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    await new Promise<void>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        try {
          const j = JSON.parse(line) as Record<string, unknown>;
          lines.push(j);
          if (j.msg === 'listener threads running') resolve();
        } catch {
          /* not JSON */
        }
      });
      child.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
      setTimeout(() => reject(new Error(`no 'listener threads running' line within 60s: ${stderr}`)), 60_000).unref();
    });
    origin = `http://127.0.0.1:${port}`;
  });

  after(async () => {
    if (child && child.exitCode === null) {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
    await dbs?.drop();
  });

  it('both threads serve the one port, and the metrics endpoint sums their counts', async () => {
    // Each thread logs through its own stream: its line may follow the main thread's.
    for (let i = 0; i < 100 && lines.filter((l) => l.msg === 'utilmeta-proxy listening').length < 2; i++) await new Promise((r) => setTimeout(r, 50));
    const started = lines.filter((l) => l.msg === 'utilmeta-proxy listening');
    assert.equal(started.length, 2, 'two listener threads started');
    assert.deepEqual(new Set(started.map((l) => l.thread)), new Set([1, 2]));
    // Many connections, so the kernel's SO_REUSEPORT hashing reaches both threads.
    const N = 64;
    await Promise.all(Array.from({ length: N }, async () => {
      const agent = new Agent({ connections: 1 });
      try {
        const r = await request(`${origin}/api/proxy/x`, { dispatcher: agent, headers: { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'nope' } });
        assert.equal(r.statusCode, 404);
        await r.body.dump();
      } finally {
        await agent.close();
      }
    }));
    // Log lines are asynchronous: wait for all of them.
    for (let i = 0; i < 100 && lines.filter((l) => l.msg === 'proxied').length < N; i++) await new Promise((r) => setTimeout(r, 50));
    const proxied = lines.filter((l) => l.msg === 'proxied');
    assert.equal(proxied.length, N);
    const threads = new Set(proxied.map((l) => l.thread));
    assert.equal(threads.size, 2, `requests were served by threads ${[...threads].join(', ')}`);
    const m = await request(`http://127.0.0.1:${metricsPort}/metrics`);
    const text = await m.body.text();
    const line = text.split('\n').find((l) => l.startsWith('utilmeta_proxy_requests_total{') && l.includes('status="404"'));
    assert.ok(line, text.slice(0, 2000));
    assert.equal(Number(line.split(' ').pop()), N, line);
    // Same registry in every thread: gauges are not multiplied by the thread count.
    assert.match(text, /^utilmeta_proxy_registry_services 0$/m);
    // The process's own metrics appear once.
    assert.equal(text.split('\n').filter((l) => l.startsWith('utilmeta_proxy_process_resident_memory_bytes ')).length, 1);
  });

  it('SIGTERM stops every thread and the process exits 0', async () => {
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  });
});
