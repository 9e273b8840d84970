// The console's pure pieces: the cookie rule (sessionToken), cookie and CORS
// helpers, the Prometheus summary, and the static handler's answers without a
// running node (missing build, turned off, path escapes).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  clearedSessionCookie, cookieCorsHeaders, ownOrigin, readCookie, sessionCookie, sessionToken,
} from '../src/routes/console-session.ts';
import { MetricsSampler, TrafficCounters, countersByType, parsePrometheus, quantile } from '../src/routes/console-metrics.ts';
import { createConsole, SECURITY_HEADERS } from '../src/routes/console.ts';
import { testConfig, testLogger } from './support/env.ts';
import type { HeaderList, IncomingRequest, ResponseWriter } from '../src/http/types.ts';

const TOKEN = 'umt_' + 'A'.repeat(43);

function req(headers: Record<string, string>, extra: Partial<IncomingRequest> = {}): IncomingRequest {
  const list = Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v] as const);
  return {
    method: 'GET', path: '/console/', query: '', headers: list, remoteAddress: '127.0.0.1', listener: 'node', hasBody: false,
    header: (n: string) => list.find(([k]) => k === n)?.[1],
    body: () => { throw new Error('no body'); },
    readBody: async () => Buffer.alloc(0),
    upgrade: null,
    ...extra,
  } as IncomingRequest;
}

function res() {
  const out: { status?: number; headers?: HeaderList; body?: string } = {};
  const w: ResponseWriter = {
    aborted: false, onAborted() {}, send(status, headers, body) { Object.assign(out, { status, headers, body: body?.toString() }); },
    writeHead() {}, relayHead() {}, write: () => true, onDrain() {}, end() {}, abort() {}, acceptWebSocket: () => null,
  };
  return { w, out, header: (n: string) => out.headers?.find(([k]) => k === n)?.[1] };
}

describe('console session rule', () => {
  const host = '127.0.0.1:8888';
  it('a cookie alone never authenticates', () => {
    assert.equal(sessionToken(req({ host, cookie: `umproxy_session=${TOKEN}` })), null);
  });
  it('the cookie with X-UtilMeta-Console: 1 and no Origin authenticates', () => {
    assert.equal(sessionToken(req({ host, cookie: `a=b; umproxy_session=${TOKEN}`, 'x-utilmeta-console': '1' })), TOKEN);
  });
  it('the header must be exactly 1', () => {
    assert.equal(sessionToken(req({ host, cookie: `umproxy_session=${TOKEN}`, 'x-utilmeta-console': 'true' })), null);
  });
  it('a foreign Origin is refused, the own origin accepted', () => {
    const base = { host, cookie: `umproxy_session=${TOKEN}`, 'x-utilmeta-console': '1' };
    assert.equal(sessionToken(req({ ...base, origin: 'http://evil.localhost:8888' })), null);
    assert.equal(sessionToken(req({ ...base, origin: 'https://127.0.0.1:8888' })), null, 'scheme differs');
    assert.equal(sessionToken(req({ ...base, origin: 'http://127.0.0.1:8888' })), TOKEN);
    assert.equal(sessionToken(req({ ...base, origin: 'https://127.0.0.1:8443', 'x-forwarded-proto': 'https', 'x-forwarded-host': '127.0.0.1:8443' })), TOKEN);
  });
  it('a malformed cookie value is not a token', () => {
    assert.equal(sessionToken(req({ host, cookie: 'umproxy_session=umt_short', 'x-utilmeta-console': '1' })), null);
  });
  it('reads one cookie among several headers', () => {
    const r = req({});
    const multi = { ...r, headers: [['cookie', 'x=1'], ['cookie', 'umproxy_session=v; y=2']] as const };
    assert.equal(readCookie(multi, 'umproxy_session'), 'v');
    assert.equal(readCookie(multi, 'z'), undefined);
  });
  it('cookie attributes: HttpOnly, SameSite=Strict, Path=/, Secure only over https', () => {
    const c = sessionCookie(TOKEN, 3600.7, false);
    assert.match(c, /^umproxy_session=umt_A+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=3600$/);
    assert.match(sessionCookie(TOKEN, 10, true), /; Secure$/);
    assert.match(clearedSessionCookie(false), /^umproxy_session=; .*Max-Age=0/);
  });
  it('CORS for cookie requests never names a foreign origin', () => {
    const foreign = cookieCorsHeaders(req({ host, origin: 'http://evil.localhost' }));
    assert.ok(!foreign.some(([k]) => k === 'access-control-allow-origin'));
    assert.ok(!foreign.some(([k]) => k === 'access-control-allow-credentials'));
    const own = cookieCorsHeaders(req({ host, origin: 'http://127.0.0.1:8888' }));
    assert.deepEqual(own.find(([k]) => k === 'access-control-allow-origin'), ['access-control-allow-origin', 'http://127.0.0.1:8888']);
    assert.equal(ownOrigin(req({})), null);
  });
});

