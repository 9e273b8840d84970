// npm run bench:decide
//
// Cost of one access decision from memory (bearer user; SigV4-resolved app with a per-API grant;
// the key lookup only, without the signature), and the memory of decision states holding
// 100,000 grants, 100,000 tokens and 100,000 access keys. It asserts nothing: it prints numbers.
// Run with --expose-gc (the npm script does) for the memory figures.
import { createHash } from 'node:crypto';
import { availableParallelism, loadavg } from 'node:os';
import { apiIdOf, routeKeyOf } from '../src/access/catalog.ts';
import { buildDecisionState, type DecisionRows, type DecisionState } from '../src/access/decision-state.ts';
import { authenticateBearer, decide, principalForAccessKey, type DecisionRequest } from '../src/access/decide.ts';
import { applyEffect } from '../src/access/tightening.ts';
import { PERM } from '../src/access/permissions.ts';

const N = 100_000;
const NOW = Date.now();
const DAY = 86_400_000;
const gc = (globalThis as { gc?: () => void }).gc;

const tok = (i: number) => 'umt_' + createHash('sha256').update(`bench-${i}`).digest('base64url');
const akid = (i: number) => 'UMAK' + i.toString(32).toUpperCase().padStart(16, 'A').replace(/[0189]/g, 'Z');

const APPS = 1000;
const APIS_PER_SERVICE = 100;
const USERS = 10_000;

function apiRows(serviceId: string) {
  return Array.from({ length: APIS_PER_SERVICE }, (_, i) => {
    const template = `/r${i}/{id}`;
    const routeKey = routeKeyOf(template);
    return { apiId: apiIdOf(serviceId, 'GET', routeKey), serviceId, method: 'GET', pathTemplate: template, routeKey, permission: null, authEnabled: true };
  });
}

function baseRows(): DecisionRows {
  return {
    users: Array.from({ length: USERS }, (_, i) => ({ id: i + 1, account: `user${i + 1}`, status: 1, isSuperuser: false })),
    orgUsers: Array.from({ length: USERS }, (_, i) => ({ orgId: 1, userId: i + 1 })),
    departments: [{ id: 1, orgId: 1, superId: null, permInherit: 'to_super' }, { id: 2, orgId: 1, superId: 1, permInherit: 'to_super' }],
    departmentUsers: Array.from({ length: USERS }, (_, i) => ({ orgId: 1, departmentId: 2, userId: i + 1 })),
    roles: [{ id: 1, orgId: 1, managementPermissions: [] }, { id: 2, orgId: 1, managementPermissions: [] }],
    roleChildren: [{ orgId: 1, roleId: 1, childId: 2 }],
    roleUsers: Array.from({ length: USERS }, (_, i) => ({ orgId: 1, roleId: 1, userId: i + 1 })),
    apps: Array.from({ length: APPS }, (_, i) => ({ id: i + 1, appId: createHash('md5').update(`app${i}`).digest('hex'), projectId: 1, name: `app${i}`, ownerUserId: 1, status: 'ACTIVE' as const, boundServiceId: null })),
    projects: [{ id: 1, orgId: 1, isPermanent: true, startedAt: null, expiredAt: null }],
    services: [
      { serviceId: '1', authMode: 'ENFORCE', apisAuthEnabled: false, supervisorPolicy: 'PLATFORM' },
      { serviceId: '2', authMode: 'ENFORCE', apisAuthEnabled: true, supervisorPolicy: 'PLATFORM' },
    ],
    apis: [...apiRows('1'), ...apiRows('2')],
    serviceAuths: [
      { id: 1, serviceId: '1', authObjectType: 'GROUP', authObjectId: 2, permMask: PERM.VIEW },
      { id: 2, serviceId: '1', authObjectType: 'DEPT', authObjectId: 1, permMask: PERM.ADD },
    ],
    grants: [],
    accessKeys: [],
    tokens: [],
    revokedJtis: [],
    platformSso: [],
  };
}

const grantRows = () =>
  Array.from({ length: N }, (_, i) => ({ id: i + 1, appId: (i % APPS) + 1, apiId: apiIdOf('2', 'GET', `/r${Math.floor(i / APPS)}/{}`), state: 'ACTIVE' as const, startAt: NOW - DAY, endAt: NOW + 30 * DAY, cancelAt: null }));
const tokenRows = () =>
  Array.from({ length: N }, (_, i) => ({ id: i + 1, tokenSha256: createHash('sha256').update(tok(i)).digest(), userId: (i % USERS) + 1, expiresAt: NOW + DAY, revokedAt: null, parentJti: null }));
const keyRows = () =>
  Array.from({ length: N }, (_, i) => ({ accessKeyId: akid(i), ownerUserId: null, ownerAppId: (i % APPS) + 1, status: 'Active' as const, expiresAt: null }));

function heap(): number {
  gc?.();
  gc?.();
  return process.memoryUsage().heapUsed;
}

/** Builds in its own frame so that no row stays reachable from the caller's stack. */
function buildFrom(extra: () => Partial<DecisionRows>): DecisionState {
  return buildDecisionState({ ...baseRows(), ...extra() });
}

