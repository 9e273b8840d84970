// The WebSocket leg: replaces body policy and forward for a handshake
// (`req.upgrade`). The upstream is connected first, with the same headers an
// HTTP request would get, failing over to the next candidate while no frame has
// been sent; only then is the client accepted, so an unreachable upstream is the
// same 502/504 JSON error as for HTTP, and an upstream that answers without
// upgrading has its answer relayed. Then messages are relayed both ways with
// backpressure, and either side's close is relayed to the other.
import WebSocket from 'ws';
import type { IncomingMessage } from 'node:http';
import { fieldPairs, type ServerWebSocket } from '../../http/types.ts';
import type { WebSocketSummary } from '../exchange.ts';
import type { Stage } from '../chain.ts';
import { isHopByHop, UpstreamError, classify, isRetryStatus, type Candidate, type ForwardOutcome, type RetryPolicy, type Upstream } from '../upstream.ts';
import { decorate, sendUpstreamError, upstreamRequestHeaders } from './forward.ts';
import { DomainError } from '../../core/errors.ts';

export interface WebSocketRelayOptions {
  /** Seconds a side may stay silent (pinged halfway); 0 = never. */
  idleTimeout: number;
  /** Largest message relayed, bytes. */
  maxMessage: number;
  /** Bytes queued towards the upstream before the client is paused. */
  highWater: number;
  /** Bytes queued towards the upstream before the session closes with 1013 (a client that cannot be paused). */
  maxBuffer: number;
}

/** A non-101 answer from the upstream is relayed up to this size; a longer body is cut here. */
const MAX_REFUSAL_BODY = 64 * 1024;
/** After one side closed, the other gets this long to finish its close handshake. */
const CLOSE_GRACE_MS = 5000;

/** The open sessions of this node, for the gauge and a graceful shutdown's 1001. */
export class WebSocketSessions {
  readonly open = new Set<Relay>();
  private timer: NodeJS.Timeout | null = null;

  constructor(readonly opts: WebSocketRelayOptions) {}

  get size(): number {
    return this.open.size;
  }

  /** Set by a shutdown: handshakes that still arrive on open connections are refused. */
  closing = false;

  /** Closes every session on both sides with `code`; a shutdown also refuses new ones from then on. */
  closeAll(code: number, reason: string, closedBy: string): void {
    if (closedBy === 'shutdown') this.closing = true;
    for (const r of [...this.open]) r.closeBoth(code, reason, closedBy);
  }

  add(r: Relay): void {
    this.open.add(r);
    const idle = this.opts.idleTimeout * 1000;
    if (this.timer || idle <= 0) return;
    // One timer for every session's upstream side (the listener watches the client side).
    this.timer = setInterval(() => {
      const now = Date.now();
      for (const s of this.open) s.tick(now, idle);
    }, Math.max(250, Math.floor(idle / 4)));
    this.timer.unref();
  }