const PROM = `# HELP utilmeta_proxy_requests_total x
# TYPE utilmeta_proxy_requests_total counter
utilmeta_proxy_requests_total{type="discovery",method="GET",status="200"} 90
utilmeta_proxy_requests_total{type="discovery",method="GET",status="502"} 10
utilmeta_proxy_requests_total{type="forward",method="POST",status="200"} 5
utilmeta_proxy_request_duration_seconds_bucket{type="discovery",le="0.01"} 50
utilmeta_proxy_request_duration_seconds_bucket{type="discovery",le="0.1"} 100
utilmeta_proxy_request_duration_seconds_bucket{type="discovery",le="+Inf"} 100
utilmeta_proxy_request_duration_seconds_sum{type="discovery"} 2.5
utilmeta_proxy_request_duration_seconds_count{type="discovery"} 100
odd_metric{label="with \\"quote\\""} 1
`;

describe('console traffic summary', () => {
  it('parses labels, escapes and +Inf', () => {
    const s = parsePrometheus(PROM);
    assert.equal(s.find((x) => x.name === 'odd_metric')?.labels.label, 'with "quote"');
    assert.equal(s.filter((x) => x.labels.le === '+Inf').length, 1);
  });
  it('sums requests and server errors by type', () => {
    const by = countersByType(parsePrometheus(PROM));
    assert.equal(by.get('discovery')?.requests, 100);
    assert.equal(by.get('discovery')?.errors, 10);
    assert.equal(by.get('forward')?.requests, 5);
    assert.equal(by.get('discovery')?.durationCount, 100);
  });
  it('estimates quantiles within buckets', () => {
    const b: Array<[number, number]> = [[0.01, 50], [0.1, 100], [Infinity, 100]];
    assert.ok(Math.abs(quantile(0.5, b)! - 0.01) < 1e-9);
    assert.ok(Math.abs(quantile(0.75, b)! - 0.055) < 1e-9);
    assert.equal(quantile(0.5, b, b), null, 'no observations in between');
  });
  it('rates between samples, per type, service and instance', async () => {
    let text = PROM;
    const traffic = new TrafficCounters();
    const sampler = new MetricsSampler(async () => text, traffic, 10_000);
    await sampler.sample(1_000_000);
    text = PROM.replace('status="200"} 90', 'status="200"} 190');
    traffic.observe({ service: 'orders', target: '127.0.0.1:8001', status: 200, durationMs: 20 });
    traffic.observe({ service: 'orders', target: '127.0.0.1:8001', status: 503, durationMs: 40 });
    traffic.observe({ status: 200, durationMs: 1 });
    await sampler.sample(1_010_000);
    const s = sampler.summary();
    assert.equal(s.types.discovery.rps, 10);
    assert.equal(s.types.forward.rps, 0);
    assert.equal(s.services.orders.rps, 0.2);
    assert.equal(s.services.orders.errorsPerSecond, 0.1);
    assert.equal(s.instances['127.0.0.1:8001'].meanMs, 30);
    assert.equal(s.instances['127.0.0.1:8001'].service, 'orders');
    assert.equal(s.series.length, 1);
    assert.equal(s.totals.discovery.requests, 200);
  });
  it('keeps at most its capacity of samples', async () => {
    const sampler = new MetricsSampler(async () => PROM, new TrafficCounters(), 10_000, 5);
    for (let i = 0; i < 20; i++) await sampler.sample(i * 10_000);
    assert.equal(sampler.summary().series.length, 4);
  });
  it('a failed scrape leaves a gap, not an error', async () => {
    const sampler = new MetricsSampler(async () => { throw new Error('down'); }, new TrafficCounters());
    await sampler.sample();
    assert.equal(sampler.summary().sampledAt, null);
  });
});

