// Leader election for cluster-wide singleton work (the active prober).
//
// Rules (Redis lock):
// - The lock is one key holding the leader's node id, taken with SET NX PX ttl
//   and renewed every ttl/3 by a script that extends it only while it still
//   holds this node's id (a node never extends or deletes another's lock).
// - A leader that cannot renew (Redis unreachable) stops counting as the
//   cluster's leader once a full ttl has passed since its last successful
//   renewal: by then the key may have expired and another node may lead.
// - While Redis is unreachable a node works alone ('solo'): it runs the
//   singleton work for itself, as it would without Redis, and goes back to
//   electing as soon as Redis answers (taking the lock or following its holder).
//   Each election round is bounded by ttl/3, so an outage is noticed even though
//   ioredis holds commands back while disconnected.
// - A leader that dies stops renewing; the key expires after at most ttl and
//   the next node to try takes over. A leader that stops cleanly deletes its
//   key so the takeover is immediate.
// Without Redis every node leads for itself (`SoloLeader`): each probes alone.
import type { Redis } from 'ioredis';
import type postgres from 'postgres';
import { invalid } from '../core/errors.ts';
import { withTimeout } from './timeout.ts';
import { RELEASE_IF_HELD } from './lua.ts';

export interface LeaderLock {
  readonly isLeader: boolean;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Called with true when this node becomes leader, false when it stops being one. */
  onChange(cb: (leader: boolean) => void): void;
}

export class SoloLeader implements LeaderLock {
  isLeader = false;
  private cbs: Array<(leader: boolean) => void> = [];
  onChange(cb: (leader: boolean) => void): void {
    this.cbs.push(cb);
  }
  async start(): Promise<void> {
    this.isLeader = true;
    for (const cb of this.cbs) cb(true);
  }
  async stop(): Promise<void> {
    if (!this.isLeader) return;
    this.isLeader = false;
    for (const cb of this.cbs) cb(false);
  }
}

