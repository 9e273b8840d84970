// Sends one proxied request to an ordered list of candidate upstreams with
// failover, streaming both bodies. Built directly on undici's dispatch handler
// API (no Readable streams in between): response chunks go straight to the
// listener's writer, and backpressure pauses the upstream socket.
import type { Socket } from 'node:net';
import { Agent, buildConnector, type Dispatcher } from 'undici';
import { H1Agent, tcpConnector, type H1ConnectTarget, type H1Connector } from '../h1/index.ts';
import { decideRetry, parseRetryAfter } from '../health/index.ts';
import { BodyTooLargeError, type ResponseWriter } from '../http/types.ts';
import { nameSet } from '../core/text.ts';

export interface Candidate {
  /** Base URL the path is joined onto (instance base_url / ops_api / supervisor URL). */
  baseUrl: string;
  /** Instance remote_id, for X-UtilMeta-Proxy-Destination-Instance-Id. */
  remoteId?: string | null;
  /** Registry ids, for health reporting (absent for platform targets). */
  instanceId?: string;
  serviceId?: string;
}

/**
 * Told how every attempt ended: the upstream status (null when none arrived)
 * or the transport error, and the Retry-After (ms) of a 429/503 answer.
 * Health bookkeeping hangs off this.
 */
export type AttemptHook = (target: Candidate, status: number | null, error: UpstreamError | null, retryAfterMs: number | null) => void;

/** Per-request retry policy beyond the candidate list (a retry budget). */
export interface RetryPolicy {
  /** Asked before each retry that sends the request again; false stops the request with the last answer or failure. */
  allowRetry(): boolean;
}

export interface ForwardRequest {
  method: string;
  /** Path remainder after /api/proxy, '' or starting with '/', raw (not decoded). */
  path: string;
  /** Raw query string without '?'. */
  query: string;
  /** Outbound headers, flat [name, value, name, value, ...]. */
  headers: string[];
  /** null: no body; Buffer: replayable; AsyncIterable: one attempt only. */
  body: Buffer | AsyncIterable<Buffer> | null;
  idempotent: boolean;
  timeoutMs: number;
  /**
   * 'idempotent': idempotent requests fail over on network errors and retryable statuses.
   * 'unreached': any request fails over, but only when the attempt never reached the
   * upstream (refused, DNS, connect timeout) — forward mode's POSTs.
   * In both modes a non-idempotent request fails over only when the failed
   * attempt never reached the upstream: otherwise it may have had its effect.
   */
  failover?: 'idempotent' | 'unreached';
  retry?: RetryPolicy;
}

export interface ForwardOutcome {
  /** What the client got. */
  status: number;
  /** True once the upstream response head went to the client (errors after that cannot be reported). */
  committed: boolean;
  retries: number;
  /** The candidate of the final attempt (undefined when none was attempted). */
  target?: Candidate;
  /** Set when the proxy answered with its own error after upstream failures. */
  error?: UpstreamError;
  upstreamMs: number;
}

/** 'skipped': not attempted, a connection to the same origin proved it gone just before. */
export type UpstreamErrorKind = 'timeout' | 'refused' | 'reset' | 'dns' | 'protocol' | 'body_too_large' | 'client_aborted' | 'skipped' | 'other';

export class UpstreamError extends Error {
  constructor(
    readonly kind: UpstreamErrorKind, message: string, readonly baseUrl: string,
    /** The request never reached the upstream: safe to send elsewhere, whatever the method. */
    readonly unreached = false,
    /** The failure proves nothing serves there (refused, or reset before any byte on a fresh connection). */
    readonly gone = false,
  ) {
    super(message);
  }
  get status(): number {
    if (this.kind === 'timeout') return 504;
    if (this.kind === 'body_too_large') return 413;
    return 502;
  }
}