describe('console static handler without a node', () => {
  const log = testLogger(undefined, 'silent');
  it('answers 503 with the build hint when the assets are missing, with the security headers', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'umconsole-'));
    try {
      const c = createConsole({ config: testConfig(null), log, credentials: null, metricsText: async () => '', assetsDir: dir });
      c.close();
      const r = res();
      await c.handle(req({ host: '127.0.0.1' }), r.w, '/', 'rid');
      assert.equal(r.out.status, 503);
      assert.match(r.out.body!, /console assets not built: run npm run build:console/);
      for (const [k, v] of SECURITY_HEADERS) assert.equal(r.header(k), v);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('never serves a file outside the build, and 404s a missing hashed asset', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'umconsole-'));
    try {
      mkdirSync(join(dir, 'build'));
      writeFileSync(join(dir, 'secret.txt'), 'outside');
      writeFileSync(join(dir, 'build', 'index.html'), '<!doctype html><title>app</title>');
      const c = createConsole({ config: testConfig(null), log, credentials: null, metricsText: async () => '', assetsDir: join(dir, 'build') });
      c.close();
      for (const path of ['/../secret.txt', '/%2e%2e/secret.txt', '/..%2fsecret.txt']) {
        const r = res();
        await c.handle(req({ host: '127.0.0.1' }), r.w, path, 'rid');
        assert.ok(!r.out.body?.includes('outside'), path);
      }
      const r = res();
      await c.handle(req({ host: '127.0.0.1' }), r.w, '/assets/missing-abc.js', 'rid');
      assert.equal(r.out.status, 404);
      const post = res();
      await c.handle(req({ host: '127.0.0.1' }, { method: 'POST' }), post.w, '/registry', 'rid');
      assert.equal(post.out.status, 405);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('UTILMETA_PROXY_CONSOLE=false turns it off (404) and true is the default', async () => {
    assert.equal(testConfig(null).console, true);
    const config = testConfig(null, { UTILMETA_PROXY_CONSOLE: 'false' });
    assert.equal(config.console, false);
    const c = createConsole({ config, log, credentials: null, metricsText: async () => '' });
    const r = res();
    await c.handle(req({ host: '127.0.0.1' }), r.w, '/', 'rid');
    assert.equal(r.out.status, 404);
    assert.match(r.out.body!, /UTILMETA_PROXY_CONSOLE=false/);
    assert.throws(() => testConfig(null, { UTILMETA_PROXY_CONSOLE: 'maybe' }), /CONSOLE/);
  });
  it('sign-in without the access plane is 503, without the console header 403', async () => {
    const c = createConsole({ config: testConfig(null), log, credentials: null, metricsText: async () => '' });
    c.close();
    const a = res();
    await c.handle(req({ host: '127.0.0.1' }, { method: 'POST' }), a.w, '/session', 'rid');
    assert.equal(a.out.status, 403);
    const b = res();
    await c.handle(req({ host: '127.0.0.1', 'x-utilmeta-console': '1' }, { method: 'POST' }), b.w, '/session', 'rid');
    assert.equal(b.out.status, 503);
  });
});

describe('withSessionCredential', () => {
  const host = '127.0.0.1:8888';
  it('adds the bearer only under the cookie rule, and keeps an explicit credential', async () => {
    const { withSessionCredential } = await import('../src/routes/console-session.ts');
    const ok = withSessionCredential(req({ host, cookie: `umproxy_session=${TOKEN}`, 'x-utilmeta-console': '1' }));
    assert.equal(ok.header('authorization'), `Bearer ${TOKEN}`);
    assert.ok(ok.headers.some(([k, v]) => k === 'authorization' && v === `Bearer ${TOKEN}`));
    assert.equal(ok.header('host'), host);
    assert.equal(ok.method, 'GET');
    const bare = withSessionCredential(req({ host, cookie: `umproxy_session=${TOKEN}` }));
    assert.equal(bare.header('authorization'), undefined);
    const own = 'umt_' + 'B'.repeat(43);
    const explicit = withSessionCredential(req({ host, cookie: `umproxy_session=${TOKEN}`, 'x-utilmeta-console': '1', 'x-auth-token': own }));
    assert.equal(explicit.header('authorization'), undefined);
    assert.equal(explicit.header('x-auth-token'), own);
  });
});
