// An incremental, strict HTTP/1.1 *response* parser (RFC 9112), for the keep-alive client
// in client.ts. Only responses, only what a reverse proxy needs: status line, headers,
// framing by Content-Length / chunked / connection close, 1xx interim responses,
// trailers. Anything ambiguous is an error rather than a guess, because a framing
// mistake on a reused connection would hand one client another client's bytes.
import { isFieldValue, isHttpToken } from '../core/text.ts';

export class H1ParseError extends Error {
  /** `HPE_*`, like llhttp's codes, so callers classify both clients' errors alike. */
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

export interface ResponseHead {
  status: number;
  statusText: string;
  /**
   * Flat [name, value, name, value, ...] in wire order, names lower-cased. Not an
   * object keyed by name: building one per response with names as keys churned V8's
   * object shapes enough to show in profiles.
   */
  headers: string[];
  /** The server allows the connection to carry another request after this response. */
  keepAlive: boolean;
  /** `Keep-Alive: timeout=N` in ms, when the server sent one. */
  keepAliveHintMs: number | undefined;
}

export interface ParserEvents {
  /** Final (non-1xx) response head. */
  onHead(head: ResponseHead): void;
  /** A body chunk; a view into the buffer given to execute(). */
  onBody(chunk: Buffer): void;
  /** The response is complete; `trailers` only after a chunked body that had some. */
  onComplete(trailers: Record<string, string | string[]> | null): void;
}

const enum State {
  Head,
  Length,
  ChunkSize,
  ChunkData,
  ChunkDataEnd,
  Trailers,
  UntilClose,
  Done,
}

const CRLF2 = Buffer.from('\r\n\r\n');
const CRLF = Buffer.from('\r\n');
/** The last Keep-Alive value read and its timeout hint (ms). */
let lastKeepAlive = '';
let lastHint: number | undefined;

/**
 * The status of `HTTP/1.(0|1) [1-9]dd[ reason]`, the reason free of controls
 * other than HTAB; -1 when the line is not one. By hand: a regular expression
 * with captures allocates its match on every response.
 */
export function statusOf(line: string): number {
  const n = line.length;
  if (n < 12 || !line.startsWith('HTTP/1.')) return -1;
  const minor = line.charCodeAt(7);
  if ((minor !== 48 && minor !== 49) || line.charCodeAt(8) !== 32) return -1;
  const a = line.charCodeAt(9) - 48;
  const b = line.charCodeAt(10) - 48;
  const c = line.charCodeAt(11) - 48;
  if (a < 1 || a > 9 || b < 0 || b > 9 || c < 0 || c > 9) return -1;
  if (n > 12) {
    if (line.charCodeAt(12) !== 32) return -1;
    for (let i = 13; i < n; i++) {
      const x = line.charCodeAt(i);
      if ((x < 32 && x !== 9) || x === 127) return -1;
    }
  }
  return a * 100 + b * 10 + c;
}
const MAX_CHUNK_LINE = 4096;
const DIGITS = /^\d{1,15}$/;
/**
 * Header names already checked, by their spelling on the wire → lower-case. Upstreams
 * send the same few dozen names over and over; the cache is bounded against one that
 * does not.
 */
const NAMES = new Map<string, string>();

export interface ParserOptions {
  /** Largest response head (status line + headers), and separately the trailer section. */
  maxHeaderSize: number;
}

export class ResponseParser {
  private state = State.Done;
  private head: Buffer | null = null; // bytes of an incomplete head / chunk line / trailers
  private remaining = 0;
  private isHead = false;
  /** Set by the head: whether the connection may be reused after this response. */
  keepAlive = false;
  /** True once any byte of the response arrived (the request reached the server). */
  started = false;

  constructor(private readonly events: ParserEvents, private readonly opts: ParserOptions) {}

  /** Ready for the response to a new request; `isHead` for HEAD (no body whatever the headers say). */
  reset(isHead: boolean): void {
    this.state = State.Head;
    this.head = null;
    this.remaining = 0;
    this.isHead = isHead;
    this.keepAlive = false;
    this.started = false;
  }

  get done(): boolean {
    return this.state === State.Done;
  }

