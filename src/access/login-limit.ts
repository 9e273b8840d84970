// Login rate limiting: at most 10 failed password logins per (account, client
// IP) in a fixed 15-minute window. The counter lives in Redis when one is given
// (shared by every node) and in this node's memory otherwise, or while Redis is
// down.
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

export interface LoginLimiter {
  /** Seconds until another attempt is allowed for this key; 0 = go ahead. */
  blockedFor(key: string): Promise<number>;
  /** Records one failed attempt. */
  fail(key: string): Promise<void>;
  /** Forgets the failures (after a successful login). */
  reset(key: string): Promise<void>;
}

export interface LimitOptions {
  /** failures allowed per window (default 10) */
  max?: number;
  /** window length in ms (default 15 min) */
  windowMs?: number;
  /** clock, for tests */
  now?: () => number;
}

export const LOGIN_MAX_FAILURES = 10;
export const LOGIN_WINDOW_MS = 15 * 60 * 1000;

/** The limiter key of an (account, IP) pair: accounts are case-insensitive; hashed so any input makes a safe key. */
export function loginKey(account: string, ip: string | null | undefined): string {
  return createHash('sha256').update(`${account.toLowerCase()}\n${ip ?? ''}`).digest('base64url');
}

/** Per-node counters; entries are dropped when their window ends, and the map is bounded. */
export class MemoryLoginLimiter implements LoginLimiter {
  readonly #max: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  readonly #entries = new Map<string, { count: number; resetAt: number }>();
  static readonly MAX_ENTRIES = 100_000;

  constructor(opts: LimitOptions = {}) {
    this.#max = opts.max ?? LOGIN_MAX_FAILURES;
    this.#windowMs = opts.windowMs ?? LOGIN_WINDOW_MS;
    this.#now = opts.now ?? Date.now;
  }

  #live(key: string) {
    const e = this.#entries.get(key);
    if (e && e.resetAt <= this.#now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return e;
  }

  async blockedFor(key: string): Promise<number> {
    const e = this.#live(key);
    return e && e.count >= this.#max ? Math.max(1, Math.ceil((e.resetAt - this.#now()) / 1000)) : 0;
  }

  async fail(key: string): Promise<void> {
    const e = this.#live(key);
    if (e) {
      e.count++;
      return;
    }
    if (this.#entries.size >= MemoryLoginLimiter.MAX_ENTRIES) this.#prune();
    this.#entries.set(key, { count: 1, resetAt: this.#now() + this.#windowMs });
  }

  async reset(key: string): Promise<void> {
    this.#entries.delete(key);
  }

  #prune(): void {
    const now = this.#now();
    for (const [k, e] of this.#entries) if (e.resetAt <= now) this.#entries.delete(k);
    // Still full: drop the oldest insertions (Map keeps insertion order).
    const excess = this.#entries.size - MemoryLoginLimiter.MAX_ENTRIES + 1;
    if (excess > 0) {
      let i = 0;
      for (const k of this.#entries.keys()) {
        if (i++ >= excess) break;
        this.#entries.delete(k);
      }
    }
  }
}

// INCR and PEXPIRE in one script, so a counter can never be left without its expiry.
const FAIL_SCRIPT = `local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n`;

/**
 * Shared counters in Redis (one fixed window per key: the first failure starts
 * it). Falls back to `fallback` whenever Redis is not connected or a command
 * fails, so logins never wait on a dead Redis.
 */
export class RedisLoginLimiter implements LoginLimiter {
  readonly #redis: Redis;
  readonly #max: number;
  readonly #windowMs: number;
  readonly #prefix: string;
  readonly #fallback: LoginLimiter;

  constructor(redis: Redis, opts: LimitOptions & { prefix?: string; fallback?: LoginLimiter } = {}) {
    this.#redis = redis;
    this.#max = opts.max ?? LOGIN_MAX_FAILURES;
    this.#windowMs = opts.windowMs ?? LOGIN_WINDOW_MS;
    this.#prefix = opts.prefix ?? 'utilmeta-proxy:login:';
    this.#fallback = opts.fallback ?? new MemoryLoginLimiter(opts);
  }

  async #try<T>(viaRedis: () => Promise<T>, viaMemory: () => Promise<T>): Promise<T> {
    // ioredis queues commands while disconnected; do not let a login wait for a reconnect.
    if (this.#redis.status !== 'ready') return viaMemory();
    try {
      return await viaRedis();
    } catch {
      return viaMemory();
    }
  }

  blockedFor(key: string): Promise<number> {
    return this.#try(
      async () => {
        const k = this.#prefix + key;
        const [[e1, count], [e2, ttl]] = (await this.#redis.multi().get(k).pttl(k).exec()) as [[Error | null, string | null], [Error | null, number]];
        if (e1 || e2) throw e1 ?? e2;
        if (count === null || Number(count) < this.#max) return 0;
        return Math.max(1, Math.ceil((ttl > 0 ? ttl : this.#windowMs) / 1000));
      },
      () => this.#fallback.blockedFor(key),
    );
  }

  fail(key: string): Promise<void> {
    return this.#try(
      async () => void (await this.#redis.eval(FAIL_SCRIPT, 1, this.#prefix + key, String(this.#windowMs))),
      () => this.#fallback.fail(key),
    );
  }

  reset(key: string): Promise<void> {
    return this.#try(
      async () => void (await this.#redis.del(this.#prefix + key)),
      () => this.#fallback.reset(key),
    );
  }
}
