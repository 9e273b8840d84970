// A principal's service authorizations rendered the directory's way:
// `[{res_key: "utilmeta_service_<id>", actions: ["VIEW", …]}]`.
import type { Q } from './directory-common.ts';

/** Permission bits, in their wire order (ADD=1 … EXPORT=256). */
export const PERMISSIONS = ['ADD', 'VIEW', 'MODIFY', 'DELETE', 'TEST', 'GRANT', 'SHARE', 'RELEASE', 'EXPORT'] as const;

export const maskActions = (mask: number) => PERMISSIONS.filter((_, i) => (mask & (1 << i)) !== 0);

export async function permissionsFor(q: Q, column: 'role_id' | 'department_id', id: string | number): Promise<{ res_key: string; actions: string[] }[]> {
  const rows = await q<{ service_id: string; perm_mask: number }[]>`
    SELECT service_id, perm_mask FROM authz_service_auth WHERE ${q(column)} = ${id} ORDER BY service_id`;
  return rows.map((r) => ({ res_key: `utilmeta_service_${r.service_id}`, actions: maskActions(r.perm_mask) }));
}

/** The same for many principals in one query, keyed by their id. */
export async function permissionsForMany(q: Q, column: 'role_id' | 'department_id', ids: readonly string[]): Promise<Map<string, { res_key: string; actions: string[] }[]>> {
  const out = new Map<string, { res_key: string; actions: string[] }[]>();
  if (!ids.length) return out;
  const rows = await q<{ owner: string; service_id: string; perm_mask: number }[]>`
    SELECT ${q(column)} AS owner, service_id, perm_mask FROM authz_service_auth
    WHERE ${q(column)} = ANY(${q.array([...ids], 20)}) ORDER BY service_id`;
  for (const r of rows) {
    out.set(r.owner, [...(out.get(r.owner) ?? []), { res_key: `utilmeta_service_${r.service_id}`, actions: maskActions(r.perm_mask) }]);
  }
  return out;
}