  /** The body runs until the connection closes (no length, not chunked). */
  get untilClose(): boolean {
    return this.state === State.UntilClose;
  }

  /**
   * Feeds bytes. Returns how many belong to this response; bytes past its end
   * (data the server sent unasked) are left to the caller. Throws H1ParseError.
   */
  execute(buf: Buffer): number {
    if (buf.length > 0) this.started = true;
    let i = 0;
    while (i < buf.length && this.state !== State.Done) {
      switch (this.state) {
        case State.Head:
          i = this.readHead(buf, i);
          break;
        case State.Length: {
          const n = Math.min(this.remaining, buf.length - i);
          this.remaining -= n;
          const chunk = buf.subarray(i, i + n);
          i += n;
          if (this.remaining === 0) this.state = State.Done;
          this.events.onBody(chunk);
          if (this.state === State.Done) this.events.onComplete(null);
          break;
        }
        case State.ChunkSize:
          i = this.readChunkSize(buf, i);
          break;
        case State.ChunkData: {
          const n = Math.min(this.remaining, buf.length - i);
          this.remaining -= n;
          const chunk = buf.subarray(i, i + n);
          i += n;
          if (this.remaining === 0) {
            this.state = State.ChunkDataEnd;
            this.remaining = 2;
          }
          this.events.onBody(chunk);
          break;
        }
        case State.ChunkDataEnd:
          // The CRLF after a chunk's data, possibly split across reads.
          while (this.remaining > 0 && i < buf.length) {
            if (buf[i] !== CRLF[2 - this.remaining]) throw new H1ParseError('HPE_STRICT', 'chunk data is not followed by CRLF');
            i++;
            this.remaining--;
          }
          if (this.remaining === 0) this.state = State.ChunkSize;
          break;
        case State.Trailers:
          i = this.readTrailers(buf, i);
          break;
        case State.UntilClose:
          this.events.onBody(buf.subarray(i));
          i = buf.length;
          break;
      }
    }
    return i;
  }

  /** The connection ended: completes a close-delimited body, else the response was cut short. */
  finish(): void {
    if (this.state === State.UntilClose) {
      this.state = State.Done;
      this.events.onComplete(null);
      return;
    }
    if (this.state !== State.Done) throw new H1ParseError('HPE_INCOMPLETE', 'the connection closed before the response was complete');
  }

  /** Bytes buffered so far plus `buf`, searching for `sep` from where the last search stopped. */
  private accumulate(buf: Buffer, from: number, sep: Buffer, limit: number, what: string): { block: Buffer; next: number } | null {
    const prev = this.head;
    const data = prev ? Buffer.concat([prev, buf.subarray(from)]) : buf.subarray(from);
    // Resume the search a few bytes before the old end, in case the separator straddles reads.
    const start = prev ? Math.max(0, prev.length - sep.length + 1) : 0;
    const at = data.indexOf(sep, start);
    if (at < 0) {
      if (data.length > limit) throw new H1ParseError('HPE_HEADER_OVERFLOW', `${what} is larger than ${limit} bytes`);
      this.head = Buffer.from(data); // own the bytes: the socket's buffer is not ours to keep
      return null;
    }
    if (at + sep.length > limit) throw new H1ParseError('HPE_HEADER_OVERFLOW', `${what} is larger than ${limit} bytes`);
    this.head = null;
    return { block: data.subarray(0, at), next: from + (at + sep.length - (prev ? prev.length : 0)) };
  }