/** How long a connection failure that proves an origin gone stops new connects to it. */
const GONE_HOLD_MS = 500;
/** How long connects to an origin go one at a time after it reset or cut a connection. */
const SUSPECT_MS = 1000;
/** Spec Appendix A: DEFAULT_RETRY_ON_STATUSES. */
const RETRY_STATUSES = new Set([408, 429, 500, 502, 503, 504]);
/** Spec Appendix A: DEFAULT_RETRY_ON_STATUSES. */
export function isRetryStatus(status: number): boolean {
  return RETRY_STATUSES.has(status);
}

/** RFC 9110 hop-by-hop headers, never relayed (plus the length/encoding the listener sets). */
const HOP_BY_HOP = nameSet([
  'te', 'trailer', 'upgrade', 'trailers', 'connection', 'keep-alive', 'content-length', 'proxy-connection', 'transfer-encoding',
  'proxy-authenticate', 'proxy-authorization',
]);

export function isHopByHop(name: string): boolean {
  return HOP_BY_HOP.has(name);
}

export function classify(err: unknown, baseUrl: string, timeoutMs: number): UpstreamError {
  if (err instanceof UpstreamError) return err;
  const e = err as { code?: string; name?: string; message?: string; cause?: { code?: string } };
  const code = e.code ?? e.cause?.code ?? '';
  const secs = `${Math.round(timeoutMs) / 1000}s`;
  const tooLarge = err instanceof BodyTooLargeError ? err : (e.cause instanceof BodyTooLargeError ? e.cause : null);
  if (tooLarge) return new UpstreamError('body_too_large', tooLarge.message, baseUrl);
  if (code === 'UND_ERR_CONNECT_TIMEOUT') return new UpstreamError('timeout', `upstream ${baseUrl} did not accept a connection in time`, baseUrl, true);
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'ETIMEDOUT') {
    return new UpstreamError('timeout', `upstream ${baseUrl} did not answer within ${secs}`, baseUrl);
  }
  if (code === 'UTM_ORIGIN_GONE') return new UpstreamError('skipped', `upstream ${baseUrl} is down (a connection to it just failed); not tried`, baseUrl, true);
  if (code === 'ECONNREFUSED') return new UpstreamError('refused', `upstream ${baseUrl} refused the connection`, baseUrl, true, true);
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new UpstreamError('dns', `upstream ${baseUrl} host does not resolve`, baseUrl, true);
  if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EPIPE' || code === 'UND_ERR_CLOSED') {
    // A reset while connecting (the request was never written), or on a
    // connection that never carried a byte back (marked by the connector below;
    // the request may have been read, so it stays "reached" for the retry
    // rules), means the process behind it is gone.
    const mark = e as { duringConnect?: boolean; freshConnection?: boolean };
    if (code === 'ECONNRESET' && mark.duringConnect) return new UpstreamError('reset', `upstream ${baseUrl} reset the connection while connecting`, baseUrl, true, true);
    return new UpstreamError('reset', `upstream ${baseUrl} closed the connection`, baseUrl, false, code === 'ECONNRESET' && mark.freshConnection === true);
  }
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return new UpstreamError('refused', `upstream ${baseUrl} is unreachable (${code})`, baseUrl, true);
  if (code.startsWith('HPE_') || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' || code === 'UND_ERR_INFO') {
    return new UpstreamError('protocol', `upstream ${baseUrl} sent an invalid HTTP response`, baseUrl);
  }
  return new UpstreamError('other', `upstream ${baseUrl} failed: ${e.message ?? String(err)}`, baseUrl);
}

/** undici's header object as the h1 client's flat list (repeated names as repeated pairs). */
function flatten(headers: Record<string, string | string[] | undefined>): string[] {
  const flat: string[] = [];
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const x of v) flat.push(name, x);
    else flat.push(name, v);
  }
  return flat;
}

