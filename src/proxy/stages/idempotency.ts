// Idempotency-Key around the forward stage, for unsafe methods:
// - a bad key is a 400 naming the header; no key: the request goes as usual;
// - the key is scoped to the service and the caller (authenticated principal,
//   else client address), so two callers never see each other's answers;
// - the same key and the same request (method, path, query, body digest)
//   replays the stored answer without touching an upstream (marked
//   `Idempotency-Replayed: true`); the key still in flight is a 409 with
//   Retry-After; the key used for a different request is a 409;
// - whatever the client got is stored, errors included (an attempt that
//   reached an upstream may have had its effect), except when no attempt ever
//   reached an upstream: then the key is released and the client may retry.
import { fieldPairs, type HeaderList, type ResponseWriter } from '../../http/types.ts';
import {
  ResponseRecorder, idempotencyError, parseIdempotencyKey, requestFingerprint, requiresIdempotencyCheck, type IdempotencyStore,
} from '../../health/index.ts';
import type { Stage } from '../chain.ts';

/** Headers of the original answer that must not be replayed as they were. */
const NOT_REPLAYED = new Set(['x-request-id', 'server-timing']);

export function withIdempotency(store: IdempotencyStore, bodyLimit: number, inner: Stage): Stage {
  // Not async itself: requests without a key (nearly all) go straight to `inner`
  // without an extra promise around it.
  return (x) => {
    if (!requiresIdempotencyCheck(x.req.method)) return inner(x);
    const key = parseIdempotencyKey(x.req.header('idempotency-key'));
    if (key === null) return inner(x);
    return guarded(store, bodyLimit, inner, x, key);
  };
}

async function guarded(store: IdempotencyStore, bodyLimit: number, inner: Stage, x: Parameters<Stage>[0], key: NonNullable<ReturnType<typeof parseIdempotencyKey>>): Promise<void> {
  {
    const req = x.req;
    // The body is part of "the same request": read a streamed one once (within the limit).
    if (x.body !== null && !Buffer.isBuffer(x.body)) {
      const chunks: Buffer[] = [];
      for await (const c of x.body) chunks.push(c);
      x.body = Buffer.concat(chunks);
    } else if (x.body === null && req.hasBody) {
      x.body = await req.readBody(bodyLimit);
    }
    const scope = `${x.service?.id ?? x.serviceName ?? ''}\u0000${x.authz?.principal ?? x.clientIp}`;
    const query = x.query ?? req.query;
    const fp = requestFingerprint(req.method, query ? `${x.path}?${query}` : x.path, x.body);
    const r = await store.begin(scope, key, fp);
    if (r.state === 'completed') {
      const s = r.response;
      const h: HeaderList = s.headers.filter(([n]) => !NOT_REPLAYED.has(n));
      h.push(['idempotency-replayed', 'true'], ['x-request-id', x.requestId]);
      x.res.send(s.status, h, s.body ?? '');
      x.outcome = { status: s.status, committed: true, retries: 0, upstreamMs: 0 };
      return;
    }
    const refused = idempotencyError(r);
    if (refused) throw refused;
    if (r.state !== 'acquired') return;
    const lease = r.lease;
    const rec = new ResponseRecorder(store.maxBodyBytes);
    const real = x.res;
    x.res = new RecordingWriter(real, rec);
    try {
      await inner(x);
    } catch (err) {
      await store.release(lease).catch(() => {});
      throw err;
    } finally {
      x.res = real;
    }
    const o = x.outcome;
    if (o?.error && !o.committed && o.error.unreached && o.retries === 0 && o.status >= 500) {
      // Nothing reached an upstream: the client may try again with the same key.
      await store.release(lease).catch(() => {});
    } else {
      await store.complete(lease, rec.result()).catch(() => {});
    }
  }
}

/** Passes everything to the client's writer and keeps a copy for the store. */
class RecordingWriter implements ResponseWriter {
  constructor(private readonly inner: ResponseWriter, private readonly rec: ResponseRecorder) {}
  get aborted(): boolean {
    return this.inner.aborted;
  }
  onAborted(cb: () => void): void {
    this.inner.onAborted(cb);
  }
  send(status: number, headers: HeaderList, body?: Buffer | string): void {
    this.rec.head(status, headers);
    if (body !== undefined) this.rec.chunk(typeof body === 'string' ? Buffer.from(body) : body);
    this.inner.send(status, headers, body);
  }
  writeHead(status: number, headers: HeaderList, contentLength?: number): void {
    this.rec.head(status, headers);
    this.inner.writeHead(status, headers, contentLength);
  }
  relayHead(status: number, fields: string[], contentLength?: number): void {
    this.rec.head(status, fieldPairs(fields));
    this.inner.relayHead(status, fields, contentLength);
  }
  write(chunk: Buffer): boolean {
    this.rec.chunk(chunk);
    return this.inner.write(chunk);
  }
  onDrain(cb: () => void): void {
    this.inner.onDrain(cb);
  }
  end(): void {
    this.inner.end();
  }
  abort(): void {
    this.inner.abort();
  }
  acceptWebSocket(): null {
    return null; // unsafe methods only: never a handshake
  }
}
