// uWebSockets.js listener (the fast path). uWS hands out a stack-allocated
// HttpRequest and a HttpResponse that dies on abort, so everything is read up
// front and every later write is guarded and corked.
//
// What never reaches JavaScript on this build (@trufflesuite/uws-js-unofficial
// 20.30.0-unofficial.0): its HTTP parser stops reading such a connection without
// answering, and uSockets closes it at the HTTP idle timeout (10 s, checked on a
// 4 s tick: 9–12 s after the last byte, 11.7 s measured here). node:http answers
// these at once (400, 505 or a close).
//   - request line: garbage, a missing or malformed version (lower case, 1.2,
//     2.0, 9.9, huge), two spaces or a tab as separator, a space/NUL/CTL in the
//     target, a target that is `*`, relative or absolute-form or authority-form
//     (CONNECT included), bare LF or CR line ends, a leading CRLF, a BOM;
//   - HTTP/1.0 requests (with or without Host, Upgrade included), HTTP/1.1
//     without Host;
//   - other protocols: the HTTP/2 preface, a TLS or SSLv2 hello, a PROXY
//     protocol line, binary noise;
//   - header names with `_`, a space before the colon (`Transfer-Encoding :`),
//     NUL, `/` or bytes above 0x7F, a line without a colon; values with NUL,
//     CTL (0x01–0x1F except HTAB, incl. VT before `chunked`) or a bare CR;
//     obs-fold continuation lines; more than 48 header lines (measured: 48
//     reach JavaScript, 49 hang), so the 100-header limit of framingError()
//     only ever applies on node:http.
// Parser leniencies that reach JavaScript looking valid, so nothing here can
// refuse them: an empty header name (`: 1`) is dropped silently; bytes above
// 0x7F at either end of a header value are trimmed (`X-A: é` arrives empty);
// chunked bodies with a missing CRLF after the data or junk trailers are
// accepted; a chunk extension with NUL/CTL stalls the body (the handler waits
// until its own timeout or the idle timeout).
// The wait cannot be shortened from JavaScript on this build: App() takes only
// TLS options, the HTTP idle timeout is a compile-time constant (the
// `idleTimeout` option exists only for WebSocket routes), and there is no
// per-connection open hook (no `App.filter`) to start a shorter timer for
// connections that never produce a request. Newer uWS releases answer several
// of these cases with 400/505 themselves.
// Everything that does reach JavaScript goes through framingError() first.
import { createRequire } from 'node:module';
import type { Logger } from 'pino';
import type { HttpRequest, HttpResponse, TemplatedApp, WebSocket, us_listen_socket, us_socket_context_t } from 'uWebSockets.js';
import type {
  AcceptWebSocket, ClientConnection, Handler, Parked, HeaderList, ListenOptions, Listener, ResponseWriter, ServerWebSocket, WebSocketHandlers, WebSocketHandshake, WebSocketOptions,
} from './types.ts';
import { checkHandshake, clipReason, handshakeErrorBody, handshakeErrorHeaders, isSendableCloseCode, OpenSockets, websocketOptions, type HandshakeError } from './websocket-util.ts';
import {
  type DrainState,
  type RequestHead,
  runSafely,
  withinDeclared,
  BodyQueue,
  ClientAbortedError,
  ListenerRequest,
  asksToClose,
  assertValidHeader,
  byteLength,
  declaredLength,
  formatIp,
  framingError,
  framingErrorBody,
  type FramingError,
  isBodylessStatus,
  isListenerOwnedHeader,
  mayReportLength,
  statusLine,
  InFlight,
} from './listener-util.ts';
import { isAscii } from '../core/text.ts';

type Uws = typeof import('uWebSockets.js');

let loaded: { mod: Uws | null; reason: string } | undefined;

/**
 * Loads the native addon once. This package (the trufflesuite build) silently
 * falls back to a slow JS reimplementation when the binary does not load; that
 * counts as "not available" here, since node:http is the better fallback.
 */
export function loadUws(): { mod: Uws | null; reason: string } {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  try {
    const mod = require('uWebSockets.js') as Uws;
    if (typeof mod.App === 'function' && Function.prototype.toString.call(mod.App).includes('[native code]')) {
      loaded = { mod, reason: 'native uWebSockets.js addon loaded' };
    } else {
      let why = 'the package fell back to its JS implementation';
      try {
        require(`uWebSockets.js/binaries/uws_${process.platform}_${process.arch}_${process.versions.modules}.node`);
      } catch (err) {
        why = (err as Error).message.split('\n')[0];
      }
      loaded = { mod: null, reason: `native addon unavailable: ${why}` };
    }
  } catch (err) {
    loaded = { mod: null, reason: `cannot load uWebSockets.js: ${(err as Error).message.split('\n')[0]}` };
  }
  return loaded;
}

