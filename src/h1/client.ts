// A keep-alive HTTP/1.1 client for the proxy's common case: plain http, a request body
// that is absent or already in memory, no upgrade. It exists because the benchmark's
// floor measurements put undici at ~9 µs of CPU per request over a bare keep-alive
// client on the same listener, a third of the proxy's budget; undici stays the client
// for everything else (streamed uploads, https, anything unusual). It speaks undici's
// dispatch-handler protocol, so the upstream leg (proxy/upstream.ts) drives either one.
// Its conformance suite is test/h1-client.test.ts.
import net from 'node:net';
import { H1ParseError, ResponseParser, type ResponseHead } from './parser.ts';

/** The subset of undici's DispatchController the upstream leg uses. */
export interface H1Controller {
  readonly aborted: boolean;
  readonly paused: boolean;
  readonly reason: Error | null;
  abort(reason: Error): void;
  pause(): void;
  resume(): void;
}

/** undici's dispatch-handler callbacks (the v7 names), as this client calls them (headers flat, see below). */
export interface H1Handler {
  onRequestStart?(controller: H1Controller, context: unknown): void;
  /** `headers`: flat [name, value, ...], lower-case names (undici passes an object here; handlers for both accept either). */
  onResponseStart?(controller: H1Controller, statusCode: number, headers: string[], statusMessage?: string): void;
  onResponseData?(controller: H1Controller, chunk: Buffer): void;
  onResponseEnd?(controller: H1Controller, trailers: Record<string, string | string[]>): void;
  onResponseError?(controller: H1Controller, err: Error): void;
}

export interface H1Request {
  /** An http origin: the address to connect to (IPv6 without brackets) and its Host header. */
  host: string;
  port: number;
  /** `host[:port]` as in the origin's URL; connections are pooled by it. */
  hostHeader: string;
  method: string;
  /** Request target (path and query), already encoded. */
  path: string;
  /** Flat [name, value, ...], lower-case names; no host or hop-by-hop headers (a content-length is replaced by the body's). */
  headers: readonly string[];
  body: Buffer | null;
  /** Longest silence while waiting for the response (head or body), ms. */
  timeoutMs: number;
}

/** Where a connection goes: the address, the port and the origin (`http://host:port`). */
export interface H1ConnectTarget {
  host: string;
  port: number;
  origin: string;
}

/** Opens a connected socket (or fails, with a Node or undici error code); undici's connector signature in spirit. */
export type H1Connector = (target: H1ConnectTarget, cb: (err: Error | null, socket: net.Socket | null) => void) => void;

export interface H1Options {
  /** Most connections per origin; requests beyond wait for one. */
  connections: number;
  /** How long an idle connection is kept, ms (a server's shorter Keep-Alive hint wins). */
  keepAliveMs: number;
  connectTimeoutMs: number;
  /** Largest response head and trailer section, bytes. */
  maxHeaderSize?: number;
  /** Opens connections (default: net.connect with TCP_NODELAY and the connect timeout). */
  connect?: H1Connector;
}

/**
 * Every direct-read socket of this thread reads into this one buffer. Reads run
 * one at a time on the event loop and each is consumed before the next (a body
 * chunk the handler may keep is copied), so it can be shared: no memory per
 * connection, however many upstream connections stay open.
 */
const SHARED_READ = Buffer.allocUnsafeSlow(64 * 1024);
/** The connection a direct-read socket delivers to. */
const READER = Symbol('h1.reader');

interface DirectReader {
  onRead(bytes: Buffer): void;
}

function deliverRead(this: net.Socket & { [READER]?: DirectReader }, nread: number, buf: Buffer): void {
  this[READER]?.onRead(buf.subarray(0, nread));
}

/**
 * net.connect with direct reads: the socket's reads go straight into the shared
 * buffer and to its Conn (net's `onread`) instead of through the readable
 * stream, so a read allocates no buffer, emits no 'data' and schedules no
 * next-tick read-ahead. Give the socket to a Conn as any other.
 */
export function directReadSocket(opts: net.TcpNetConnectOpts): net.Socket {
  const socket = net.connect({ ...opts, onread: { buffer: SHARED_READ, callback: deliverRead as (n: number, b: Buffer) => boolean } });
  (socket as net.Socket & { [READER]?: DirectReader | null })[READER] = null;
  return socket;
}

/** The default connector: a plain TCP connect bounded by the connect timeout. */
export function tcpConnector(timeoutMs: number): H1Connector {
  return (t, cb) => {
    const socket = directReadSocket({ host: t.host, port: t.port, noDelay: true, keepAlive: true, keepAliveInitialDelay: 60_000 });
    const timer = setTimeout(() => {
      socket.removeListener('error', onError);
      socket.destroy();
      cb(new H1Error('UND_ERR_CONNECT_TIMEOUT', `connect to ${t.origin} timed out`), null);
    }, timeoutMs);
    const onError = (err: Error) => {
      clearTimeout(timer);
      cb(err, null);
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeListener('error', onError);
      cb(null, socket);
    });
  };
}

