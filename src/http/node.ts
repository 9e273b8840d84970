// node:http listener: the fallback when uWS cannot load (or server = 'node').
// Same behaviour as the uWS adapter from the handler's point of view.
import http, { type IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocketServer, type WebSocket } from 'ws';
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
  byteLength,
  declaredLength,
  framingError,
  framingErrorBody,
  isBodylessStatus,
  isListenerOwnedHeader,
  mayReportLength,
  unwrapMapped,
  InFlight,
  assertValidHeader,
} from './listener-util.ts';

const NO_HEADERS: HeaderList = [];

/** Flat [k1, v1, k2, v2...] for writeHead: keeps order and repeats (set-cookie). */
function flatHeaders(headers: HeaderList): string[] {
  const flat: string[] = [];
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i];
    if (!isListenerOwnedHeader(h[0])) flat.push(h[0], h[1]);
  }
  return flat;
}

let connectionIds = 0;
const CONNECTION = Symbol('utilmeta-proxy.connection');

/** One client socket, made on its first request (one object per connection, not per request). */
class NodeConnection implements ClientConnection {
  readonly id = ++connectionIds;
  /** Requests begun on this socket whose response has not closed yet. */
  active = 0;
  private parked: Parked | null = null;

  constructor(private readonly socket: Socket) {
    socket.once('close', () => this.unpark());
  }

  static of(socket: Socket): NodeConnection {
    const s = socket as Socket & { [CONNECTION]?: NodeConnection };
    return (s[CONNECTION] ??= new NodeConnection(socket));
  }

  /** A request begins on this connection: it is no longer idle. */
  begin(): void {
    this.active++;
    if (this.parked !== null) this.unpark();
  }

  close(): void {
    this.socket.destroy();
  }

  park(p: Parked): boolean {
    // active > 1: a pipelined request already began, so the connection is not idle after this response.
    if (this.socket.destroyed || this.active > 1) return false;
    const old = this.parked;
    this.parked = p;
    if (old !== null) old.release();
    return true;
  }

  private unpark(): void {
    const p = this.parked;
    this.parked = null;
    p?.release();
  }
}

/** What accepting a WebSocket on node:http needs: the upgrade event's socket and its first bytes. */
interface UpgradeContext {
  ws: NodeWebSockets;
  req: IncomingMessage;
  socket: Duplex;
  head: Buffer;
}

class NodeResponse implements ResponseWriter {
  upgrade: UpgradeContext | null = null;
  private gone = false;
  private ended = false;
  private started = false;
  private total = -1;
  private accepted = 0;
  private waiting = false;
  private abortCbs: Array<() => void> | null = null;
  private drainCb: (() => void) | null = null;

  constructor(
    private readonly res: ServerResponse,
    private readonly isHead: boolean,
    private readonly body: BodyQueue | null,
    private readonly log: Logger | undefined,
    private readonly done: () => void,
    private readonly drain: DrainState,
    conn: NodeConnection,
  ) {
    res.once('close', () => {
      conn.active--;
      done();
      if (!res.writableFinished) this.handleAborted();
    });
  }

  get aborted(): boolean {
    return this.gone || this.ended;
  }

  onAborted(cb: () => void): void {
    if (this.res.writableFinished) return;
    if (this.gone) queueMicrotask(cb);
    else (this.abortCbs ??= []).push(cb);
  }

  onDrain(cb: () => void): void {
    if (this.waiting && !this.gone) this.drainCb = cb;
    else queueMicrotask(cb);
  }

  send(status: number, headers: HeaderList, body?: Buffer | string): void {
    if (this.gone || this.started) return;
    const bodyless = this.isHead || isBodylessStatus(status);
    const flat = flatHeaders(headers);
    // Answering an over-limit upload (the 413 path): close rather than read the
    // rest, as the uWS adapter does. Other unread bodies are dumped by node.
    if (!bodyless && this.body !== null && this.body.refused) flat.push('connection', 'close');
    if (!bodyless || (body !== undefined && mayReportLength(status))) flat.push('content-length', String(byteLength(body)));
    // Draining: an answer to a request that arrived before the drain closes its connection too.
    if (this.drain.draining) this.res.shouldKeepAlive = false;
    this.res.writeHead(status, flat); // throws on invalid headers, before anything is sent
    this.started = this.ended = true;
    if (bodyless || body === undefined) this.res.end();
    else this.res.end(body);
    this.finish();
  }

