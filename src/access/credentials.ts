// Credentials of the access plane (no HTTP here): SigV4 access keys owned by a
// user or an app, and opaque `umt_` bearer tokens for users. Every write is one
// authz transaction with its audit event; secrets and tokens leave this module
// only in the answer of the call that created them.
import type postgres from 'postgres';
import { DomainError } from '../core/errors.ts';
import {
  ACCESS_KEY_ID_RE, encryptSecret, generateAccessKeyId, generateSecret, generateToken, tokenHint, tokenSha256, TOKEN_RE, verifyPassword,
  type MasterKeys,
} from './crypto.ts';
import { loginKey, MemoryLoginLimiter, type LoginLimiter } from './login-limit.ts';
import { AuthzStore, type AuthzActor, type AuthzTx } from './store.ts';

// ---------------------------------------------------------------- callers

/** Who is calling, as the API layer authenticated them. */
export interface Caller {
  /** authz_user.id of the acting user; null for the CLI and the system */
  userId: string | null;
  /** superuser, or a role with `authz_manage`; the CLI is admin */
  admin: boolean;
  /** copied onto the audit events */
  actor: AuthzActor;
}

export const CLI_CALLER: Caller = { userId: null, admin: true, actor: { type: 'CLI', credential: 'cli' } };

/** A user is an admin if they are a superuser or hold a role with `authz_manage`. */
export async function isAdmin(sql: postgres.Sql | postgres.TransactionSql, userId: string): Promise<boolean> {
  const [r] = await sql<{ admin: boolean }[]>`
    SELECT u.is_superuser OR EXISTS (
      SELECT 1 FROM authz_role_user ru JOIN authz_role r ON r.id = ru.role_id
      WHERE ru.user_id = u.id AND 'authz_manage' = ANY (r.management_permissions)) AS admin
    FROM authz_user u WHERE u.id = ${userId}`;
  return r?.admin === true;
}

// ---------------------------------------------------------------- config

export interface CredentialsConfig {
  /** null: no master key configured (key endpoints answer MASTER_KEY_MISSING) */
  masterKeys: MasterKeys | null;
  /** SESSION token lifetime in seconds (AUTHZ_TOKEN_TTL, default 43200) */
  tokenTtlSeconds: number;
  /** default rotation grace in seconds (AUTHZ_KEY_GRACE, default 86400) */
  keyGraceSeconds: number;
}

export const CREDENTIALS_DEFAULTS: Omit<CredentialsConfig, 'masterKeys'> = { tokenTtlSeconds: 43200, keyGraceSeconds: 86400 };

/** Verifies a platform JWT (signature, node id, issuer, expiry) and returns its claims; throws when it is not acceptable. */
export type PlatformJwtVerifier = (jwt: string) => Promise<{ sub: string; jti: string; exp: number }>;

// ---------------------------------------------------------------- views

export type OwnerType = 'USER' | 'APP';

export interface AccessKeyView {
  accessKeyId: string;
  status: 'Active' | 'Inactive';
  ownerType: OwnerType;
  /** user id (number) or the app's 32-hex app_id */
  ownerId: number | string;
  description: string;
  createdDate: string;
  expiresDate: string | null;
  lastUsedDate: string | null;
  rotatedTo: string | null;
}

export interface NewAccessKey extends AccessKeyView {
  secretAccessKey: string;
}

export interface TokenView {
  id: number;
  name: string;
  hint: string;
  kind: 'SESSION' | 'PERSONAL';
  createdDate: string;
  expiresDate: string;
  lastUsedDate: string | null;
}

export interface OAuthTokenAnswer {
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  issued_token_type?: string;
}

export interface Page<T> {
  total: number;
  pageNo: number;
  pageSize: number;
  items: T[];
}

export interface KeyRow {
  access_key_id: string;
  owner_user_id: string | null;
  owner_app_id: string | null;
  app_public_id: string | null;
  app_owner_user_id: string | null;
  status: 'Active' | 'Inactive';
  description: string;
  created_at: Date;
  expires_at: Date | null;
  last_used_at: Date | null;
  rotated_to: string | null;
}

