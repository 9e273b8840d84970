// The bad-input corpus: loading, turning a case into bytes, replaying it over a
// raw socket and judging the outcome. Shared by test/bad-input.test.ts and the
// test/corpus/replay.ts report. The case format is described in generate.ts.
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';

export interface CorpusCase {
  id: string;
  surface: string;
  kind: 'raw' | 'http';
  raw?: string;
  method?: string;
  target?: string;
  headers?: Array<[string, string]>;
  body?: string;
  bodyEncoding?: 'latin1' | 'utf8';
  halfClose?: boolean;
  accept: string[];
  maxResponses?: number;
  note: string;
  /** File the case came from (set by the loader). */
  file?: string;
}

export const SURFACES = ['listener', 'proxy-path', 'proxy-control', 'registry', 'deregister', 'ops', 'cors', 'websocket'] as const;
/** Surfaces whose handlers read or write the database: replayed one at a time, each between two snapshots. */
export const DB_SURFACES = new Set(['registry', 'deregister', 'ops']);

const OUTCOME = /^(?:[1-5]xx|[1-5]\d\d|close)$/;

/** Every *.ndjson file of this folder, checked for the fields the harness relies on. */
export function loadCorpus(dir = new URL('.', import.meta.url)): CorpusCase[] {
  const out: CorpusCase[] = [];
  const ids = new Set<string>();
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.ndjson')).sort()) {
    const lines = readFileSync(new URL(file, dir), 'utf8').split('\n');
    lines.forEach((line, i) => {
      if (!line.trim()) return;
      const where = `${file}:${i + 1}`;
      let c: CorpusCase;
      try {
        c = JSON.parse(line) as CorpusCase;
      } catch (err) {
        throw new Error(`${where}: not JSON (${(err as Error).message})`);
      }
      if (typeof c.id !== 'string' || !c.id) throw new Error(`${where}: 'id' must be a non-empty string`);
      if (ids.has(c.id)) throw new Error(`${where}: duplicate id '${c.id}'`);
      ids.add(c.id);
      if (!(SURFACES as readonly string[]).includes(c.surface)) throw new Error(`${where}: unknown surface '${c.surface}'`);
      if (c.kind === 'raw' ? typeof c.raw !== 'string' : c.kind !== 'http' || typeof c.method !== 'string' || typeof c.target !== 'string') {
        throw new Error(`${where}: a raw case needs 'raw', an http case 'method' and 'target'`);
      }
      if (!Array.isArray(c.accept) || c.accept.length === 0 || !c.accept.every((a) => OUTCOME.test(a))) {
        throw new Error(`${where}: 'accept' must list outcomes like "4xx", "400" or "close"`);
      }
      if (typeof c.note !== 'string' || !c.note) throw new Error(`${where}: 'note' must say what the case checks`);
      out.push({ ...c, file });
    });
  }
  return out;
}

export interface Vars {
  host: string; // 127.0.0.1:port of the node
  svc: string; // registered service name
  address: string; // the upstream instance address
  instanceId: string; // its ops resource id
  base: string; // its base URL
}

/** Fills the placeholders; {{repeat:N:text}} keeps giant inputs out of the data files. */
export function expand(text: string, vars: Vars, id: string): string {
  return text
    .replace(/\{\{repeat:(\d+):(.+?)\}\}/gs, (_m, n: string, t: string) => t.repeat(Number(n)))
    .replace(/\{\{(host|svc|address|instance_id|base|id)\}\}/g, (_m, k: string) =>
      k === 'id' ? id : k === 'instance_id' ? vars.instanceId : vars[k as 'host' | 'svc' | 'address' | 'base']);
}

