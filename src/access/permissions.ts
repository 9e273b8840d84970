// Service permissions as a bitmask. The bit order is the order the Services Authorization API
// lists its enum in; it is stored in `authz_service_auth.perm_mask`, so it must never change.

import { invalid } from '../core/errors.ts';

export const PERMISSIONS = ['ADD', 'VIEW', 'MODIFY', 'DELETE', 'TEST', 'GRANT', 'SHARE', 'RELEASE', 'EXPORT'] as const;
export type Permission = (typeof PERMISSIONS)[number];

export const PERM: Readonly<Record<Permission, number>> = Object.freeze({
  ADD: 1,
  VIEW: 2,
  MODIFY: 4,
  DELETE: 8,
  TEST: 16,
  GRANT: 32,
  SHARE: 64,
  RELEASE: 128,
  EXPORT: 256,
});

export const ALL_PERMISSIONS = 511;
/** Management rights: never held by an APP authorization, and no data access by themselves. */
export const MANAGEMENT_MASK = PERM.GRANT | PERM.SHARE | PERM.RELEASE;

/** The per-API overrides an API may carry (`authz_api.permission`). */
export const API_PERMISSIONS = ['VIEW', 'ADD', 'MODIFY', 'DELETE', 'EXPORT'] as const;
export type ApiPermission = (typeof API_PERMISSIONS)[number];

const BY_NAME = new Map<string, number>(PERMISSIONS.map((p) => [p, PERM[p]]));

export function isPermission(name: unknown): name is Permission {
  return typeof name === 'string' && BY_NAME.has(name);
}

export function isApiPermission(name: unknown): name is ApiPermission {
  return typeof name === 'string' && (API_PERMISSIONS as readonly string[]).includes(name);
}

export function isValidMask(mask: unknown): mask is number {
  return typeof mask === 'number' && Number.isInteger(mask) && mask >= 1 && mask <= ALL_PERMISSIONS;
}

/** Names of the bits set in `mask`, in bit order (ADD first, EXPORT last; other bits ignored). */
export function maskToNames(mask: number): Permission[] {
  const out: Permission[] = [];
  for (const p of PERMISSIONS) if (mask & PERM[p]) out.push(p);
  return out;
}

/**
 * Parses a list of permission names into a mask. Names are case-sensitive, duplicates are
 * ignored; an unknown name, a non-string, a non-array or an empty list is a PARAM_INVALID
 * naming the field (and the index of the bad element).
 */
export function namesToMask(names: unknown, field = 'permissions'): number {
  if (!Array.isArray(names)) throw invalid(`${field} must be an array of permission names`, { code: 'PARAM_INVALID', field });
  if (names.length === 0) throw invalid(`${field} must not be empty`, { code: 'PARAM_INVALID', field });
  let mask = 0;
  for (let i = 0; i < names.length; i++) {
    const n = names[i];
    const bit = typeof n === 'string' ? BY_NAME.get(n) : undefined;
    if (bit === undefined) {
      const shown = typeof n === 'string' ? `'${n.slice(0, 40)}'` : typeof n;
      throw invalid(`${field}[${i}]: unknown permission ${shown}; expected one of ${PERMISSIONS.join(', ')}`, {
        code: 'PARAM_INVALID',
        field: `${field}[${i}]`,
      });
    }
    mask |= bit;
  }
  return mask;
}

/** Parses one permission name (e.g. a path parameter); PARAM_INVALID naming `field` otherwise. */
export function parsePermission(name: unknown, field = 'permission'): Permission {
  if (isPermission(name)) return name;
  const shown = typeof name === 'string' ? `'${name.slice(0, 40)}'` : typeof name;
  throw invalid(`${field}: unknown permission ${shown}; expected one of ${PERMISSIONS.join(', ')}`, { code: 'PARAM_INVALID', field });
}

/** The permission a method needs by default: GET/HEAD VIEW, POST ADD, DELETE DELETE, anything else MODIFY. */
export function permissionForMethod(method: string): Permission {
  switch (method.toUpperCase()) {
    case 'GET':
    case 'HEAD':
      return 'VIEW';
    case 'POST':
      return 'ADD';
    case 'DELETE':
      return 'DELETE';
    default:
      return 'MODIFY';
  }
}

/** Required permission for a call: the API's override when it has one, otherwise by method. */
export function requiredPermission(method: string, override?: ApiPermission | null): Permission {
  return override ?? permissionForMethod(method);
}