  writeHead(status: number, headers: HeaderList, contentLength?: number): void {
    if (this.gone || this.started) return;
    this.beginHead(status, flatHeaders(headers), contentLength);
  }

  relayHead(status: number, fields: string[], contentLength?: number): void {
    if (this.gone || this.started) return;
    // node checks header values itself whatever we say; only the names it must own are dropped.
    let n = 0;
    for (let i = 0; i < fields.length; i += 2) {
      if (isListenerOwnedHeader(fields[i])) continue;
      fields[n++] = fields[i];
      fields[n++] = fields[i + 1];
    }
    fields.length = n;
    this.beginHead(status, fields, contentLength);
  }

  private beginHead(status: number, flat: string[], contentLength: number | undefined): void {
    const known = contentLength !== undefined && Number.isSafeInteger(contentLength) && contentLength >= 0;
    if (this.drain.draining) this.res.shouldKeepAlive = false;
    if (this.isHead || isBodylessStatus(status)) {
      if (known && mayReportLength(status)) flat.push('content-length', String(contentLength));
      this.res.writeHead(status, flat);
      this.started = this.ended = true;
      this.res.end();
      this.finish();
      return;
    }
    if (known) {
      this.total = contentLength;
      flat.push('content-length', String(contentLength));
    }
    this.res.writeHead(status, flat); // node sends it with the first chunk, like the uWS adapter
    this.started = true;
  }

  write(chunk: Buffer): boolean {
    if (this.gone || this.ended) return true;
    if (!this.started) this.writeHead(200, NO_HEADERS);
    if (this.ended) return true;
    if (chunk.length === 0) return !this.waiting;
    const fit = withinDeclared(chunk, this.total, this.accepted);
    if (fit === null) return !this.waiting;
    this.accepted += fit.length;
    const ok = this.res.write(fit);
    if (!ok && !this.waiting) {
      this.waiting = true;
      this.res.once('drain', () => this.handleDrain());
    }
    return ok;
  }

  end(): void {
    if (this.gone || this.ended) return;
    if (!this.started) this.writeHead(200, NO_HEADERS);
    if (this.ended) return;
    this.ended = true;
    if (this.total >= 0 && this.accepted < this.total) {
      // Short body: cut the connection so the client does not take it as complete.
      this.res.destroy();
      return;
    }
    this.res.end();
    this.finish();
  }

  abort(): void {
    if (this.gone || this.res.writableEnded) return;
    this.ended = true;
    this.res.destroy();
  }

  acceptWebSocket(opts: AcceptWebSocket, handlers: WebSocketHandlers): ServerWebSocket | null {
    const u = this.upgrade;
    if (!u || this.gone || this.started) return null;
    const extra = opts.headers ?? NO_HEADERS;
    for (const [k, v] of extra) assertValidHeader(k, v);
    this.started = this.ended = true;
    // From here the socket is the WebSocket's: its close is the socket's end, not an abort.
    this.abortCbs = null;
    this.drainCb = null;
    this.finish();
    this.done(); // the WebSocket counts in flight on its own
    return u.ws.accept(u, opts.protocol ?? null, extra, handlers);
  }

  fail(err: unknown): void {
    this.log?.error({ err }, 'request handler failed');
    if (this.gone || this.res.writableEnded) return;
    if (!this.started) {
      this.send(500, [['content-type', 'text/plain; charset=utf-8']], 'internal server error\n');
    } else {
      this.ended = true;
      this.res.destroy();
    }
  }

  private finish(): void {
    this.abortCbs = null;
    this.body?.discard();
  }

  private handleDrain(): void {
    this.waiting = false;
    const cb = this.drainCb;
    this.drainCb = null;
    cb?.();
  }

  private handleAborted(): void {
    if (this.gone || (this.upgrade && this.ended)) return;
    this.gone = true;
    this.body?.fail(new ClientAbortedError());
    const cbs = this.abortCbs;
    this.abortCbs = null;
    if (cbs) for (const cb of cbs) runSafely(cb, this.log);
    const d = this.drainCb;
    this.drainCb = null;
    if (d) runSafely(d, this.log);
  }

}