  delete(r: Relay): void {
    this.open.delete(r);
    if (this.open.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }
}

type Connected =
  | { kind: 'open'; ws: WebSocket }
  | { kind: 'response'; status: number; headers: string[]; body: Buffer }
  | { kind: 'error'; error: UpstreamError };

/** ws takes headers as an object: repeated inbound headers become arrays (node writes one line each). */
function headerObject(flat: string[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (let i = 0; i < flat.length; i += 2) {
    const name = flat[i];
    // The ws client writes its own key, version and protocols; no extension is offered upstream.
    if (name.startsWith('sec-websocket-')) continue;
    const prev = out[name];
    if (prev === undefined) out[name] = flat[i + 1];
    else if (Array.isArray(prev)) prev.push(flat[i + 1]);
    else out[name] = [prev, flat[i + 1]];
  }
  return out;
}

/** Response headers worth relaying from a refusal (the listener sets framing itself), flat [name, value, ...]. */
function relayedHeaders(res: IncomingMessage): string[] {
  const out: string[] = [];
  const raw = res.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    if (isHopByHop(name) || name === 'content-encoding' || name.startsWith('sec-websocket-')) continue;
    out.push(name, raw[i + 1]);
  }
  return out;
}

/**
 * One connect attempt. The upstream socket is paused as soon as it opens, so
 * that nothing it sends is read before the client is accepted.
 */
function connect(url: string, protocols: readonly string[], headers: Record<string, string | string[]>, target: Candidate, timeoutMs: number, maxMessage: number, abort: { cancel?: () => void }): Promise<Connected> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (c: Connected) => {
      if (settled) return;
      settled = true;
      abort.cancel = undefined;
      resolve(c);
    };
    let ws: WebSocket;
    try {
      ws = new WebSocket(url, [...protocols], {
        headers, handshakeTimeout: timeoutMs, perMessageDeflate: false, maxPayload: maxMessage, followRedirects: false,
      });
    } catch (err) {
      return settle({ kind: 'error', error: classify(err, target.baseUrl, timeoutMs) });
    }
    abort.cancel = () => {
      ws.terminate();
      settle({ kind: 'error', error: new UpstreamError('client_aborted', 'client went away', target.baseUrl) });
    };
    ws.once('open', () => {
      ws.pause();
      settle({ kind: 'open', ws });
    });
    ws.once('unexpected-response', (req, res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const done = () => {
        req.destroy();
        settle({ kind: 'response', status: res.statusCode ?? 502, headers: relayedHeaders(res), body: Buffer.concat(chunks) });
      };
      res.on('data', (c: Buffer) => {
        if (size >= MAX_REFUSAL_BODY) return;
        chunks.push(c.subarray(0, MAX_REFUSAL_BODY - size));
        size += c.length;
        if (size >= MAX_REFUSAL_BODY) done();
      });
      res.once('end', done);
      res.once('error', done);
      res.once('aborted', done);
    });
    ws.on('error', (err: Error & { code?: string }) => {
      // ws reports its own handshake timer without a code.
      const e = /handshake has timed out/i.test(err.message)
        ? new UpstreamError('timeout', `upstream ${target.baseUrl} did not answer the WebSocket handshake within ${Math.round(timeoutMs) / 1000}s`, target.baseUrl)
        : /Unexpected server response|Invalid Sec-WebSocket|Server sent|Invalid WebSocket frame/i.test(err.message) && !err.code
          ? new UpstreamError('protocol', `upstream ${target.baseUrl} sent an invalid WebSocket handshake: ${err.message}`, target.baseUrl)
          : classify(err, target.baseUrl, timeoutMs);
      settle({ kind: 'error', error: e });
    });
  });
}

/** Close codes as the other side may receive them. */
function relayCode(code: number, towards: 'client' | 'upstream'): number | undefined {
  if ((code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999)) return code;
  if (code === 1005) return undefined; // a close frame without a code: relayed as one
  if (code === 1006) return towards === 'upstream' ? 1001 : 1011; // the other side dropped
  return 1011;
}

/** One relayed session: the client's ServerWebSocket and the upstream ws client. */
class Relay {
  client!: ServerWebSocket;
  private clientDone = false;
  private upstreamDone = false;
  private upstreamPaused = false;
  private clientPaused = false;
  private closedBy: string | null = null;
  private clientCode = 1006;
  private upstreamCode = 1006;
  private messagesIn = 0;
  private messagesOut = 0;
  private bytesIn = 0;
  private bytesOut = 0;
  private graceTimer: NodeJS.Timeout | null = null;
  private lastUpstream = Date.now();
  private pinged = false;
  private upstreamTooBig = false;
  private resolveEnd!: (s: WebSocketSummary) => void;
  readonly ended = new Promise<WebSocketSummary>((r) => (this.resolveEnd = r));
  private readonly afterUpstreamSend = () => this.checkUpstreamDrain();

  constructor(private readonly up: WebSocket, private readonly sessions: WebSocketSessions) {}

  /** The client's events (handed to acceptWebSocket). */
  readonly handlers = {
    message: (data: Buffer, binary: boolean) => this.fromClient(data, binary),
    drain: () => {
      if (this.upstreamPaused && !this.upstreamDone) {
        this.upstreamPaused = false;
        this.up.resume();
      }
    },
    close: (code: number, reason: string) => this.clientClosed(code, reason),
  };

