// Sends one proxied request to an ordered list of candidate upstreams with
// failover, streaming both bodies. Built directly on undici's dispatch handler
// API (no Readable streams in between): response chunks go straight to the
// listener's writer, and backpressure pauses the upstream socket.
import { Agent, type Dispatcher } from 'undici';
import { BodyTooLargeError, type HeaderList, type ResponseWriter } from '../http/types.ts';

export interface Candidate {
  /** Base URL the path is joined onto (instance base_url / ops_api / supervisor URL). */
  baseUrl: string;
  /** Instance remote_id, for X-UtilMeta-Proxy-Destination-Instance-Id. */
  remoteId?: string | null;
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
   * upstream (refused, DNS, connect timeout) — forward mode's POSTs (spec §1.5.4 c).
   */
  failover?: 'idempotent' | 'unreached';
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

export type UpstreamErrorKind = 'timeout' | 'refused' | 'reset' | 'dns' | 'protocol' | 'body_too_large' | 'client_aborted' | 'other';

export class UpstreamError extends Error {
  constructor(readonly kind: UpstreamErrorKind, message: string, readonly baseUrl: string, readonly unreached = false) {
    super(message);
  }
  get status(): number {
    if (this.kind === 'timeout') return 504;
    if (this.kind === 'body_too_large') return 413;
    return 502;
  }
}

/** Spec Appendix A: DEFAULT_RETRY_ON_STATUSES. */
const RETRY_STATUSES = new Set([408, 429, 500, 502, 503, 504]);
/** RFC 9110 hop-by-hop headers, never relayed (plus the length/encoding the listener sets). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'trailers', 'transfer-encoding', 'upgrade', 'content-length']);

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
  if (code === 'ECONNREFUSED') return new UpstreamError('refused', `upstream ${baseUrl} refused the connection`, baseUrl, true);
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new UpstreamError('dns', `upstream ${baseUrl} host does not resolve`, baseUrl, true);
  if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EPIPE' || code === 'UND_ERR_CLOSED') {
    return new UpstreamError('reset', `upstream ${baseUrl} closed the connection`, baseUrl);
  }
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return new UpstreamError('refused', `upstream ${baseUrl} is unreachable (${code})`, baseUrl, true);
  if (code.startsWith('HPE_') || code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' || code === 'UND_ERR_INFO') {
    return new UpstreamError('protocol', `upstream ${baseUrl} sent an invalid HTTP response`, baseUrl);
  }
  return new UpstreamError('other', `upstream ${baseUrl} failed: ${e.message ?? String(err)}`, baseUrl);
}

interface LiveAttempt { abort: (() => void) | null }

interface SplitUrl { origin: string; prefix: string }

/**
 * Adds proxy headers to a committed upstream response. Called once per response,
 * after the target is known.
 */
export type ResponseDecorator = (status: number, headers: HeaderList, target: Candidate, retries: number) => void;

export class Upstream {
  readonly agent: Agent;
  // Base URLs are few and stable; parse each once instead of per request.
  private split = new Map<string, SplitUrl>();

  constructor(opts: { connections: number; keepAliveMs: number; connectTimeoutMs: number }) {
    this.agent = new Agent({
      connections: opts.connections,
      pipelining: 1,
      keepAliveTimeout: opts.keepAliveMs,
      keepAliveMaxTimeout: opts.keepAliveMs,
      connect: { timeout: opts.connectTimeoutMs },
    });
  }

  private splitUrl(baseUrl: string): SplitUrl {
    let s = this.split.get(baseUrl);
    if (!s) {
      const u = new URL(baseUrl);
      s = { origin: u.origin, prefix: u.pathname.replace(/\/+$/, '') };
      if (this.split.size > 10000) this.split.clear();
      this.split.set(baseUrl, s);
    }
    return s;
  }

  async close(): Promise<void> {
    await this.agent.close();
  }

  /**
   * Tries the candidates in order. Another candidate is tried only when the
   * request is idempotent, the attempt failed at the network level or answered a
   * retryable status, and no byte has been sent to the client yet.
   */
  async forward(req: ForwardRequest, candidates: readonly Candidate[], res: ResponseWriter, decorate: ResponseDecorator): Promise<ForwardOutcome> {
    let retries = 0;
    let lastError: UpstreamError | undefined;
    const started = performance.now();
    const replayable = req.body === null || Buffer.isBuffer(req.body);
    // One abort hook for all attempts (uWS keeps a single onAborted handler).
    const live: LiveAttempt = { abort: null };
    res.onAborted(() => live.abort?.());
    for (let i = 0; i < candidates.length; i++) {
      const target = candidates[i];
      const more = replayable && i < candidates.length - 1;
      const unreachedOnly = req.failover === 'unreached';
      const canRetry = more && (unreachedOnly || req.idempotent);
      const attempt = await this.attempt(req, target, res, canRetry && !unreachedOnly, retries, decorate, live);
      if (attempt.kind === 'done') {
        return { status: attempt.status, committed: true, retries, target, upstreamMs: performance.now() - started };
      }
      if (attempt.kind === 'failed_after_commit') {
        return { status: attempt.status, committed: true, retries, target, error: attempt.error, upstreamMs: performance.now() - started };
      }
      lastError = attempt.error;
      if (attempt.kind === 'retry' && canRetry && (!unreachedOnly || attempt.error.unreached) && !res.aborted) {
        retries++;
        continue;
      }
      // A retryable status on the last candidate has been relayed as 'done'; here we
      // only get network failures that cannot be retried.
      return { status: lastError!.status, committed: false, retries, target, error: lastError, upstreamMs: performance.now() - started };
    }
    return { status: lastError?.status ?? 502, committed: false, retries, error: lastError, upstreamMs: performance.now() - started };
  }