export function uwsAvailable(): boolean {
  return loadUws().mod !== null;
}

const EMPTY = Buffer.alloc(0);
/** In chunked mode uWS buffers whatever it cannot send; after backpressure we first write this much to learn whether it drained. */
const PROBE = 1024;
/** A known-length body up to this size that is in hand whole goes out with end(), not tryEnd(). */
const WHOLE_BODY_MAX = 64 * 1024;
const NO_HEADERS: HeaderList = [];
/** This build lower-cases the method; a switch, since an object lookup would intern the fresh string first. */
function upperMethod(m: string): string {
  switch (m) {
    case 'get': return 'GET';
    case 'post': return 'POST';
    case 'put': return 'PUT';
    case 'delete': return 'DELETE';
    case 'patch': return 'PATCH';
    case 'head': return 'HEAD';
    case 'options': return 'OPTIONS';
    default: return m.toUpperCase();
  }
}

function validate(headers: HeaderList): void {
  for (let i = 0; i < headers.length; i++) assertValidHeader(headers[i][0], headers[i][1]);
}

let requestIds = 0;

/**
 * ResponseWriter over a uWS HttpResponse. `res` must not be touched once
 * `gone` (onAborted fired); every write runs inside res.cork().
 *
 * Streaming: with a known length the body goes through tryEnd() (uWS sends
 * content-length and never buffers what the socket refuses: we keep the rest in
 * `pending` and retry from onWritable). Without one, write() goes chunked and
 * uWS buffers everything itself, so after backpressure we probe with a small
 * slice before handing it more.
 *
 * It is also the request's view of its connection. This build gives
 * JavaScript no handle on a connection between requests: a HttpResponse is
 * invalid once its response ended, there is no remote port and no connection
 * open/close hook. So an idle connection cannot be found again, watched or
 * closed: `park` keeps nothing, and `close` only cuts the response in flight
 * (uWS closes idle HTTP connections itself after about 10 s; a request on one
 * is decided again).
 */
class UwsResponse implements ResponseWriter, ClientConnection {
  /** Set for a valid WebSocket handshake that arrived on the ws route. */
  upgrade: { key: string; context: us_socket_context_t; sockets: UwsWebSockets } | null = null;
  readonly id = ++requestIds;
  gone = false; // client went away
  isHead = false;
  body: BodyQueue | null = null;
  private ended = false; // the handler is done (send/end, or a bodyless head)
  private finished = false; // uWS has the complete response
  private started = false; // send/writeHead called
  private headWritten = false;
  private outputBegun = false;
  private status = 200;
  private headers: HeaderList = NO_HEADERS;
  /** A relayed head's fields (relayHead), written instead of `headers`. */
  private fields: string[] | null = null;
  private total = -1; // declared content-length, -1 = chunked
  private accepted = 0; // body bytes taken from the caller (known length)
  private uwsOffset = 0; // body bytes uWS took = where pending[0] starts (known length)
  private pending: Buffer[] = [];
  private waiting = false; // under backpressure, waiting for onWritable
  private writableHooked = false;
  private maybeBacklog = false; // chunked: uWS may still hold unsent bytes
  private endPending = false;
  private abortCbs: Array<() => void> | null = null;
  private drainCb: (() => void) | null = null;

  constructor(
    private readonly res: HttpResponse,
    private readonly log: Logger | undefined,
    /** Ends this request's in-flight count (idempotent). */
    private readonly done: () => void,
    private readonly drain: DrainState,
  ) {
    // First thing, always: returning without a response or an abort handler kills the process.
    res.onAborted(() => this.handleAborted());
  }

  get aborted(): boolean {
    return this.gone || this.ended;
  }

  onAborted(cb: () => void): void {
    if (this.finished) return;
    if (this.gone) queueMicrotask(cb);
    else (this.abortCbs ??= []).push(cb);
  }

  onDrain(cb: () => void): void {
    if (this.waiting && !this.gone && !this.finished) this.drainCb = cb;
    else queueMicrotask(cb);
  }