  start(client: ServerWebSocket): void {
    this.client = client;
    this.sessions.add(this);
    const up = this.up;
    up.on('message', (data, isBinary) => this.fromUpstream(data as Buffer, isBinary));
    up.on('pong', () => this.heardUpstream());
    up.on('ping', () => this.heardUpstream());
    up.on('error', (err: Error & { code?: string }) => {
      // The close event follows with 1006; a message over WS_MAX_MESSAGE is the client's business as 1009.
      if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') this.upstreamTooBig = true;
    });
    up.on('close', (code, reason) => this.upstreamClosed(code, reason.toString('utf8')));
    if (up.readyState !== WebSocket.OPEN) return this.upstreamClosed(1006, '');
    up.resume();
  }

  /** Abandons a session whose client could not be accepted. */
  discard(): void {
    this.upstreamDone = true;
    this.up.close(1001, 'client went away');
    setTimeout(() => this.up.terminate(), CLOSE_GRACE_MS).unref();
  }

  private fromClient(data: Buffer, binary: boolean): void {
    if (this.upstreamDone || this.up.readyState !== WebSocket.OPEN) return;
    this.messagesIn++;
    this.bytesIn += data.length;
    const opts = this.sessions.opts;
    const over = this.up.bufferedAmount + data.length > opts.highWater;
    // The callback runs once the upstream socket took the frame: how drain is learnt from ws.
    this.up.send(data, { binary }, over ? this.afterUpstreamSend : undefined);
    if (!over) return;
    if (this.client.canPause) {
      if (!this.clientPaused) {
        this.clientPaused = true;
        this.client.pause();
      }
    } else if (this.up.bufferedAmount > opts.maxBuffer) {
      this.closeBoth(1013, 'upstream too slow', 'overload');
    }
  }

  private checkUpstreamDrain(): void {
    if (!this.clientPaused || this.clientDone || this.up.bufferedAmount > this.sessions.opts.highWater / 2) return;
    this.clientPaused = false;
    this.client.resume();
  }

  private fromUpstream(data: Buffer, binary: boolean): void {
    this.heardUpstream();
    if (this.clientDone) return;
    this.messagesOut++;
    this.bytesOut += data.length;
    if (!this.client.send(data, binary) && !this.upstreamPaused) {
      this.upstreamPaused = true;
      this.up.pause();
    }
  }

  private heardUpstream(): void {
    this.lastUpstream = Date.now();
    this.pinged = false;
  }

  /** The upstream side's idle check (the listener does the client's). */
  tick(now: number, idleMs: number): void {
    if (this.upstreamDone || this.up.readyState !== WebSocket.OPEN) return;
    // A paused upstream is quiet because of the client: not idle.
    if (this.upstreamPaused) return this.heardUpstream();
    const quiet = now - this.lastUpstream;
    if (quiet >= idleMs) {
      this.closedBy ??= 'idle';
      this.up.terminate();
    } else if (quiet >= idleMs / 2 && !this.pinged) {
      this.pinged = true;
      this.up.ping();
    }
  }

  private clientClosed(code: number, reason: string): void {
    if (this.clientDone) return;
    this.clientDone = true;
    this.clientCode = code;
    this.closedBy ??= 'client';
    if (!this.upstreamDone) {
      if (this.up.readyState === WebSocket.OPEN) {
        const c = relayCode(code, 'upstream');
        if (c === undefined) this.up.close();
        else this.up.close(c, c === code ? reason : 'client went away');
      }
      this.graceTimer ??= setTimeout(() => this.up.terminate(), CLOSE_GRACE_MS);
    }
    this.maybeEnd();
  }

  private upstreamClosed(code: number, reason: string): void {
    if (this.upstreamDone) return;
    this.upstreamDone = true;
    this.upstreamCode = code;
    this.closedBy ??= 'upstream';
    if (!this.clientDone) {
      if (this.upstreamTooBig) this.client.close(1009, 'upstream message too big');
      else {
        const c = relayCode(code, 'client');
        this.client.close(c, c === code ? reason : 'upstream connection lost');
      }
      this.graceTimer ??= setTimeout(() => this.client.terminate(), CLOSE_GRACE_MS);
    }
    this.maybeEnd();
  }