const iso = (d: Date | null) => (d === null ? null : d.toISOString());

function keyView(r: KeyRow): AccessKeyView {
  return {
    accessKeyId: r.access_key_id,
    status: r.status,
    ownerType: r.owner_user_id !== null ? 'USER' : 'APP',
    ownerId: r.owner_user_id !== null ? Number(r.owner_user_id) : r.app_public_id!,
    description: r.description,
    createdDate: r.created_at.toISOString(),
    expiresDate: iso(r.expires_at),
    lastUsedDate: iso(r.last_used_at),
    rotatedTo: r.rotated_to,
  };
}

// ---------------------------------------------------------------- input checks

const bad = (field: string, message: string) => new DomainError('invalid', `${field}: ${message}`, { field, code: 'PARAM_INVALID' });

function optString(v: unknown, field: string, max: number): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw bad(field, 'must be a string');
  if (v.length > max) throw bad(field, `must be at most ${max} characters`);
  return v;
}

function intIn(v: unknown, field: string, min: number, max: number, dflt?: number): number {
  if (v === undefined || v === null) {
    if (dflt !== undefined) return dflt;
    throw bad(field, 'is required');
  }
  const n = typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n)) throw bad(field, 'must be an integer');
  if (n < min || n > max) throw bad(field, `must be between ${min} and ${max}`);
  return n;
}

/** A positive int64 id given as number or digit string. */
function idOf(v: unknown, field: string): string {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v > 0) return String(v);
  if (typeof v === 'string' && /^[1-9]\d{0,18}$/.test(v) && BigInt(v) < 2n ** 63n) return v;
  throw bad(field, 'must be a positive integer id');
}

function ownerTypeOf(v: unknown): OwnerType {
  if (v === 'USER' || v === 'APP') return v;
  throw bad('ownerType', "must be 'USER' or 'APP'");
}

function akidOf(v: unknown): string {
  if (typeof v !== 'string' || !ACCESS_KEY_ID_RE.test(v)) throw new DomainError('not_found', 'access key not found', { code: 'KEY_NOT_FOUND', field: 'accessKeyId' });
  return v;
}

const forbidden = (what: string) => new DomainError('forbidden', `only the owner or an admin may ${what}`, { code: 'FORBIDDEN' });
const keyNotFound = () => new DomainError('not_found', 'access key not found', { code: 'KEY_NOT_FOUND', field: 'accessKeyId' });
const invalidGrant = (message: string, field?: string) => new DomainError('invalid', message, { code: 'invalid_grant', field });

// ---------------------------------------------------------------- the domain

export interface CredentialsOptions {
  /** login failure counters; per-node memory when absent */
  limiter?: LoginLimiter;
}

export class Credentials {
  readonly store: AuthzStore;
  readonly sql: postgres.Sql;
  readonly limiter: LoginLimiter;

  constructor(
    store: AuthzStore,
    readonly config: CredentialsConfig,
    opts: CredentialsOptions = {},
  ) {
    this.store = store;
    this.sql = store.sql;
    this.limiter = opts.limiter ?? new MemoryLoginLimiter();
  }

