// Client for the UtilMeta platform ("supervisor") API, spec §3.1-§3.4, on undici.
//
// Wire behaviour copies UtilMeta's SupervisorClient (`py:utilmeta/ops/spv/client.py`), because
// the platform is not ours to change:
// * header names with exactly that casing, in UtilMeta's order (X-Access-Key, X-Cluster-Key,
//   X-Cluster-Id, X-Node-ID, X-Node-Key, X-Service-ID); key values are the decoded JWK JSON;
// * a body is the Python `json.dumps` bytes, encrypted as a flattened JWE to the first available
//   key (node > cluster > access), sent with `content-type: application/json`;
// * redirects are followed; the answer is the `{result, msg, state, count}` envelope, and any
//   status < 400 (304 included) is a success.
// Added on top of the original (which had neither): per-attempt timeouts and retries with
// exponential backoff + jitter for network errors and 5xx (never 4xx).

import pRetry, { AbortError } from 'p-retry';
import type { Logger } from 'pino';
import { getGlobalDispatcher, interceptors, request, type Dispatcher } from 'undici';
import { parseJwk } from '../tokens/keys.ts';
import { dumpsJs } from '../pyjson/index.ts';
import { encryptBody } from './jwe.ts';
import { checkSupervisorUrl, type TrustPolicy } from './trust.ts';

// ---- wire types (spec §3.3) ------------------------------------------------------------------

/** `SupervisorData`: add_node result and the `POST {ops_api}/` callback body. */
export interface SupervisorData {
  node_id: string;
  url?: string | null;
  public_key?: string | null;
  ops_api: string;
  ident?: string | null;
  base_url?: string | null;
  backup_urls?: string[];
  init_key?: string | null;
  local?: boolean;
}

/** One entry of `ResourcesData.resources`. */
export interface ResourceData {
  remote_id: string;
  server_id?: string | null;
  type: string;
  ident: string;
  route: string;
  ref?: string | null;
  data?: unknown;
}

/** 2.9 `SupervisorSyncData`; absent keys were not sent (utype defer_default). */
export interface SupervisorSyncData {
  node_id: string;
  url?: string | null;
  resources_etag?: string | null;
  heartbeat_interval?: number | null;
  settings?: unknown;
  alert_settings?: unknown;
  report_settings?: unknown;
}

/** ≤2.8.1 upload result. */
export interface ResourcesData28 {
  url?: string | null;
  resources: ResourceData[];
  resources_etag?: string | null;
}

/** 2.9 upload result. */
export interface ResourcesData29 {
  resources: ResourceData[];
  supervisor: SupervisorSyncData;
}

export type ResourcesData = ResourcesData28 | ResourcesData29;

export interface SupervisorInfo {
  utilmeta: string;
  supervisor: string;
  timestamp: number;
}

// ---- client ----------------------------------------------------------------------------------

/** JSON text to send verbatim (no re-serialization; spec §6.21). */
export class RawJson {
  constructor(readonly text: string) {}
}

/** A request body: RawJson, a parsed PyValue, or a plain JS value (serialized like Python's json.dumps). */
export type JsonBody = RawJson | unknown;

export interface RetryTiming {
  /** Delay before the first retry (default 500 ms). */
  minTimeoutMs: number;
  /** Cap of a single delay (default 8000 ms). */
  maxTimeoutMs: number;
  /** Exponential factor (default 2). */
  factor: number;
  /** Multiply each delay by a random factor in [1, 2) (default true): jitter against thundering herds. */
  randomize: boolean;
}

export const DEFAULT_RETRY_TIMING: RetryTiming = { minTimeoutMs: 500, maxTimeoutMs: 8000, factor: 2, randomize: true };

export interface SupervisorClientOptions {
  /** e.g. https://api.utilmeta.com/spv; '/' means the base URL itself, '/resources' → base + '/resources'. */
  baseUrl: string;
  /** Checked in the constructor, i.e. before any request. */
  trust: TrustPolicy;
  nodeId?: string;
  /** Node public key (JWK JSON or base64 of it). */
  nodeKey?: string;
  clusterKey?: string;
  clusterId?: string;
  accessKey?: string;
  serviceId?: string;
  /** Per attempt, covering connect, headers and body (default 15000). */
  timeoutMs?: number;
  /** Retries after the first attempt (default 3). */
  retries?: number;
  /** Backoff timings; tests make them short. */
  retryTiming?: Partial<RetryTiming>;
  /** Redirects to follow (default 5; 0 disables). */
  maxRedirections?: number;
  dispatcher?: Dispatcher;
  log?: Logger;
}