/** First value of a response header in either form a client reports. */
function firstHeader(headers: Record<string, string | string[] | undefined> | string[], name: string): string | undefined {
  if (Array.isArray(headers)) {
    for (let i = 0; i < headers.length; i += 2) if (headers[i] === name) return headers[i + 1];
    return undefined;
  }
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

interface SplitUrl {
  origin: string;
  prefix: string;
  /** Plain http: the built-in client can carry it (address without IPv6 brackets, port, Host). */
  h1: { host: string; port: number; hostHeader: string } | null;
}

/** What the gate opens: undici's connect options, or a connection for the h1 client (its own connector: direct reads). */
type ConnectOptions = buildConnector.Options | (H1ConnectTarget & { h1: true });

interface PendingConnect { o: ConnectOptions; cb: buildConnector.Callback }

/** Sets an until-map entry; origins come and go with instances, so expired entries are swept now and then. */
function mark(m: Map<string, number>, key: string, forMs: number): void {
  const now = Date.now();
  if (m.size >= 256) for (const [k, until] of m) if (until <= now) m.delete(k);
  m.set(key, now + forMs);
}

/** An entry of an until-map that has not expired (expired ones are dropped). */
function live(m: Map<string, number>, key: string): boolean {
  if (m.size === 0) return false;
  const until = m.get(key);
  if (until === undefined) return false;
  if (until > Date.now()) return true;
  m.delete(key);
  return false;
}

/**
 * Adds proxy headers to a committed upstream response, flat [name, value, ...].
 * Called once per response, after the target is known.
 */
export type ResponseDecorator = (status: number, fields: string[], target: Candidate, retries: number) => void;

type AttemptResult =
  | { kind: 'done'; status: number }
  /** `waitMs` > 0: retry the same candidate after that long (Retry-After); else the next one now. */
  | { kind: 'retry'; error: UpstreamError; status?: number; waitMs?: number }
  | { kind: 'failed_after_commit'; status: number; error: UpstreamError };

/**
 * One attempt against one candidate, as an undici dispatch handler: relays the
 * response head and body to the client writer (pausing the upstream socket under
 * backpressure), bounds the wait for the head with a timer (undici's
 * headersTimeout starts only once connected), and reports one result.
 */
class Attempt implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | null = null;
  private timer: NodeJS.Timeout | null = null;
  private committed = false;
  private settled = false;
  private status = 0;
  /** Retry-After of a 429/503 answer, in ms (for the health hook). */
  retryAfterMs: number | null = null;

  constructor(
    private readonly forwarding: Forwarding,
    readonly target: Candidate,
    /** A retryable status may be discarded for a retry (the Forwarding decides which). */
    private readonly retryOnStatus: boolean,
    private readonly timeoutMs: number,
  ) {
    this.timer = setTimeout(Attempt.onTimeout, timeoutMs, this);
  }

  private static onTimeout(self: Attempt): void {
    self.timer = null;
    if (self.committed || self.settled) return;
    const err = new UpstreamError('timeout', `upstream ${self.target.baseUrl} did not answer within ${Math.round(self.timeoutMs) / 1000}s`, self.target.baseUrl);
    self.finish({ kind: 'retry', error: err });
    self.controller?.abort(err);
  }

  private finish(r: AttemptResult): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.settled) return;
    this.settled = true;
    this.forwarding.attemptEnded(this, r);
  }

  /** The client went away: stop the upstream exchange. */
  clientAborted(): void {
    this.controller?.abort(new Error('client aborted'));
    this.finish({ kind: 'failed_after_commit', status: 499, error: new UpstreamError('client_aborted', 'client went away', this.target.baseUrl) });
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.settled || this.forwarding.res.aborted) controller.abort(new Error(this.settled ? 'attempt ended' : 'client aborted'));
  }

  /** `headers`: undici's object, or the h1 client's flat [name, value, ...] list. */
  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined> | string[]): void {
    if (statusCode < 200 || this.settled) return; // 1xx: wait for the final head; or timed out already
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.status = statusCode;
    if (statusCode === 429 || statusCode === 503) {
      this.retryAfterMs = parseRetryAfter(firstHeader(headers, 'retry-after'), Date.now());
    }
    if (this.retryOnStatus && RETRY_STATUSES.has(statusCode)) {
      const waitMs = this.forwarding.planStatusRetry(statusCode, this.retryAfterMs);
      if (waitMs !== null) {
        // Discard this response and retry; nothing has reached the client.
        this.finish({ kind: 'retry', status: statusCode, waitMs, error: new UpstreamError('other', `upstream ${this.target.baseUrl} answered ${statusCode}`, this.target.baseUrl) });
        controller.abort(new Error('failover'));
        return;
      }
    }
    // Both clients' parsers checked every field: the listener relays them as they are.
    const out: string[] = [];
    const flat = Array.isArray(headers) ? headers : flatten(headers);
    let length: number | undefined;
    for (let i = 0; i < flat.length; i += 2) {
      const name = flat[i];
      if (!isHopByHop(name)) out.push(name, flat[i + 1]);
      else if (length === undefined && name.length === 14 && name === 'content-length') {
        const n = Number(flat[i + 1]);
        if (Number.isSafeInteger(n) && n >= 0) length = n;
      }
    }
    this.forwarding.decorate(statusCode, out, this.target, this.forwarding.retries);
    this.committed = true;
    // HEAD / 204 / 304 carry no body; the listener reports the upstream's length, if any.
    this.forwarding.res.relayHead(statusCode, out, length);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.committed) return;
    const res = this.forwarding.res;
    if (!res.write(chunk)) {
      controller.pause();
      res.onDrain(() => controller.resume());
    }
  }

  onResponseEnd(): void {
    if (!this.committed) return;
    this.forwarding.res.end();
    this.finish({ kind: 'done', status: this.status });
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.settled) return;
    const e = classify(err, this.target.baseUrl, this.forwarding.req.timeoutMs);
    if (this.committed) {
      // Headers are out: all we can do is cut the connection so the client
      // sees a truncated response rather than a silently short one.
      this.forwarding.res.abort();
      this.finish({ kind: 'failed_after_commit', status: this.status, error: e });
    } else {
      this.finish({ kind: 'retry', error: e });
    }
  }
}

