// Pieces shared by the uWS and node:http adapters, so that both present exactly
// the same request/response behaviour to the handler.
import { STATUS_CODES } from 'node:http';
import type { Logger } from 'pino';
import { isFieldValue, isHttpToken } from '../core/text.ts';
import { BodyTooLargeError, type HeaderList, type IncomingRequest, type ListenerKind, type WebSocketHandshake, type ClientConnection } from './types.ts';

const statusLines: string[] = [];

/** "200 OK": uWS needs the whole status line text, not just the code. */
export function statusLine(status: number): string {
  return (statusLines[status] ??= `${status} ${STATUS_CODES[status] ?? 'Unknown'}`);
}

/** Responses that never carry a body, whatever the handler passes. */
export function isBodylessStatus(status: number): boolean {
  return status === 204 || status === 304 || status < 200;
}

/** Whether a bodyless response may still report a content-length (HEAD, 304; never 204/1xx). */
export function mayReportLength(status: number): boolean {
  return status >= 200 && status !== 204;
}

/**
 * Headers the listener owns: framing (content-length, transfer-encoding) is
 * computed by the listener, and uWS always writes its own Date, so a caller's
 * Date is dropped on both listeners to keep them identical (as nginx does).
 * Checked by length first: this runs for every response header.
 */
export function isListenerOwnedHeader(name: string): boolean {
  const n = name.length;
  if (n !== 4 && n !== 14 && n !== 17) return false;
  const l = name.toLowerCase();
  return l === 'date' || l === 'content-length' || l === 'transfer-encoding';
}

/** The handler's headers ask to close the connection after the response (`connection: close`). */
export function asksToClose(headers: HeaderList): boolean {
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i];
    if (h[0].length === 10 && h[0].toLowerCase() === 'connection' && h[1].toLowerCase() === 'close') return true;
  }
  return false;
}


/** Shared by a listener's responses: set once stopAccepting ran (answers then close their connection). */
export interface DrainState {
  draining: boolean;
}

const VALID_NAMES = new Set<string>();

/**
 * node:http rejects invalid header names/values (response splitting); uWS would
 * write them verbatim, so the uWS adapter checks them the same way.
 */
export function assertValidHeader(name: string, value: string): void {
  if (!VALID_NAMES.has(name)) {
    if (!isHttpToken(name)) throw new TypeError(`invalid response header name ${JSON.stringify(name)}`);
    // Responses repeat the same few dozen names: each is checked once (bounded, in case one does not).
    if (VALID_NAMES.size < 1024) VALID_NAMES.add(name);
  }
  if (!isFieldValue(value)) throw new TypeError(`invalid character in response header ${JSON.stringify(name)}`);
}

export function byteLength(body: Buffer | string | undefined): number {
  if (body === undefined) return 0;
  return typeof body === 'string' ? Buffer.byteLength(body) : body.length;
}

/** content-length > 0 or any transfer-encoding means the request declares a body. */
export function declaredLength(contentLength: string | undefined): number {
  if (contentLength === undefined) return -1;
  const n = Number(contentLength);
  return Number.isSafeInteger(n) && n >= 0 ? n : -1;
}

// --- request framing ------------------------------------------------------------

/** More header fields than this is refused with 431 (nginx and node allow about as many). */
export const MAX_HEADER_COUNT = 100;
/** Header names and values together (plus ": " and CRLF per line): more is refused with 431. */
export const MAX_HEADER_BYTES = 16 * 1024;

export interface FramingError {
  status: 400 | 431;
  message: string;
}

const DIGITS = /^[0-9]+$/;