  send(status: number, headers: HeaderList, body?: Buffer | string): void {
    if (this.gone || this.started) return;
    validate(headers);
    this.started = this.ended = true;
    const res = this.res;
    const bodyless = this.isHead || isBodylessStatus(status);
    // Answering an over-limit upload (the 413 path): close after the response
    // rather than read and discard the rest, as nginx does. Any other unread
    // body is read and dropped, keeping the connection alive.
    // While draining, too: the client must not reuse the connection (uWS closes it after the response).
    // A handler's `connection: close` too (uWS writes that header itself with the flag).
    const close = !bodyless && ((this.body !== null && this.body.refused) || this.drain.draining || asksToClose(headers));
    this.beginOutput();
    res.cork(() => {
      this.writeStatusAndHeaders(status, headers, close);
      if (bodyless) {
        if (body !== undefined && mayReportLength(status)) res.writeHeader('content-length', String(byteLength(body)));
        // endWithoutBody(n) leaves the response pending in this uWS build, and
        // endWithoutBody(undefined) reports a bogus length: header + no argument.
        res.endWithoutBody();
      } else {
        res.end(body ?? EMPTY, close);
      }
    });
    this.finish();
  }

  writeHead(status: number, headers: HeaderList, contentLength?: number): void {
    if (this.gone || this.started) return;
    validate(headers);
    this.headers = headers;
    this.beginHead(status, contentLength);
  }

  relayHead(status: number, fields: string[], contentLength?: number): void {
    if (this.gone || this.started) return;
    this.fields = fields;
    this.beginHead(status, contentLength);
  }

  /** After writeHead/relayHead stored the fields: a bodyless head goes out now, any other with the first body chunk. */
  private beginHead(status: number, contentLength: number | undefined): void {
    this.started = true;
    this.status = status;
    if (this.isHead || isBodylessStatus(status)) {
      this.ended = true;
      this.beginOutput();
      this.res.cork(() => {
        this.writeHeadNow();
        if (contentLength !== undefined && mayReportLength(status)) this.res.writeHeader('content-length', String(contentLength));
        this.res.endWithoutBody();
      });
      this.finish();
      return;
    }
    this.total = contentLength !== undefined && Number.isSafeInteger(contentLength) && contentLength >= 0 ? contentLength : -1;
    // The head goes out with the first body chunk (or end), in one syscall.
  }

  write(chunk: Buffer): boolean {
    if (this.gone || this.ended) return true;
    if (!this.started) this.writeHead(200, NO_HEADERS);
    if (chunk.length === 0) return !this.waiting;
    const fit = withinDeclared(chunk, this.total, this.accepted);
    if (fit === null) return !this.waiting;
    this.accepted += fit.length;
    this.pending.push(fit);
    if (this.waiting) return false;
    let ok = false;
    this.res.cork(() => {
      ok = this.flush();
    });
    return ok;
  }

  end(): void {
    if (this.gone || this.ended) return;
    if (!this.started) this.writeHead(200, NO_HEADERS);
    if (this.ended) return; // bodyless head already ended it
    this.ended = true;
    if (this.waiting) this.endPending = true;
    else this.endNow();
  }

  abort(): void {
    if (this.gone || this.finished) return;
    this.ended = true;
    this.done();
    this.res.close();
  }

  close(): void {
    this.abort();
  }

  park(_p: Parked): boolean {
    return false;
  }

  acceptWebSocket(opts: AcceptWebSocket, handlers: WebSocketHandlers): ServerWebSocket | null {
    const u = this.upgrade;
    if (!u || this.gone || this.started) return null;
    const headers = opts.headers ?? NO_HEADERS;
    validate(headers);
    this.started = this.ended = true;
    const conn = new UwsServerWebSocket(handlers, u.sockets, this.log);
    conn.chosen = opts.protocol ?? '';
    const res = this.res;
    res.cork(() => {
      // Headers on a 101 need the status written first (else uWS writes 200 and the upgrade fails).
      if (headers.length > 0) {
        res.writeStatus('101 Switching Protocols');
        for (const [k, v] of headers) if (!isListenerOwnedHeader(k)) res.writeHeader(k, v);
      }
      // No extension is negotiated (the app runs without compression).
      res.upgrade({ conn }, u.key, opts.protocol ?? '', '', u.context);
    });
    // uWS calls `open` inside upgrade(): the WebSocket now counts in flight, the request no longer.
    this.finish();
    return conn.opened ? conn : null;
  }

