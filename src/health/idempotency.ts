// Idempotency-Key for unsafe methods, honoured cluster-wide.
//
// Rules:
// - Applies to unsafe methods (anything but GET, HEAD, OPTIONS, TRACE) that
//   carry an `Idempotency-Key` header: 1–255 visible ASCII characters, bare or
//   as a quoted structured-field string. Anything else is refused as invalid
//   input naming the header.
// - Keys are scoped (the caller passes e.g. service + client identity), so two
//   clients choosing the same key never see each other's responses.
// - `begin` claims the key with an in-flight marker (SET NX PX, lasting
//   `inflightTtlMs`, which must exceed the request's timeout). Outcomes:
//   'acquired': execute the request, then `complete` or `release`;
//   'in_progress': another attempt holds the key (answer 409, retry later);
//   'completed': replay the stored response without touching the upstream;
//   'mismatch': the key was used for a different request (answer 409/422).
// - `complete` stores the final response (status, headers, body up to
//   `maxBodyBytes`; a larger body is dropped and flagged `bodyOmitted`) for
//   `ttlMs`, but only while this attempt still holds the marker. Whatever the
//   client got is stored, errors included: an attempt that reached the upstream
//   may have had its side effect, so repeating it is never safe.
// - `release` drops the marker so the client may retry: only for attempts that
//   provably never reached an upstream (connection refused, no instance).
// - Without Redis, or while the connection to it is down, the same rules hold
//   within this node only: during an outage a duplicate sent to another node
//   may execute again. A connected Redis that fails or does not answer within
//   `timeoutMs` is not bypassed (the claim may have landed there): `begin`
//   throws an 'unavailable' error and the client retries later. A lease
//   finishes on the store it began on.
import { createHash, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { DomainError, invalid } from '../core/errors.ts';
import { withTimeout } from './timeout.ts';
import { RELEASE_IF_HELD } from './lua.ts';

export interface StoredResponse {
  status: number;
  headers: Array<[string, string]>;
  /** null when the body was larger than the store's limit. */
  body: Buffer | null;
  bodyOmitted: boolean;
}

export interface RecordedResponse {
  status: number;
  headers: Array<[string, string]>;
  body: Buffer | null;
  /** Set when the body was too large to keep. */
  bodyOmitted?: boolean;
}

export interface IdempotencyLease {
  readonly id: string;
  readonly backend: 'redis' | 'local';
  /** The in-flight marker this attempt wrote; `complete`/`release` act only while it is still there. */
  readonly marker: string;
}

export type IdempotencyBegin =
  | { state: 'acquired'; lease: IdempotencyLease }
  | { state: 'in_progress'; retryAfterMs: number }
  | { state: 'completed'; response: StoredResponse }
  | { state: 'mismatch' };

export interface IdempotencyOptions {
  redis?: Redis;
  prefix?: string;
  ttlMs?: number;
  inflightTtlMs?: number;
  maxBodyBytes?: number;
  /** Node-local entries kept at most (the oldest go first). */
  maxLocalEntries?: number;
  /** Bound on each Redis round trip (default 2 s). */
  timeoutMs?: number;
  log?: { warn(obj: object, msg: string): void };
}

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE']);

export function requiresIdempotencyCheck(method: string): boolean {
  return !SAFE.has(method.toUpperCase());
}

/** Validates the header value and returns the key (quotes of an sf-string removed). */
export function parseIdempotencyKey(value: string | null | undefined): string | null {
  if (value === null || value === undefined) return null;
  let v = value.trim();
  if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
  if (v.length < 1 || v.length > 255 || !/^[\x21-\x7e]+$/.test(v)) {
    throw invalid('Idempotency-Key must be 1 to 255 visible ASCII characters', { field: 'Idempotency-Key' });
  }
  return v;
}

/** What identifies "the same request": method, target and body digest. */
export function requestFingerprint(method: string, target: string, body?: Buffer | null): string {
  const h = createHash('sha256').update(method.toUpperCase()).update('\0').update(target).update('\0');
  if (body) h.update(body);
  return h.digest('base64url');
}

/** The domain error for a result the caller must refuse. */
export function idempotencyError(r: IdempotencyBegin): DomainError | null {
  if (r.state === 'in_progress') {
    return new DomainError('conflict', 'a request with this Idempotency-Key is still in progress', {
      code: 'IDEMPOTENCY_KEY_IN_PROGRESS', field: 'Idempotency-Key', retryAfter: Math.max(1, Math.ceil(r.retryAfterMs / 1000)),
    });
  }
  if (r.state === 'mismatch') {
    return new DomainError('conflict', 'this Idempotency-Key was already used for a different request', {
      code: 'IDEMPOTENCY_KEY_REUSED', field: 'Idempotency-Key',
    });
  }
  return null;
}

interface InflightValue { s: 'p'; t: string; f: string }
interface DoneValue { s: 'd'; f: string; st: number; h: Array<[string, string]>; b: string | null; o: boolean }
type Value = InflightValue | DoneValue;

function isValue(v: unknown): v is Value {
  const x = v as Value;
  if (!x || typeof x !== 'object' || typeof x.f !== 'string') return false;
  if (x.s === 'p') return typeof x.t === 'string';
  return x.s === 'd' && Number.isSafeInteger(x.st) && Array.isArray(x.h)
    && x.h.every((h) => Array.isArray(h) && h.length === 2 && typeof h[0] === 'string' && typeof h[1] === 'string')
    && (x.b === null || typeof x.b === 'string') && typeof x.o === 'boolean';
}

const COMPLETE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0`;

export class IdempotencyStore {
  readonly ttlMs: number;
  readonly inflightTtlMs: number;
  readonly maxBodyBytes: number;
  private readonly prefix: string;
  private readonly redis: Redis | null;
  private readonly maxLocal: number;
  private readonly timeoutMs: number;
  private readonly log: IdempotencyOptions['log'];
  /** Plain counter for metrics: operations that fell back to node-local storage. */
  localFallbacks = 0;
  // Node-local fallback: a Map keeps insertion order, which is all the eviction
  // this needs (oldest first); expired entries are dropped when read or evicted.
  private readonly local = new Map<string, { value: string; expires: number }>();

  constructor(opts: IdempotencyOptions = {}) {
    this.redis = opts.redis ?? null;
    this.prefix = opts.prefix ?? 'utilmeta_proxy:idem:';
    this.ttlMs = opts.ttlMs ?? 86_400_000;
    this.inflightTtlMs = opts.inflightTtlMs ?? 120_000;
    this.maxBodyBytes = opts.maxBodyBytes ?? 1_048_576;
    this.maxLocal = opts.maxLocalEntries ?? 10_000;
    this.timeoutMs = opts.timeoutMs ?? 2_000;
    this.log = opts.log;
    for (const [name, v] of [['ttlMs', this.ttlMs], ['inflightTtlMs', this.inflightTtlMs], ['maxLocalEntries', this.maxLocal]] as const) {
      if (!(Number.isSafeInteger(v) && v >= 1)) throw invalid(`idempotency ${name} must be a positive integer, got ${v}`, { field: name });
    }
    if (!(Number.isSafeInteger(this.maxBodyBytes) && this.maxBodyBytes >= 0)) throw invalid(`idempotency maxBodyBytes must be an integer ≥ 0, got ${this.maxBodyBytes}`, { field: 'maxBodyBytes' });
  }

  private storageKey(scope: string, key: string): string {
    // Hashed: keys are client-chosen text of any shape; the store key stays short and inert.
    return this.prefix + createHash('sha256').update(scope).update('\0').update(key).digest('base64url');
  }

  async begin(scope: string, key: string, fingerprint: string): Promise<IdempotencyBegin> {
    const k = this.storageKey(scope, key);
    const marker = JSON.stringify({ s: 'p', t: randomUUID(), f: fingerprint } satisfies InflightValue);
    if (this.redis && this.redis.status === 'ready') {
      try {
        return await this.beginOn('redis', k, marker, fingerprint);
      } catch (err) {
        throw new DomainError('unavailable', 'the idempotency key store did not answer; retry later', {
          code: 'IDEMPOTENCY_STORE_UNAVAILABLE', field: 'Idempotency-Key', retryAfter: 1, cause: err,
        });
      }
    } else if (this.redis) {
      this.fallback(new Error(`Redis connection is ${this.redis.status}`));
    }
    return this.beginOn('local', k, marker, fingerprint);
  }

  private async beginOn(backend: 'redis' | 'local', k: string, marker: string, fingerprint: string): Promise<IdempotencyBegin> {
    // Two rounds: the holder may finish or expire between our SET NX and GET.
    for (let round = 0; round < 2; round++) {
      if (await this.setNx(backend, k, marker)) return { state: 'acquired', lease: { id: k, backend, marker } };
      const cur = await this.get(backend, k);
      if (!cur) continue;
      let v: Value;
      try {
        v = JSON.parse(cur.value) as Value;
      } catch {
        return { state: 'in_progress', retryAfterMs: cur.ttlMs };
      }
      // Something else under our key: never execute, never replay it.
      if (!isValue(v)) return { state: 'in_progress', retryAfterMs: cur.ttlMs };
      if (v.f !== fingerprint) return { state: 'mismatch' };
      if (v.s === 'p') return { state: 'in_progress', retryAfterMs: cur.ttlMs };
      return {
        state: 'completed',
        response: { status: v.st, headers: v.h, body: v.b === null ? null : Buffer.from(v.b, 'base64'), bodyOmitted: v.o },
      };
    }
    return { state: 'in_progress', retryAfterMs: this.inflightTtlMs };
  }

  /** Stores the final response; false when this attempt no longer held the key (its marker expired, or Redis failed). */
  async complete(lease: IdempotencyLease, response: RecordedResponse): Promise<boolean> {
    if (!(Number.isSafeInteger(response.status) && response.status >= 100 && response.status <= 999)) {
      throw invalid(`response status must be a 3-digit integer, got ${response.status}`, { field: 'status' });
    }
    const fp = (JSON.parse(lease.marker) as InflightValue).f;
    const omitted = response.bodyOmitted === true || (response.body !== null && response.body.length > this.maxBodyBytes);
    const done: DoneValue = {
      s: 'd', f: fp, st: response.status, h: response.headers,
      b: response.body === null || omitted ? null : response.body.toString('base64'), o: omitted,
    };
    const value = JSON.stringify(done);
    if (lease.backend === 'redis') {
      try {
        return (await withTimeout(this.redis!.eval(COMPLETE, 1, lease.id, lease.marker, value, String(this.ttlMs)), this.timeoutMs)) === 1;
      } catch (err) {
        // The marker stays until its TTL: duplicates get "in progress", never a second execution.
        this.fallback(err);
        return false;
      }
    }
    const cur = this.localGet(lease.id);
    if (cur?.value !== lease.marker) return false;
    this.localSet(lease.id, value, this.ttlMs);
    return true;
  }

  /** Drops the in-flight marker so a retry may execute (the attempt never reached an upstream). */
  async release(lease: IdempotencyLease): Promise<boolean> {
    if (lease.backend === 'redis') {
      try {
        return (await withTimeout(this.redis!.eval(RELEASE_IF_HELD, 1, lease.id, lease.marker), this.timeoutMs)) === 1;
      } catch (err) {
        this.fallback(err);
        return false;
      }
    }
    const cur = this.localGet(lease.id);
    if (cur?.value !== lease.marker) return false;
    this.local.delete(lease.id);
    return true;
  }

  private fallback(err: unknown): void {
    this.localFallbacks++;
    if (this.localFallbacks === 1 || this.localFallbacks % 1000 === 0) {
      this.log?.warn({ err, fallbacks: this.localFallbacks }, 'idempotency keys fall back to node-local storage: Redis is unreachable');
    }
  }

  private async setNx(backend: 'redis' | 'local', k: string, marker: string): Promise<boolean> {
    if (backend === 'redis') return (await withTimeout(this.redis!.set(k, marker, 'PX', this.inflightTtlMs, 'NX'), this.timeoutMs)) === 'OK';
    if (this.localGet(k)) return false;
    this.localSet(k, marker, this.inflightTtlMs);
    return true;
  }

  private async get(backend: 'redis' | 'local', k: string): Promise<{ value: string; ttlMs: number } | null> {
    if (backend === 'redis') {
      const [[, value], [, ttl]] = (await withTimeout(this.redis!.multi().get(k).pttl(k).exec(), this.timeoutMs)) as [[Error | null, string | null], [Error | null, number]];
      return value === null ? null : { value, ttlMs: Math.max(0, ttl) };
    }
    const e = this.localGet(k);
    return e ? { value: e.value, ttlMs: e.expires - Date.now() } : null;
  }

  private localGet(k: string): { value: string; expires: number } | undefined {
    const e = this.local.get(k);
    if (e && e.expires <= Date.now()) {
      this.local.delete(k);
      return undefined;
    }
    return e;
  }

  private localSet(k: string, value: string, ttlMs: number): void {
    this.local.delete(k);
    this.local.set(k, { value, expires: Date.now() + ttlMs });
    while (this.local.size > this.maxLocal) this.local.delete(this.local.keys().next().value!);
  }
}

/**
 * Collects what the client is sent so it can be stored: the head once, body
 * chunks up to the limit (beyond it the body is dropped and only flagged).
 */
export class ResponseRecorder {
  private status = 0;
  private headers: Array<[string, string]> = [];
  private chunks: Buffer[] = [];
  private size = 0;
  private over = false;

  constructor(private readonly maxBodyBytes: number) {}

  head(status: number, headers: ReadonlyArray<readonly [string, string]>): void {
    this.status = status;
    this.headers = headers.map(([n, v]) => [n, v]);
  }

  chunk(buf: Buffer): void {
    if (this.over) return;
    this.size += buf.length;
    if (this.size > this.maxBodyBytes) {
      this.over = true;
      this.chunks = [];
      return;
    }
    this.chunks.push(Buffer.from(buf));
  }

  /** The response for `complete`. */
  result(): RecordedResponse {
    return { status: this.status, headers: this.headers, body: this.over ? null : Buffer.concat(this.chunks), bodyOmitted: this.over };
  }
}