/**
 * One proxied request: tries the candidates in order. Another candidate is tried
 * only when the failover policy allows it, the attempt failed at the network
 * level or answered a retryable status, and no byte has gone to the client.
 */
class Forwarding {
  retries = 0;
  private index = 0;
  private current: Attempt | null = null;
  private lastError: UpstreamError | undefined;
  private readonly started = performance.now();
  /** Epoch ms by which a Retry-After wait and its retry must be over (the request's timeout). */
  private readonly deadline: number;
  private waitTimer: NodeJS.Timeout | null = null;
  private readonly replayable: boolean;

  constructor(
    private readonly upstream: Upstream,
    readonly req: ForwardRequest,
    private readonly candidates: readonly Candidate[],
    readonly res: ResponseWriter,
    readonly decorate: ResponseDecorator,
    /** Called once, with what the client got. */
    private readonly resolve: (o: ForwardOutcome) => void,
  ) {
    this.replayable = req.body === null || Buffer.isBuffer(req.body);
    this.deadline = Date.now() + req.timeoutMs;
    // One abort hook for all attempts (uWS keeps a single onAborted handler).
    res.onAborted(() => {
      if (this.waitTimer) {
        clearTimeout(this.waitTimer);
        this.waitTimer = null;
        const target = this.current?.target;
        this.resolve({ status: 499, committed: false, retries: this.retries, target, error: new UpstreamError('client_aborted', 'client went away', target?.baseUrl ?? ''), upstreamMs: performance.now() - this.started });
        return;
      }
      this.current?.clientAborted();
    });
  }

  /** Another candidate remains and the body can be sent again. */
  private canRetry(i: number): boolean {
    return this.replayable && i < this.candidates.length - 1;
  }

