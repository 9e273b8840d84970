// Every call of the console goes through here: same-origin, the session cookie,
// and the X-UtilMeta-Console header without which the node ignores the cookie.

export class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly body: unknown) {
    super(message);
  }
  /** The endpoint does not exist on this node (yet). */
  get missing(): boolean {
    return this.status === 404 && isNoRoute(this.body);
  }
}

/** A 404 for the path itself (no route on this node), not a missing object of an existing route. */
export function isNoRoute(body: unknown): boolean {
  if (!body || typeof body !== 'object') return true;
  const b = body as Record<string, unknown>;
  const text = [b.error, b.msg, b.message, b.error_msg].find((v) => typeof v === 'string') as string | undefined;
  if (text !== undefined && /\bno\b.*\broute\b/i.test(text)) return true;
  return !('code' in b || 'error_code' in b || 'error' in b);
}

function messageOf(status: number, body: unknown): string {
  if (body && typeof body === 'object') {
    const b = body as Record<string, unknown>;
    for (const k of ['error', 'msg', 'error_msg', 'message', 'Message']) {
      const v = b[k];
      if (typeof v === 'string' && v !== '' && v !== 'success') return `${v}${b.code && typeof b.code === 'string' ? ` (${b.code})` : ''}${b.error_code ? ` (${String(b.error_code)})` : ''}`;
    }
  }
  return `HTTP ${status}`;
}

export async function api<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { 'X-UtilMeta-Console': '1', Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, headers, credentials: 'same-origin', body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = text;
  }
  if (!res.ok) throw new ApiError(res.status, messageOf(res.status, parsed), parsed);
  return parsed as T;
}

/** Unwraps the three management envelopes: seed-001 {code:'OK',data}, seed-004 {code:200,data}, or plain JSON. */
export function unwrap(body: unknown): unknown {
  if (body && typeof body === 'object' && 'data' in body && 'code' in body) return (body as { data: unknown }).data;
  return body;
}

/** The rows and total of a list answer, whatever the surface calls them. */
export function rowsOf(data: unknown): { rows: Record<string, unknown>[]; total: number | null } {
  if (Array.isArray(data)) return { rows: data as Record<string, unknown>[], total: null };
  if (data && typeof data === 'object') {
    const d = data as Record<string, unknown>;
    for (const k of ['list', 'records', 'items', 'users', 'roles', 'departments', 'projects', 'orgs', 'services', 'events', 'result']) {
      if (Array.isArray(d[k])) return { rows: d[k] as Record<string, unknown>[], total: typeof d.total === 'number' ? d.total : null };
    }
  }
  return { rows: [], total: null };
}

export function qs(params: Record<string, string | number | boolean | undefined | null>): string {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') u.set(k, String(v));
  const s = u.toString();
  return s ? `?${s}` : '';
}

export interface SessionUser {
  userId: string;
  account: string;
  username: string | null;
  isSuperuser: boolean;
  expiresAt: string;
}