export interface CallOptions {
  retries?: number;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface SupervisorResponse<T = unknown> {
  status: number;
  /** status < 400, so 304 counts (UtilMeta's `success`). */
  ok: boolean;
  notModified: boolean;
  result: T;
  msg: string;
  state: unknown;
  count: number;
  /** The response body text as received. */
  raw: string;
}

export class SupervisorError extends Error {
  override readonly name = 'SupervisorError';
  /** HTTP status; undefined for network errors and timeouts. */
  readonly status?: number;
  readonly state?: unknown;
  /** The envelope's `msg`. */
  readonly platformMsg?: string;
  readonly response?: SupervisorResponse;
  /** True when the attempt ended by our timeout. */
  readonly timedOut: boolean;
  /** False when the request certainly never reached the platform (connection not established). */
  readonly delivered: boolean;

  constructor(
    message: string,
    opts: { status?: number; state?: unknown; platformMsg?: string; response?: SupervisorResponse; cause?: unknown; timedOut?: boolean; delivered?: boolean } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.status = opts.status;
    this.state = opts.state;
    this.platformMsg = opts.platformMsg;
    this.response = opts.response;
    this.timedOut = opts.timedOut ?? false;
    this.delivered = opts.delivered ?? true;
  }
}

/**
 * A platform key as UtilMeta sends it in headers and stores as init_key: a value that looks like
 * `{…}` is kept as is, anything else is standard-base64-decoded (`py:utilmeta/ops/spv/key.py:17-21`).
 * Throws KeyError when a non-JSON value is not base64 of a JWK.
 */
export function decodeKeyText(value: string): string {
  const t = value.trim();
  if (t.startsWith('{') && t.endsWith('}')) return t;
  parseJwk(t); // validates (throws a KeyError naming the problem)
  return Buffer.from(t.replace(/\s+/g, ''), 'base64').toString('utf8').trim();
}

/** UtilMeta's url_join for the supervisor paths used here: '/' is the base itself. */
export function supervisorUrl(baseUrl: string, path: string): string {
  const base = baseUrl.replace(/\/+$/, '');
  const p = path.replace(/^\/+/, '');
  return p ? `${base}/${p}` : base;
}

// Errors for which the request was certainly not delivered (no connection was made).
const NOT_DELIVERED_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT']);

interface Envelope {
  result: unknown;
  msg: string;
  state: unknown;
  count: number;
}

/** The `{result, msg, state, count}` envelope; tolerant of empty or non-JSON bodies (proxies, 502 pages). */
function parseEnvelope(text: string): Envelope {
  const empty: Envelope = { result: null, msg: '', state: null, count: 0 };
  if (!text.trim()) return empty;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return empty;
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return empty;
  const o = v as Record<string, unknown>;
  return {
    result: o.result ?? null,
    msg: typeof o.msg === 'string' ? o.msg : o.msg == null ? '' : String(o.msg),
    state: o.state ?? null,
    count: typeof o.count === 'number' ? o.count : 0,
  };
}

function snippet(text: string, max = 200): string {
  const s = text.replace(/\s+/g, ' ').trim();
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

export class SupervisorClient {
  readonly baseUrl: string;
  readonly nodeId?: string;
  /** Decoded key texts (what goes into the headers). */
  readonly nodeKey?: string;
  readonly clusterKey?: string;
  readonly accessKey?: string;
  private readonly headers: Record<string, string>;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly timing: RetryTiming;
  private readonly dispatcher: Dispatcher;
  private readonly log?: Logger;

  constructor(opts: SupervisorClientOptions) {
    // Before anything else: an untrusted URL must never receive a request (spec §3.1).
    checkSupervisorUrl(opts.baseUrl, opts.trust);
    this.baseUrl = opts.baseUrl.replace(/\/+$/, '');
    this.nodeId = opts.nodeId || undefined;
    this.nodeKey = opts.nodeKey ? decodeKeyText(opts.nodeKey) : undefined;
    this.clusterKey = opts.clusterKey ? decodeKeyText(opts.clusterKey) : undefined;
    this.accessKey = opts.accessKey ? decodeKeyText(opts.accessKey) : undefined;
    // Insertion order = wire order = UtilMeta's order.
    const h: Record<string, string> = {};
    if (this.accessKey) h['X-Access-Key'] = this.accessKey;
    if (this.clusterKey) h['X-Cluster-Key'] = this.clusterKey;
    if (opts.clusterId) h['X-Cluster-Id'] = opts.clusterId;
    if (this.nodeId) h['X-Node-ID'] = this.nodeId;
    if (this.nodeKey) h['X-Node-Key'] = this.nodeKey;
    if (opts.serviceId) h['X-Service-ID'] = opts.serviceId;
    this.headers = h;
    this.timeoutMs = opts.timeoutMs ?? 15000;
    this.retries = opts.retries ?? 3;
    this.timing = { ...DEFAULT_RETRY_TIMING, ...opts.retryTiming };
    const maxRedirections = opts.maxRedirections ?? 5;
    const base = opts.dispatcher ?? getGlobalDispatcher();
    this.dispatcher = maxRedirections > 0 ? base.compose(interceptors.redirect({ maxRedirections })) : base;
    this.log = opts.log;
  }

  /** The key a body is encrypted to: node > cluster > access (`process_request`). */
  get encryptionKey(): string | undefined {
    return this.nodeKey ?? this.clusterKey ?? this.accessKey;
  }

  // ---- methods (spec §3.2) -------------------------------------------------------------------

  /**
   * POST / with NodeMetadata. Result: SupervisorData, or null when the platform's callback
   * already saved the supervisor. Not retried once the request may have been delivered: a second
   * add_node would create a second node and its callback would find the placeholder consumed.
   */
  addNode(metadata: JsonBody, opts?: CallOptions): Promise<SupervisorResponse<SupervisorData | null>> {
    return this.call('POST', '/', { body: metadata }, { ...opts, onlyUndelivered: true });
  }

  /** DELETE / → the deleted node id. A `node_not_exists` state arrives as SupervisorError.state. */
  deleteNode(opts?: CallOptions): Promise<SupervisorResponse<string>> {
    return this.call('DELETE', '/', {}, opts);
  }

  /**
   * POST /resources. A string is the already-serialized ResourcesSchema JSON and is sent verbatim
   * (so etags computed over it match what the platform receives); other values are serialized.
   * Result: ResourcesData (either shape), or null with `notModified` on 304.
   */
  uploadResources(resources: string | JsonBody, opts?: CallOptions): Promise<SupervisorResponse<ResourcesData | null>> {
    const body = typeof resources === 'string' ? new RawJson(resources) : resources;
    return this.call('POST', '/resources', { body }, opts);
  }

  getSupervisors(opts?: CallOptions): Promise<SupervisorResponse<Array<{ base_url: string; ident: string }>>> {
    return this.call('GET', '/list', {}, opts);
  }

  getInfo(opts?: CallOptions): Promise<SupervisorResponse<SupervisorInfo>> {
    return this.call('GET', '/', {}, opts);
  }

  reportAnalytics(report: JsonBody, opts?: CallOptions): Promise<SupervisorResponse<{ id: string; created_records?: number }>> {
    return this.call('POST', '/report', { body: report }, opts);
  }

  batchReportAnalytics(reports: JsonBody, opts?: CallOptions): Promise<SupervisorResponse<Array<{ id?: string; error?: string }>>> {
    return this.call('POST', '/report/batch', { body: reports }, opts);
  }

  alertIncident(alert: JsonBody, opts?: CallOptions): Promise<SupervisorResponse<{ id: string; status?: string }>> {
    return this.call('POST', '/alert', { body: alert }, opts);
  }

  recoverIncident(event: JsonBody, opts?: CallOptions): Promise<SupervisorResponse<Record<string, unknown>>> {
    return this.call('POST', '/alert/recovery', { body: event }, opts);
  }

  /** POST /heartbeat without a body. */
  heartbeat(opts?: CallOptions): Promise<SupervisorResponse<unknown>> {
    return this.call('POST', '/heartbeat', {}, opts);
  }

  // ---- transport -----------------------------------------------------------------------------

  /** The exact plaintext bytes of a body. */
  static serialize(body: JsonBody): string {
    return body instanceof RawJson ? body.text : dumpsJs(body);
  }

  private async call<T>(
    method: string,
    path: string,
    spec: { body?: JsonBody },
    opts: CallOptions & { onlyUndelivered?: boolean } = {},
  ): Promise<SupervisorResponse<T>> {
    const url = supervisorUrl(this.baseUrl, path);
    const headers: Record<string, string> = { ...this.headers };
    let body: string | undefined;
    if (spec.body !== undefined) {
      const plaintext = SupervisorClient.serialize(spec.body);
      const key = this.encryptionKey;
      // Encrypted once: a retry resends the same JWE. Without any key UtilMeta sends plain JSON.
      try {
        body = key ? await encryptBody(plaintext, key) : plaintext;
      } catch (err) {
        throw new SupervisorError(`invalid platform key, encrypting the body of ${method} ${url} failed: ${(err as Error).message}`, {
          cause: err,
          delivered: false,
        });
      }
      headers['content-type'] = 'application/json';
    }
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const what = `${method} ${url}`;

    const attempt = async (attemptNumber: number): Promise<SupervisorResponse<T>> => {
      const timeout = AbortSignal.timeout(timeoutMs);
      const signal = opts.signal ? AbortSignal.any([timeout, opts.signal]) : timeout;
      let status: number;
      let raw: string;
      try {
        const res = await request(url, {
          method: method as Dispatcher.HttpMethod,
          headers,
          body,
          dispatcher: this.dispatcher,
          signal,
          headersTimeout: timeoutMs,
          bodyTimeout: timeoutMs,
        });
        status = res.statusCode;
        raw = await res.body.text();
      } catch (err) {
        if (opts.signal?.aborted) throw new AbortError(err instanceof Error ? err : new Error(String(err)));
        const code = (err as { code?: string }).code;
        const timedOut = timeout.aborted || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT';
        const delivered = !(code !== undefined && NOT_DELIVERED_CODES.has(code));
        const reason = timedOut ? `timed out after ${timeoutMs} ms` : `${(err as Error).message ?? String(err)}${code ? ` [${code}]` : ''}`;
        const e = new SupervisorError(`supervisor request ${what} failed: ${reason}`, { cause: err, timedOut, delivered });
        this.log?.warn({ method, url, attempt: attemptNumber, err: e.message }, 'supervisor request failed');
        throw e;
      }

      const env = parseEnvelope(raw);
      const notModified = status === 304;
      const response: SupervisorResponse<T> = {
        status,
        ok: status < 400,
        notModified,
        result: (notModified ? null : env.result) as T,
        msg: env.msg,
        state: env.state,
        count: env.count,
        raw,
      };
      if (response.ok) return response;

      const detail = env.msg || snippet(raw) || '(no message)';
      const e = new SupervisorError(`supervisor request ${what} failed with status ${status}: ${detail}`, {
        status,
        state: env.state,
        platformMsg: env.msg,
        response,
      });
      this.log?.warn({ method, url, attempt: attemptNumber, status, state: env.state, platformMsg: env.msg }, `supervisor error: ${detail}`);
      // 4xx: the platform rejected the request itself; repeating it cannot help.
      if (status < 500) throw new AbortError(e);
      throw e;
    };

    return pRetry(attempt, {
      retries: opts.retries ?? this.retries,
      factor: this.timing.factor,
      minTimeout: this.timing.minTimeoutMs,
      maxTimeout: this.timing.maxTimeoutMs,
      randomize: this.timing.randomize,
      signal: opts.signal,
      shouldRetry: ({ error }) => {
        if (!(error instanceof SupervisorError)) return false;
        if (opts.onlyUndelivered) return !error.delivered;
        return true; // network errors, timeouts and 5xx (4xx never get here: AbortError)
      },
    });
  }
}