  /** Any failure may be retried (idempotent requests), not only unreached attempts. */
  private get retryAny(): boolean {
    return this.req.idempotent && this.req.failover !== 'unreached';
  }

  start(): void {
    this.next(this.req.timeoutMs);
  }

  /**
   * A retryable status arrived: null relays it, 0 tries the next candidate now,
   * more waits that long and retries the same one (rules in health/retry-after.ts).
   * Takes the retry from the budget, so a refusal relays the answer.
   */
  planStatusRetry(status: number, retryAfterMs: number | null): number | null {
    if (this.res.aborted) return null;
    const d = decideRetry({
      status, retryAfterMs, now: Date.now(), deadline: this.deadline, otherCandidates: this.index < this.candidates.length - 1,
      // The retried attempt keeps a quarter of the budget, at most a second.
      attemptMs: Math.min(1000, this.req.timeoutMs / 4),
    });
    if (d.action === 'relay') return null;
    if (!(this.req.retry?.allowRetry() ?? true)) return null;
    return d.action === 'wait' ? d.delayMs : 0;
  }

  private next(timeoutMs: number): void {
    const i = this.index;
    const target = this.candidates[i];
    const attempt = new Attempt(this, target, this.replayable && this.retryAny, timeoutMs);
    this.current = attempt;
    try {
      this.upstream.dispatch(this.req, target, attempt);
    } catch (err) {
      this.attemptEnded(attempt, { kind: 'retry', error: classify(err, target.baseUrl, this.req.timeoutMs) });
    }
  }

  attemptEnded(attempt: Attempt, r: AttemptResult): void {
    const upstreamMs = performance.now() - this.started;
    const target = attempt.target;
    const up = this.upstream;
    if (r.kind === 'done') up.reportAttempt(target, r.status, null, attempt.retryAfterMs);
    else if (r.kind === 'retry') up.reportAttempt(target, r.status ?? null, r.status === undefined ? r.error : null, attempt.retryAfterMs);
    else up.reportAttempt(target, r.status || null, r.error, null);
    if (r.kind === 'done') return this.resolve({ status: r.status, committed: true, retries: this.retries, target, upstreamMs });
    if (r.kind === 'failed_after_commit') {
      return this.resolve({ status: r.status, committed: true, retries: this.retries, target, error: r.error, upstreamMs });
    }
    this.lastError = r.error;
    if (r.error.kind === 'reset') this.upstream.markSuspect(target.baseUrl);
    if (r.status !== undefined) {
      // A retryable status: planStatusRetry already decided and took the budget.
      this.retries++;
      if (r.waitMs) {
        this.waitTimer = setTimeout(() => {
          this.waitTimer = null;
          // Never past the deadline: the retried attempt gets what remains of it.
          this.next(Math.max(1, Math.min(this.req.timeoutMs, this.deadline - Date.now())));
        }, r.waitMs);
      } else {
        this.index++;
        queueMicrotask(() => this.next(this.req.timeoutMs));
      }
      return;
    }
    // A skipped candidate cost the upstream nothing: it does not take from the retry budget.
    if (this.canRetry(this.index) && (this.retryAny || r.error.unreached) && !this.res.aborted && (r.error.kind === 'skipped' || (this.req.retry?.allowRetry() ?? true))) {
      this.retries++;
      this.index++;
      // Next tick: a synchronous dispatch failure must not recurse through the stack.
      queueMicrotask(() => this.next(this.req.timeoutMs));
      return;
    }
    // A retryable status on the last candidate was relayed as 'done'; here only
    // failures that cannot be retried remain.
    this.resolve({ status: r.error.status, committed: false, retries: this.retries, target, error: this.lastError, upstreamMs });
  }
}

