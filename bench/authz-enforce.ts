// npm run bench:enforce [-- --rounds 30 --iterations 100000 --wrk-seconds 5 --propagation-only]
//
// Per-service authorization, measured three ways. Prints numbers; asserts nothing.
//  1. Propagation: two nodes on one registry database (NOTIFY + Redis). For each
//     round, the time from issuing a management write on node A to node B's live
//     decision state showing its effect: enabling authorization, adding a GROUP
//     authorization, removing the user from that role, switching to AUDIT.
//     p50/p99 over the rounds (includes A's HTTP write and commit).
//  2. Decision cost in-process on B's state (no sockets): credential resolution +
//     decide() for an ENFORCE service, with a bearer token and with SigV4 (header
//     form, signing key cached after the first request).
//  3. Throughput with wrk through node B: the service with authorization OFF vs
//     ENFORCE (bearer), when wrk is installed.
// Needs PostgreSQL and Redis on 127.0.0.1 (the test services); uses the test
// helpers to create throwaway databases.
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { availableParallelism, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import aws4 from 'aws4';
import { freshDatabases } from '../test/support/env.ts';
import { startUpstream } from '../test/support/upstream.ts';
import { call } from '../test/support/http.ts';
import { buildWorld, OPENAPI, registerService, startAuthzNode, v1 } from '../test/support/services-auth.ts';
import { decide, resolveCredential, sha256Hex } from '../src/access/index.ts';
import { userMask } from '../src/access/decision-state.ts';
import { PERM } from '../src/access/permissions.ts';
import { CLI_CALLER } from '../src/access/credentials.ts';

const { values: args } = parseArgs({ options: { rounds: { type: 'string' }, iterations: { type: 'string' }, 'wrk-seconds': { type: 'string' }, 'propagation-only': { type: 'boolean' } } });
const ROUNDS = Number(args.rounds ?? 30);
const ITER = Number(args.iterations ?? 100_000);
const WRK_SECONDS = Number(args['wrk-seconds'] ?? 5);
const REDIS = { UTILMETA_PROXY_REDIS_URL: 'redis://127.0.0.1:6379', UTILMETA_PROXY_LOG_LEVEL: 'warn' };

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const fmt = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(2)} ms  p99 ${pct(xs, 99).toFixed(2)} ms  (n=${xs.length})`;

const dbs = freshDatabases();
const a = await startAuthzNode('uws', dbs, REDIS);
const up = await startUpstream();
const w = await buildWorld(a);
const sid = (await registerService(a, 'orders', up.address, { resources: { openapi: OPENAPI } })).serviceId;
const b = await startAuthzNode('uws', dbs, REDIS);
const S = String(sid);
const admin = w.boot.token;
const bob = w.users.bob.id;

/** Waits (polling B's state every event-loop turn) until `cond` holds; returns ms since `t0`. */
async function seenOnB(t0: number, cond: () => boolean, what: string): Promise<number> {
  while (!cond()) {
    if (performance.now() - t0 > 10_000) throw new Error(`${what}: not seen on B within 10 s`);
    await new Promise((r) => setImmediate(r));
  }
  return performance.now() - t0;
}
const mode = () => b.access.view.current.state.services.get(S)?.mode ?? 'OFF';
const bobView = () => (userMask(b.access.view.current.state, bob, S) & PERM.VIEW) !== 0;
const DIR = `${a.origin}/minibase/portal/openapi/v1/orgs/${w.orgId}/roles/${w.roles.team}/subjects`;

const times = { enable: [] as number[], group: [] as number[], roleRemove: [] as number[], audit: [] as number[] };
for (let i = 0; i < ROUNDS; i++) {
  let t0 = performance.now();
  await v1(a, admin, 'PATCH', `/services/${sid}/auth/enabled?enabled=true`);
  times.enable.push(await seenOnB(t0, () => mode() === 'ENFORCE', 'enable'));
  t0 = performance.now();
  const r = await v1(a, admin, 'POST', `/services/${sid}/auth`, { authObjectType: 'GROUP', authObjectId: Number(w.roles.team), permissions: ['VIEW'] });
  times.group.push(await seenOnB(t0, bobView, 'group add'));
  t0 = performance.now();
  await call(`${DIR}/users/${bob}`, { method: 'DELETE', headers: { authorization: `Bearer ${admin}` } });
  times.roleRemove.push(await seenOnB(t0, () => !bobView(), 'role removal'));
  t0 = performance.now();
  await v1(a, admin, 'PATCH', `/services/${sid}/auth/enabled?enabled=true&audit=true`);
  times.audit.push(await seenOnB(t0, () => mode() === 'AUDIT', 'audit'));
  // reset for the next round (not measured)
  await v1(a, admin, 'DELETE', `/services/auth/${r.json.data.id}`);
  await call(DIR, { method: 'POST', headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ subjects: [{ type: 'user', id: Number(bob) }] }) });
  await v1(a, admin, 'PATCH', `/services/${sid}/auth/enabled?enabled=false`);
  await seenOnB(performance.now(), () => mode() === 'OFF' && b.access.view.current.state.userRoles.get(bob)?.includes(w.roles.team) === true, 'reset');
}
console.log(`propagation A → B (${ROUNDS} rounds, NOTIFY + Redis, one machine, ${availableParallelism()} CPUs, load ${loadavg()[0]!.toFixed(2)})`);
console.log(`  enable authorization      ${fmt(times.enable)}`);
console.log(`  add GROUP authorization   ${fmt(times.group)}`);
console.log(`  remove user from role     ${fmt(times.roleRemove)}`);
console.log(`  switch to AUDIT           ${fmt(times.audit)}`);
if (args['propagation-only']) {
  await b.close();
  await a.close();
  await up.close();
  await dbs.drop();
  process.exit(0);
}

// ---- 2. decision cost in-process
await v1(a, admin, 'POST', `/services/${sid}/auth`, { authObjectType: 'USER', authObjectId: Number(w.users.alice.id), permissions: ['VIEW'] });
await v1(a, admin, 'PATCH', `/services/${sid}/auth/enabled?enabled=true`);
await seenOnB(performance.now(), () => mode() === 'ENFORCE' && (userMask(b.access.view.current.state, w.users.alice.id, S) & PERM.VIEW) !== 0, 'setup');
const key = await a.access.credentials.createKey(CLI_CALLER, { ownerType: 'USER', ownerId: Number(w.users.alice.id) });
await seenOnB(performance.now(), () => b.access.view.current.state.keys.has(key.accessKeyId), 'key');
const sigv4 = { region: b.config.authz.sigv4Region, services: b.config.authz.sigv4Services, maxSkewSeconds: b.config.authz.sigv4MaxSkew, unsignedPayload: b.config.authz.sigv4UnsignedPayload };
const host = new URL(b.origin).host;
const bearerHeaders: Array<[string, string]> = [['host', host], ['authorization', `Bearer ${w.users.alice.token}`], ['x-utilmeta-service-name', 'orders']];
const signed = aws4.sign({ host, method: 'GET', path: '/api/proxy/items/42?q=1', service: 'utilmeta', region: 'pri', headers: {} }, { accessKeyId: key.accessKeyId, secretAccessKey: key.secretAccessKey });
const sigHeaders: Array<[string, string]> = Object.entries(signed.headers as Record<string, string>).map(([k, v]) => [k.toLowerCase(), String(v)]);
if (!sigHeaders.some(([k]) => k === 'host')) sigHeaders.push(['host', host]);
const EMPTY = sha256Hex(Buffer.alloc(0));
function once(headers: Array<[string, string]>, rawPath: string, rawQuery: string): string {
  const snap = b.access.view.current;
  const now = b.access.view.now();
  const cred = resolveCredential(snap, { method: 'GET', rawPath, rawQuery, headers, host, surface: 'proxy', bodySha256: EMPTY }, now, sigv4);
  if (cred.kind !== 'principal') throw new Error(`credential: ${JSON.stringify(cred).slice(0, 200)}`);
  const d = decide(snap.state, { serviceId: S, serviceName: 'orders', method: 'GET', rawPath: '/items/42' }, cred.principal, now, { stalenessMs: 0, maxStalenessMs: 60_000 });
  if (d.result !== 'ALLOW') throw new Error(`decision: ${JSON.stringify(d).slice(0, 200)}`);
  return d.reason;
}
function perCall(label: string, fn: () => void) {
  for (let i = 0; i < 2000; i++) fn();
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < ITER; i++) fn();
    rounds.push(Number(process.hrtime.bigint() - t0) / ITER);
  }
  console.log(`  ${label.padEnd(40)} median ${(pct(rounds, 50) / 1000).toFixed(2)} µs per request (${ITER} × 5 rounds)`);
}
console.log('ENFORCE decision, in-process (credential resolution + decide):');
perCall('bearer (Authorization)', () => once(bearerHeaders, '/api/proxy/items/42', 'q=1'));
perCall('SigV4 header, cached signing key', () => once(sigHeaders, '/api/proxy/items/42', 'q=1'));

// ---- 3. throughput with wrk
let hasWrk = true;
try { execFileSync('wrk', ['--version'], { stdio: 'ignore' }); } catch (err) { hasWrk = (err as { status?: number }).status === 1; }
if (hasWrk) {
  // Asynchronous: node B runs in this process, so a blocking call would starve it.
  const run = async (label: string, headers: string[]) => {
    const { stdout: out } = await promisify(execFile)('wrk', ['-t2', '-c32', `-d${WRK_SECONDS}s`, '-H', 'x-utilmeta-proxy-type: discovery', '-H', 'x-utilmeta-service-name: orders', ...headers.flatMap((h) => ['-H', h]), `${b.origin}/api/proxy/items/42`], { encoding: 'utf8' });
    if (process.env.BENCH_DEBUG) console.log(out);
    const rps = /Requests\/sec:\s+([\d.]+)/.exec(out)?.[1];
    const lat = /Latency\s+(\S+)/.exec(out)?.[1];
    const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? '0';
    console.log(`  ${label.padEnd(30)} ${rps} req/s, mean latency ${lat}, non-2xx ${non2xx}`);
  };
  console.log(`throughput through node B (uws, wrk -t2 -c32 -d${WRK_SECONDS}s, upstream on the same machine):`);
  await v1(a, admin, 'PATCH', `/services/${sid}/auth/enabled?enabled=false`);
  await seenOnB(performance.now(), () => mode() === 'OFF', 'off');
  await run('authorization OFF', []);
  await v1(a, admin, 'PATCH', `/services/${sid}/auth/enabled?enabled=true`);
  await seenOnB(performance.now(), () => mode() === 'ENFORCE', 'on');
  await run('ENFORCE, bearer', [`authorization: Bearer ${w.users.alice.token}`]);
} else {
  console.log('wrk not installed: throughput skipped');
}

await a.close();
await b.close();
await up.close();
await dbs.drop();