  /** The handler threw or rejected. */
  fail(err: unknown): void {
    this.log?.error({ err }, 'request handler failed');
    if (this.gone || this.finished) return;
    if (!this.started) {
      this.send(500, [['content-type', 'text/plain; charset=utf-8']], 'internal server error\n');
    } else {
      this.ended = true;
      this.done();
      this.res.close(); // head is out: cut the connection so the client sees a truncated response
    }
  }

  private endNow(): void {
    if (this.gone || this.finished) return;
    const res = this.res;
    if (this.total > 0) {
      // Fewer bytes than the declared content-length (a complete body finishes in
      // tryEnd): the client must not mistake this for a complete response.
      this.done();
      res.close();
      return;
    }
    this.beginOutput();
    res.cork(() => {
      if (!this.headWritten) this.writeHeadNow();
      res.end(EMPTY); // chunked: the terminating chunk; nothing written yet: content-length: 0
    });
    this.finish();
  }

  /** Must run inside cork. Returns false under backpressure. */
  private flush(): boolean {
    const res = this.res;
    if (!this.headWritten) {
      this.beginOutput();
      this.writeHeadNow();
    }
    const pending = this.pending;
    if (this.total >= 0) {
      // A whole small body in one piece (most relayed answers): end() sends it with
      // the head and returns no [ok, done] pair to allocate; uWS keeps what the
      // socket refuses, which is bounded here.
      if (pending.length === 1 && pending[0].length === this.total && this.total <= WHOLE_BODY_MAX && !this.writableHooked) {
        res.end(pending[0]);
        this.finish();
        return true;
      }
      while (pending.length > 0) {
        const c = pending[0];
        const skip = res.getWriteOffset() - this.uwsOffset; // taken on an earlier partial attempt
        const [ok, done] = res.tryEnd(skip > 0 ? c.subarray(skip) : c, this.total);
        if (done) {
          this.finish();
          return true;
        }
        if (!ok) return this.blocked();
        this.uwsOffset += c.length;
        pending.shift();
      }
      return true;
    }
    while (pending.length > 0) {
      const c = pending[0];
      if (this.maybeBacklog && c.length > PROBE) {
        const ok = res.write(c.subarray(0, PROBE));
        pending[0] = c.subarray(PROBE);
        if (!ok) return this.blocked();
        this.maybeBacklog = false;
        continue;
      }
      pending.shift();
      if (!res.write(c)) {
        this.maybeBacklog = true;
        return this.blocked();
      }
      this.maybeBacklog = false;
    }
    return true;
  }

  private blocked(): false {
    this.waiting = true;
    if (!this.writableHooked) {
      this.writableHooked = true;
      this.res.onWritable(() => this.handleWritable());
    }
    return false;
  }

  private handleWritable(): boolean {
    if (this.gone || this.finished) return true;
    let ok = true;
    // With nothing of ours pending, the empty cork still flushes uWS's own
    // buffer (with onWritable registered uWS does not drain it by itself).
    this.res.cork(() => {
      if (this.pending.length > 0) ok = this.flush();
    });
    if (!ok || this.gone || this.finished) return ok;
    this.waiting = false;
    if (this.endPending) {
      this.endPending = false;
      this.endNow();
      return true;
    }
    const cb = this.drainCb;
    this.drainCb = null;
    cb?.();
    return true;
  }

  private writeHeadNow(): void {
    this.headWritten = true;
    const f = this.fields;
    if (f === null) {
      this.writeStatusAndHeaders(this.status, this.headers);
      this.headers = NO_HEADERS;
      return;
    }
    this.fields = null;
    const res = this.res;
    res.writeStatus(statusLine(this.status));
    // writeHeader(name, value) appends `name: value\r\n`, one native call and two
    // UTF-8 conversions per field. The fields were checked (no CR or LF can be in
    // them), so the rest of the head is folded into the first field's value and
    // goes down in one call, byte for byte what per-field calls would write.
    let first = -1;
    let rest = '';
    for (let i = 0; i < f.length; i += 2) {
      if (isListenerOwnedHeader(f[i])) continue;
      if (first < 0) first = i;
      else rest += `\r\n${f[i]}: ${f[i + 1]}`;
    }
    // Hop-by-hop fields never arrive here, so a drain's close is always ours to announce.
    if (this.drain.draining) rest += '\r\nconnection: close';
    if (first >= 0) res.writeHeader(f[first], f[first + 1] + rest);
    else if (rest !== '') res.writeHeader('connection', 'close');
  }