/** Heap growth of a state built from fresh rows (rows are garbage afterwards, as on a node). */
function memoryOf(label: string, extra: () => Partial<DecisionRows>, baseline: number): DecisionState {
  const before = heap();
  const s = buildFrom(extra);
  const after = heap();
  const grown = after - before - baseline;
  console.log(`${label.padEnd(34)} heap ${(before / 1e6).toFixed(1)} MB → ${(after / 1e6).toFixed(1)} MB; over the base state: ${(grown / 1e6).toFixed(1)} MB = ${Math.round(grown / N)} B per entry`);
  return s;
}

function time(label: string, iterations: number, fn: (i: number) => unknown): void {
  for (let i = 0; i < 20_000; i++) fn(i); // warm-up (JIT, lazy caches)
  const BATCH = 1000;
  const perBatch: number[] = [];
  let sink = 0;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let b = 0; b < iterations / BATCH; b++) {
    const s = process.hrtime.bigint();
    for (let i = 0; i < BATCH; i++) sink += fn(b * BATCH + i) ? 1 : 0;
    perBatch.push(Number(process.hrtime.bigint() - s) / 1e3 / BATCH);
  }
  const total = Number(process.hrtime.bigint() - t0) / 1e3 / iterations;
  const c = process.cpuUsage(c0);
  // CPU time is what this process actually spent; wall time also counts waiting for a busy CPU.
  const cpu = (c.user + c.system) / iterations;
  perBatch.sort((a, b) => a - b);
  const p99 = perBatch[Math.floor(perBatch.length * 0.99)];
  console.log(`${label.padEnd(34)} ${total.toFixed(2)} µs/decision wall, ${cpu.toFixed(2)} µs CPU (mean over ${iterations}; p99 of 1000-decision batches ${p99.toFixed(2)} µs wall)${sink < 0 ? '' : ''}`);
}

console.log(`node ${process.version}, ${N} entries per table, gc ${gc ? 'exposed' : 'NOT exposed (run with --expose-gc)'}, ${availableParallelism()} CPUs, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);

// Memory.
const emptyBefore = heap();
let base: DecisionState | null = buildFrom(() => ({}));
const baseline = heap() - emptyBefore;
console.log(`base state (${USERS} users, ${APPS} apps, ${2 * APIS_PER_SERVICE} APIs) ${(baseline / 1e6).toFixed(1)} MB`);
memoryOf(`+ ${N} grants`, () => ({ grants: grantRows() }), baseline);
memoryOf(`+ ${N} tokens`, () => ({ tokens: tokenRows() }), baseline);
memoryOf(`+ ${N} access keys`, () => ({ accessKeys: keyRows() }), baseline);
base = null;
const before = heap();
const full = buildFrom(() => ({ grants: grantRows(), tokens: tokenRows(), accessKeys: keyRows() }));
const afterAll = heap();
console.log(`all three (${3 * N} entries)`.padEnd(34) + ` ${((afterAll - before - baseline) / 1e6).toFixed(1)} MB over the base = ${Math.round((afterAll - before - baseline) / (3 * N))} B per entry`);

// Decisions.
const tokens = Array.from({ length: 1000 }, (_, i) => tok(i * 97));
const userReq: DecisionRequest[] = Array.from({ length: 100 }, (_, i) => ({ serviceId: '1', serviceName: 's1', method: 'GET', rawPath: `/r${i}/${1000 + i}` }));
time('bearer user (hash + lookup + decide)', 500_000, (i) => {
  const p = authenticateBearer(full, tokens[i % 1000], NOW);
  return decide(full, userReq[i % 100], p, NOW).result === 'ALLOW';
});
const keys = Array.from({ length: 1000 }, (_, i) => akid(i * 89));
const appReq: DecisionRequest[] = Array.from({ length: 100 }, (_, i) => ({ serviceId: '2', serviceName: 's2', method: 'GET', rawPath: `/r${i}/${7 + i}` }));
time('app grant (key lookup + decide)', 500_000, (i) => {
  const p = principalForAccessKey(full, keys[i % 1000], NOW);
  return decide(full, appReq[i % 100], p, NOW).result === 'ALLOW';
});
let allowed = 0;
for (let i = 0; i < 1000; i++) allowed += decide(full, appReq[i % 100], principalForAccessKey(full, keys[i], NOW), NOW).result === 'ALLOW' ? 1 : 0;
console.log(`(sanity: ${allowed}/1000 app decisions allowed — each app holds a grant for every API)`);

// Cost of a tightening event against full-size maps (copy-on-write of the touched map).
for (const [label, action, effect] of [
  ['token.revoke (100k tokens)', 'token.revoke', { token_ids: [5] }],
  ['grant.cancel.app (100k grants)', 'grant.cancel.app', { grant_id: 5, app_id: 5, api_id: 'x', effective_end: NOW }],
  ['key.status Inactive (100k keys)', 'key.status', { ak: akid(5), status: 'Inactive' }],
] as const) {
  const t = process.hrtime.bigint();
  for (let i = 0; i < 20; i++) applyEffect(full, action, effect, NOW);
  console.log(`${label.padEnd(34)} ${(Number(process.hrtime.bigint() - t) / 1e6 / 20).toFixed(2)} ms per event`);
}
