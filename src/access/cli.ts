// `utilmeta-proxy authz bootstrap | create-key | gen-master-key | rekey`: the
// functions, and one entry point (`authzMain`) that parses its own arguments,
// so the main CLI only forwards `authz …` to it. Secrets are printed once.
import { parseArgs } from 'node:util';
import type postgres from 'postgres';
import { DomainError } from '../core/errors.ts';
import { ConfigError, loadConfig, type Config } from '../config/index.ts';
import { createLogger } from '../observability/log.ts';
import { decryptSecret, encryptSecret, generateMasterKey, generateSecret, hashPassword, type MasterKeys } from './crypto.ts';
import { CLI_CALLER, Credentials, CREDENTIALS_DEFAULTS, insertAccessKey, issueToken } from './credentials.ts';
import { loadOrCreateMasterKeyFile } from './master-key-file.ts';
import { AuthzStore } from './store.ts';

const CLI_ACTOR = CLI_CALLER.actor;

export interface BootstrapResult {
  orgId: number;
  orgName: string;
  departmentId: number;
  userId: number;
  account: string;
  /** generated; printed once */
  password: string;
  /** 30-day PERSONAL token; printed once */
  token: string;
  tokenExpires: string;
  /** null when no master key is configured */
  accessKeyId: string | null;
  secretAccessKey: string | null;
}

/**
 * The default org (created or reused), its root department, a superuser with a
 * random password and org membership, a 30-day PERSONAL token and, when a master
 * key is available, one access key. One transaction: all or nothing.
 */
export async function authzBootstrap(
  store: AuthzStore,
  masterKeys: MasterKeys | null,
  opts: { account: string; orgName?: string },
): Promise<BootstrapResult> {
  const account = opts.account;
  const orgName = opts.orgName ?? 'default';
  if (typeof account !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/.test(account)) {
    throw new DomainError('invalid', 'account: must start with a letter or digit and contain only letters, digits and . _ @ - (at most 64)', { field: 'account', code: 'PARAM_INVALID' });
  }
  // Hashing is slow; do it before taking the write lock.
  const password = generateSecret().slice(0, 24);
  const hash = await hashPassword(password);
  const { result } = await store.write(
    CLI_ACTOR,
    async (tx) => {
      let [org] = await tx.sql<{ id: string }[]>`SELECT id FROM authz_org WHERE name = ${orgName} FOR UPDATE`;
      if (!org) {
        [org] = await tx.sql<{ id: string }[]>`INSERT INTO authz_org (name) VALUES (${orgName}) RETURNING id`;
        tx.event({ action: 'org.create', targetType: 'org', targetId: org!.id, effect: { org_id: Number(org!.id) }, after: { id: Number(org!.id), name: orgName } });
      }
      const orgId = org!.id;
      let [dept] = await tx.sql<{ id: string }[]>`SELECT id FROM authz_department WHERE org_id = ${orgId} AND super_id IS NULL`;
      if (!dept) {
        [dept] = await tx.sql<{ id: string }[]>`INSERT INTO authz_department (org_id, name) VALUES (${orgId}, ${orgName}) RETURNING id`;
        tx.event({ action: 'dept.create', targetType: 'department', targetId: dept!.id, effect: { department_id: Number(dept!.id), org_id: Number(orgId) } });
      }
      const [user] = await tx.sql<{ id: string; account: string }[]>`
        INSERT INTO authz_user (account, username, is_superuser, password_hash, current_org_id)
        VALUES (${account}, ${account}, true, ${hash}, ${orgId}) RETURNING id, account`;
      tx.event({
        action: 'user.create',
        targetType: 'user',
        targetId: user!.id,
        effect: { user_id: Number(user!.id) },
        after: { id: Number(user!.id), account, is_superuser: true },
      });
      await tx.sql`UPDATE authz_org SET creator_id = coalesce(creator_id, ${user!.id}) WHERE id = ${orgId}`;
      await tx.sql`INSERT INTO authz_org_user (org_id, user_id) VALUES (${orgId}, ${user!.id})`;
      tx.event({ action: 'org.user.add', targetType: 'user', targetId: user!.id, effect: { user_id: Number(user!.id), org_id: Number(orgId) } });
      const tok = await issueToken(tx, user!, { kind: 'PERSONAL', via: 'cli', name: 'bootstrap', expires: tx.sql`now() + interval '30 days'` });
      let key: { accessKeyId: string; secret: string } | null = null;
      if (masterKeys) {
        const k = await insertAccessKey(tx, masterKeys, { userId: user!.id, appId: null }, 'bootstrap', null);
        tx.event({ action: 'key.create', targetType: 'access_key', targetId: k.row.access_key_id, effect: { ak: k.row.access_key_id }, after: k.view });
        key = { accessKeyId: k.row.access_key_id, secret: k.secret };
      }
      return {
        orgId: Number(orgId),
        orgName,
        departmentId: Number(dept!.id),
        userId: Number(user!.id),
        account,
        password,
        token: tok.token,
        tokenExpires: tok.expires_at.toISOString(),
        accessKeyId: key?.accessKeyId ?? null,
        secretAccessKey: key?.secret ?? null,
      };
    },
    { errors: { authz_user_account_ci: new DomainError('conflict', `account '${account}' already exists`, { code: 'ACCOUNT_EXISTS', field: 'account' }) } },
  );
  return result;
}

