// `utilmeta-proxy authz …` functions and entry point on real PostgreSQL (and the
// embedded master-key file).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DomainError } from '../src/core/errors.ts';
import { decryptSecret, generateMasterKey, parseMasterKeys, SECRET_RE, TOKEN_RE, tokenSha256, verifyPassword } from '../src/access/crypto.ts';
import { authzBootstrap, authzCreateKey, authzGenMasterKey, authzMain, authzRekey } from '../src/access/cli.ts';
import { Credentials, CREDENTIALS_DEFAULTS } from '../src/access/credentials.ts';
import { loadOrCreateMasterKeyFile } from '../src/access/master-key-file.ts';
import { AuthzStore } from '../src/access/store.ts';
import { PG_HOST, PG_PORT } from './support/env.ts';
import { migratedAuthzDb, type AuthzDb } from './support/authz.ts';

let t: AuthzDb;
let store: AuthzStore;
const K1 = generateMasterKey('k1');
const NEW = generateMasterKey('new');
before(async () => {
  t = await migratedAuthzDb();
  store = new AuthzStore(t.sql);
});
after(async () => {
  await t?.close();
});

async function secretOf(keys: ReturnType<typeof parseMasterKeys>, akid: string): Promise<string> {
  const [r] = await t.sql<{ secret_ciphertext: Buffer; secret_nonce: Buffer; master_key_id: string }[]>`
    SELECT secret_ciphertext, secret_nonce, master_key_id FROM authz_access_key WHERE access_key_id = ${akid}`;
  return decryptSecret(keys, akid, { ciphertext: r!.secret_ciphertext, nonce: r!.secret_nonce, kid: r!.master_key_id });
}

test('bootstrap: org, root department, superuser with a working password, personal token and access key, all in one go', async () => {
  const keys = parseMasterKeys(K1);
  const r = await authzBootstrap(store, keys, { account: 'admin' });
  assert.equal(r.orgName, 'default');
  const [u] = await t.sql`SELECT is_superuser, password_hash, current_org_id FROM authz_user WHERE id = ${r.userId}`;
  assert.equal(u!.is_superuser, true);
  assert.equal(u!.current_org_id, String(r.orgId));
  assert.equal(await verifyPassword(r.password, u!.password_hash), true);
  assert.match(r.token, TOKEN_RE);
  const [tok] = await t.sql`SELECT kind, issued_via, extract(epoch FROM expires_at - created_at)::int AS secs FROM authz_token WHERE token_sha256 = ${tokenSha256(r.token)}`;
  assert.deepEqual({ ...tok }, { kind: 'PERSONAL', issued_via: 'cli', secs: 30 * 86400 });
  assert.match(r.secretAccessKey!, SECRET_RE);
  assert.equal(await secretOf(keys, r.accessKeyId!), r.secretAccessKey);
  const [root] = await t.sql`SELECT name, super_id FROM authz_department WHERE id = ${r.departmentId}`;
  assert.deepEqual({ ...root }, { name: 'default', super_id: null });
  const [m] = await t.sql`SELECT count(*)::int AS n FROM authz_org_user WHERE org_id = ${r.orgId} AND user_id = ${r.userId}`;
  assert.equal(m!.n, 1);
  const actions = await t.sql`SELECT action FROM authz_event WHERE actor_type = 'CLI' ORDER BY seq`;
  assert.deepEqual(actions.map((a) => a.action), ['org.create', 'dept.create', 'user.create', 'org.user.add', 'token.issue', 'key.create']);
  // A second admin reuses the org; a duplicate account is refused with nothing written.
  const r2 = await authzBootstrap(store, null, { account: 'admin2' });
  assert.equal(r2.orgId, r.orgId);
  assert.equal(r2.departmentId, r.departmentId);
  assert.equal(r2.accessKeyId, null);
  const before = await t.sql`SELECT count(*)::int AS n FROM authz_event`;
  await assert.rejects(authzBootstrap(store, keys, { account: 'ADMIN' }), (e: unknown) => e instanceof DomainError && e.code === 'ACCOUNT_EXISTS');
  await assert.rejects(authzBootstrap(store, keys, { account: '-x' }), (e: unknown) => e instanceof DomainError && e.field === 'account');
  assert.deepEqual((await t.sql`SELECT count(*)::int AS n FROM authz_event`)[0], before[0]);
});

