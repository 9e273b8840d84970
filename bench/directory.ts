// node --import tsx bench/directory.ts [--users 2000] [--rounds 50]
//
// Latency of the directory operations on the local PostgreSQL (fresh database,
// dropped afterwards). It asserts nothing: it prints one line per operation with
// the median and p95 over `rounds` calls.
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { cpus } from 'node:os';
import { matchDirectoryRoute, runDirectoryOp, type DirectoryCaller, type DirectoryDeps } from '../src/access/directory.ts';
import { AuthzStore } from '../src/access/store.ts';
import { migratedAuthzDb } from '../test/support/authz.ts';

const { values: args } = parseArgs({ options: { users: { type: 'string' }, rounds: { type: 'string' } } });
const USERS = Number(args.users ?? 2000);
const ROUNDS = Number(args.rounds ?? 50);

const t = await migratedAuthzDb();
try {
  const deps: DirectoryDeps = { sql: t.sql, store: new AuthzStore(t.sql) };
  const [u] = await t.sql<{ id: string }[]>`INSERT INTO authz_user (account, username, is_superuser) VALUES ('bench-admin', 'B', true) RETURNING id`;
  const admin: DirectoryCaller = { userId: Number(u!.id), isSuperuser: true, managementPermissions: [] };
  const call = async (method: string, path: string, opts: { query?: Record<string, string>; body?: unknown } = {}) => {
    const m = matchDirectoryRoute(method, path);
    if (!m || !('route' in m)) throw new Error(`no route ${method} ${path}`);
    return runDirectoryOp(deps, admin, m.route, { params: m.params, query: opts.query, body: opts.body }) as Promise<any>;
  };

  // Bulk users straight in SQL (the batch endpoint's cost is dominated by scrypt, measured separately).
  await t.sql`INSERT INTO authz_user (account, username) SELECT 'u' || g, 'User ' || g FROM generate_series(1, ${USERS}) g`;
  await call('POST', '/orgs', { body: { name: 'bench' } });
  const [org] = await call('GET', '/orgs');
  await t.sql`INSERT INTO authz_org_user (org_id, user_id) SELECT ${org.id}, id FROM authz_user`;
  const root = await call('GET', `/orgs/${org.id}/departments/root`);
  for (let i = 0; i < 20; i++) await call('POST', `/orgs/${org.id}/roles`, { body: { name: `r${i}`, subjects: [{ type: 'user', account: `u${i + 1}` }] } });
  let n = 0;

  const ops: [string, () => Promise<unknown>][] = [
    ['GET /users?account=…&fuzzy=1 (contains)', () => call('GET', '/users', { query: { account: '99', fuzzy: '1' } })],
    ['GET /users?user_ids=5 ids', () => call('GET', '/users', { query: { user_ids: '1,2,3,4,5', with_sso: '1' } })],
    ['GET /orgs/{id}/users?page=1&page_size=50', () => call('GET', `/orgs/${org.id}/users`, { query: { page: '1', page_size: '50' } })],
    ['GET /orgs/{id}/roles (20 roles, subjects+perms)', () => call('GET', `/orgs/${org.id}/roles`)],
    ['POST /orgs/{id}/departments (one write + event)', () => call('POST', `/orgs/${org.id}/departments`, { body: { name: `d${++n}`, super_id: root.id } })],
    ['PATCH /users/{id} username (write + event)', () => call('PATCH', `/users/account_u${(n++ % USERS) + 1}`, { body: { username: `x${n}` } })],
    ['POST /users batch of 1 (scrypt N=2^15)', () => call('POST', '/users', { body: [{ account: `new${++n}`, username: 'N', password: 'password-1' }] })],
  ];
  console.log(`directory latency, ${USERS} users, ${ROUNDS} rounds, ${cpus().length} CPUs, PostgreSQL on loopback`);
  for (const [label, fn] of ops) {
    for (let i = 0; i < 3; i++) await fn();
    const times: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const s = performance.now();
      await fn();
      times.push(performance.now() - s);
    }
    times.sort((a, b) => a - b);
    const pct = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))]!.toFixed(2);
    console.log(`${label.padEnd(52)} p50 ${pct(0.5).padStart(7)} ms   p95 ${pct(0.95).padStart(7)} ms`);
  }
} finally {
  await t.close();
}