/** `create-key --user ACCOUNT | --app APP_ID`: a key "created in the admin console". */
export async function authzCreateKey(creds: Credentials, target: { user?: string; app?: string; description?: string }) {
  if ((target.user === undefined) === (target.app === undefined)) {
    throw new DomainError('invalid', 'give exactly one of --user ACCOUNT or --app APP_ID', { field: 'user', code: 'PARAM_INVALID' });
  }
  if (target.app !== undefined) return creds.createKey(CLI_CALLER, { ownerType: 'APP', ownerId: target.app, description: target.description });
  const [u] = await creds.store.read((sql) => sql<{ id: string }[]>`SELECT id FROM authz_user WHERE lower(account) = lower(${target.user!})`);
  if (!u) throw new DomainError('not_found', `user '${target.user}' not found`, { code: 'USER_NOT_FOUND', field: 'user' });
  return creds.createKey(CLI_CALLER, { ownerType: 'USER', ownerId: u.id, description: target.description });
}

/** `gen-master-key`: a `kid:base64(32 bytes)` entry for UTILMETA_PROXY_AUTHZ_MASTER_KEYS. */
export function authzGenMasterKey(kid?: string): string {
  return generateMasterKey(kid);
}

/**
 * `rekey`: re-encrypts every access-key secret under the primary master key.
 * One transaction; a secret that no configured key decrypts stops it with
 * nothing changed, naming the keys.
 */
export async function authzRekey(store: AuthzStore, masterKeys: MasterKeys): Promise<{ rekeyed: number; alreadyCurrent: number }> {
  const { result } = await store.write(CLI_ACTOR, async (tx) => {
    const rows = await tx.sql<{ access_key_id: string; secret_ciphertext: Buffer; secret_nonce: Buffer; master_key_id: string }[]>`
      SELECT access_key_id, secret_ciphertext, secret_nonce, master_key_id FROM authz_access_key ORDER BY access_key_id FOR UPDATE`;
    const stale = rows.filter((r) => r.master_key_id !== masterKeys.primary.kid);
    const unusable: string[] = [];
    const updates: Array<{ id: string; ciphertext: Buffer; nonce: Buffer }> = [];
    for (const r of stale) {
      try {
        const secret = decryptSecret(masterKeys, r.access_key_id, { ciphertext: r.secret_ciphertext, nonce: r.secret_nonce, kid: r.master_key_id });
        const enc = encryptSecret(masterKeys, r.access_key_id, secret);
        updates.push({ id: r.access_key_id, ciphertext: enc.ciphertext, nonce: enc.nonce });
      } catch {
        unusable.push(`${r.access_key_id} (master key '${r.master_key_id}')`);
      }
    }
    if (unusable.length > 0) {
      const list = unusable.length > 5 ? `${unusable.slice(0, 5).join(', ')}, … (${unusable.length})` : unusable.join(', ');
      throw new DomainError('unavailable', `cannot decrypt ${list}: add the missing master key to UTILMETA_PROXY_AUTHZ_MASTER_KEYS (after the new first key) and run rekey again`, {
        code: 'MASTER_KEY_MISSING',
      });
    }
    for (const u of updates) {
      await tx.sql`UPDATE authz_access_key SET secret_ciphertext = ${u.ciphertext}, secret_nonce = ${u.nonce}, master_key_id = ${masterKeys.primary.kid}
                   WHERE access_key_id = ${u.id}`;
    }
    // Secrets are unchanged, so nodes have nothing to apply; the event is the audit record.
    tx.event({ action: 'key.rekey', targetType: 'master_key', targetId: masterKeys.primary.kid, effect: {}, after: { rekeyed: updates.length, kid: masterKeys.primary.kid } });
    return { rekeyed: updates.length, alreadyCurrent: rows.length - stale.length };
  });
  return result;
}

// ---------------------------------------------------------------- entry point

export const AUTHZ_USAGE = `Usage: utilmeta-proxy authz <subcommand> [options] [--env-file FILE]

Subcommands:
  bootstrap --account NAME [--org NAME]
                 create the default org (or --org), its root department, a superuser
                 with a random password, a 30-day personal token and one access key;
                 prints the secrets once
  create-key --user ACCOUNT | --app APP_ID [--description TEXT]
                 create an access key and print its secret once
  gen-master-key [--kid ID]
                 print a new kid:base64 entry for UTILMETA_PROXY_AUTHZ_MASTER_KEYS
  rekey          re-encrypt every access-key secret under the first master key

bootstrap, create-key and rekey need the database (they migrate it first). With the
embedded database and no UTILMETA_PROXY_AUTHZ_MASTER_KEYS, the key in
DATA_DIR/authz-master.key is used (created if absent).`;