/** An error with undici's / Node's `code`, so callers classify both clients' failures alike. */
export class H1Error extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

/** Methods that may be sent again on a fresh connection when a reused one turned out dead. */
const REPLAYABLE = new Set(['GET', 'HEAD', 'OPTIONS']);
/** Methods whose requests are framed with `content-length: 0` when they have no body (as undici does). */
const EXPECTS_BODY = new Set(['POST', 'PUT', 'PATCH']);
/**
 * A value that would break the request head. Three indexOf scans (native, vectorized)
 * cost a tenth of a regular expression's over a 700-character token.
 */
function breaksHead(v: string): boolean {
  return v.indexOf('\r') !== -1 || v.indexOf('\n') !== -1 || v.indexOf('\0') !== -1;
}
/** A server's Keep-Alive hint is trusted minus this margin (a request crossing its close). */
const HINT_MARGIN_MS = 1000;

class H1Exchange implements H1Controller {
  aborted = false;
  paused = false;
  reason: Error | null = null;
  conn: Conn | null = null;
  /** Response head seen (errors after it are body errors). */
  responded = false;
  settled = false;
  /** Sent again on a fresh connection once already. */
  replayed = false;

  constructor(readonly pool: OriginPool, readonly req: H1Request, readonly handler: H1Handler) {}

  abort(reason: Error): void {
    if (this.settled || this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const conn = this.conn;
    if (conn) conn.destroy(); // mid-exchange: the connection cannot be reused
    else this.pool.dequeue(this);
    this.fail(reason);
  }

  pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.conn?.socket?.pause();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.conn?.socket?.resume();
  }

  fail(err: Error): void {
    if (this.settled) return;
    this.settled = true;
    this.handler.onResponseError?.(this, err);
  }
}

/** One connection: at most one exchange at a time (no pipelining). */
class Conn implements DirectReader {
  /** Null until the connector delivers it. */
  socket: net.Socket | null = null;
  readonly parser: ResponseParser;
  exchange: H1Exchange | null = null;
  connected = false;
  destroyed = false;
  /** Carried a complete exchange before (a request on it may meet a server-side close). */
  reused = false;
  private idleMs: number;
  private trailers: Record<string, string | string[]> | null = null;
  /**
   * One timer per connection for both of its silences (an exchange waiting on
   * the server, an idle connection waiting for work), instead of the socket's
   * setTimeout, which allocates a timer and a bound function on every call and
   * refreshes it on every read and write: twice per request here. A later
   * deadline only moves `deadline`; the pending timer fires early and re-arms
   * for the rest, so a busy connection re-arms about once per idle period.
   */
  private deadline = 0;
  private timer: NodeJS.Timeout | null = null;
  private timerAt = 0;
  /** A direct-read socket: body chunks are views of the shared read buffer. */
  private direct = false;

  constructor(readonly pool: OriginPool) {
    this.idleMs = pool.opts.keepAliveMs;
    this.parser = new ResponseParser(
      {
        onHead: (h) => this.onHead(h),
        onBody: (chunk) => {
          const x = this.exchange;
          if (x && !x.settled) x.handler.onResponseData?.(x, this.direct ? Buffer.from(chunk) : chunk);
        },
        onComplete: (t) => (this.trailers = t),
      },
      { maxHeaderSize: pool.opts.maxHeaderSize ?? 16 * 1024 },
    );
  }

  /** Opens the connection (after the first exchange was assigned, so a failure has someone to tell). */
  start(): void {
    const pool = this.pool;
    pool.connector({ host: pool.host, port: pool.port, origin: pool.origin }, (err, socket) => this.onConnect(err, socket));
  }

  private onConnect(err: Error | null, socket: net.Socket | null): void {
    if (this.destroyed) {
      socket?.destroy(); // the exchange was aborted while connecting
      return;
    }
    if (err || !socket) {
      const x = this.exchange;
      this.exchange = null;
      if (x) x.conn = null;
      this.destroy();
      x?.fail(err ?? new H1Error('UND_ERR_SOCKET', `connect to ${this.pool.origin} failed`));
      return;
    }
    this.socket = socket;
    this.connected = true;
    const direct = socket as net.Socket & { [READER]?: DirectReader | null };
    if (direct[READER] === null) {
      this.direct = true;
      direct[READER] = this;
    } else {
      socket.on('data', (d: Buffer) => this.onRead(d));
    }
    socket.on('end', () => this.onEnd());
    socket.on('error', (e) => this.onClosed(e));
    socket.on('close', () => this.onClosed(null));
    const x = this.exchange;
    if (x) this.send(x);
  }

