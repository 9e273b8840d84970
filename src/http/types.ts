// The listener contract. Everything above the listener (routing, auth, proxying)
// sees only these two interfaces, so uWebSockets.js and node:http are
// interchangeable adapters at the edge (Hono-style).

export type ListenerKind = 'uws' | 'node';

/** One inbound HTTP request. Valid until the response is ended or aborted. */
export interface IncomingRequest {
  /** Upper-case method. */
  readonly method: string;
  /** Raw path as received, without the query string (not decoded). */
  readonly path: string;
  /** Raw query string without the leading '?', '' when absent. */
  readonly query: string;
  /** Header pairs in wire order, names lower-cased, repeated headers kept. */
  readonly headers: ReadonlyArray<readonly [string, string]>;
  /** First value of a header; `name` must be lower-case. */
  header(name: string): string | undefined;
  /** Socket peer address as text: IPv4 dotted, IPv6 without brackets, IPv4-mapped IPv6 unwrapped. */
  readonly remoteAddress: string;
  readonly listener: ListenerKind;
  /** True when the request declares a body (content-length > 0 or transfer-encoding). */
  readonly hasBody: boolean;
  /**
   * The body as a stream of chunks (each chunk is owned by the caller).
   * Single consumer: call at most once, and not together with readBody().
   * Respects backpressure (the listener pauses the socket while the consumer is slow).
   * Rejects with BodyTooLargeError once more than `limit` bytes arrived.
   */
  body(limit: number): AsyncIterable<Buffer>;
  /** Buffers the whole body. Rejects with BodyTooLargeError past `limit` bytes. */
  readBody(limit: number): Promise<Buffer>;
  /**
   * Set when the request is a WebSocket opening handshake (`Upgrade: websocket`)
   * that the listener found valid; null for every other request. A handshake the
   * listener finds invalid never reaches the handler (400, or 426 for a version).
   */
  readonly upgrade: WebSocketHandshake | null;
  /** The client connection the request arrived on. */
  readonly connection: ClientConnection;
}

/** Something kept on an idle connection until it is used again or closes. */
export interface Parked {
  release(): void;
}

/** A client connection, as far as the listener can follow it. */
export interface ClientConnection {
  /**
   * Unique per connection on node:http. On uWS unique per request: this build
   * cannot recognise a connection again once a response on it ended.
   */
  readonly id: number;
  /** Closes the connection at once; a response in flight on it is cut. */
  close(): void;
  /**
   * Keeps `p` while the connection is idle after the current response:
   * `p.release()` runs once, when the next request arrives on the connection
   * or the connection closes. A later park releases the earlier one. Returns
   * false, keeping nothing, when the listener cannot watch the idle connection
   * (uWS), or it is closed, or another request on it has already begun.
   */
  park(p: Parked): boolean;
}

/** A valid WebSocket opening handshake (RFC 6455 §4.2.1). */
export interface WebSocketHandshake {
  /** Sec-WebSocket-Key: base64 of 16 bytes. */
  readonly key: string;
  /** Sec-WebSocket-Version: always '13'. */
  readonly version: string;
  /** Sec-WebSocket-Protocol tokens, in the client's order ([] when none). */
  readonly protocols: readonly string[];
  /** Sec-WebSocket-Extensions as received ('' when absent). The listener accepts none of them. */
  readonly extensions: string;
}

/** What the handler tells the listener when it accepts a WebSocket. */
export interface AcceptWebSocket {
  /** The subprotocol to answer with (one the client offered), or none. */
  protocol?: string;
  /** Extra headers on the 101 response. */
  headers?: HeaderList;
}

/** Events of an accepted WebSocket, called by the listener. */
export interface WebSocketHandlers {
  /** One complete message (fragments joined). The buffer is owned by the callee. */
  message(data: Buffer, binary: boolean): void;
  /** After send() returned false: the buffered amount fell back below the low-water mark. */
  drain(): void;
  /**
   * Once, when the connection is gone: `code` as the client sent it (1005: a
   * close frame without a code; 1006: no close frame, the connection dropped or
   * timed out).
   */
  close(code: number, reason: string): void;
}

/** The client side of an accepted WebSocket. Methods are no-ops once closed. */
export interface ServerWebSocket {
  /** The negotiated subprotocol ('' when none). */
  readonly protocol: string;
  /** Bytes accepted by send() that the socket has not taken yet. */
  readonly bufferedAmount: number;
  /**
   * Sends one message. Returns false once bufferedAmount is over the high-water
   * mark: the caller should stop and wait for `drain` (the message was queued,
   * not dropped).
   */
  send(data: Buffer, binary: boolean): boolean;
  /** Starts the close handshake; `code` must be valid to send (1000–1003, 1007–1014, 3000–4999) or undefined for none. */
  close(code?: number, reason?: string): void;
  /** Drops the connection without a close handshake. */
  terminate(): void;
  /**
   * Whether pause() really stops reading from the client. node:http can; this
   * uWebSockets.js build cannot (its WebSocket has no pause), so there a caller
   * bounds what it buffers instead.
   */
  readonly canPause: boolean;
  pause(): void;
  resume(): void;
}