export interface CliIo {
  out: (line: string) => void;
  err: (line: string) => void;
}

const defaultIo: CliIo = { out: (l) => console.log(l), err: (l) => console.error(l) };

/** The master keys a node uses: the configured ones, else (embedded database only) the generated key file. */
export function effectiveMasterKeys(config: Config): MasterKeys | null {
  if (config.authz.masterKeys) return config.authz.masterKeys;
  if (config.db.host === null) return loadOrCreateMasterKeyFile(config.db.dataDir).keys;
  return null;
}

/**
 * `utilmeta-proxy authz …` (argv after `authz`). Returns the exit code:
 * 0 done, 1 failed, 2 usage or configuration error.
 */
export async function authzMain(argv: string[], io: CliIo = defaultIo, env?: Record<string, string | undefined>): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        'env-file': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        account: { type: 'string' },
        org: { type: 'string' },
        user: { type: 'string' },
        app: { type: 'string' },
        description: { type: 'string' },
        kid: { type: 'string' },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    io.err(`utilmeta-proxy authz: ${(err as Error).message}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const sub = positionals[0];
  if (values.help || !sub) {
    (values.help ? io.out : io.err)(AUTHZ_USAGE);
    return values.help ? 0 : 2;
  }
  if (!['bootstrap', 'create-key', 'gen-master-key', 'rekey'].includes(sub) || positionals.length > 1) {
    io.err(`utilmeta-proxy authz: unknown subcommand '${positionals.join(' ')}' (try --help)`);
    return 2;
  }
  try {
    if (sub === 'gen-master-key') {
      io.out(authzGenMasterKey(values.kid));
      return 0;
    }
    if (sub === 'bootstrap' && !values.account) {
      io.err('utilmeta-proxy authz bootstrap: --account NAME is required');
      return 2;
    }
    let config: Config;
    try {
      config = loadConfig({ envFile: values['env-file'] ?? undefined, env });
    } catch (err) {
      if (err instanceof ConfigError) {
        io.err(`utilmeta-proxy: ${err.message}`);
        return 2;
      }
      throw err;
    }
    // Logs go to stderr: stdout carries only the answer (secrets included) for scripts.
    const log = createLogger({ level: config.logLevel === 'info' ? 'error' : config.logLevel, stream: process.stderr });
    const { openDatabase, migrate } = await import('../db/index.ts');
    const db = await openDatabase(config.db, log);
    try {
      await migrate(config.db, db, log);
      const store = new AuthzStore(db.registry as postgres.Sql);
      const keys = effectiveMasterKeys(config);
      if (sub === 'bootstrap') {
        const r = await authzBootstrap(store, keys, { account: values.account!, orgName: values.org });
        io.out(`org:        ${r.orgName} (id ${r.orgId}), root department id ${r.departmentId}`);
        io.out(`superuser:  ${r.account} (id ${r.userId})`);
        io.out(`password:   ${r.password}`);
        io.out(`token:      ${r.token}   (personal, expires ${r.tokenExpires})`);
        if (r.accessKeyId) {
          io.out(`access key: ${r.accessKeyId}`);
          io.out(`secret:     ${r.secretAccessKey}`);
        } else {
          io.out('access key: none (no master key: set UTILMETA_PROXY_AUTHZ_MASTER_KEYS, see `authz gen-master-key`)');
        }
        io.out('These secrets are shown once; store them now.');
        return 0;
      }
      if (sub === 'create-key') {
        const creds = new Credentials(store, { masterKeys: keys, tokenTtlSeconds: config.authz.tokenTtl, keyGraceSeconds: config.authz.keyGrace ?? CREDENTIALS_DEFAULTS.keyGraceSeconds });
        const k = await authzCreateKey(creds, { user: values.user, app: values.app, description: values.description });
        io.out(`access key: ${k.accessKeyId}   (owner ${k.ownerType} ${k.ownerId})`);
        io.out(`secret:     ${k.secretAccessKey}`);
        io.out('The secret is shown once; store it now.');
        return 0;
      }
      if (!keys) {
        io.err('utilmeta-proxy authz rekey: no master key configured (UTILMETA_PROXY_AUTHZ_MASTER_KEYS)');
        return 2;
      }
      const r = await authzRekey(store, keys);
      io.out(`rekeyed ${r.rekeyed} secret(s) under '${keys.primary.kid}'; ${r.alreadyCurrent} already were`);
      return 0;
    } finally {
      await db.close();
    }
  } catch (err) {
    io.err(`utilmeta-proxy authz ${sub}: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}
