// The proxy's control headers (spec §1.5.1) and the outbound header set (§1.5.2).
import type { IncomingRequest } from '../http/types.ts';
import { HttpError } from '../api/respond.ts';

export type ProxyType = 'discovery' | 'supervisor' | 'operations' | 'forward';
const TYPES: readonly ProxyType[] = ['discovery', 'supervisor', 'operations', 'forward'];

export interface ProxyControl {
  type: ProxyType;
  clusterId?: string;
  nodeId?: string;
  serviceName?: string;
  acceptVersion?: string;
  instanceId?: string;
  idempotent: boolean;
  timeoutMs: number;
  /** Proxy-Authorization (or an alias) with its scheme stripped. */
  proxyToken?: string;
}

/** DEFAULT_IDEMPOTENT_METHODS (spec Appendix A). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** Canonical name first: it wins over an alias when both are sent. */
function pick(req: IncomingRequest, ...names: string[]): string | undefined {
  for (const n of names) {
    const v = req.header(n);
    if (v !== undefined && v !== '') return v;
  }
  return undefined;
}

/** `"<scheme> <token>"` or a bare token; the second whitespace-separated part wins. */
export function stripScheme(value: string | undefined): string | undefined {
  if (!value) return undefined;
  const parts = value.trim().split(/\s+/);
  return parts.length > 1 ? parts[1] : parts[0];
}

export function parseControl(req: IncomingRequest, defaultTimeout: number, maxTimeout: number): ProxyControl {
  const type = pick(req, 'x-utilmeta-proxy-type', 'x-proxy-type');
  if (type === undefined) {
    throw new HttpError(400, `missing X-UtilMeta-Proxy-Type header: expected one of ${TYPES.join(', ')}`);
  }
  const t = type.trim().toLowerCase() as ProxyType;
  if (!TYPES.includes(t)) throw new HttpError(400, `unknown X-UtilMeta-Proxy-Type '${type}': expected one of ${TYPES.join(', ')}`);
  let idempotent = IDEMPOTENT.has(req.method);
  const idem = pick(req, 'x-utilmeta-operation-idempotent', 'x-operation-idempotent');
  if (idem !== undefined) {
    const l = idem.trim().toLowerCase();
    if (['1', 'true', 'yes', 'on'].includes(l)) idempotent = true;
    else if (['0', 'false', 'no', 'off'].includes(l)) idempotent = false;
    else throw new HttpError(400, `invalid X-UtilMeta-Operation-Idempotent '${idem}': expected true or false`);
  }
  let timeout = defaultTimeout;
  const rawTimeout = pick(req, 'x-utilmeta-request-timeout', 'x-request-timeout');
  if (rawTimeout !== undefined) {
    const n = Number(rawTimeout);
    if (!Number.isFinite(n) || n <= 0) throw new HttpError(400, `invalid X-UtilMeta-Request-Timeout '${rawTimeout}': expected a positive number of seconds`);
    // §6.15: the original had no upper bound.
    timeout = Math.min(n, maxTimeout);
  }
  return {
    type: t,
    clusterId: pick(req, 'x-utilmeta-cluster-id', 'x-cluster-id'),
    nodeId: pick(req, 'x-utilmeta-node-id', 'x-node-id'),
    serviceName: pick(req, 'x-utilmeta-service-name', 'x-service-name'),
    acceptVersion: pick(req, 'x-utilmeta-accept-version', 'x-accept-version'),
    instanceId: pick(req, 'x-utilmeta-instance-id', 'x-instance-id'),
    idempotent,
    timeoutMs: timeout * 1000,
    proxyToken: stripScheme(pick(req, 'proxy-authorization', 'x-utilmeta-proxy-token', 'x-proxy-token')),
  };
}

/**
 * Inbound headers that never go upstream:
 * - hop-by-hop (RFC 9110) and proxy credentials;
 * - content-length is kept only while the body passes unchanged (handled by the caller);
 * - host: the upstream gets its own (§6.9);
 * - client-address headers: the proxy sets X-Forwarded-For itself (§6.10, §6.19);
 * - the token-carrying alias x-proxy-token (§6.8) and the consumed x-proxy-type alias.
 * Any `x-utilmeta-*` header is dropped too (§1.5.2) except the log options
 * services understand (§6.7); the connection key is dropped on purpose, since
 * local-network shortcuts must never apply through the proxy.
 */
const DROP = new Set([
  'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer',
  'trailers', 'transfer-encoding', 'upgrade', 'host', 'x-forwarded-for', 'x-real-ip', 'remote-addr', 'remote_addr',
  'x-proxy-token', 'x-proxy-type', 'expect',
]);
const KEEP_UTILMETA = new Set(['x-utilmeta-log-options']);

/** Flat [name, value, ...] list for undici; `extra` entries override same-named inbound ones. */
export function outboundHeaders(req: IncomingRequest, keepContentLength: boolean, extra: Array<[string, string]>, forwardedFor: string): string[] {
  const out: string[] = [];
  const connectionListed = req.header('connection');
  const listed = connectionListed ? new Set(connectionListed.toLowerCase().split(',').map((s) => s.trim())) : null;
  const overridden = extra.length ? new Set(extra.map(([k]) => k)) : null;
  for (const [name, value] of req.headers) {
    if (DROP.has(name)) continue;
    if (name.charCodeAt(0) === 120 /* x */ && name.startsWith('x-utilmeta-') && !KEEP_UTILMETA.has(name)) continue;
    if (name === 'content-length' && !keepContentLength) continue;
    if (listed?.has(name)) continue;
    if (overridden?.has(name)) continue;
    out.push(name, value);
  }
  for (const [k, v] of extra) out.push(k, v);
  out.push('x-forwarded-for', forwardedFor);
  return out;
}
