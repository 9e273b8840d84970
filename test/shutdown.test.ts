// Graceful shutdown of the CLI as it runs in production, on both listeners:
// SIGTERM with 20 and with 100 slow (streamed) requests in flight drops none,
// refuses new connections at once and exits 0; a second signal exits at once.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import net from 'node:net';
import { Agent, request } from 'undici';
import { CLI_ARGS } from './support/cli.ts';
import { freshDatabases, LISTENERS, PG_HOST, PG_PORT, PG_USER, type TestDatabases } from './support/env.ts';
import { insertInstanceResource, registrationBody } from './support/ops.ts';
import { startUpstream, type TestUpstream } from './support/upstream.ts';
import postgres from 'postgres';

const baseEnv = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp' };

function startCli(env: Record<string, string>) {
  const child = spawn(process.execPath, [...CLI_ARGS, 'start'], { env: { ...baseEnv, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Array<Record<string, unknown>> = [];
  const waiters: Array<{ msg: string; resolve: () => void }> = [];
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const ready = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      try {
        const j = JSON.parse(line) as Record<string, unknown>;
        lines.push(j);
        if (j.msg === 'utilmeta-proxy listening') resolve(String(j.address));
        for (const w of waiters) if (w.msg === j.msg) w.resolve();
      } catch {
        /* not JSON */
      }
    });
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
  });
  const logged = (msg: string) => new Promise<void>((resolve) => {
    if (lines.some((l) => l.msg === msg)) return resolve();
    waiters.push({ msg, resolve });
  });
  return { child, lines, ready, exited, logged };
}