export class Upstream {
  readonly agent: Agent;
  /** The common case (plain http, body absent or in memory); null when configured off. */
  readonly h1: H1Agent | null;
  /** Set by the runtime when health is wired. */
  onAttempt: AttemptHook | null = null;
  // Base URLs are few and stable; parse each once instead of per request.
  private split = new Map<string, SplitUrl>();
  /** Origins a connection just proved gone, until when (epoch ms). */
  private gone = new Map<string, number>();

  constructor(opts: { connections: number; keepAliveMs: number; connectTimeoutMs: number; client?: 'h1' | 'undici' }) {
    this.connector = buildConnector({ timeout: opts.connectTimeoutMs });
    this.h1Connector = tcpConnector(opts.connectTimeoutMs);
    // Both clients open connections through the same gate (connect below).
    this.h1 = opts.client === 'undici' ? null : new H1Agent({
      connections: opts.connections, keepAliveMs: opts.keepAliveMs, connectTimeoutMs: opts.connectTimeoutMs,
      connect: (t, cb) => this.connect(t.origin, { host: t.host, port: t.port, origin: t.origin, h1: true },
        ((err: Error | null, socket: Socket | null) => cb(err, socket)) as buildConnector.Callback),
    });
    this.agent = new Agent({
      connections: opts.connections,
      pipelining: 1,
      keepAliveTimeout: opts.keepAliveMs,
      keepAliveMaxTimeout: opts.keepAliveMs,
      connect: (o, cb) => this.connect(`${o.protocol}//${o.host}`, o, cb),
    });
  }

  private readonly connector: buildConnector.connector;
  private readonly h1Connector: H1Connector;
  /** Origins with a connect in progress, and the connects waiting for its result. */
  private readonly connecting = new Map<string, PendingConnect[]>();
  /** Origins that just reset or cut a connection, until when (epoch ms): their connects go one at a time. */
  private suspect = new Map<string, number>();

  /**
   * undici has no hook for this, so its connector is wrapped. A connect to an
   * origin just proved gone fails at once without touching the network. While
   * a connect to an origin is in progress, further ones wait for its result:
   * if it proves the origin gone they fail at once too; otherwise they go
   * ahead in parallel, or one at a time while the origin is suspect (it just
   * reset or cut a connection: a dying process may still complete a handshake
   * or two). So when an instance dies, the requests queued across its pool pay
   * one failed connect, not one each, and fail over. The cost is one connect's
   * time for connections that open together in a burst.
   */
  private connect(origin: string, o: ConnectOptions, cb: buildConnector.Callback): void {
    if (this.isGone(origin)) {
      // Asynchronously, as a real connect would answer.
      process.nextTick(cb, Object.assign(new Error(`${origin} just proved gone`), { code: 'UTM_ORIGIN_GONE' }), null);
      return;
    }
    const waiting = this.connecting.get(origin);
    if (waiting) waiting.push({ o, cb });
    else this.lead(origin, o, cb, []);
  }

  private lead(origin: string, o: ConnectOptions, cb: buildConnector.Callback, waiters: PendingConnect[]): void {
    this.connecting.set(origin, waiters);
    this.open(origin, o, (err, socket) => {
      const w = this.connecting.get(origin) ?? waiters;
      this.connecting.delete(origin);
      (cb as (e: Error | null, s: unknown) => void)(err, socket);
      if (w.length === 0) return;
      if (this.isGone(origin)) for (const x of w) this.connect(origin, x.o, x.cb);
      else if (this.isSuspect(origin)) this.lead(origin, w[0].o, w[0].cb, w.slice(1));
      else for (const x of w) this.open(origin, x.o, x.cb);
    });
  }

  private open(origin: string, o: ConnectOptions, cb: buildConnector.Callback): void {
    const opened = (err: Error | null, socket: Socket | null): void => {
      if (err) {
        // Failed while connecting: the request was never written.
        (err as Error & { duringConnect?: boolean }).duringConnect = true;
        const code = (err as { code?: string }).code;
        if (code === 'ECONNREFUSED' || code === 'ECONNRESET') this.markGone(origin);
      }
      if (socket) {
        socket.once('error', (e: Error & { code?: string; freshConnection?: boolean }) => {
          if (e.code !== 'ECONNRESET') return;
          this.markSuspect(origin);
          if (socket.bytesRead === 0) {
            e.freshConnection = true;
            this.markGone(origin);
          }
        });
      }
      cb(err, socket as never);
    };
    if ('h1' in o) this.h1Connector(o, opened);
    else this.connector(o, opened as buildConnector.Callback);
  }

