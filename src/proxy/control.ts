// The proxy's control headers and the outbound header set.
import type { IncomingRequest } from '../http/types.ts';
import { invalid } from '../core/errors.ts';
import { leadingWords, NameTable, nameSet } from '../core/text.ts';

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

/** The original's DEFAULT_IDEMPOTENT_METHODS. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** `"<scheme> <token>"` or a bare token; the second whitespace-separated part wins. */
export function stripScheme(value: string | undefined): string | undefined {
  if (!value) return undefined;
  const w = leadingWords(value);
  return w.count > 1 ? w.second : w.first;
}

/**
 * Control header slots: each canonical name and its aliases share a slot; the
 * lower rank wins (canonical first), then the first non-empty value.
 */
const SLOT_NAMES: ReadonlyArray<readonly [name: string, slot: number, rank: number]> = [
  ['x-utilmeta-proxy-type', 0, 0], ['x-proxy-type', 0, 1],
  ['x-utilmeta-operation-idempotent', 1, 0], ['x-operation-idempotent', 1, 1],
  ['x-utilmeta-request-timeout', 2, 0], ['x-request-timeout', 2, 1],
  ['x-utilmeta-cluster-id', 3, 0], ['x-cluster-id', 3, 1],
  ['x-utilmeta-node-id', 4, 0], ['x-node-id', 4, 1],
  ['x-utilmeta-service-name', 5, 0], ['x-service-name', 5, 1],
  ['x-utilmeta-accept-version', 6, 0], ['x-accept-version', 6, 1],
  ['x-utilmeta-instance-id', 7, 0], ['x-instance-id', 7, 1],
  ['proxy-authorization', 8, 0], ['x-utilmeta-proxy-token', 8, 1], ['x-proxy-token', 8, 2],
];
const SLOTS = 9;
const SLOT_TABLE = new NameTable(SLOT_NAMES.map(([name, slot, rank]) => [name, [slot, rank] as const] as const));

/** One pass over the headers (instead of a scan per control header and alias). */
function controlValues(req: IncomingRequest): Array<string | undefined> {
  const values: Array<string | undefined> = new Array(SLOTS);
  const ranks: number[] = [9, 9, 9, 9, 9, 9, 9, 9, 9];
  const h = req.headers;
  for (let i = 0; i < h.length; i++) {
    const pair = h[i];
    // Every control header starts with x or p: the others are not looked up at all.
    const name = pair[0];
    const c = name.charCodeAt(0);
    if (c !== 120 && c !== 112) continue;
    const e = SLOT_TABLE.get(name);
    if (e === undefined || pair[1] === '') continue;
    if (e[1] < ranks[e[0]]) {
      ranks[e[0]] = e[1];
      values[e[0]] = pair[1];
    }
  }
  return values;
}

export function parseControl(req: IncomingRequest, defaultTimeout: number, maxTimeout: number): ProxyControl {
  const v = controlValues(req);
  const type = v[0];
  if (type === undefined) {
    throw invalid(`missing X-UtilMeta-Proxy-Type header: expected one of ${TYPES.join(', ')}`);
  }
  // The constant from TYPES, not the header's string: later lookups keyed by the
  // type then hit an internalized string.
  const t = TYPES[TYPES.indexOf(type.trim().toLowerCase() as ProxyType)];
  if (t === undefined) throw invalid(`unknown X-UtilMeta-Proxy-Type '${type}': expected one of ${TYPES.join(', ')}`);
  let idempotent = IDEMPOTENT.has(req.method);
  const idem = v[1];
  if (idem !== undefined) {
    const l = idem.trim().toLowerCase();
    if (l === '1' || l === 'true' || l === 'yes' || l === 'on') idempotent = true;
    else if (l === '0' || l === 'false' || l === 'no' || l === 'off') idempotent = false;
    else throw invalid(`invalid X-UtilMeta-Operation-Idempotent '${idem}': expected true or false`);
  }
  let timeout = defaultTimeout;
  const rawTimeout = v[2];
  if (rawTimeout !== undefined) {
    const n = Number(rawTimeout);
    if (!Number.isFinite(n) || n <= 0) throw invalid(`invalid X-UtilMeta-Request-Timeout '${rawTimeout}': expected a positive number of seconds`);
    // The original had no upper bound.
    timeout = Math.min(n, maxTimeout);
  }
  return {
    type: t,
    clusterId: v[3],
    nodeId: v[4],
    serviceName: v[5],
    acceptVersion: v[6],
    instanceId: v[7],
    idempotent,
    timeoutMs: timeout * 1000,
    proxyToken: stripScheme(v[8]),
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
const DROP_NAMES = [
  'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer',
  'trailers', 'transfer-encoding', 'upgrade', 'host', 'x-forwarded-for', 'x-real-ip', 'remote-addr', 'remote_addr',
  'x-proxy-token', 'x-proxy-type', 'expect',
];
const DROPPED = nameSet(DROP_NAMES);
const KEEP_UTILMETA = nameSet(['x-utilmeta-log-options']);

/** A `umt_` user token is the proxy's credential, never meant for an upstream. */
const UMT = /^\s*(?:Bearer\s+)?umt_/i;

/**
 * Flat [name, value, ...] list for undici; `extra` entries override same-named
 * inbound ones; `strip` names consumed credential headers (a verified signature).
 */
export function outboundHeaders(req: IncomingRequest, keepContentLength: boolean, extra: Array<[string, string]>, forwardedFor: string, strip: readonly string[] | null = null): string[] {
  const out: string[] = [];
  const connectionListed = req.header('connection');
  const listed = connectionListed ? new Set(connectionListed.toLowerCase().split(',').map((s) => s.trim())) : null;
  const overridden = extra.length ? new Set(extra.map(([k]) => k)) : null;
  // At most one content-length goes upstream, whatever arrived: two would let
  // the upstream pick a different length than the one this node read.
  let lengthSent = !keepContentLength;
  for (const [name, value] of req.headers) {
    if (DROPPED.has(name)) continue;
    if (name.charCodeAt(0) === 120 /* x */ && name.startsWith('x-utilmeta-') && !KEEP_UTILMETA.has(name)) continue;
    if (name === 'content-length') {
      if (lengthSent) continue;
      lengthSent = true;
    }
    if (listed?.has(name)) continue;
    if (overridden?.has(name)) continue;
    if ((name === 'authorization' || name === 'x-auth-token') && UMT.test(value)) continue;
    if (strip !== null && strip.includes(name)) continue;
    out.push(name, value);
  }
  for (const [k, v] of extra) out.push(k, v);
  out.push('x-forwarded-for', forwardedFor);
  return out;
}