function connects(origin: string): Promise<boolean> {
  const u = new URL(origin);
  return new Promise((resolve) => {
    const s = net.connect(Number(u.port), u.hostname);
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

for (const server of LISTENERS) {
  describe(`graceful shutdown (${server} listener)`, () => {
    let dbs: TestDatabases;
    let gate: { open: () => void; opened: Promise<void> } = { open: () => {}, opened: Promise.resolve() };
    const newGate = () => {
      let open!: () => void;
      const opened = new Promise<void>((r) => (open = r));
      return { open, opened };
    };
    const env = () => ({
      UTILMETA_PROXY_SERVER: server, UTILMETA_PROXY_BIND_HOST: '127.0.0.1', UTILMETA_PROXY_BIND_PORT: '0',
      UTILMETA_PROXY_BASE_URL: 'http://127.0.0.1:8888/api', UTILMETA_PROXY_LOG_LEVEL: 'info',
      UTILMETA_PROXY_DB_HOST: PG_HOST, UTILMETA_PROXY_DB_PORT: String(PG_PORT), UTILMETA_PROXY_DB_USER: PG_USER,
      UTILMETA_PROXY_DB_NAME: dbs.registryName, UTILMETA_PROXY_OPS_DB_NAME: dbs.opsName, UTILMETA_PROXY_DB_POOL_SIZE: '2',
      UTILMETA_PROXY_HEALTH_PROBE_INTERVAL: '0', UTILMETA_PROXY_DRAIN_TIMEOUT: '20000',
    });

    const ups: TestUpstream[] = [];
    // A slow streamed answer: the head at once, the body only once the gate opens, in chunks.
    const slowUpstream = async () => {
      const u = await startUpstream((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('part1;');
        void gate.opened.then(async () => {
          for (let i = 2; i <= 4; i++) {
            await new Promise((r) => setTimeout(r, 20));
            res.write(`part${i};`);
          }
          res.end('end');
        });
      });
      ups.push(u);
      return u;
    };

    before(() => {
      dbs = freshDatabases();
    });
    after(async () => {
      for (const u of ups) await u.close();
      await dbs?.drop();
    });

    for (const n of [20, 100]) {
      it(`SIGTERM with ${n} slow requests in flight: none dropped, new connections refused, exit 0`, async () => {
        gate = newGate();
        const up = await slowUpstream();
        const cli = startCli(env());
        const origin = await cli.ready;
        try {
          const ops = postgres({ host: PG_HOST, port: PG_PORT, user: PG_USER, database: dbs.opsName, max: 1, onnotice: () => {} });
          const res = await insertInstanceResource(ops, { service: `slow${n}`, address: up.address, remoteId: null });
          await ops.end();
          const reg = await request(`${origin}/api/registry`, {
            method: 'POST', headers: { 'content-type': 'application/json' },
            body: JSON.stringify(registrationBody({ name: `slow${n}`, address: up.address, instanceId: res.id })),
          });
          assert.equal(reg.statusCode, 200, await reg.body.text());
          const seenBefore = up.seen.length;
          const client = new Agent({ connections: n + 5 });
          const calls = Array.from({ length: n }, () => request(`${origin}/api/proxy/slow`, {
            dispatcher: client, headers: { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': `slow${n}` },
          }).then(async (r) => ({ status: r.statusCode, body: await r.body.text() }), (err: Error) => ({ status: 0, body: err.message })));
          while (up.seen.length - seenBefore < n) await new Promise((r) => setTimeout(r, 10));
          cli.child.kill('SIGTERM');
          await cli.logged('draining: no new connections; waiting for requests in flight');
          const draining = cli.lines.find((l) => l.msg === 'draining: no new connections; waiting for requests in flight');
          assert.equal(draining?.inFlight, n, 'every request is counted in flight');
          assert.equal(await connects(origin), false, 'the listener no longer accepts');
          assert.equal(cli.child.exitCode, null, 'still running while requests are in flight');
          gate.open();
          const results = await Promise.all(calls);
          const dropped = results.filter((r) => r.status !== 200 || r.body !== 'part1;part2;part3;part4;end');
          assert.equal(dropped.length, 0, `dropped: ${JSON.stringify(dropped.slice(0, 3))}`);
          assert.equal(await cli.exited, 0);
          assert.equal(cli.lines.find((l) => l.msg === 'stopped')?.drained, true);
          await client.close();
        } finally {
          if (cli.child.exitCode === null) cli.child.kill('SIGKILL');
        }
      });
    }

    it('SIGTERM during start-up: the node finishes starting, then stops cleanly (exit 0, not killed by the signal)', async () => {
      const cli = startCli(env());
      // The handlers are installed before the node starts: wait for the first log line, not for "listening".
      await new Promise<void>((resolve) => {
        const t = setInterval(() => cli.lines.length > 0 && (clearInterval(t), resolve()), 5);
      });
      cli.child.kill('SIGTERM');
      try {
        assert.equal(await cli.exited, 0);
        assert.ok(cli.lines.some((l) => l.msg === 'stopped'), JSON.stringify(cli.lines.map((l) => l.msg)));
      } finally {
        if (cli.child.exitCode === null) cli.child.kill('SIGKILL');
      }
    });

    it('a second signal exits at once, requests still in flight', async () => {
      gate = newGate();
      const up = await slowUpstream();
      const cli = startCli(env());
      const origin = await cli.ready;
      try {
        const ops = postgres({ host: PG_HOST, port: PG_PORT, user: PG_USER, database: dbs.opsName, max: 1, onnotice: () => {} });
        const res = await insertInstanceResource(ops, { service: 'stuck', address: up.address, remoteId: null });
        await ops.end();
        const reg = await request(`${origin}/api/registry`, {
          method: 'POST', headers: { 'content-type': 'application/json' },
          body: JSON.stringify(registrationBody({ name: 'stuck', address: up.address, instanceId: res.id })),
        });
        assert.equal(reg.statusCode, 200);
        await reg.body.dump();
        const seen = up.seen.length;
        const call = request(`${origin}/api/proxy/slow`, { headers: { 'x-utilmeta-proxy-type': 'discovery', 'x-utilmeta-service-name': 'stuck' } })
          .then((r) => r.body.text()).catch(() => 'cut');
        while (up.seen.length === seen) await new Promise((r) => setTimeout(r, 10));
        cli.child.kill('SIGTERM');
        await cli.logged('draining: no new connections; waiting for requests in flight');
        cli.child.kill('SIGTERM');
        assert.equal(await cli.exited, 143);
        assert.equal(await call, 'cut', 'the in-flight request was cut by the forced exit');
      } finally {
        gate.open();
        if (cli.child.exitCode === null) cli.child.kill('SIGKILL');
      }
    });
  });
}

describe('InFlight (the listeners\' request counter)', async () => {
  const { InFlight } = await import('../src/http/listener-util.ts');
  it('counts each request once, however often it ends, and resolves drained when the last ends', async () => {
    const f = new InFlight();
    assert.equal(await f.drained(1000), true, 'idle resolves at once');
    const end1 = f.begin();
    const end2 = f.begin();
    assert.equal(f.count, 2);
    const waiting = f.drained(60_000);
    end1();
    end1();
    assert.equal(f.count, 1, 'a second end of the same request is ignored');
    end2();
    assert.equal(await waiting, true);
    assert.equal(f.count, 0);
  });
  it('resolves false when the timeout passes first', async () => {
    const f = new InFlight();
    f.begin();
    assert.equal(await f.drained(5), false);
    assert.equal(f.count, 1);
  });
});