  private isGone(origin: string): boolean {
    return live(this.gone, origin);
  }

  private isSuspect(origin: string): boolean {
    return live(this.suspect, origin);
  }

  /**
   * New connections to the origin fail at once for GONE_HOLD_MS: long enough
   * for the requests already queued for it to fail over, short enough not to
   * outlast a restart (health ejection keeps new requests away meanwhile).
   */
  private markGone(origin: string): void {
    mark(this.gone, origin, GONE_HOLD_MS);
  }

  /** An attempt on a connection to `baseUrl` was reset or cut. */
  markSuspect(baseUrl: string): void {
    mark(this.suspect, this.splitUrl(baseUrl).origin, SUSPECT_MS);
  }

  private splitUrl(baseUrl: string): SplitUrl {
    let s = this.split.get(baseUrl);
    if (!s) {
      const u = new URL(baseUrl);
      const h1 = u.protocol === 'http:' ? { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 80), hostHeader: u.host } : null;
      s = { origin: u.origin, prefix: u.pathname.replace(/\/+$/, ''), h1 };
      if (this.split.size > 10000) this.split.clear();
      this.split.set(baseUrl, s);
    }
    return s;
  }

  async close(): Promise<void> {
    await Promise.all([this.agent.close(), this.h1?.close()]);
  }

  /** The URL a request for `path` goes to on `baseUrl` (as dispatch() joins it). */
  targetUrl(baseUrl: string, path: string, query: string): string {
    const { origin, prefix } = this.splitUrl(baseUrl);
    return origin + (prefix + path || '/') + (query ? `?${query}` : '');
  }

  /** Reports one attempt to the health hook; bookkeeping never breaks a request. */
  reportAttempt(target: Candidate, status: number | null, error: UpstreamError | null, retryAfterMs: number | null = null): void {
    const hook = this.onAttempt;
    if (!hook) return;
    try {
      hook(target, status, error, retryAfterMs);
    } catch {
      // Bookkeeping must never break the request.
    }
  }

  /**
   * Sends the request to the candidates in order; `done` runs once the client
   * has its answer (synchronously from the socket event that ended it, and it
   * must not throw).
   */
  forward(req: ForwardRequest, candidates: readonly Candidate[], res: ResponseWriter, decorate: ResponseDecorator, done: (o: ForwardOutcome) => void): void {
    new Forwarding(this, req, candidates, res, decorate, done).start();
  }

  /** @internal one attempt's dispatch */
  dispatch(req: ForwardRequest, target: Candidate, handler: Attempt): void {
    const { origin, prefix, h1 } = this.splitUrl(target.baseUrl);
    const body = req.body;
    if (h1 && this.h1 && (body === null || Buffer.isBuffer(body))) {
      this.h1.dispatch(
        { host: h1.host, port: h1.port, hostHeader: h1.hostHeader, method: req.method, path: (prefix + req.path || '/') + (req.query ? `?${req.query}` : ''), headers: req.headers, body, timeoutMs: req.timeoutMs },
        handler,
      );
      return;
    }
    this.agent.dispatch(
      {
        origin,
        path: (prefix + req.path || '/') + (req.query ? `?${req.query}` : ''),
        method: req.method as Dispatcher.HttpMethod,
        headers: req.headers,
        body: req.body as Dispatcher.DispatchOptions['body'],
        headersTimeout: req.timeoutMs,
        bodyTimeout: req.timeoutMs,
      },
      handler,
    );
  }
}