  private readHead(buf: Buffer, from: number): number {
    const r = this.accumulate(buf, from, CRLF2, this.opts.maxHeaderSize, 'the response head');
    if (!r) return buf.length;
    const text = r.block.toString('latin1');
    // Lines by position, not split(): no array of line strings per response.
    const eol = text.indexOf('\r\n');
    const statusLine = eol < 0 ? text : text.slice(0, eol);
    const status = statusOf(statusLine);
    if (status < 0) throw new H1ParseError('HPE_INVALID_STATUS', `invalid status line ${JSON.stringify(statusLine.slice(0, 80))}`);
    const minor = statusLine.charCodeAt(7) === 49 ? '1' : '0';
    const headers: string[] = [];
    const framing = scanFields(text, eol < 0 ? text.length : eol + 2, headers);
    if (status < 200) {
      // 101 would switch protocols on a connection this client never asked to upgrade.
      if (status === 101) throw new H1ParseError('HPE_INVALID_STATUS', 'unexpected 101 Switching Protocols');
      return r.next; // interim response: the final one follows
    }
    const te = framing.te;
    const cl = framing.cl;
    const connection = framing.connection?.toLowerCase();
    let keepAlive = minor === '1' ? !hasToken(connection, 'close') : hasToken(connection, 'keep-alive');
    let length = -1;
    if (cl !== undefined) length = contentLength(cl);
    let chunked = false;
    if (te !== undefined) {
      const codings = te.toLowerCase().split(',').map((s) => s.trim()).filter(Boolean);
      chunked = codings[codings.length - 1] === 'chunked';
      if (codings.slice(0, -1).includes('chunked')) throw new H1ParseError('HPE_INVALID_TRANSFER_ENCODING', 'chunked applied more than once');
      // Transfer-Encoding overrides Content-Length, and such a message must not leave the connection reusable.
      if (length >= 0) keepAlive = false;
      length = -1;
      if (minor === '0') throw new H1ParseError('HPE_INVALID_TRANSFER_ENCODING', 'Transfer-Encoding in an HTTP/1.0 response');
    }
    let hint: number | undefined;
    const ka = framing.keepAlive;
    if (ka) {
      // An upstream sends the same Keep-Alive value on every response: read it once.
      if (ka !== lastKeepAlive) {
        const t = /(?:^|[,;\s])timeout\s*=\s*(\d+)/.exec(ka.toLowerCase());
        lastKeepAlive = ka;
        lastHint = t ? Number(t[1]) * 1000 : undefined;
      }
      hint = lastHint;
    }
    const bodyless = this.isHead || status === 204 || status === 304;
    if (bodyless) this.state = State.Done;
    else if (chunked) this.state = State.ChunkSize;
    else if (length >= 0) {
      this.state = length === 0 ? State.Done : State.Length;
      this.remaining = length;
    } else {
      this.state = State.UntilClose;
      keepAlive = false;
    }
    this.keepAlive = keepAlive;
    this.events.onHead({ status, statusText: statusLine.length > 13 ? statusLine.slice(13) : '', headers, keepAlive, keepAliveHintMs: hint });
    if (this.state === State.Done) this.events.onComplete(null);
    return r.next;
  }

  private readChunkSize(buf: Buffer, from: number): number {
    const r = this.accumulate(buf, from, CRLF, MAX_CHUNK_LINE, 'a chunk-size line');
    if (!r) return buf.length;
    const line = r.block.toString('latin1');
    const semi = line.indexOf(';');
    const hex = (semi < 0 ? line : line.slice(0, semi)).replace(/[ \t]+$/, '');
    if (!/^[0-9A-Fa-f]{1,13}$/.test(hex)) throw new H1ParseError('HPE_INVALID_CHUNK_SIZE', `invalid chunk size ${JSON.stringify(line.slice(0, 40))}`);
    if (semi >= 0 && !isFieldValue(line.slice(semi))) throw new H1ParseError('HPE_INVALID_CHUNK_SIZE', 'control character in a chunk extension');
    const size = parseInt(hex, 16);
    if (size === 0) {
      this.state = State.Trailers;
      this.head = Buffer.from(CRLF);
    } else {
      this.state = State.ChunkData;
      this.remaining = size;
    }
    return r.next;
  }