function readHead(req: IncomingMessage): RequestHead {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const raw = req.rawHeaders;
  const headers: Array<readonly [string, string]> = new Array(raw.length >> 1);
  let contentLength: string | undefined;
  let chunked = false;
  for (let i = 0, j = 0; i < raw.length; i += 2, j++) {
    const k = raw[i].toLowerCase();
    headers[j] = [k, raw[i + 1]];
    if (k === 'content-length') contentLength ??= raw[i + 1];
    else if (k === 'transfer-encoding') chunked = true;
  }
  return { path: q === -1 ? url : url.slice(0, q), query: q === -1 ? '' : url.slice(q + 1), headers, contentLength, chunked };
}

function refuseHandshake(res: ServerResponse, e: HandshakeError, isHead: boolean): void {
  const text = isHead ? '' : handshakeErrorBody(e);
  const flat = ['content-type', 'application/json', 'connection', 'close', 'content-length', String(Buffer.byteLength(text))];
  for (const [k, v] of handshakeErrorHeaders(e)) flat.push(k, v);
  res.writeHead(e.status, flat);
  res.end(text);
}

function onRequest(
  req: IncomingMessage, res: ServerResponse, handler: Handler, log: Logger | undefined, inFlight: InFlight,
  drain: DrainState,
  upgrade: { ws: NodeWebSockets; socket: Duplex; head: Buffer } | null = null,
): void {
  const { path, query, headers, contentLength, chunked } = readHead(req);
  // First, before anything reads the body; the connection is closed after the answer.
  const bad = framingError(headers);
  if (bad) {
    const text = req.method === 'HEAD' ? '' : framingErrorBody(bad);
    res.writeHead(bad.status, ['content-type', 'application/json', 'connection', 'close', 'content-length', String(Buffer.byteLength(text))]);
    res.end(text);
    return;
  }
  const declared = chunked ? -1 : declaredLength(contentLength);
  // The same handshake check as the uWS adapter: a bad handshake never reaches the handler.
  const hs = checkHandshake(req.method ?? 'GET', headers, chunked || declared > 0);
  let handshake: WebSocketHandshake | null = null;
  if (hs) {
    if ('error' in hs) return refuseHandshake(res, hs.error, req.method === 'HEAD');
    if (upgrade && req.httpVersion !== '1.1') return refuseHandshake(res, { status: 400, message: 'a WebSocket handshake needs HTTP/1.1' }, false);
    // Only the upgrade event can hand the socket over (node sends a handshake
    // without Connection: Upgrade to the request event; checkHandshake refused it).
    if (upgrade) handshake = hs.handshake;
  }
  let body: BodyQueue | null = null;
  if (chunked || declared > 0) {
    body = new BodyQueue(
      {
        pause: () => req.pause(),
        resume: () => req.resume(),
        // Listeners only once someone reads: until then node keeps the data in
        // the socket, and dumps it itself if the body is never read.
        start: (qu) => {
          req.on('data', (c: Buffer) => qu.push(c));
          req.on('end', () => qu.end());
          req.on('error', (e) => qu.fail(e));
          req.on('close', () => {
            if (!req.complete) qu.fail(new ClientAbortedError());
          });
        },
      },
      declared,
    );
  }
  const conn = NodeConnection.of(req.socket);
  conn.begin();
  const out = new NodeResponse(res, req.method === 'HEAD', body, log, inFlight.begin(), drain, conn);
  if (handshake && upgrade) out.upgrade = { ws: upgrade.ws, req, socket: upgrade.socket, head: upgrade.head };
  const request = new ListenerRequest('node', req.method ?? 'GET', path, query, headers, unwrapMapped(req.socket.remoteAddress), body, handshake, conn);
  try {
    const p = handler(request, out);
    if (p && typeof p.then === 'function') p.then(undefined, (err: unknown) => out.fail(err));
  } catch (err) {
    out.fail(err);
  }
}