/**
 * Headers that make the request's framing ambiguous or the request too large,
 * checked before anything else looks at the request. Two parsers that disagree
 * on where a request ends (this node and an upstream, or a front proxy and this
 * node) let a second request hide inside the first, so anything that is not
 * one clear length is refused with 400 and the connection is closed:
 * - more than one Content-Length, or one that is not all digits;
 * - Transfer-Encoding other than exactly one `chunked`, or together with Content-Length;
 * - more than one Host, an empty header name, DEL in a value.
 * More than MAX_HEADER_COUNT headers or MAX_HEADER_BYTES of them is a 431.
 * `headers` are the (lower-cased) pairs in wire order.
 * Both parsers already refuse other invalid names and every other control
 * character in values before JavaScript runs (node:http with a 400, uWS by
 * never answering); only an empty name (uWS drops it, node refuses it) and DEL
 * (uWS passes it on) get through, and scanning every value with a character
 * class would cost about 1 µs per request.
 */
export function framingError(headers: ReadonlyArray<readonly [string, string]>): FramingError | null {
  if (headers.length > MAX_HEADER_COUNT) return { status: 431, message: `more than ${MAX_HEADER_COUNT} header fields` };
  let bytes = 0;
  let cl = 0;
  let te = 0;
  let host = 0;
  let clValue = '';
  let teValue = '';
  for (let i = 0; i < headers.length; i++) {
    const [name, value] = headers[i];
    bytes += name.length + value.length + 4;
    if (name.length === 0) return { status: 400, message: 'empty header name' };
    if (value.includes('\u007f')) return { status: 400, message: `control character in the ${name} header` };
    if (name === 'content-length') {
      cl++;
      clValue = value;
    } else if (name === 'transfer-encoding') {
      te++;
      teValue = value;
    } else if (name === 'host') host++;
  }
  if (bytes > MAX_HEADER_BYTES) return { status: 431, message: `request headers exceed ${MAX_HEADER_BYTES} bytes` };
  if (host > 1) return { status: 400, message: 'more than one Host header' };
  if (cl > 1) return { status: 400, message: 'more than one Content-Length header' };
  if (cl === 1 && !DIGITS.test(clValue.trim())) return { status: 400, message: 'Content-Length is not a decimal number' };
  if (te > 1) return { status: 400, message: 'more than one Transfer-Encoding header' };
  if (te === 1) {
    if (teValue.trim().toLowerCase() !== 'chunked') return { status: 400, message: 'Transfer-Encoding other than chunked' };
    if (cl === 1) return { status: 400, message: 'Transfer-Encoding together with Content-Length' };
  }
  return null;
}

/** The body of a framing refusal, the same JSON shape as every other error. */
export function framingErrorBody(e: FramingError): string {
  return JSON.stringify({ error: e.message });
}

// --- IP formatting --------------------------------------------------------------