export type HeaderList = Array<readonly [string, string]>;

/** A flat [name, value, name, value, ...] list (as parsers and relayed heads carry headers) as a HeaderList. */
export function fieldPairs(fields: readonly string[]): HeaderList {
  const out: HeaderList = [];
  for (let i = 0; i < fields.length; i += 2) out.push([fields[i], fields[i + 1]]);
  return out;
}

/** The response side. All methods are no-ops once `aborted` is true. */
export interface ResponseWriter {
  /** True once the client went away (or the response was ended). */
  readonly aborted: boolean;
  /** Called once if the client disconnects before the response ended. */
  onAborted(cb: () => void): void;
  /**
   * Whole response in one go (head + body; corked on uWS).
   * `headers` must not contain content-length or transfer-encoding: the listener sets them.
   */
  send(status: number, headers: HeaderList, body?: Buffer | string): void;
  /**
   * Streaming: head first. `contentLength` (when known) is sent as content-length,
   * otherwise the body goes chunked. `headers` must not contain content-length / transfer-encoding.
   * For HEAD requests or 204/304 pass `contentLength` as reported and write no body.
   */
  writeHead(status: number, headers: HeaderList, contentLength?: number): void;
  /**
   * writeHead for a head relayed from an upstream: `fields` is flat
   * [name, value, name, value, ...], names lower-case, every field already
   * checked by the HTTP parser that read it and hop-by-hop fields removed, so
   * the listener writes them without checking them again. The listener owns
   * the array from then on.
   */
  relayHead(status: number, fields: string[], contentLength?: number): void;
  /** Writes a body chunk; returns false under backpressure (wait for onDrain). */
  write(chunk: Buffer): boolean;
  /** One-shot callback for when the socket can take more after write() returned false. */
  onDrain(cb: () => void): void;
  /** Ends the streamed response. */
  end(): void;
  /**
   * Cuts the connection without completing the response: for a body that failed
   * after the head went out, so the client sees a truncated response, not a short one.
   */
  abort(): void;
  /**
   * Answers a WebSocket handshake (`req.upgrade`) with 101 and hands over the
   * connection. Returns null when the request is not a handshake, the client
   * went away, or a response was already started. To refuse, use send() instead:
   * the connection then closes after the answer.
   */
  acceptWebSocket(opts: AcceptWebSocket, handlers: WebSocketHandlers): ServerWebSocket | null;
}

export type Handler = (req: IncomingRequest, res: ResponseWriter) => void | Promise<void>;

export interface ListenOptions {
  host: string;
  port: number; // 0 = ephemeral
  /** 'auto' tries uWS and falls back to node:http when the native addon cannot load. */
  server: 'auto' | ListenerKind;
  /** Accepted WebSockets (defaults: see DEFAULT_WEBSOCKET_OPTIONS). */
  websocket?: Partial<WebSocketOptions>;
}

export interface WebSocketOptions {
  /** Seconds without any frame from the client before it is pinged and, without an answer, dropped; 0 = never. */
  idleTimeoutSeconds: number;
  /** Largest message accepted from a client, in bytes; a larger one closes the socket with 1009. */
  maxPayloadLength: number;
  /** send() returns false above this many buffered bytes. */
  highWaterMark: number;
}

export const DEFAULT_WEBSOCKET_OPTIONS: WebSocketOptions = { idleTimeoutSeconds: 60, maxPayloadLength: 1024 * 1024, highWaterMark: 1024 * 1024 };

export interface Listener {
  readonly kind: ListenerKind;
  readonly host: string;
  readonly port: number;
  /** Requests whose response has not ended yet (streams included; an accepted WebSocket until it closes). */
  readonly inFlight: number;
  /** Accepted WebSockets still open. */
  readonly webSockets: number;
  /** Starts the close handshake of every open WebSocket (graceful shutdown: 1001). */
  closeWebSockets(code: number, reason: string): void;
  /**
   * Graceful shutdown, first step: closes the listening socket (no new
   * connections) and idle keep-alive connections. Requests in flight, and any
   * that still arrive on open connections, are served.
   */
  stopAccepting(): Promise<void>;
  /** Resolves true once nothing is in flight, or false when `timeoutMs` passed first. */
  drained(timeoutMs: number): Promise<boolean>;
  /** Stops accepting and closes open connections. */
  close(): Promise<void>;
}

export class BodyTooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`request body exceeds the limit of ${limit} bytes`);
  }
}
