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
}

export type HeaderList = Array<readonly [string, string]>;

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
}

export type Handler = (req: IncomingRequest, res: ResponseWriter) => void | Promise<void>;

export interface ListenOptions {
  host: string;
  port: number; // 0 = ephemeral
  /** 'auto' tries uWS and falls back to node:http when the native addon cannot load. */
  server: 'auto' | ListenerKind;
}

export interface Listener {
  readonly kind: ListenerKind;
  readonly host: string;
  readonly port: number;
  /** Requests whose response has not ended yet (streams included). */
  readonly inFlight: number;
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