const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`;

// Takes the free lock, or finds it already ours (a SET that timed out here but
// reached Redis later).
const ACQUIRE = `
if redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0`;

export interface RedisLeaderOptions {
  key: string;
  nodeId: string;
  ttlMs?: number;
  log?: { warn(obj: object, msg: string): void };
}

export type LeaderMode = 'follower' | 'leader' | 'solo';

export class RedisLeaderLock implements LeaderLock {
  /** 'leader' holds the cluster lock; 'solo' works alone while Redis is unreachable. */
  mode: LeaderMode = 'follower';
  readonly ttlMs: number;
  private timer: NodeJS.Timeout | null = null;
  private lastRenewed = 0;
  private ticking: Promise<void> | null = null;
  private cbs: Array<(leader: boolean) => void> = [];

  constructor(private readonly redis: Redis, private readonly opts: RedisLeaderOptions & { soloWhenUnreachable?: boolean }) {
    this.ttlMs = opts.ttlMs ?? 15_000;
    if (!(Number.isSafeInteger(this.ttlMs) && this.ttlMs >= 30)) throw invalid(`leader ttlMs must be an integer ≥ 30, got ${this.ttlMs}`, { field: 'ttlMs' });
    if (!opts.key) throw invalid('leader key must not be empty', { field: 'key' });
    if (!opts.nodeId) throw invalid('leader nodeId must not be empty', { field: 'nodeId' });
  }

  /** True while this node should run the singleton work (cluster leader, or alone during an outage). */
  get isLeader(): boolean {
    return this.mode !== 'follower';
  }

  onChange(cb: (leader: boolean) => void): void {
    this.cbs.push(cb);
  }

  private set(mode: LeaderMode): void {
    const was = this.isLeader;
    this.mode = mode;
    if (this.isLeader !== was) for (const cb of this.cbs) cb(this.isLeader);
  }

  async start(): Promise<void> {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick(), this.roundMs);
    this.timer.unref();
    await this.tick();
  }

  private get roundMs(): number {
    return Math.max(10, Math.floor(this.ttlMs / 3));
  }

  /** One election round; exposed so callers (and tests) can force one. */
  tick(): Promise<void> {
    this.ticking ??= this.round().finally(() => { this.ticking = null; });
    return this.ticking;
  }

  private async round(): Promise<void> {
    const { key, nodeId } = this.opts;
    try {
      if (this.mode === 'leader') {
        const kept = await withTimeout(this.redis.eval(RENEW, 1, key, nodeId, String(this.ttlMs)), this.roundMs);
        if (kept === 1) this.lastRenewed = Date.now();
        else this.set('follower');
      } else {
        const got = await withTimeout(this.redis.eval(ACQUIRE, 1, key, nodeId, String(this.ttlMs)), this.roundMs);
        if (got === 1) {
          this.lastRenewed = Date.now();
          this.set('leader');
        } else {
          this.set('follower');
        }
      }
    } catch (err) {
      const solo = this.opts.soloWhenUnreachable !== false;
      if (this.mode === 'leader' && Date.now() - this.lastRenewed >= this.ttlMs) {
        this.opts.log?.warn({ err }, 'leader lock could not be renewed; working alone until Redis answers');
        this.set(solo ? 'solo' : 'follower');
      } else if (this.mode === 'follower' && solo) {
        this.opts.log?.warn({ err }, 'Redis unreachable for the leader election; working alone until it answers');
        this.set('solo');
      }
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.ticking?.catch(() => {});
    if (this.mode === 'leader') {
      await withTimeout(this.redis.eval(RELEASE_IF_HELD, 1, this.opts.key, this.opts.nodeId), this.roundMs).catch(() => {});
    }
    this.set('follower');
  }

  /** Stops renewing without releasing: what a crash looks like to the others (tests). */
  abandon(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.set('follower');
  }
}

// Rules (PostgreSQL advisory lock, the alternative to the Redis lock):
// - The lock is a session-level pg_try_advisory_lock on a client of its own
//   with a single connection (max 1), so every statement runs in the same
//   session. PostgreSQL releases the lock the moment that session ends, so a
//   dead leader is replaced at the followers' next round (every `roundMs`).
// - The leader checks every round that its session is still the one that took
//   the lock (same backend pid): the client reconnects by itself after a lost
//   connection, and the new session holds nothing. Then it steps down and
//   competes again like any follower.
// (A reserved connection of a shared pool is not used: querying one whose
// backend was terminated throws inside postgres.js instead of rejecting.)

export interface PgLeaderOptions {
  /** 64-bit advisory lock key shared by the cluster. */
  lockKey: bigint;
  roundMs?: number;
  log?: { warn(obj: object, msg: string): void };
}

export class PgAdvisoryLeader implements LeaderLock {
  isLeader = false;
  readonly roundMs: number;
  /** Bound on each statement (connecting included): at least 2 s, whatever the round. */
  private readonly timeoutMs: number;
  /** Backend pid of the session holding the lock while leading. */
  private pid: number | null = null;
  private timer: NodeJS.Timeout | null = null;
  private ticking: Promise<void> | null = null;
  private cbs: Array<(leader: boolean) => void> = [];

  /** `sql` must be a client of its own with `max: 1`. */
  constructor(private readonly sql: postgres.Sql, private readonly opts: PgLeaderOptions) {
    this.roundMs = opts.roundMs ?? 5_000;
    if (!(Number.isSafeInteger(this.roundMs) && this.roundMs >= 10)) throw invalid(`leader roundMs must be an integer ≥ 10, got ${this.roundMs}`, { field: 'roundMs' });
    this.timeoutMs = Math.max(this.roundMs, 2_000);
    if (typeof opts.lockKey !== 'bigint' || opts.lockKey < -(2n ** 63n) || opts.lockKey >= 2n ** 63n) {
      throw invalid('leader lockKey must be a signed 64-bit bigint', { field: 'lockKey' });
    }
    if (sql.options?.max !== 1) throw invalid('the advisory-lock client must have exactly one connection (max: 1)', { field: 'sql' });
  }

  onChange(cb: (leader: boolean) => void): void {
    this.cbs.push(cb);
  }

  private set(leader: boolean): void {
    if (!leader) this.pid = null;
    if (leader === this.isLeader) return;
    this.isLeader = leader;
    for (const cb of this.cbs) cb(leader);
  }

  async start(): Promise<void> {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick(), this.roundMs);
    this.timer.unref();
    await this.tick();
  }

  tick(): Promise<void> {
    this.ticking ??= this.round().finally(() => { this.ticking = null; });
    return this.ticking;
  }

  private async round(): Promise<void> {
    const key = this.opts.lockKey.toString();
    try {
      if (this.isLeader) {
        const [row] = await withTimeout(this.sql<[{ pid: number }]>`SELECT pg_backend_pid() AS pid`, this.timeoutMs);
        if (row.pid === this.pid) return;
        this.opts.log?.warn({ pid: row.pid, was: this.pid }, 'leader session was replaced; the lock went with it');
        this.set(false);
      }
      const [row] = await withTimeout(this.sql<[{ pid: number; ok: boolean }]>`SELECT pg_backend_pid() AS pid, pg_try_advisory_lock(${key}::bigint) AS ok`, this.timeoutMs);
      if (row.ok) this.pid = row.pid;
      this.set(row.ok === true);
    } catch (err) {
      if (this.isLeader) this.opts.log?.warn({ err }, 'leader session unreachable; stepping down');
      this.set(false);
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.ticking?.catch(() => {});
    if (this.isLeader) {
      // All of them: a lock call that timed out here may have landed too, and
      // session locks stack (the client is dedicated, so nothing else is held).
      await withTimeout(this.sql`SELECT pg_advisory_unlock_all()`, this.timeoutMs).catch(() => {});
    }
    this.set(false);
  }
}
