// Effective permissions: the closures over roles and departments that decide which
// authorizations of a service reach a user. Pure functions over lookups, so they serve both the
// in-memory decision state and any caller holding rows.

/**
 * A user's roles: the roles they are a direct subject of, closed over `child_ids` (a role
 * inherits its child roles). `inOrg` filters out roles of orgs the user is not a member of.
 * Cycle-safe: each role is visited once.
 */
export function roleClosure(
  direct: Iterable<string>,
  childrenOf: (roleId: string) => Iterable<string> | undefined,
  inOrg: (roleId: string) => boolean,
): string[] {
  const seen = new Set<string>();
  const stack: string[] = [];
  for (const r of direct) if (inOrg(r) && !seen.has(r)) seen.add(r), stack.push(r);
  while (stack.length) {
    const r = stack.pop()!;
    const kids = childrenOf(r);
    if (!kids) continue;
    for (const c of kids) if (!seen.has(c) && inOrg(c)) seen.add(c), stack.push(c);
  }
  return [...seen];
}

export interface DepartmentLink {
  superId: string | null;
  /** `perm_inherit = 'to_super'`: this department inherits the authorizations of its super. */
  toSuper: boolean;
}

/**
 * A user's departments: each one they belong to, plus every ancestor reached by walking up while
 * the current department inherits from its super (`to_super`); a `to_children` department stops
 * the walk. Cycle-safe.
 */
export function departmentClosure(
  direct: Iterable<string>,
  department: (id: string) => DepartmentLink | undefined,
  inOrg: (id: string) => boolean,
): string[] {
  const seen = new Set<string>();
  for (const d of direct) {
    if (!inOrg(d)) continue;
    let cur: string | null = d;
    while (cur !== null && !seen.has(cur)) {
      const link = department(cur);
      if (!link) break;
      seen.add(cur);
      cur = link.toSuper ? link.superId : null;
    }
  }
  return [...seen];
}

export interface ServiceAuthIndex {
  /** objectId → perm mask, per object type. */
  readonly USER: ReadonlyMap<string, number>;
  readonly DEPT: ReadonlyMap<string, number>;
  readonly GROUP: ReadonlyMap<string, number>;
  readonly APP: ReadonlyMap<string, number>;
}

/** The OR of the service's authorizations for the user, their roles and departments. */
export function userMaskFrom(index: ServiceAuthIndex | undefined, userId: string, roles: readonly string[], depts: readonly string[]): number {
  if (!index) return 0;
  let m = index.USER.get(userId) ?? 0;
  if (index.GROUP.size) for (const r of roles) m |= index.GROUP.get(r) ?? 0;
  if (index.DEPT.size) for (const d of depts) m |= index.DEPT.get(d) ?? 0;
  return m;
}