  /** The proxy ends the session (revoked, shutdown, overload): the same close on both sides. */
  closeBoth(code: number, reason: string, closedBy: string): void {
    this.closedBy ??= closedBy;
    if (!this.upstreamDone && this.up.readyState === WebSocket.OPEN) this.up.close(code, reason);
    if (!this.clientDone) this.client.close(code, reason);
    this.graceTimer ??= setTimeout(() => {
      this.up.terminate();
      this.client.terminate();
    }, CLOSE_GRACE_MS);
  }

  private maybeEnd(): void {
    if (!this.clientDone || !this.upstreamDone) return;
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = null;
    this.sessions.delete(this);
    this.resolveEnd({
      closedBy: this.closedBy ?? 'client', clientCode: this.clientCode, upstreamCode: this.upstreamCode,
      messagesIn: this.messagesIn, messagesOut: this.messagesOut, bytesIn: this.bytesIn, bytesOut: this.bytesOut,
    });
  }
}

export function relayWebSocket(upstream: Upstream, sessions: WebSocketSessions, retryPolicy?: (serviceId: string | undefined) => RetryPolicy | undefined): Stage {
  return async (x) => {
    // A handshake on a kept-alive connection after the shutdown's 1001 round would outlive the drain.
    if (sessions.closing) throw new DomainError('unavailable', 'this node is shutting down: open the WebSocket through another node');
    const hs = x.req.upgrade!;
    const headers = headerObject(upstreamRequestHeaders(x));
    const timeoutMs = x.control.timeoutMs;
    const candidates = x.candidates;
    const retry = candidates.length > 1 ? retryPolicy?.(x.service?.id) : undefined;
    const abort: { cancel?: () => void } = {};
    x.res.onAborted(() => abort.cancel?.());
    const started = performance.now();
    let retries = 0;
    let last: ForwardOutcome | undefined;
    for (let i = 0; i < candidates.length; i++) {
      const target = candidates[i];
      const url = upstream.targetUrl(target.baseUrl, x.path, x.query ?? x.req.query).replace(/^http/, 'ws');
      const c = await connect(url, hs.protocols, headers, target, timeoutMs, sessions.opts.maxMessage, abort);
      const upstreamMs = performance.now() - started;
      const more = i < candidates.length - 1 && !x.res.aborted;
      if (c.kind === 'error') {
        if (c.error.kind === 'client_aborted') {
          x.outcome = { status: 499, committed: true, retries, target, error: c.error, upstreamMs };
          return;
        }
        upstream.reportAttempt(target, null, c.error);
        last = { status: c.error.status, committed: false, retries, target, error: c.error, upstreamMs };
        // No frame was sent: another instance may take the session.
        if (more && (retry?.allowRetry() ?? true)) {
          retries++;
          continue;
        }
        break;
      }
      if (c.kind === 'response') {
        upstream.reportAttempt(target, c.status, null);
        if (more && isRetryStatus(c.status) && (retry?.allowRetry() ?? true)) {
          retries++;
          last = undefined;
          continue;
        }
        // The upstream would not upgrade: its answer goes to the client as HTTP.
        decorate(x, x.req, c.headers, target, retries);
        x.res.send(c.status, fieldPairs(c.headers), c.body);
        x.outcome = { status: c.status, committed: true, retries, target, upstreamMs };
        return;
      }
      upstream.reportAttempt(target, 101, null);
      const relay = new Relay(c.ws, sessions);
      const out: string[] = [];
      decorate(x, x.req, out, target, retries);
      const client = x.res.acceptWebSocket({ protocol: c.ws.protocol || undefined, headers: fieldPairs(out) }, relay.handlers);
      if (!client) {
        relay.discard();
        x.outcome = { status: 499, committed: true, retries, target, error: new UpstreamError('client_aborted', 'client went away', target.baseUrl), upstreamMs };
        return;
      }
      x.cut = () => relay.closeBoth(1008, 'authorization ended', 'revoked');
      relay.start(client);
      x.websocket = await relay.ended;
      x.outcome = { status: 101, committed: true, retries, target, upstreamMs };
      return;
    }
    x.outcome = last;
    if (last) sendUpstreamError(x, last);
  };
}