  /** `uwsCloses`: the response ends with uWS's close flag, which writes `Connection: close` itself. */
  private writeStatusAndHeaders(status: number, headers: HeaderList, uwsCloses = false): void {
    const res = this.res;
    res.writeStatus(statusLine(status));
    for (let i = 0; i < headers.length; i++) {
      const h = headers[i];
      if (isListenerOwnedHeader(h[0]) || (uwsCloses && h[0].length === 10 && h[0].toLowerCase() === 'connection')) continue;
      res.writeHeader(h[0], h[1]);
    }
    // While draining, a response that uWS cannot close itself (bodyless or
    // streamed ones end without the close flag in this build) tells the client
    // to close the connection after it.
    if (this.drain.draining && !uwsCloses && !asksToClose(headers)) res.writeHeader('connection', 'close');
  }

  /**
   * Before the first response byte: a paused request body must be resumed now.
   * This uWS build's pause() also stops writable events, and resume() restores
   * poll flags from a per-thread cache keyed on "has backlog", which is only
   * safe while nothing has been written.
   */
  private beginOutput(): void {
    if (this.outputBegun) return;
    this.outputBegun = true;
    const b = this.body;
    if (b) {
      b.canPause = false;
      b.resumeSource();
    }
  }

  private finish(): void {
    this.done();
    this.finished = true;
    this.ended = true;
    this.waiting = false;
    this.pending = [];
    this.abortCbs = null;
    this.body?.discard();
  }

  private handleAborted(): void {
    this.done();
    this.gone = true;
    this.pending = [];
    this.body?.fail(new ClientAbortedError());
    const cbs = this.finished ? null : this.abortCbs;
    this.abortCbs = null;
    if (cbs) for (const cb of cbs) runSafely(cb, this.log);
    // Release a writer parked on onDrain: it will see `aborted` and stop.
    const d = this.drainCb;
    this.drainCb = null;
    if (d) runSafely(d, this.log);
  }


  /** uWS source of a request body: pause/resume the socket while nothing else is in flight. */
  pauseBody(): void {
    if (!this.gone) this.res.pause();
  }

  resumeBody(): void {
    if (!this.gone) this.res.resume();
  }
}

/** Answers a request whose framing is refused and closes the connection (uWS then adds Connection: close itself). */
function refuseFraming(res: HttpResponse, e: FramingError, isHead: boolean): void {
  res.cork(() => {
    res.writeStatus(statusLine(e.status));
    res.writeHeader('content-type', 'application/json');
    res.end(isHead ? EMPTY : framingErrorBody(e), true);
  });
}

interface Head extends RequestHead {
  /** uWS gives the method here (node:http has it on its request). */
  method: string;
}

/** Everything from `req` at once: it is stack-allocated and gone after the route callback returns. */
function readHead(req: HttpRequest): Head {
  const m = req.getMethod();
  const headers: Array<readonly [string, string]> = [];
  let contentLength: string | undefined;
  let chunked = false;
  req.forEach((k, v) => {
    // This build decodes header bytes as UTF-8 (U+FFFD for invalid bytes), while
    // node:http hands out one char per byte (latin1): re-encode so that both
    // listeners give the same strings, and no value holds a char above 0xFF that
    // an HTTP client (undici) then refuses to forward.
    if (!isAscii(v)) v = Buffer.from(v, 'utf8').toString('latin1');
    headers.push([k, v]);
    if (k === 'content-length') contentLength ??= v;
    else if (k === 'transfer-encoding') chunked = true;
  });
  return { method: upperMethod(m), path: req.getUrl(), query: req.getQuery() ?? '', headers, contentLength, chunked };
}

function refuseHandshake(res: HttpResponse, e: HandshakeError, isHead: boolean): void {
  res.cork(() => {
    res.writeStatus(statusLine(e.status));
    res.writeHeader('content-type', 'application/json');
    for (const [k, v] of handshakeErrorHeaders(e)) res.writeHeader(k, v);
    res.end(isHead ? EMPTY : handshakeErrorBody(e), true);
  });
}