  private attempt(
    req: ForwardRequest,
    target: Candidate,
    res: ResponseWriter,
    canRetry: boolean,
    retries: number,
    decorate: ResponseDecorator,
    live: LiveAttempt,
  ): Promise<
    | { kind: 'done'; status: number }
    | { kind: 'retry'; error: UpstreamError }
    | { kind: 'failed_after_commit'; status: number; error: UpstreamError }
  > {
    const { origin, prefix } = this.splitUrl(target.baseUrl);
    const path = (prefix + req.path || '/') + (req.query ? `?${req.query}` : '');
    return new Promise((resolve) => {
      let committed = false;
      let settled = false;
      let status = 0;
      let ctrl: Dispatcher.DispatchController | null = null;
      let headTimer: NodeJS.Timeout | null = null;
      const finish = (v: Parameters<typeof resolve>[0]) => {
        if (headTimer) clearTimeout(headTimer);
        if (!settled) {
          settled = true;
          resolve(v);
        }
      };
      // The request timeout bounds the whole wait for the response head, connect
      // included: undici's headersTimeout only starts once the socket is connected.
      headTimer = setTimeout(() => {
        headTimer = null;
        if (committed || settled) return;
        const err = new UpstreamError('timeout', `upstream ${target.baseUrl} did not answer within ${Math.round(req.timeoutMs) / 1000}s`, target.baseUrl);
        finish({ kind: 'retry', error: err });
        ctrl?.abort(err);
      }, req.timeoutMs);
      live.abort = () => {
        ctrl?.abort(new Error('client aborted'));
        finish({ kind: 'failed_after_commit', status: 499, error: new UpstreamError('client_aborted', 'client went away', target.baseUrl) });
      };
      const handler: Dispatcher.DispatchHandler = {
        onRequestStart(controller) {
          ctrl = controller;
          if (res.aborted || settled) controller.abort(new Error(settled ? 'attempt ended' : 'client aborted'));
        },
        onResponseStart(controller, statusCode, headers) {
          if (statusCode < 200) return; // 1xx informational: wait for the final response
          if (settled) return; // timed out already
          if (headTimer) {
            clearTimeout(headTimer);
            headTimer = null;
          }
          status = statusCode;
          if (canRetry && RETRY_STATUSES.has(statusCode)) {
            // Discard this response and fail over; nothing has reached the client.
            finish({ kind: 'retry', error: new UpstreamError('other', `upstream ${target.baseUrl} answered ${statusCode}`, target.baseUrl) });
            controller.abort(new Error('failover'));
            return;
          }
          const out: HeaderList = [];
          let length: number | undefined;
          for (const name in headers) {
            const v = headers[name];
            if (v === undefined) continue;
            if (name === 'content-length') {
              const n = Number(Array.isArray(v) ? v[0] : v);
              if (Number.isSafeInteger(n) && n >= 0) length = n;
              continue;
            }
            if (HOP_BY_HOP.has(name)) continue;
            if (Array.isArray(v)) for (const x of v) out.push([name, x]);
            else out.push([name, v]);
          }
          decorate(statusCode, out, target, retries);
          committed = true;
          // HEAD / 204 / 304 carry no body; the listener reports the upstream's length, if any.
          res.writeHead(statusCode, out, length);
        },
        onResponseData(controller, chunk) {
          if (!committed) return;
          if (!res.write(chunk)) {
            controller.pause();
            res.onDrain(() => controller.resume());
          }
        },
        onResponseEnd() {
          if (committed) {
            res.end();
            finish({ kind: 'done', status });
          }
        },
        onResponseError(_controller, err) {
          if (settled) return;
          const e = classify(err, target.baseUrl, req.timeoutMs);
          if (committed) {
            // Headers are out: all we can do is cut the connection so the client
            // sees a truncated response rather than a silently short one.
            res.abort();
            finish({ kind: 'failed_after_commit', status, error: e });
          } else {
            finish({ kind: 'retry', error: e });
          }
        },
      };
      try {
        this.agent.dispatch(
          {
            origin,
            path,
            method: req.method as Dispatcher.HttpMethod,
            headers: req.headers,
            body: req.body as Dispatcher.DispatchOptions['body'],
            headersTimeout: req.timeoutMs,
            bodyTimeout: req.timeoutMs,
          },
          handler,
        );
      } catch (err) {
        finish({ kind: 'retry', error: classify(err, target.baseUrl, req.timeoutMs) });
      }
    });
  }
}