  #keys(): MasterKeys {
    if (!this.config.masterKeys) {
      throw new DomainError('unavailable', 'no master key is configured (UTILMETA_PROXY_AUTHZ_MASTER_KEYS); access keys are unavailable', {
        code: 'MASTER_KEY_MISSING',
      });
    }
    return this.config.masterKeys;
  }

  // ------------------------------------------------------------ access keys

  /** Resolves and authorizes an owner inside the transaction. */
  async #owner(tx: AuthzTx, caller: Caller, ownerType: OwnerType, ownerId: unknown): Promise<{ userId: string | null; appId: string | null; publicId: number | string }> {
    if (ownerType === 'USER') {
      const id = idOf(ownerId, 'ownerId');
      const [u] = await tx.sql<{ id: string }[]>`SELECT id FROM authz_user WHERE id = ${id} FOR SHARE`;
      if (!u) throw new DomainError('not_found', `user ${id} not found`, { code: 'USER_NOT_FOUND', field: 'ownerId' });
      if (!caller.admin && caller.userId !== u.id) throw forbidden("manage this user's keys");
      return { userId: u.id, appId: null, publicId: Number(u.id) };
    }
    if (typeof ownerId !== 'string' || !/^[0-9a-f]{32}$/.test(ownerId)) throw bad('ownerId', 'must be the 32-hex app_id of an app');
    const [a] = await tx.sql<{ id: string; owner_user_id: string }[]>`SELECT id, owner_user_id FROM authz_app WHERE app_id = ${ownerId} FOR SHARE`;
    if (!a) throw new DomainError('not_found', `app ${ownerId} not found`, { code: 'AUTH_OBJECT_NOT_FOUND', field: 'ownerId' });
    if (!caller.admin && caller.userId !== a.owner_user_id) throw forbidden("manage this app's keys");
    return { userId: null, appId: a.id, publicId: ownerId };
  }

  #keyRow(sql: postgres.Sql | postgres.TransactionSql, akid: string, lock: boolean): Promise<KeyRow | undefined> {
    return keyRow(sql, akid, lock);
  }

  /** Owners and admins see a key; anyone else gets "not found", so key ids cannot be probed. */
  #mayUse(caller: Caller, r: KeyRow): boolean {
    return caller.admin || (caller.userId !== null && (caller.userId === r.owner_user_id || caller.userId === r.app_owner_user_id));
  }

  /** POST /access-keys: a new Active key; its secret is in this answer only. */
  async createKey(caller: Caller, input: { ownerType?: unknown; ownerId?: unknown; description?: unknown }): Promise<NewAccessKey> {
    const ownerType = ownerTypeOf(input.ownerType);
    const description = optString(input.description, 'description', 200) ?? '';
    this.#keys();
    const { result } = await this.store.write(caller.actor, async (tx) => {
      const owner = await this.#owner(tx, caller, ownerType, input.ownerId);
      const { row, secret } = await insertAccessKey(tx, this.#keys(), owner, description, caller.userId);
      const view = keyView(row);
      tx.event({ action: 'key.create', targetType: 'access_key', targetId: row.access_key_id, effect: { ak: row.access_key_id }, after: view });
      return { ...view, secretAccessKey: secret };
    });
    return result;
  }

  /** GET /access-keys: no secrets. Non-admins see only their own keys and their apps' keys. */
  async listKeys(caller: Caller, q: { ownerType?: unknown; ownerId?: unknown; status?: unknown; pageNo?: unknown; pageSize?: unknown } = {}): Promise<Page<AccessKeyView>> {
    const pageNo = intIn(q.pageNo, 'pageNo', 1, 1_000_000, 1);
    const pageSize = intIn(q.pageSize, 'pageSize', 1, 100, 20);
    let status: string | null = null;
    if (q.status !== undefined && q.status !== null && q.status !== '') {
      if (q.status !== 'Active' && q.status !== 'Inactive') throw bad('status', "must be 'Active' or 'Inactive'");
      status = q.status;
    }
    let userId: string | null = null;
    let appPublic: string | null = null;
    if (q.ownerType !== undefined && q.ownerType !== null && q.ownerType !== '') {
      const t = ownerTypeOf(q.ownerType);
      if (q.ownerId === undefined || q.ownerId === null || q.ownerId === '') throw bad('ownerId', 'is required with ownerType');
      if (t === 'USER') userId = idOf(q.ownerId, 'ownerId');
      else if (typeof q.ownerId === 'string' && /^[0-9a-f]{32}$/.test(q.ownerId)) appPublic = q.ownerId;
      else throw bad('ownerId', 'must be the 32-hex app_id of an app');
    } else if (q.ownerId !== undefined && q.ownerId !== null && q.ownerId !== '') {
      throw bad('ownerType', 'is required with ownerId');
    }
    if (!caller.admin && caller.userId === null) throw forbidden('list keys');
    const mine = caller.admin ? null : caller.userId;
    return this.store.read(async (sql) => {
      const where = sql`
        WHERE (${status}::text IS NULL OR k.status = ${status})
          AND (${userId}::bigint IS NULL OR k.owner_user_id = ${userId})
          AND (${appPublic}::text IS NULL OR a.app_id = ${appPublic})
          AND (${mine}::bigint IS NULL OR k.owner_user_id = ${mine} OR a.owner_user_id = ${mine})`;
      const [{ n }] = (await sql<{ n: number }[]>`
        SELECT count(*)::int AS n FROM authz_access_key k LEFT JOIN authz_app a ON a.id = k.owner_app_id ${where}`) as unknown as [{ n: number }];
      const rows = await sql<KeyRow[]>`
        SELECT k.access_key_id, k.owner_user_id, k.owner_app_id, a.app_id AS app_public_id, a.owner_user_id AS app_owner_user_id,
               k.status, k.description, k.created_at, k.expires_at, k.last_used_at, k.rotated_to
        FROM authz_access_key k LEFT JOIN authz_app a ON a.id = k.owner_app_id ${where}
        ORDER BY k.created_at DESC, k.access_key_id LIMIT ${pageSize} OFFSET ${(pageNo - 1) * pageSize}`;
      return { total: n, pageNo, pageSize, items: rows.map(keyView) };
    });
  }

  /** GET /access-keys/{id}: no secret. */
  async getKey(caller: Caller, accessKeyId: unknown): Promise<AccessKeyView> {
    const akid = akidOf(accessKeyId);
    const r = await this.store.read((sql) => this.#keyRow(sql, akid, false));
    if (!r || !this.#mayUse(caller, r)) throw keyNotFound();
    return keyView(r);
  }

  /** PATCH /access-keys/{id}: status and/or description. Inactive takes effect on every node from the event alone. */
  async patchKey(caller: Caller, accessKeyId: unknown, input: { status?: unknown; description?: unknown }): Promise<AccessKeyView> {
    const akid = akidOf(accessKeyId);
    let status: 'Active' | 'Inactive' | undefined;
    if (input.status !== undefined) {
      if (input.status !== 'Active' && input.status !== 'Inactive') throw bad('status', "must be 'Active' or 'Inactive'");
      status = input.status;
    }
    const description = optString(input.description, 'description', 200);
    if (status === undefined && description === undefined) throw bad('status', 'give status and/or description');
    const { result } = await this.store.write(caller.actor, async (tx) => {
      const before = await this.#keyRow(tx.sql, akid, true);
      if (!before || !this.#mayUse(caller, before)) throw keyNotFound();
      await tx.sql`
        UPDATE authz_access_key SET status = ${status ?? before.status}, description = ${description ?? before.description}
        WHERE access_key_id = ${akid}`;
      const after = keyView((await this.#keyRow(tx.sql, akid, false))!);
      tx.event({
        action: 'key.status',
        targetType: 'access_key',
        targetId: akid,
        effect: { ak: akid, status: after.status },
        before: keyView(before),
        after,
      });
      return after;
    });
    return result;
  }

  /**
   * POST /access-keys/{id}/rotate: a new key for the same owner (its secret in
   * this answer only); the old one stays valid for `graceSeconds`.
   */
  async rotateKey(caller: Caller, accessKeyId: unknown, input: { graceSeconds?: unknown } = {}): Promise<NewAccessKey & { previous: { accessKeyId: string; expiresDate: string } }> {
    const akid = akidOf(accessKeyId);
    const grace = intIn(input.graceSeconds, 'graceSeconds', 0, 604800, this.config.keyGraceSeconds);
    this.#keys();
    const { result } = await this.store.write(caller.actor, async (tx) => {
      const old = await this.#keyRow(tx.sql, akid, true);
      if (!old || !this.#mayUse(caller, old)) throw keyNotFound();
      if (old.status !== 'Active') throw new DomainError('conflict', `access key ${akid} is Inactive; only an active key can be rotated`, { code: 'CONFLICT', field: 'accessKeyId' });
      if (old.rotated_to !== null || (old.expires_at !== null && old.expires_at.getTime() <= Date.now())) {
        throw new DomainError('conflict', `access key ${akid} was already rotated or has expired`, { code: 'CONFLICT', field: 'accessKeyId' });
      }
      const { row, secret } = await insertAccessKey(tx, this.#keys(), { userId: old.owner_user_id, appId: old.owner_app_id }, old.description, caller.userId);
      // The grace only ever shortens a key's life; LEAST keeps an earlier expiry.
      const [upd] = await tx.sql<{ expires_at: Date }[]>`
        UPDATE authz_access_key
        SET expires_at = LEAST(coalesce(expires_at, 'infinity'), now() + make_interval(secs => ${grace})), rotated_to = ${row.access_key_id}
        WHERE access_key_id = ${akid} RETURNING expires_at`;
      const view = keyView(row);
      tx.event({ action: 'key.create', targetType: 'access_key', targetId: row.access_key_id, effect: { ak: row.access_key_id }, after: view });
      tx.event({
        action: 'key.rotate',
        targetType: 'access_key',
        targetId: akid,
        effect: { ak: akid, expires_at: upd!.expires_at.toISOString(), rotated_to: row.access_key_id },
        before: keyView(old),
        after: { ...keyView(old), expiresDate: upd!.expires_at.toISOString(), rotatedTo: row.access_key_id },
      });
      return { ...view, secretAccessKey: secret, previous: { accessKeyId: akid, expiresDate: upd!.expires_at.toISOString() } };
    });
    return result;
  }

  /** DELETE /access-keys/{id}: an immediate revocation. */
  async deleteKey(caller: Caller, accessKeyId: unknown): Promise<{ accessKeyId: string }> {
    const akid = akidOf(accessKeyId);
    await this.store.write(caller.actor, async (tx) => {
      const old = await this.#keyRow(tx.sql, akid, true);
      if (!old || !this.#mayUse(caller, old)) throw keyNotFound();
      await tx.sql`DELETE FROM authz_access_key WHERE access_key_id = ${akid}`;
      tx.event({ action: 'key.delete', targetType: 'access_key', targetId: akid, effect: { ak: akid }, before: keyView(old) });
    });
    return { accessKeyId: akid };
  }

  // ------------------------------------------------------------ tokens

  /**
   * `grant_type=password`. A wrong password, an unknown account and a disabled
   * user get the same answer; more than 10 failures per (account, IP) in 15
   * minutes answer `too_many` with `retryAfter`.
   */
  async passwordGrant(input: { username?: unknown; password?: unknown }, ctx: { ip?: string | null; requestId?: string | null } = {}): Promise<OAuthTokenAnswer> {
    if (typeof input.username !== 'string' || input.username === '' || input.username.length > 64) throw invalidGrant('username is required', 'username');
    if (typeof input.password !== 'string' || input.password === '' || input.password.length > 1024) throw invalidGrant('password is required', 'password');
    const account = input.username;
    const key = loginKey(account, ctx.ip);
    const wait = await this.limiter.blockedFor(key);
    if (wait > 0) throw new DomainError('too_many', 'too many failed logins; try again later', { code: 'too_many_requests', retryAfter: wait });
    const [u] = await this.store.read(
      (sql) => sql<{ id: string; account: string; status: number; password_hash: string | null }[]>`
        SELECT id, account, status, password_hash FROM authz_user WHERE lower(account) = lower(${account})`,
    );
    const ok = await verifyPassword(input.password, u?.password_hash ?? null);
    if (!u || !ok || u.status !== 1) {
      await this.limiter.fail(key);
      throw invalidGrant('invalid username or password');
    }
    await this.limiter.reset(key);
    const ttl = this.config.tokenTtlSeconds;
    const actor: AuthzActor = { type: 'USER', id: u.id, name: u.account, ip: ctx.ip ?? null, requestId: ctx.requestId ?? null };
    const { result } = await this.store.write(actor, async (tx) => {
      // Re-checked under the lock: a disable committed since the read wins.
      const [still] = await tx.sql<{ status: number }[]>`SELECT status FROM authz_user WHERE id = ${u.id} FOR UPDATE`;
      if (!still || still.status !== 1) throw invalidGrant('invalid username or password');
      await tx.sql`UPDATE authz_user SET last_login = now() WHERE id = ${u.id}`;
      return issueToken(tx, u, { kind: 'SESSION', via: 'password', expires: tx.sql`now() + make_interval(secs => ${ttl})` });
    });
    return { access_token: result.token, token_type: 'Bearer', expires_in: ttl };
  }

  /**
   * RFC 8693 exchange of a platform JWT for a user token. `verify` is the
   * platform check (signature, node id, issuer, expiry); the `sub` must be bound
   * to a user through the `utilmeta` SSO binding, and the `jti` must not be revoked.
   */
  async tokenExchange(
    input: { subject_token?: unknown; subject_token_type?: unknown },
    verify: PlatformJwtVerifier,
    ctx: { ip?: string | null; requestId?: string | null } = {},
  ): Promise<OAuthTokenAnswer> {
    if (input.subject_token_type !== 'urn:ietf:params:oauth:token-type:jwt') {
      throw invalidGrant("subject_token_type must be 'urn:ietf:params:oauth:token-type:jwt'", 'subject_token_type');
    }
    if (typeof input.subject_token !== 'string' || input.subject_token === '') throw invalidGrant('subject_token is required', 'subject_token');
    let claims: { sub: string; jti: string; exp: number };
    try {
      claims = await verify(input.subject_token);
    } catch (err) {
      throw new DomainError('invalid', `subject_token rejected: ${err instanceof Error ? err.message : String(err)}`, { code: 'invalid_grant', field: 'subject_token', cause: err });
    }
    if (typeof claims?.sub !== 'string' || claims.sub === '') throw invalidGrant('subject_token has no sub', 'subject_token');
    if (typeof claims.jti !== 'string' || claims.jti === '' || claims.jti.length > 200) throw invalidGrant('subject_token has no usable jti', 'subject_token');
    if (typeof claims.exp !== 'number' || !Number.isFinite(claims.exp) || claims.exp * 1000 <= Date.now()) throw invalidGrant('subject_token has expired', 'subject_token');
    const ttl = this.config.tokenTtlSeconds;
    const actor: AuthzActor = { type: 'PLATFORM', id: claims.sub.slice(0, 64), credential: `jwt:${claims.jti}`, ip: ctx.ip ?? null, requestId: ctx.requestId ?? null };
    const { result } = await this.store.write(actor, async (tx) => {
      const [revoked] = await tx.sql`SELECT 1 FROM authz_revoked_jti WHERE jti = ${claims.jti}`;
      if (revoked) throw invalidGrant('subject_token has been revoked', 'subject_token');
      const [u] = await tx.sql<{ id: string; account: string; status: number }[]>`
        SELECT u.id, u.account, u.status FROM authz_user_sso s JOIN authz_user u ON u.id = s.user_id
        WHERE s.sso_type = 'utilmeta' AND s.sso_user_id = ${claims.sub} FOR UPDATE OF u`;
      if (!u || u.status !== 1) throw invalidGrant('the platform user is not bound to an enabled user here', 'subject_token');
      return issueToken(tx, u, {
        kind: 'SESSION',
        via: 'token_exchange',
        parentJti: claims.jti,
        expires: tx.sql`LEAST(now() + make_interval(secs => ${ttl}), to_timestamp(${claims.exp}))`,
      });
    });
    return {
      access_token: result.token,
      issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      token_type: 'Bearer',
      expires_in: Math.max(1, Math.floor((result.expires_at.getTime() - result.created_at.getTime()) / 1000)),
    };
  }

  async #userRef(sql: postgres.Sql | postgres.TransactionSql, caller: Caller, userRef: unknown): Promise<{ id: string; account: string }> {
    let id: string;
    if (userRef === 'current') {
      if (caller.userId === null) throw bad('userId', "'current' needs a user credential");
      id = caller.userId;
    } else {
      id = idOf(userRef, 'userId');
    }
    if (!caller.admin && caller.userId !== id) throw forbidden("manage another user's tokens");
    const [u] = await sql<{ id: string; account: string }[]>`SELECT id, account FROM authz_user WHERE id = ${id}`;
    if (!u) throw new DomainError('not_found', `user ${id} not found`, { code: 'USER_NOT_FOUND', field: 'userId' });
    return u;
  }

  /** POST /users/{id|current}/tokens: a PERSONAL token of 1–366 days, shown once. */
  async createPersonalToken(caller: Caller, userRef: unknown, input: { name?: unknown; expiresInDays?: unknown }): Promise<{ id: number; name: string; token: string; expiresDate: string }> {
    const name = optString(input.name, 'name', 100) ?? '';
    const days = intIn(input.expiresInDays, 'expiresInDays', 1, 366);
    const { result } = await this.store.write(caller.actor, async (tx) => {
      const u = await this.#userRef(tx.sql, caller, userRef);
      return issueToken(tx, u, { kind: 'PERSONAL', via: caller.actor.type === 'CLI' ? 'cli' : 'personal', name, expires: tx.sql`now() + make_interval(days => ${days})` });
    });
    return { id: Number(result.id), name, token: result.token, expiresDate: result.expires_at.toISOString() };
  }

  /** GET /users/{id|current}/tokens: the user's live PERSONAL tokens (never the token itself). */
  async listPersonalTokens(caller: Caller, userRef: unknown): Promise<TokenView[]> {
    return this.store.read(async (sql) => {
      const u = await this.#userRef(sql, caller, userRef);
      const rows = await sql<{ id: string; name: string; token_hint: string; kind: 'PERSONAL'; created_at: Date; expires_at: Date; last_used_at: Date | null }[]>`
        SELECT id, name, token_hint, kind, created_at, expires_at, last_used_at FROM authz_token
        WHERE user_id = ${u.id} AND kind = 'PERSONAL' AND revoked_at IS NULL AND expires_at > now()
        ORDER BY id`;
      return rows.map((r) => ({
        id: Number(r.id),
        name: r.name,
        hint: r.token_hint,
        kind: r.kind,
        createdDate: r.created_at.toISOString(),
        expiresDate: r.expires_at.toISOString(),
        lastUsedDate: iso(r.last_used_at),
      }));
    });
  }

  /** DELETE /users/{id|current}/tokens/{tokenId}: revokes one PERSONAL token. */
  async deletePersonalToken(caller: Caller, userRef: unknown, tokenId: unknown): Promise<{ id: number }> {
    const tid = idOf(tokenId, 'tokenId');
    await this.store.write(caller.actor, async (tx) => {
      const u = await this.#userRef(tx.sql, caller, userRef);
      const ids = await revokeTokens(tx, tx.sql`id = ${tid} AND user_id = ${u.id} AND kind = 'PERSONAL'`);
      if (ids.length === 0) throw new DomainError('not_found', `token ${tid} not found`, { code: 'TOKEN_NOT_FOUND', field: 'tokenId' });
    });
    return { id: Number(tid) };
  }

  /**
   * RFC 7009 revocation: holding the token is enough. An unknown, malformed or
   * already revoked token is not an error (the answer is the same either way).
   */
  async revokeToken(token: unknown, ctx: { ip?: string | null; requestId?: string | null } = {}): Promise<void> {
    if (typeof token !== 'string' || !TOKEN_RE.test(token)) return;
    const sha = tokenSha256(token);
    const [t] = await this.store.read((sql) => sql<{ id: string; user_id: string }[]>`
      SELECT id, user_id FROM authz_token WHERE token_sha256 = ${sha} AND revoked_at IS NULL`);
    if (!t) return;
    const raced = new Error('already revoked');
    try {
      await this.store.write({ type: 'USER', id: t.user_id, credential: `token:${t.id}`, ip: ctx.ip ?? null, requestId: ctx.requestId ?? null }, async (tx) => {
        const ids = await revokeTokens(tx, tx.sql`id = ${t.id}`);
        if (ids.length === 0) throw raced; // revoked concurrently: nothing to record
      });
    } catch (err) {
      if (err !== raced) throw err;
    }
  }
}

/**
 * Revokes the live tokens matching `where` inside an authz transaction and
 * queues one `token.revoke` event naming them (nodes drop them from the event
 * alone). Returns the revoked ids. For other domains too: a password change
 * revokes `user_id = … AND kind = 'SESSION'`.
 */
export async function revokeTokens(tx: AuthzTx, where: postgres.Fragment | postgres.PendingQuery<postgres.Row[]>): Promise<string[]> {
  const rows = await tx.sql<{ id: string; user_id: string }[]>`
    UPDATE authz_token SET revoked_at = greatest(now(), created_at) WHERE revoked_at IS NULL AND ${where} RETURNING id, user_id`;
  if (rows.length === 0) return [];
  const ids = rows.map((r) => r.id).sort((a, b) => Number(a) - Number(b));
  tx.event({
    action: 'token.revoke',
    targetType: 'token',
    targetId: ids.length === 1 ? ids[0]! : `${ids[0]}+${ids.length - 1}`,
    effect: { token_ids: ids.map(Number) },
  });
  return ids;
}

async function keyRow(sql: postgres.Sql | postgres.TransactionSql, akid: string, lock: boolean): Promise<KeyRow | undefined> {
  const [r] = await sql<KeyRow[]>`
    SELECT k.access_key_id, k.owner_user_id, k.owner_app_id, a.app_id AS app_public_id, a.owner_user_id AS app_owner_user_id,
           k.status, k.description, k.created_at, k.expires_at, k.last_used_at, k.rotated_to
    FROM authz_access_key k LEFT JOIN authz_app a ON a.id = k.owner_app_id
    WHERE k.access_key_id = ${akid} ${lock ? sql`FOR UPDATE OF k` : sql``}`;
  return r;
}

/**
 * Inserts a new Active key with a fresh secret encrypted under the primary
 * master key (inside an authz transaction; the caller queues the event).
 */
export async function insertAccessKey(
  tx: AuthzTx,
  keys: MasterKeys,
  owner: { userId: string | null; appId: string | null },
  description: string,
  createdBy: string | null,
): Promise<{ row: KeyRow; view: AccessKeyView; secret: string }> {
  const akid = generateAccessKeyId();
  const secret = generateSecret();
  const enc = encryptSecret(keys, akid, secret);
  await tx.sql`
    INSERT INTO authz_access_key (access_key_id, owner_user_id, owner_app_id, secret_ciphertext, secret_nonce, master_key_id, description, created_by)
    VALUES (${akid}, ${owner.userId}, ${owner.appId}, ${enc.ciphertext}, ${enc.nonce}, ${enc.kid}, ${description}, ${createdBy})`;
  const row = (await keyRow(tx.sql, akid, false))!;
  return { row, view: keyView(row), secret };
}

/** Issues a user token inside an authz transaction and queues its `token.issue` event; the token is returned once. */
export async function issueToken(
  tx: AuthzTx,
  user: { id: string; account: string },
  o: { kind: 'SESSION' | 'PERSONAL'; via: 'password' | 'token_exchange' | 'personal' | 'cli'; name?: string; parentJti?: string | null; expires: postgres.PendingQuery<postgres.Row[]> | postgres.Fragment },
): Promise<{ token: string; id: string; created_at: Date; expires_at: Date }> {
  const token = generateToken();
  const [r] = await tx.sql<{ id: string; created_at: Date; expires_at: Date }[]>`
    INSERT INTO authz_token (token_sha256, token_hint, user_id, kind, name, issued_via, parent_jti, expires_at)
    VALUES (${tokenSha256(token)}, ${tokenHint(token)}, ${user.id}, ${o.kind}, ${o.name ?? ''}, ${o.via}, ${o.parentJti ?? null}, ${o.expires})
    RETURNING id, created_at, expires_at`;
  tx.event({
    action: 'token.issue',
    targetType: 'token',
    targetId: r!.id,
    effect: { token_id: Number(r!.id), user_id: Number(user.id) },
    after: { id: Number(r!.id), userId: Number(user.id), account: user.account, kind: o.kind, issuedVia: o.via, parentJti: o.parentJti ?? null, expiresDate: r!.expires_at.toISOString() },
  });
  return { token, ...r! };
}