function onRequest(
  res: HttpResponse, head: Head, handler: Handler, log: Logger | undefined, inFlight: InFlight, drain: DrainState,
  ws: { context: us_socket_context_t; sockets: UwsWebSockets } | null,
): void {
  const { method, path, query, headers, contentLength, chunked } = head;
  // First, before anything reads the body: answered synchronously, so no abort handler is needed.
  const bad = framingError(headers);
  if (bad) return refuseFraming(res, bad, method === 'HEAD');
  const declared = chunked ? -1 : declaredLength(contentLength);
  // The same handshake check as the node:http adapter. This build routes a GET
  // with a 24-character Sec-WebSocket-Key to the ws route and everything else
  // here, so only a handshake from the ws route can be accepted.
  const hs = checkHandshake(method, headers, chunked || declared > 0);
  let handshake: WebSocketHandshake | null = null;
  if (hs) {
    if ('error' in hs) return refuseHandshake(res, hs.error, method === 'HEAD');
    if (ws) handshake = hs.handshake;
  }
  const out = new UwsResponse(res, log, inFlight.begin(), drain);
  if (handshake && ws) out.upgrade = { key: handshake.key, context: ws.context, sockets: ws.sockets };
  // Binary form: this build's getRemoteAddressAsText() prints unabbreviated IPv6.
  const remoteAddress = formatIp(new Uint8Array(res.getRemoteAddress()));
  out.isHead = method === 'HEAD';

  let body: BodyQueue | null = null;
  if (chunked || declared > 0) {
    const q = (body = new BodyQueue({ pause: () => out.pauseBody(), resume: () => out.resumeBody() }, declared));
    out.body = q;
    // Registered now: uWS drops body data that arrives while no onData is set.
    res.onData((ab, isLast) => {
      if (out.gone) return;
      // The ArrayBuffer is neutered when this returns: copy.
      if (ab.byteLength > 0) q.push(Buffer.from(new Uint8Array(ab)));
      if (isLast) q.end();
    });
  }

  const request = new ListenerRequest('uws', method, path, query, headers, remoteAddress, body, handshake, out);
  try {
    const p = handler(request, out);
    if (p && typeof p.then === 'function') p.then(undefined, (err: unknown) => out.fail(err));
  } catch (err) {
    out.fail(err);
  }
}

interface UserData {
  conn: UwsServerWebSocket;
}

/** The accepted WebSockets of one uWS listener. */
class UwsWebSockets {
  readonly open = new OpenSockets<UwsServerWebSocket>();
  constructor(readonly opts: WebSocketOptions, readonly inFlight: InFlight) {}
}

/**
 * ServerWebSocket over a uWS WebSocket. uWS calls `close` synchronously from
 * end()/close(), and touching a closed uWS WebSocket throws, so everything is
 * guarded by `closed`.
 */
class UwsServerWebSocket implements ServerWebSocket {
  opened = false;
  /** The subprotocol given to upgrade(). */
  chosen = '';
  /** This build's WebSocket has no pause(): the caller bounds what it buffers instead. */
  readonly canPause = false;
  protocol = '';
  private ws: WebSocket<UserData> | null = null;
  private closed = false;
  private needDrain = false;
  private done: (() => void) | null = null;

  constructor(private readonly handlers: WebSocketHandlers, private readonly sockets: UwsWebSockets, private readonly log: Logger | undefined) {}

  onOpen(ws: WebSocket<UserData>, protocol: string): void {
    this.ws = ws;
    this.opened = true;
    this.protocol = protocol;
    this.done = this.sockets.inFlight.begin();
    this.sockets.open.add(this);
  }

  onMessage(message: ArrayBuffer, binary: boolean): void {
    if (this.closed) return;
    // The ArrayBuffer is neutered when this returns: copy.
    this.handlers.message(Buffer.from(new Uint8Array(message)), binary);
  }

  onDrain(): void {
    if (!this.needDrain || this.closed || this.bufferedAmount > this.sockets.opts.highWaterMark / 2) return;
    this.needDrain = false;
    runSafely(() => this.handlers.drain(), this.log);
  }

  onClose(code: number, message: ArrayBuffer): void {
    if (this.closed) return;
    this.closed = true;
    this.ws = null;
    this.sockets.open.delete(this);
    this.done?.();
    const reason = Buffer.from(new Uint8Array(message)).toString('utf8');
    runSafely(() => this.handlers.close(code, reason), this.log);
  }

  get bufferedAmount(): number {
    return this.closed || !this.ws ? 0 : this.ws.getBufferedAmount();
  }

