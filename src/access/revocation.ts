// Edge revocation of platform JWTs: revoked `jti`s are recorded in
// authz_revoked_jti with a `jti.revoke` event, so every node refuses them for
// supervisor and operations traffic from the event alone, and user tokens
// exchanged from those JWTs (their parent_jti) are revoked in the same
// transaction.
import { DomainError } from '../core/errors.ts';
import { revokeTokens } from './credentials.ts';
import type { AuthzActor, AuthzStore } from './store.ts';

export interface RevokeJtisOptions {
  /** The tokens' `exp` (epoch seconds), for all or per jti, when known; an unknown one is kept for one day. */
  exp?: number | null | ReadonlyMap<string, number>;
  /** The platform node the tokens were issued for. */
  nodeId?: string | null;
  actor?: AuthzActor;
}

export interface RevokedJtis {
  /** The jtis recorded (deduplicated). */
  jtis: string[];
  /** Ids of the exchanged user tokens revoked with them. */
  tokenIds: string[];
}

const MAX_JTI = 200;
// Events must fit a NOTIFY payload; a long list is split over several events of the one transaction.
const EFFECT_BUDGET = 5000;

/** Records revoked jtis and revokes the tokens exchanged from them; one transaction, one or more `jti.revoke` events. */
export async function recordRevokedJtis(store: AuthzStore, jtis: readonly unknown[], opts: RevokeJtisOptions = {}): Promise<RevokedJtis> {
  if (!Array.isArray(jtis)) throw new DomainError('invalid', 'jtis: must be an array of token ids', { code: 'PARAM_INVALID', field: 'jtis' });
  jtis.forEach((j, i) => {
    if (typeof j !== 'string' || j === '' || j.length > MAX_JTI) {
      throw new DomainError('invalid', `jtis[${i}]: must be a token id of 1 to ${MAX_JTI} characters`, { code: 'PARAM_INVALID', field: `jtis[${i}]` });
    }
  });
  const list = [...new Set(jtis as string[])];
  if (list.length === 0) return { jtis: [], tokenIds: [] };
  const expOf = (j: string): number | null => {
    const v = opts.exp instanceof Map ? opts.exp.get(j) : opts.exp;
    if (v === undefined || v === null) return null;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new DomainError('invalid', 'exp: must be epoch seconds', { code: 'PARAM_INVALID', field: 'exp' });
    return Math.ceil(v);
  };
  const known = list.map(expOf);
  const actor: AuthzActor = opts.actor ?? { type: 'PLATFORM', id: opts.nodeId ?? null, credential: null };
  const { result } = await store.write(actor, async (tx) => {
    // An unknown exp is kept for one day, by the database's clock.
    const [{ dflt }] = (await tx.sql<{ dflt: number }[]>`SELECT ceil(extract(epoch FROM now() + interval '1 day'))::float8 AS dflt`) as unknown as [{ dflt: number }];
    const exps = known.map((e) => e ?? dflt);
    await tx.sql`
      INSERT INTO authz_revoked_jti (jti, node_id, expires_at)
      SELECT j, ${opts.nodeId ?? null}, to_timestamp(e) FROM unnest(${list}::text[], ${exps}::float8[]) AS t(j, e)
      ON CONFLICT (jti) DO UPDATE SET expires_at = greatest(authz_revoked_jti.expires_at, excluded.expires_at)`;
    // One event per expiry and per NOTIFY-sized chunk.
    const groups = new Map<number, string[]>();
    list.forEach((j, i) => {
      const g = groups.get(exps[i]!);
      if (g) g.push(j);
      else groups.set(exps[i]!, [j]);
    });
    for (const [exp, group] of groups) {
      let chunk: string[] = [];
      let size = 0;
      const flush = () => {
        if (chunk.length === 0) return;
        const targetId = chunk.length === 1 ? chunk[0]!.slice(0, 64) : `${chunk[0]!.slice(0, 40)}+${chunk.length - 1}`;
        tx.event({ action: 'jti.revoke', targetType: 'jti', targetId, effect: { jtis: chunk, exp } });
        chunk = [];
        size = 0;
      };
      for (const j of group) {
        if (size + j.length + 3 > EFFECT_BUDGET) flush();
        chunk.push(j);
        size += j.length + 3;
      }
      flush();
    }
    const tokenIds = await revokeTokens(tx, tx.sql`parent_jti = ANY(${list}::text[])`);
    return { jtis: list, tokenIds };
  });
  return result;
}