  private readTrailers(buf: Buffer, from: number): number {
    // The section is *(field-line CRLF) CRLF; seeded with the CRLF that ended the
    // last-chunk line, it always ends at the first CRLFCRLF, with or without fields.
    const r = this.accumulate(buf, from, CRLF2, this.opts.maxHeaderSize, 'the trailer section');
    if (!r) return buf.length;
    const text = r.block.toString('latin1').slice(2);
    this.state = State.Done;
    this.events.onComplete(text ? parseFields(text.split('\r\n'), 0) : null);
    return r.next;
  }
}

/** The fields that decide framing and reuse, repeated ones joined with ', '. */
interface Framing {
  te?: string;
  cl?: string[];
  connection?: string;
  keepAlive?: string;
}

/**
 * Validates the CRLF-separated field lines of `text` from `from` into `out`
 * (flat pairs, lower-case names) and returns the framing fields.
 */
function scanFields(text: string, from: number, out: string[]): Framing {
  const f: Framing = {};
  for (let at = from; at < text.length;) {
    let end = text.indexOf('\r\n', at);
    if (end < 0) end = text.length;
    const key = parseFieldInto(text, at, end, out);
    const value = out[out.length - 1];
    at = end + 2;
    switch (key) {
      case 'content-length':
        (f.cl ??= []).push(value);
        break;
      case 'transfer-encoding':
        f.te = f.te === undefined ? value : `${f.te}, ${value}`;
        break;
      case 'connection':
        f.connection = f.connection === undefined ? value : `${f.connection}, ${value}`;
        break;
      case 'keep-alive':
        f.keepAlive = f.keepAlive === undefined ? value : `${f.keepAlive}, ${value}`;
        break;
    }
  }
  return f;
}

/** One field line, text[start, end), appended to `out` as name, value; returns the name. */
function parseFieldInto(text: string, start: number, end: number, out: string[]): string {
  const c0 = text.charCodeAt(start);
  if (c0 === 32 || c0 === 9) throw new H1ParseError('HPE_INVALID_HEADER_TOKEN', 'obsolete line folding in a header');
  const colon = text.indexOf(':', start);
  if (colon <= start || colon >= end) throw new H1ParseError('HPE_INVALID_HEADER_TOKEN', `malformed header line ${JSON.stringify(text.slice(start, Math.min(end, start + 60)))}`);
  const name = text.slice(start, colon);
  let key = NAMES.get(name);
  if (key === undefined) {
    if (!isHttpToken(name)) throw new H1ParseError('HPE_INVALID_HEADER_TOKEN', `invalid header name ${JSON.stringify(name.slice(0, 60))}`);
    key = name.toLowerCase();
    if (NAMES.size < 1024) NAMES.set(name, key);
  }
  const value = trimOws(text, colon + 1, end);
  if (!isFieldValue(value)) throw new H1ParseError('HPE_INVALID_HEADER_TOKEN', `control character in header ${name}`);
  out.push(key, value);
  return key;
}

/** Trailer fields as undici reports them: an object, repeated names as arrays. */
function parseFields(lines: string[], from: number): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {};
  const pair: string[] = [];
  for (let i = from; i < lines.length; i++) {
    pair.length = 0;
    const key = parseFieldInto(lines[i], 0, lines[i].length, pair);
    const value = pair[1];
    const had = headers[key];
    if (had === undefined) headers[key] = value;
    else if (Array.isArray(had)) had.push(value);
    else headers[key] = [had, value];
  }
  return headers;
}

/** The field value in line[from, to), without leading and trailing spaces and tabs. */
function trimOws(line: string, from: number, to: number): string {
  let a = from;
  let b = to;
  while (a < b && (line.charCodeAt(a) === 32 || line.charCodeAt(a) === 9)) a++;
  while (b > a && (line.charCodeAt(b - 1) === 32 || line.charCodeAt(b - 1) === 9)) b--;
  return line.slice(a, b);
}

function hasToken(list: string | undefined, token: string): boolean {
  if (!list) return false;
  if (list === token) return true;
  if (list.indexOf(',') < 0) return list.trim() === token;
  for (const t of list.split(',')) if (t.trim() === token) return true;
  return false;
}

/** Every Content-Length value (repeated or comma-listed) must be the same decimal number. */
function contentLength(v: string[]): number {
  if (v.length === 1 && DIGITS.test(v[0])) return Number(v[0]);
  const parts = v.flatMap((x) => x.split(',')).map((s) => s.trim());
  const first = parts[0];
  if (!/^\d{1,15}$/.test(first) || parts.some((p) => p !== first)) {
    throw new H1ParseError('HPE_UNEXPECTED_CONTENT_LENGTH', `invalid or conflicting Content-Length ${JSON.stringify(parts.join(', ').slice(0, 60))}`);
  }
  return Number(first);
}