  send(data: Buffer, binary: boolean): boolean {
    const ws = this.ws;
    if (this.closed || !ws) return true;
    // 1 sent, 0 queued (backpressure), 2 dropped: maxBackpressure is set far
    // above the high-water mark, so a caller that waits for drain never sees 2.
    if (ws.send(data, binary) === 2) {
      this.close(1013, 'client too slow');
      return false;
    }
    if (ws.getBufferedAmount() > this.sockets.opts.highWaterMark) {
      this.needDrain = true;
      return false;
    }
    return true;
  }

  close(code?: number, reason = ''): void {
    const ws = this.ws;
    if (this.closed || !ws) return;
    if (code === undefined || !isSendableCloseCode(code)) ws.end();
    else ws.end(code, clipReason(reason));
  }

  terminate(): void {
    if (!this.closed) this.ws?.close();
  }

  pause(): void {}

  resume(): void {}
}

export function listenUws(uws: Uws, handler: Handler, opts: ListenOptions, log?: Logger): Promise<Listener> {
  const app: TemplatedApp = uws.App();
  const inFlight = new InFlight();
  const drain: DrainState = { draining: false };
  const wsOpts = websocketOptions(opts.websocket);
  const sockets = new UwsWebSockets(wsOpts, inFlight);
  app.ws<UserData>('/*', {
    // uWS takes whole seconds and refuses 1–7; below 8 the closest it offers is 8.
    idleTimeout: wsOpts.idleTimeoutSeconds === 0 ? 0 : Math.max(8, Math.round(wsOpts.idleTimeoutSeconds)),
    sendPingsAutomatically: wsOpts.idleTimeoutSeconds > 0,
    maxPayloadLength: wsOpts.maxPayloadLength,
    // Far above the high-water mark: send() reports backpressure long before uWS would drop a message.
    maxBackpressure: wsOpts.highWaterMark + 4 * wsOpts.maxPayloadLength,
    closeOnBackpressureLimit: 0,
    compression: uws.DISABLED,
    upgrade: (res, req, context) => onRequest(res, readHead(req), handler, log, inFlight, drain, { context, sockets }),
    open: (ws) => {
      // The subprotocol uWS answered with is not readable here; the handler chose it.
      const conn = ws.getUserData().conn;
      conn.onOpen(ws, conn.chosen);
    },
    message: (ws, message, isBinary) => ws.getUserData().conn.onMessage(message, isBinary),
    drain: (ws) => ws.getUserData().conn.onDrain(),
    close: (ws, code, message) => ws.getUserData().conn.onClose(code, message),
  });
  app.any('/*', (res, req) => onRequest(res, readHead(req), handler, log, inFlight, drain, null));
  return new Promise((resolve, reject) => {
    app.listen(opts.host, opts.port, (ls: us_listen_socket | false) => {
      if (!ls) {
        closeApp(uws, app, null);
        reject(new Error(`uWebSockets.js cannot listen on ${opts.host}:${opts.port} (address in use or not available)`));
        return;
      }
      const port = uws.us_socket_local_port(ls);
      let closing: Promise<void> | null = null;
      let listening = true;
      resolve({
        kind: 'uws',
        host: opts.host,
        port,
        get inFlight() {
          return inFlight.count;
        },
        get webSockets() {
          return sockets.open.size;
        },
        closeWebSockets: (code: number, reason: string) => sockets.open.closeAll(code, reason),
        // Only the listening socket: open connections keep being served until
        // close(), but every response from now on closes its connection. This
        // uWS build gives no handle on a connection once its response ended, so
        // connections idle at this point stay open until close() or uWS's idle
        // timeout (about 10 s); a request on one gets its answer, then the close.
        stopAccepting: async () => {
          drain.draining = true;
          if (!listening) return;
          listening = false;
          uws.us_listen_socket_close(ls);
        },
        drained: (timeoutMs: number) => inFlight.drained(timeoutMs),
        close: () =>
          (closing ??= new Promise<void>((done) => {
            closeApp(uws, app, listening ? ls : null);
            listening = false;
            // uWS frees closed sockets at the end of its loop iteration.
            setImmediate(done);
          })),
      });
    });
  });
}

/** app.close() (missing from the d.ts, present in this build) closes the listen socket and every open connection. */
function closeApp(uws: Uws, app: TemplatedApp, ls: us_listen_socket | null): void {
  const a = app as TemplatedApp & { close?: () => void };
  if (typeof a.close === 'function') a.close();
  else if (ls) uws.us_listen_socket_close(ls);
}