  /** Starts an exchange on this connection (connected or not yet). */
  assign(x: H1Exchange): void {
    this.exchange = x;
    x.conn = this;
    this.parser.reset(x.req.method === 'HEAD');
    this.trailers = null;
    if (this.connected) this.send(x);
  }

  private send(x: H1Exchange): void {
    const r = x.req;
    let head = `${r.method} ${r.path} HTTP/1.1\r\nhost: ${this.pool.hostHeader}\r\n`;
    const h = r.headers;
    for (let i = 0; i < h.length; i += 2) {
      // The length of the body in hand is the only one that may go out.
      if (h[i] === 'content-length') continue;
      const v = h[i + 1];
      if (breaksHead(v)) {
        this.release(false);
        x.fail(new H1Error('UND_ERR_INVALID_ARG', `invalid value for header ${h[i]}`));
        return;
      }
      head += `${h[i]}: ${v}\r\n`;
    }
    if (r.body) head += `content-length: ${r.body.length}\r\n\r\n`;
    else head += EXPECTS_BODY.has(r.method) ? 'content-length: 0\r\n\r\n' : '\r\n';
    const socket = this.socket!;
    this.expireIn(r.timeoutMs);
    if (r.body && r.body.length > 0) {
      socket.cork();
      socket.write(head, 'latin1');
      socket.write(r.body);
      socket.uncork();
    } else {
      socket.write(head, 'latin1');
    }
    if (x.paused) socket.pause();
  }

  private onHead(h: ResponseHead): void {
    const x = this.exchange;
    if (h.keepAliveHintMs !== undefined) this.idleMs = Math.min(this.pool.opts.keepAliveMs, h.keepAliveHintMs - HINT_MARGIN_MS);
    if (!x || x.settled) return;
    x.responded = true;
    x.handler.onResponseStart?.(x, h.status, h.headers, h.statusText);
  }

  /** Bytes from the socket, by either path (direct reads or 'data'). */
  onRead(d: Buffer): void {
    const x = this.exchange;
    if (!x) {
      // Bytes on an idle connection: the server is not speaking HTTP/1.1 as agreed.
      this.destroy();
      return;
    }
    // Silence is measured from the last byte received.
    this.deadline = performance.now() + x.req.timeoutMs;
    // Under backpressure the rest of this read is still delivered (at most one socket
    // read, ≤ 64 KiB); the paused socket then stops the next one.
    let used: number;
    try {
      used = this.parser.execute(d);
    } catch (err) {
      this.destroy();
      x.fail(err as H1ParseError);
      return;
    }
    if (!this.parser.done) return;
    // Anything past the response is unasked-for data: do not reuse the connection.
    this.complete(x, used === d.length);
  }

  private complete(x: H1Exchange, clean: boolean): void {
    const trailers = this.trailers ?? {};
    const reusable = clean && this.parser.keepAlive && this.idleMs > 0 && !x.aborted;
    this.release(reusable);
    if (x.settled) return;
    x.settled = true;
    x.handler.onResponseEnd?.(x, trailers);
  }

  /** The exchange is over: back to the pool, or closed. */
  private release(reusable: boolean): void {
    const x = this.exchange;
    this.exchange = null;
    if (x) {
      x.conn = null;
      if (x.paused) this.socket?.resume();
    }
    if (!reusable || this.destroyed) {
      this.destroy();
      return;
    }
    this.reused = true;
    this.expireIn(this.idleMs);
    this.pool.idle(this);
  }

  private onEnd(): void {
    const x = this.exchange;
    if (x && this.parser.untilClose) {
      try {
        this.parser.finish();
      } catch {
        // untilClose cannot fail
      }
      this.complete(x, false);
      return;
    }
    this.onClosed(null);
  }

  private expireIn(ms: number): void {
    const at = performance.now() + ms;
    this.deadline = at;
    if (this.timer !== null) {
      if (this.timerAt <= at) return; // fires first, then re-arms for the rest
      clearTimeout(this.timer);
    }
    this.arm(at, ms);
  }

  private arm(at: number, ms: number): void {
    this.timerAt = at;
    this.timer = setTimeout(Conn.onTimer, ms, this);
    this.timer.unref();
  }

  private static onTimer(c: Conn): void {
    c.timer = null;
    if (c.destroyed) return;
    // Timers run on the loop's cached clock and may fire a little early.
    const left = c.deadline - performance.now();
    if (left >= 1) c.arm(c.deadline, left);
    else c.onTimeout();
  }