/** The exact bytes sent for a case. http cases get Host, Content-Length and Connection: close added. */
export function buildRequest(c: CorpusCase, vars: Vars): Buffer {
  if (c.kind === 'raw') return Buffer.from(expand(c.raw!, vars, c.id), 'latin1');
  const x = (s: string) => expand(s, vars, c.id);
  const headers = (c.headers ?? []).map(([k, v]) => [x(k), x(v)] as const);
  const has = (n: string) => headers.some(([k]) => k.toLowerCase() === n);
  const body = c.body === undefined ? null : Buffer.from(x(c.body), c.bodyEncoding ?? 'latin1');
  let head = `${c.method} ${x(c.target!)} HTTP/1.1\r\nHost: ${vars.host}\r\n`;
  for (const [k, v] of headers) head += `${k}: ${v}\r\n`;
  head += `X-Corpus-Case: ${c.id}\r\n`;
  if (body && !has('content-length') && !has('transfer-encoding')) head += `Content-Length: ${body.length}\r\n`;
  if (!has('connection')) head += 'Connection: close\r\n';
  head += '\r\n';
  const h = Buffer.from(head, 'latin1');
  return body ? Buffer.concat([h, body]) : h;
}

export interface ParsedResponse {
  status: number;
  headers: Array<[string, string]>;
  body: Buffer;
}

/**
 * Splits the bytes received so far into complete HTTP/1.1 responses. Hand-written
 * because node exposes no response parser that accepts arbitrary bytes, and
 * undici/node:http clients cannot send the malformed requests in the first place.
 * `eof`: the server closed, so a body without a length ends here.
 */
export function parseResponses(buf: Buffer, isHead: boolean, eof: boolean): { responses: ParsedResponse[]; partial: boolean } {
  const responses: ParsedResponse[] = [];
  let off = 0;
  while (off < buf.length) {
    const end = buf.indexOf('\r\n\r\n', off, 'latin1');
    if (end === -1) return { responses, partial: true };
    const lines = buf.subarray(off, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/\d\.\d (\d{3})/.exec(lines[0]);
    if (!m) return { responses, partial: true };
    const status = Number(m[1]);
    const headers: Array<[string, string]> = [];
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      if (i > 0) headers.push([l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()]);
    }
    const get = (n: string) => headers.find(([k]) => k === n)?.[1];
    let p = end + 4;
    let body: Buffer = Buffer.alloc(0);
    if (status >= 200 && status !== 204 && status !== 304 && !isHead) {
      const te = get('transfer-encoding');
      const cl = get('content-length');
      if (te && /chunked/i.test(te)) {
        const parts: Buffer[] = [];
        for (;;) {
          const le = buf.indexOf('\r\n', p, 'latin1');
          if (le === -1) return { responses, partial: true };
          const size = parseInt(buf.subarray(p, le).toString('latin1'), 16);
          if (!Number.isFinite(size)) return { responses, partial: true };
          if (size === 0) {
            const te2 = buf.indexOf('\r\n\r\n', le, 'latin1');
            if (te2 === -1) return { responses, partial: true };
            p = te2 + 4;
            break;
          }
          if (le + 2 + size + 2 > buf.length) return { responses, partial: true };
          parts.push(buf.subarray(le + 2, le + 2 + size));
          p = le + 2 + size + 2;
        }
        body = Buffer.concat(parts);
      } else if (cl !== undefined) {
        const n = Number(cl);
        if (p + n > buf.length) return { responses, partial: true };
        body = buf.subarray(p, p + n);
        p += n;
      } else {
        if (!eof) return { responses, partial: true };
        body = buf.subarray(p);
        p = buf.length;
      }
    }
    responses.push({ status, headers, body });
    off = p;
  }
  return { responses, partial: false };
}

export interface Outcome {
  /** Final (non-1xx) responses in order. */
  responses: ParsedResponse[];
  /** The server closed (FIN or reset). */
  closed: boolean;
  /** Nothing conclusive before the deadline. */
  timedOut: boolean;
  ms: number;
  /** Bytes received that did not form a response. */
  garbage: boolean;
}

/**
 * Sends `payload`, then reads until the server closes, the deadline passes, or a
 * complete response arrived and nothing else followed within `settleMs` (a second
 * response on the same connection is how a smuggled request shows).
 */
