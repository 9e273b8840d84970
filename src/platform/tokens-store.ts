// AccessToken bookkeeping in `utilmeta_access_token` (spec §4.3; `py:utilmeta/ops/api/__init__.py`
// handle_token and `py:utilmeta/ops/api/token.py` revoke), written like Django writes it.
//
// Differences from the original, on purpose:
// * a missing or non-numeric `iat`/`exp` stores NULL instead of crashing (datetime.fromtimestamp(None) → 500);
// * two concurrent first uses of one token under the same issuer count as two uses instead of
//   the loser getting "id duplicated" (the original's IntegrityError path);
// * revoking an id that another issuer already owns skips it instead of failing with a 500.

import { isIP } from 'node:net';
import type postgres from 'postgres';
import { parseScope } from '../tokens/jwt.ts';
import { dumpsJs } from '../pyjson/index.ts';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnySql = postgres.Sql<any>;

/** The claims bookkeeping reads (a verified token's claims fit). */
export interface TokenUseClaims {
  readonly jti?: unknown;
  readonly iat?: unknown;
  readonly exp?: unknown;
  readonly sub?: unknown;
  readonly scope?: unknown;
}

export type RecordUseResult =
  | { ok: true; tokenId: string; created: boolean }
  | { ok: false; status: 400; state: 'token_expired'; message: string };

const MAX_TOKEN_ID = 200; // varchar(200)
const MAX_SUBJECT = 500; // varchar(500)
const DAY_MS = 24 * 3600 * 1000;

/** Epoch seconds → Date; anything else → null. */
function epochDate(v: unknown): Date | null {
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  if (!Number.isFinite(n)) return null;
  const d = new Date(n * 1000);
  return Number.isNaN(d.getTime()) ? null : d;
}

export class AccessTokenStore {
  private readonly now: () => Date;

  constructor(
    readonly sql: AnySql,
    opts: { now?: () => Date } = {},
  ) {
    this.now = opts.now ?? (() => new Date());
  }

  /**
   * One validated request with a token of supervisor `issuerId` (its row id) from client `ip`.
   * First use creates the row (used_times 1); later uses increment used_times and set
   * last_activity. A revoked token, or a jti already recorded under another issuer, is refused
   * with the original's 400 / `token_expired`.
   */
  async recordUse(issuerId: string, claims: TokenUseClaims, ip: string | null): Promise<RecordUseResult> {
    const jti = claims.jti;
    if (typeof jti !== 'string' || !jti) return refuse('Invalid token: id required');
    if (jti.length > MAX_TOKEN_ID) return refuse('Invalid token: id too long');
    const now = this.now();

    // Two rounds at most: the second only runs when a concurrent request inserted the row between our steps.
    for (let round = 0; round < 2; round++) {
      const bumped = await this.sql`
        UPDATE utilmeta_access_token SET used_times = used_times + 1, last_activity = ${now}
        WHERE token_id = ${jti} AND issuer_id = ${issuerId} AND revoked = false
        RETURNING id`;
      if (bumped.length) return { ok: true, tokenId: jti, created: false };

      const [other] = await this.sql<{ issuer_id: string; revoked: boolean }[]>`
        SELECT issuer_id, revoked FROM utilmeta_access_token WHERE token_id = ${jti}`;
      if (other) {
        if (String(other.issuer_id) !== String(issuerId)) return refuse('Invalid token: id duplicated');
        if (other.revoked) return refuse('Invalid token: revoked');
        continue; // appeared un-revoked between the two statements: count this use on it
      }

      const sub = typeof claims.sub === 'string' ? claims.sub.slice(0, MAX_SUBJECT) : null;
      const scope = dumpsJs(parseScope(typeof claims.scope === 'string' ? claims.scope : null).scopes);
      const addr = ip && isIP(ip) ? ip : null;
      const inserted = await this.sql`
        INSERT INTO utilmeta_access_token (token_id, issued_at, subject, expiry_time, last_activity, used_times, ip, scope, revoked, issuer_id)
        VALUES (${jti}, ${epochDate(claims.iat)}, ${sub}, ${epochDate(claims.exp)}, ${now}, 1, ${addr}::inet, ${scope}::text::jsonb, false, ${issuerId})
        ON CONFLICT (token_id) DO NOTHING
        RETURNING id`;
      if (inserted.length) return { ok: true, tokenId: jti, created: true };
    }
    return refuse('Invalid token: id duplicated');

    function refuse(message: string): RecordUseResult {
      return { ok: false, status: 400, state: 'token_expired', message };
    }
  }

  /**
   * `POST {ops_api}/token/revoke`: this issuer's rows among `jtis` are revoked; unknown ids get
   * pre-revoked rows expiring in a day. Returns the number of rows that existed before.
   */
  async revoke(issuerId: string, jtis: readonly string[]): Promise<number> {
    const ids = [...new Set(jtis.filter((j) => typeof j === 'string' && j.length > 0 && j.length <= MAX_TOKEN_ID))];
    if (!ids.length) return 0;
    const now = this.now();
    const expiry = new Date(now.getTime() + DAY_MS);
    return (await this.sql.begin(async (tx) => {
      const existing = await tx<{ token_id: string }[]>`
        SELECT token_id FROM utilmeta_access_token
        WHERE token_id = ANY(${tx.array(ids, 25)}) AND issuer_id = ${issuerId}
        FOR UPDATE`;
      const known = new Set(existing.map((r) => r.token_id));
      for (const id of ids) {
        if (known.has(id)) continue;
        await tx`
          INSERT INTO utilmeta_access_token (token_id, issued_at, subject, expiry_time, last_activity, used_times, ip, scope, revoked, issuer_id)
          VALUES (${id}, NULL, NULL, ${expiry}, NULL, 0, NULL, '[]'::jsonb, true, ${issuerId})
          ON CONFLICT (token_id) DO NOTHING`;
      }
      if (existing.length) {
        await tx`
          UPDATE utilmeta_access_token SET revoked = true
          WHERE token_id = ANY(${tx.array(ids, 25)}) AND issuer_id = ${issuerId}`;
      }
      return existing.length;
    })) as number;
  }
}