test('create-key for a user account or an app; rekey moves every secret to the first master key', async () => {
  const old = parseMasterKeys(generateMasterKey('old'));
  const creds = new Credentials(store, { masterKeys: old, ...CREDENTIALS_DEFAULTS });
  const k = await authzCreateKey(creds, { user: 'Admin2', description: 'ci' });
  assert.equal(k.ownerType, 'USER');
  await assert.rejects(authzCreateKey(creds, { user: 'ghost' }), (e: unknown) => e instanceof DomainError && e.code === 'USER_NOT_FOUND');
  await assert.rejects(authzCreateKey(creds, {}), (e: unknown) => e instanceof DomainError && e.kind === 'invalid');
  const oldEntry = `old:${old.primary.key.toString('base64')}`;
  const both = parseMasterKeys(`${NEW},${oldEntry},${K1}`);
  // Without the old key, rekey stops and changes nothing.
  await assert.rejects(authzRekey(store, parseMasterKeys(`${NEW},${K1}`)), (e: unknown) => e instanceof DomainError && e.code === 'MASTER_KEY_MISSING' && e.message.includes(k.accessKeyId));
  const r = await authzRekey(store, both);
  assert.ok(r.rekeyed >= 1);
  const kids = await t.sql`SELECT DISTINCT master_key_id FROM authz_access_key`;
  assert.deepEqual(kids.map((x) => x.master_key_id), ['new']);
  assert.equal(await secretOf(parseMasterKeys(NEW), k.accessKeyId), k.secretAccessKey);
  assert.deepEqual(await authzRekey(store, both), { rekeyed: 0, alreadyCurrent: r.rekeyed + r.alreadyCurrent });
  assert.match(authzGenMasterKey('x1'), /^x1:[A-Za-z0-9+/]{43}=$/);
});

test('the embedded master key file is created once with mode 0600 and reused', () => {
  const dir = mkdtempSync(join(tmpdir(), 'umtest-mk-'));
  try {
    const a = loadOrCreateMasterKeyFile(dir);
    assert.equal(a.created, true);
    assert.equal(statSync(a.file).mode & 0o777, 0o600);
    const b = loadOrCreateMasterKeyFile(dir);
    assert.equal(b.created, false);
    assert.equal(b.keys.primary.key.toString('hex'), a.keys.primary.key.toString('hex'));
    writeFileSync(a.file, 'garbage');
    assert.throws(() => loadOrCreateMasterKeyFile(dir), (e: unknown) => e instanceof DomainError && e.code === 'MASTER_KEY_MISSING');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('authzMain: usage errors exit 2; bootstrap prints the secrets on stdout only', async () => {
  const io = () => {
    const o = { out: [] as string[], err: [] as string[] };
    return { o, io: { out: (l: string) => void o.out.push(l), err: (l: string) => void o.err.push(l) } };
  };
  let c = io();
  assert.equal(await authzMain([], c.io), 2);
  assert.match(c.o.err.join('\n'), /Usage: utilmeta-proxy authz/);
  c = io();
  assert.equal(await authzMain(['--help'], c.io), 0);
  c = io();
  assert.equal(await authzMain(['frobnicate'], c.io), 2);
  c = io();
  assert.equal(await authzMain(['bootstrap', '--bogus'], c.io), 2);
  c = io();
  assert.equal(await authzMain(['gen-master-key', '--kid', 'k9'], c.io), 0);
  assert.match(c.o.out[0]!, /^k9:/);
  const env = {
    UTILMETA_PROXY_DB_HOST: PG_HOST,
    UTILMETA_PROXY_DB_PORT: String(PG_PORT),
    UTILMETA_PROXY_DB_NAME: t.dbs.registryName,
    UTILMETA_PROXY_OPS_DB_NAME: t.dbs.opsName,
    UTILMETA_PROXY_AUTHZ_MASTER_KEYS: `${generateMasterKey('cli')},${NEW}`,
  };
  c = io();
  assert.equal(await authzMain(['bootstrap'], c.io, env), 2, 'bootstrap needs --account');
  c = io();
  assert.equal(await authzMain(['bootstrap', '--account', 'ops', '--org', 'ops-org'], c.io, env), 0, c.o.err.join('\n'));
  const text = c.o.out.join('\n');
  assert.match(text, /^password: {3}\S{24}$/m);
  assert.match(text, /^token: {6}umt_/m);
  assert.match(text, /^secret: {5}[A-Za-z0-9]{40}$/m);
  c = io();
  assert.equal(await authzMain(['create-key', '--user', 'ops'], c.io, env), 0, c.o.err.join('\n'));
  assert.match(c.o.out.join('\n'), /^access key: UMAK[A-Z2-7]{16} {3}\(owner USER \d+\)$/m);
  c = io();
  assert.equal(await authzMain(['create-key', '--user', 'nobody'], c.io, env), 1);
  assert.match(c.o.err.join('\n'), /user 'nobody' not found/);
  c = io();
  assert.equal(await authzMain(['rekey'], c.io, env), 0, c.o.err.join('\n'));
  c = io();
  assert.equal(await authzMain(['rekey'], c.io, { ...env, UTILMETA_PROXY_AUTHZ_MASTER_KEYS: 'broken' }), 2);
  assert.match(c.o.err.join('\n'), /UTILMETA_PROXY_AUTHZ_MASTER_KEYS/);
  assert.ok(readFileSync);
});