  private onTimeout(): void {
    const x = this.exchange;
    if (!x) {
      this.destroy(); // idle long enough
      return;
    }
    const err = x.responded
        ? new H1Error('UND_ERR_BODY_TIMEOUT', 'response body timed out')
        : new H1Error('UND_ERR_HEADERS_TIMEOUT', 'response head timed out');
    this.destroy();
    x.fail(err);
  }

  /** The socket failed or closed. */
  private onClosed(err: Error | null): void {
    const x = this.exchange;
    this.exchange = null;
    if (x) x.conn = null;
    const wasReused = this.reused;
    const started = this.parser.started;
    this.destroy();
    if (!x || x.settled) return;
    // A reused connection the server closed before answering anything: the request
    // may not have been read at all; a safe request gets one fresh connection.
    if (wasReused && !started && !x.replayed && REPLAYABLE.has(x.req.method)) {
      x.replayed = true;
      this.pool.dispatchFresh(x);
      return;
    }
    const code = (err as NodeJS.ErrnoException | null)?.code;
    x.fail(err && code ? err : new H1Error('UND_ERR_SOCKET', err ? err.message : `connection to ${this.pool.hostHeader} closed before the response was complete`));
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.socket?.destroy();
    this.pool.gone(this);
  }
}

class OriginPool {
  private readonly free: Conn[] = [];
  private readonly queue: H1Exchange[] = [];
  private count = 0;
  private closing: (() => void) | null = null;

  readonly origin: string;
  readonly connector: H1Connector;

  constructor(readonly host: string, readonly port: number, readonly hostHeader: string, readonly opts: H1Options, private readonly onEmpty: () => void) {
    this.origin = `http://${hostHeader}`;
    this.connector = opts.connect ?? tcpConnector(opts.connectTimeoutMs);
  }

  get size(): number {
    return this.count;
  }

  dispatch(x: H1Exchange): void {
    let conn = this.free.pop();
    while (conn && conn.destroyed) conn = this.free.pop();
    if (conn) {
      conn.assign(x);
      return;
    }
    if (this.count < this.opts.connections) this.open(x);
    else this.queue.push(x);
  }

  /** A fresh connection for a replay, even at the pool's limit (the dead one freed a slot). */
  dispatchFresh(x: H1Exchange): void {
    if (this.count < this.opts.connections) this.open(x);
    else this.queue.unshift(x);
  }

  private open(x: H1Exchange): void {
    this.count++;
    const conn = new Conn(this);
    conn.assign(x);
    conn.start();
  }

  dequeue(x: H1Exchange): void {
    const i = this.queue.indexOf(x);
    if (i >= 0) this.queue.splice(i, 1);
  }

  /** A connection finished its exchange and can take another. */
  idle(conn: Conn): void {
    const next = this.queue.shift();
    if (next) {
      conn.assign(next);
      return;
    }
    if (this.closing) {
      conn.destroy();
      return;
    }
    this.free.push(conn);
  }

  /** A connection closed. */
  gone(conn: Conn): void {
    this.count--;
    const i = this.free.indexOf(conn);
    if (i >= 0) this.free.splice(i, 1);
    // A queued request takes the freed slot.
    const next = this.queue.shift();
    if (next) this.open(next);
    else if (this.count === 0) {
      this.closing?.();
      this.onEmpty();
    }
  }

  /** Idle connections close now; busy ones when their exchange ends. */
  close(): Promise<void> {
    for (const c of [...this.free]) c.destroy();
    if (this.count === 0) return Promise.resolve();
    return new Promise((resolve) => (this.closing = resolve));
  }
}

export class H1Agent {
  private readonly pools = new Map<string, OriginPool>();
  private closed = false;

  constructor(private readonly opts: H1Options) {}

  dispatch(req: H1Request, handler: H1Handler): void {
    // One pool per Host header (it names the address and port too); a caller's
    // string that is reused per origin keys the map without rehashing.
    const key = req.hostHeader;
    let pool = this.pools.get(key);
    if (!pool) {
      pool = new OriginPool(req.host, req.port, req.hostHeader, this.opts, () => this.pools.delete(key));
      this.pools.set(key, pool);
    }
    const x = new H1Exchange(pool, req, handler);
    handler.onRequestStart?.(x, {});
    if (x.aborted) return;
    if (this.closed) {
      x.fail(new H1Error('UND_ERR_CLOSED', 'the client is closed'));
      return;
    }
    pool.dispatch(x);
  }

  /** Open connections, all origins (for tests and metrics). */
  get connections(): number {
    let n = 0;
    for (const p of this.pools.values()) n += p.size;
    return n;
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.pools.values()].map((p) => p.close()));
  }
}