/**
 * An `upgrade` event: the request goes through the same path as any other, with
 * a ServerResponse bound to the raw socket so that a refusal or a relayed
 * non-101 answer is an ordinary HTTP response (the connection closes after it).
 */
function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, handler: Handler, log: Logger | undefined, inFlight: InFlight, ws: NodeWebSockets, drain: DrainState): void {
  socket.on('error', () => {}); // a reset while the handshake is pending: the close event does the rest
  const res = new ServerResponse(req);
  res.shouldKeepAlive = false;
  res.assignSocket(socket as Socket);
  // Not handed to a WebSocket: close once the answer is out (there is no parser left on this socket).
  res.on('finish', () => (socket as Socket).destroySoon());
  onRequest(req, res, handler, log, inFlight, drain, { ws, socket, head });
}

/** Symbol on the IncomingMessage: the subprotocol the handler chose. */
const CHOSEN = Symbol('utilmeta-proxy.ws-protocol');

/** The accepted WebSockets of one node:http listener (ws in noServer mode), with their idle pings. */
class NodeWebSockets {
  readonly open = new OpenSockets<NodeServerWebSocket>();
  private readonly wss: WebSocketServer;
  private timer: NodeJS.Timeout | null = null;

  constructor(readonly opts: WebSocketOptions, private readonly inFlight: InFlight, private readonly log: Logger | undefined) {
    this.wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      // No extension is negotiated on either listener (uWS here runs without compression too).
      perMessageDeflate: false,
      maxPayload: opts.maxPayloadLength,
      handleProtocols: (_offered, req) => (req as IncomingMessage & { [CHOSEN]?: string | null })[CHOSEN] ?? false,
    });
  }

  accept(u: UpgradeContext, protocol: string | null, headers: HeaderList, handlers: WebSocketHandlers): ServerWebSocket | null {
    (u.req as IncomingMessage & { [CHOSEN]?: string | null })[CHOSEN] = protocol;
    const conn = new NodeServerWebSocket(handlers, this.opts.highWaterMark, this.log);
    const onHeaders = (lines: string[]) => {
      for (const [k, v] of headers) lines.push(`${k}: ${v}`);
    };
    this.wss.once('headers', onHeaders);
    const done = this.inFlight.begin();
    try {
      this.wss.handleUpgrade(u.req, u.socket, u.head, (ws) => conn.attach(ws));
    } finally {
      this.wss.off('headers', onHeaders);
    }
    if (!conn.attached) {
      done();
      return null; // the socket was already gone
    }
    this.open.add(conn);
    conn.onEnd = () => {
      this.open.delete(conn);
      done();
      if (this.open.size === 0) this.stopTimer();
    };
    this.startTimer();
    return conn;
  }

  /** Pings a client idle for half the timeout; drops one that stayed silent for all of it (ws has no keepalive of its own). */
  private startTimer(): void {
    const idle = this.opts.idleTimeoutSeconds * 1000;
    if (this.timer || idle <= 0) return;
    this.timer = setInterval(() => {
      const now = Date.now();
      for (const c of this.open.set) c.tick(now, idle);
    }, Math.max(250, Math.floor(idle / 4)));
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  close(): void {
    this.stopTimer();
    for (const c of [...this.open.set]) c.terminate();
  }
}

/** ServerWebSocket over a `ws` WebSocket. */
class NodeServerWebSocket implements ServerWebSocket {
  attached = false;
  onEnd: (() => void) | null = null;
  readonly canPause = true;
  private ws: WebSocket | null = null;
  private closed = false;
  private needDrain = false;
  private lastSeen = Date.now();
  private pinged = false;
  private paused = false;
  private readonly afterSend = () => this.checkDrain();

  constructor(private readonly handlers: WebSocketHandlers, private readonly highWater: number, private readonly log: Logger | undefined) {}

  attach(ws: WebSocket): void {
    this.ws = ws;
    this.attached = true;
    ws.on('message', (data, isBinary) => {
      this.seen();
      this.handlers.message(data as Buffer, isBinary);
    });
    ws.on('pong', () => this.seen());
    ws.on('ping', () => this.seen());
    ws.on('error', (err) => this.log?.debug({ err }, 'websocket client error'));
    ws.on('close', (code, reason) => {
      this.closed = true;
      this.onEnd?.();
      try {
        this.handlers.close(code, reason.toString('utf8'));
      } catch (err) {
        this.log?.error({ err }, 'websocket close handler failed');
      }
    });
  }