/** Text form of a 4- or 16-byte address, like node/libuv print it; IPv4-mapped IPv6 unwrapped. */
export function formatIp(b: Uint8Array): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (b.length !== 16) return '';
  // ::ffff:a.b.c.d -> a.b.c.d
  let mapped = b[10] === 0xff && b[11] === 0xff;
  for (let i = 0; mapped && i < 10; i++) if (b[i] !== 0) mapped = false;
  if (mapped) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const words = new Array<number>(8);
  for (let i = 0; i < 8; i++) words[i] = (b[2 * i] << 8) | b[2 * i + 1];
  // Longest run of zero words (first one on ties), compressed when >= 2: RFC 5952,
  // same algorithm as libuv's inet_ntop6 so both listeners print the same text.
  let bestBase = -1, bestLen = 0, curBase = -1, curLen = 0;
  for (let i = 0; i < 8; i++) {
    if (words[i] === 0) {
      if (curBase === -1) { curBase = i; curLen = 1; } else curLen++;
    } else if (curBase !== -1) {
      if (curLen > bestLen) { bestBase = curBase; bestLen = curLen; }
      curBase = -1;
    }
  }
  if (curBase !== -1 && curLen > bestLen) { bestBase = curBase; bestLen = curLen; }
  if (bestLen < 2) bestBase = -1;
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (bestBase !== -1 && i >= bestBase && i < bestBase + bestLen) {
      if (i === bestBase) out += ':';
      continue;
    }
    if (i !== 0) out += ':';
    // IPv4-compatible ::a.b.c.d, printed the way libuv does
    if (i === 6 && bestBase === 0 && (bestLen === 6 || (bestLen === 7 && words[7] !== 1))) {
      return out + `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
    }
    out += words[i].toString(16);
  }
  if (bestBase !== -1 && bestBase + bestLen === 8) out += ':';
  return out;
}

/** node:http gives "::ffff:1.2.3.4" on dual-stack sockets; the contract wants "1.2.3.4". */
export function unwrapMapped(addr: string | undefined): string {
  if (!addr) return '';
  if (addr.length > 7 && addr.startsWith('::ffff:') && addr.includes('.', 7)) return addr.slice(7);
  return addr;
}

// --- request body queue -----------------------------------------------------------

/** Producer side of a body: how the listener throttles the socket. */
export interface BodySource {
  pause(): void;
  resume(): void;
  /** Called when a consumer starts reading (node:http attaches its listeners lazily). */
  start?(q: BodyQueue): void;
}

/** Pause the socket once this much is buffered and unread; resume below the low mark. */
const HIGH_WATER = 256 * 1024;
const LOW_WATER = 64 * 1024;

/**
 * Chunks pushed by the listener, pulled by a single consumer as an async iterable.
 * The listener pushes copies it owns; the queue pauses the source when the
 * consumer falls behind and resumes it when the consumer catches up.
 */
export class BodyQueue {
  private chunks: Buffer[] = [];
  private queued = 0;
  private received = 0;
  private limit = Infinity;
  private error: Error | null = null;
  private waiter: (() => void) | null = null;
  private taken = false;
  /** True once the last chunk arrived. */
  complete = false;
  /** The body went over the limit: nobody wants the rest of this upload. */
  refused = false;
  paused = false;

  constructor(
    private readonly source: BodySource,
    /** Declared content-length, -1 when chunked. */
    private readonly declared: number,
    /** false while pausing is unsafe (uWS: once the response started). */
    public canPause = true,
  ) {}

  push(chunk: Buffer): void {
    if (this.error) return;
    this.received += chunk.length;
    if (this.received > this.limit) return this.refuse();
    this.chunks.push(chunk);
    this.queued += chunk.length;
    if (this.queued >= HIGH_WATER && !this.paused && this.canPause && !this.complete) {
      this.paused = true;
      this.source.pause();
    }
    this.wake();
  }

  end(): void {
    this.complete = true;
    this.wake();
  }

  private refuse(): void {
    this.refused = true;
    this.fail(new BodyTooLargeError(this.limit));
  }

  /** The body cannot complete (client aborted, socket error, limit). Pending and later reads reject. */
  fail(err: Error): void {
    if (this.error) return;
    this.error = err;
    this.chunks = [];
    this.queued = 0;
    this.wake();
  }

  /**
   * Nobody will read the rest (the response ended, or the consumer stopped):
   * stop buffering and let the socket run. A consumer still reading gets an
   * error rather than a silently truncated body.
   */
  discard(): void {
    if (!this.complete) this.fail(new Error('request body discarded: the response was already sent'));
    this.resumeSource();
  }

  resumeSource(): void {
    if (this.paused) {
      this.paused = false;
      this.source.resume();
    }
  }

  private wake(): void {
    const w = this.waiter;
    if (w) {
      this.waiter = null;
      w();
    }
  }

  private start(limit: number): void {
    if (this.taken) throw new Error('request body already consumed');
    this.taken = true;
    this.limit = limit;
    // A declared length over the limit is refused before reading anything.
    if (this.declared > limit || this.received > limit) this.refuse();
    else this.source.start?.(this);
  }

  private async next(): Promise<Buffer | null> {
    for (;;) {
      if (this.error) throw this.error;
      const c = this.chunks.shift();
      if (c !== undefined) {
        this.queued -= c.length;
        // Only ask for more while more can come: resuming after the last chunk
        // would just reset uWS's socket timeout.
        if (this.paused && this.queued <= LOW_WATER && !this.complete) this.resumeSource();
        return c;
      }
      if (this.complete) return null;
      await new Promise<void>((r) => (this.waiter = r));
    }
  }

  iterate(limit: number): AsyncIterable<Buffer> {
    this.start(limit);
    const q = this;
    return {
      [Symbol.asyncIterator]: () => ({
        async next(): Promise<IteratorResult<Buffer>> {
          const c = await q.next();
          return c === null ? { done: true, value: undefined } : { done: false, value: c };
        },
        async return(): Promise<IteratorResult<Buffer>> {
          // The consumer stopped early (break / error): the rest is not wanted.
          q.discard();
          return { done: true, value: undefined };
        },
      }),
    };
  }

  async readAll(limit: number): Promise<Buffer> {
    this.start(limit);
    const parts: Buffer[] = [];
    let size = 0;
    for (let c = await this.next(); c !== null; c = await this.next()) {
      parts.push(c);
      size += c.length;
    }
    return parts.length === 1 ? parts[0] : Buffer.concat(parts, size);
  }
}

const emptyIterable: AsyncIterable<Buffer> = {
  [Symbol.asyncIterator]: () => ({ next: async () => ({ done: true, value: undefined }) }),
};

/** What each listener reads of a request before it builds the ListenerRequest. */
export interface RequestHead {
  path: string;
  query: string;
  headers: Array<readonly [string, string]>;
  contentLength: string | undefined;
  chunked: boolean;
}

/** The request as both listeners hand it to the handler. */
export class ListenerRequest implements IncomingRequest {
  constructor(
    readonly listener: ListenerKind,
    readonly method: string,
    readonly path: string,
    readonly query: string,
    readonly headers: ReadonlyArray<readonly [string, string]>,
    readonly remoteAddress: string,
    /** null when the request declares no body. */
    private readonly bodyQueue: BodyQueue | null,
    readonly upgrade: WebSocketHandshake | null,
    readonly connection: ClientConnection,
  ) {}

  get hasBody(): boolean {
    return this.bodyQueue !== null;
  }

  header(name: string): string | undefined {
    const h = this.headers;
    for (let i = 0; i < h.length; i++) if (h[i][0] === name) return h[i][1];
    return undefined;
  }

  body(limit: number): AsyncIterable<Buffer> {
    return this.bodyQueue ? this.bodyQueue.iterate(limit) : emptyIterable;
  }

  readBody(limit: number): Promise<Buffer> {
    return this.bodyQueue ? this.bodyQueue.readAll(limit) : Promise.resolve(Buffer.alloc(0));
  }
}

export class ClientAbortedError extends Error {
  readonly code = 'ECONNRESET';
  constructor() {
    super('client aborted the request');
  }
}

/**
 * The part of `chunk` that still fits a declared content-length (`total` < 0: no
 * declared length, all of it). Never send more than declared: the surplus would
 * corrupt the next response on the keep-alive connection. null when nothing fits.
 */
export function withinDeclared(chunk: Buffer, total: number, accepted: number): Buffer | null {
  if (total < 0) return chunk;
  const room = total - accepted;
  if (room <= 0) return null;
  return chunk.length > room ? chunk.subarray(0, room) : chunk;
}

/** Runs a handler callback; a throw is logged instead of tearing down the listener. */
export function runSafely(cb: () => void, log?: Logger): void {
  try {
    cb();
  } catch (err) {
    log?.error({ err }, 'response callback failed');
  }
}

export type { HeaderList };

/**
 * Counts requests in flight for a graceful shutdown. `begin` returns the one
 * function that ends the request; it may be called any number of times.
 */
export class InFlight {
  count = 0;
  private waiters: Array<() => void> = [];

  begin(): () => void {
    this.count++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      if (--this.count === 0 && this.waiters.length > 0) {
        const w = this.waiters;
        this.waiters = [];
        for (const f of w) f();
      }
    };
  }

  drained(timeoutMs: number): Promise<boolean> {
    if (this.count === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((f) => f !== onIdle);
        resolve(false);
      }, timeoutMs);
      const onIdle = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.waiters.push(onIdle);
    });
  }
}