export function exchange(port: number, payload: Buffer, opts: { halfClose?: boolean; isHead?: boolean; deadlineMs: number; settleMs?: number }): Promise<Outcome> {
  const settleMs = opts.settleMs ?? 250;
  return new Promise((resolve) => {
    const t0 = performance.now();
    const sock = net.connect({ port, host: '127.0.0.1' });
    let buf = Buffer.alloc(0);
    let done = false;
    let settle: NodeJS.Timeout | undefined;
    const finish = (closed: boolean, timedOut: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      clearTimeout(settle);
      sock.destroy();
      const { responses, partial } = parseResponses(buf, opts.isHead ?? false, closed);
      const final = responses.filter((r) => r.status >= 200);
      resolve({ responses: final, closed, timedOut: timedOut && final.length === 0, ms: Math.round(performance.now() - t0), garbage: partial && buf.length > 0 });
    };
    const deadline = setTimeout(() => finish(false, true), opts.deadlineMs);
    sock.on('connect', () => {
      // A write error (the server closed while we were still sending) shows up as 'error'.
      sock.write(payload, () => {
        if (opts.halfClose) sock.end();
      });
    });
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const { responses, partial } = parseResponses(buf, opts.isHead ?? false, false);
      if (!partial && responses.some((r) => r.status >= 200)) {
        clearTimeout(settle);
        settle = setTimeout(() => finish(false, false), settleMs);
      }
    });
    sock.on('end', () => finish(true, false));
    sock.on('close', () => finish(true, false));
    sock.on('error', () => finish(true, false));
  });
}

/** The outcome in the vocabulary of `accept`: the first final status, or "close"/"timeout". */
export function outcomeLabel(o: Outcome): string {
  if (o.responses.length > 0) return String(o.responses[0].status);
  return o.timedOut ? 'timeout' : 'close';
}

export function isAccepted(c: CorpusCase, o: Outcome): boolean {
  if (o.timedOut) return false;
  if (c.maxResponses !== undefined && o.responses.length > c.maxResponses) return false;
  // Only the first response is judged unless the case pipelines several on purpose.
  const label = outcomeLabel(o);
  return c.accept.some((a) => a === label || (a.endsWith('xx') && label.length === 3 && label[0] === a[0]));
}

/**
 * Internals that must never reach a client: stack frames and source or install
 * paths. A bare "at " is too common in prose, so frames are matched by shape.
 */
const LEAKS: Array<[string, RegExp]> = [
  ['stack frame', /(?:^|\n)\s*at \S.*(?:\(|:\d+:\d+)/],
  ['/work path', /\/work\//],
  ['node_modules', /node_modules/],
  ['.ts: location', /\.ts:\d*/],
  ['file URL', /file:\/\//],
];

export function leaks(body: Buffer | string): string[] {
  const text = typeof body === 'string' ? body : body.toString('latin1');
  return LEAKS.filter(([, re]) => re.test(text)).map(([name]) => name);
}

/** A path the upstream received that is outside the base path or still carries dot-segments. */
export function escapesBase(url: string, basePath: string): string | null {
  const path = url.split('?')[0];
  if (!(path === basePath || path.startsWith(basePath + '/'))) return `outside ${basePath}`;
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    decoded = path.replace(/%2e/gi, '.').replace(/%2f/gi, '/').replace(/%5c/gi, '\\');
  }
  if (decoded.split(/[/\\]/).some((seg) => seg === '..' || seg === '.')) return 'dot-segment';
  return null;
}

export interface CaseResult {
  case: CorpusCase;
  outcome: Outcome;
  label: string;
  accepted: boolean;
  status500: boolean;
  leaked: string[];
  /** Tables whose content changed across this case (DB surfaces only). */
  changed: string[];
}

export function judge(c: CorpusCase, o: Outcome, changed: string[] = []): CaseResult {
  return {
    case: c,
    outcome: o,
    label: outcomeLabel(o),
    accepted: isAccepted(c, o),
    status500: o.responses.some((r) => r.status === 500),
    leaked: [...new Set(o.responses.flatMap((r) => leaks(r.body)))],
    changed,
  };
}