  get protocol(): string {
    return this.ws?.protocol ?? '';
  }

  get bufferedAmount(): number {
    return this.ws?.bufferedAmount ?? 0;
  }

  send(data: Buffer, binary: boolean): boolean {
    const ws = this.ws;
    if (!ws || this.closed || ws.readyState !== 1) return true;
    const over = ws.bufferedAmount + data.length > this.highWater;
    if (over) this.needDrain = true;
    // The callback runs once the socket took the frame: how drain is learnt without ws internals.
    ws.send(data, { binary }, this.needDrain ? this.afterSend : undefined);
    return !over;
  }

  close(code?: number, reason = ''): void {
    const ws = this.ws;
    if (!ws || this.closed) return;
    if (code === undefined || !isSendableCloseCode(code)) ws.close();
    else ws.close(code, clipReason(reason));
  }

  terminate(): void {
    if (!this.closed) this.ws?.terminate();
  }

  pause(): void {
    this.paused = true;
    this.ws?.pause();
  }

  resume(): void {
    this.paused = false;
    this.seen();
    this.ws?.resume();
  }

  tick(now: number, idleMs: number): void {
    const ws = this.ws;
    if (!ws || this.closed) return;
    const quiet = now - this.lastSeen;
    if (this.paused) {
      // Nothing is read while paused (not even a pong, nor the client's
      // going away): a ping every half timeout still finds a dead connection
      // through the failed write, and a live one is not idle, only held back.
      if (quiet >= idleMs / 2) {
        this.lastSeen = now;
        ws.ping();
      }
      return;
    }
    if (quiet >= idleMs) {
      ws.terminate(); // no frame, not even a pong, for the whole idle timeout
    } else if (quiet >= idleMs / 2 && !this.pinged) {
      this.pinged = true;
      ws.ping();
    }
  }

  private seen(): void {
    this.lastSeen = Date.now();
    this.pinged = false;
  }

  private checkDrain(): void {
    if (!this.needDrain || this.closed || this.bufferedAmount > this.highWater / 2) return;
    this.needDrain = false;
    try {
      this.handlers.drain();
    } catch (err) {
      this.log?.error({ err }, 'websocket drain handler failed');
    }
  }
}

export function listenNode(handler: Handler, opts: ListenOptions, log?: Logger): Promise<Listener> {
  const inFlight = new InFlight();
  const sockets = new NodeWebSockets(websocketOptions(opts.websocket), inFlight, log);
  // While draining, answers end their connection so that clients move on.
  const drain: DrainState = { draining: false };
  const server = http.createServer((req, res) => onRequest(req, res, handler, log, inFlight, drain));
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => onUpgrade(req, socket, head, handler, log, inFlight, sockets, drain));
  server.keepAliveTimeout = 5000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: opts.host, port: opts.port }, () => {
      server.off('error', reject);
      server.on('error', (err) => log?.error({ err }, 'node:http server error'));
      const port = (server.address() as AddressInfo).port;
      let closing: Promise<void> | null = null;
      resolve({
        kind: 'node',
        host: opts.host,
        port,
        get inFlight() {
          return inFlight.count;
        },
        get webSockets() {
          return sockets.open.size;
        },
        closeWebSockets: (code: number, reason: string) => sockets.open.closeAll(code, reason),
        stopAccepting: async () => {
          if (drain.draining) return;
          drain.draining = true;
          // close() stops the listening socket; its callback waits for every
          // connection, which close() below cuts, so it is not awaited here.
          closing ??= new Promise<void>((done) => server.close(() => done()));
          server.closeIdleConnections();
        },
        drained: (timeoutMs: number) => inFlight.drained(timeoutMs),
        close: () => {
          closing ??= new Promise<void>((done) => server.close(() => done()));
          sockets.close(); // upgraded sockets are no longer the server's connections
          server.closeAllConnections(); // keep-alive sockets would otherwise hold close() open
          return closing;
        },
      });
    });
  });
}
