// Leader election for cluster-wide singleton work (the active prober).
//
// Rules (Redis lock):
// - The lock is one key holding the leader's node id, taken with SET NX PX ttl
//   and renewed every ttl/3 by a script that extends it only while it still
//   holds this node's id (a node never extends or deletes another's lock).
// - A leader that cannot renew (Redis unreachable) steps down once a full ttl
//   has passed since its last successful renewal: by then the key may have
//   expired and another node may lead.
// - A leader that dies stops renewing; the key expires after at most ttl and
//   the next node to try takes over. A leader that stops cleanly deletes its
//   key so the takeover is immediate.
// Without Redis every node leads for itself (`SoloLeader`): each probes alone.
import type { Redis } from 'ioredis';
import { invalid } from '../core/errors.ts';

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

const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`;

export interface RedisLeaderOptions {
  key: string;
  nodeId: string;
  ttlMs?: number;
  log?: { warn(obj: object, msg: string): void };
}

export class RedisLeaderLock implements LeaderLock {
  isLeader = false;
  readonly ttlMs: number;
  private timer: NodeJS.Timeout | null = null;
  private lastRenewed = 0;
  private ticking: Promise<void> | null = null;
  private cbs: Array<(leader: boolean) => void> = [];

  constructor(private readonly redis: Redis, private readonly opts: RedisLeaderOptions) {
    this.ttlMs = opts.ttlMs ?? 15_000;
    if (!(Number.isSafeInteger(this.ttlMs) && this.ttlMs >= 30)) throw invalid(`leader ttlMs must be an integer ≥ 30, got ${this.ttlMs}`, { field: 'ttlMs' });
    if (!opts.key) throw invalid('leader key must not be empty', { field: 'key' });
    if (!opts.nodeId) throw invalid('leader nodeId must not be empty', { field: 'nodeId' });
  }

  onChange(cb: (leader: boolean) => void): void {
    this.cbs.push(cb);
  }

  private set(leader: boolean): void {
    if (leader === this.isLeader) return;
    this.isLeader = leader;
    for (const cb of this.cbs) cb(leader);
  }

  async start(): Promise<void> {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick(), Math.max(10, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
    await this.tick();
  }

  /** One election round; exposed so callers (and tests) can force one. */
  tick(): Promise<void> {
    this.ticking ??= this.round().finally(() => { this.ticking = null; });
    return this.ticking;
  }

  private async round(): Promise<void> {
    const { key, nodeId } = this.opts;
    try {
      if (this.isLeader) {
        const kept = await this.redis.eval(RENEW, 1, key, nodeId, String(this.ttlMs));
        if (kept === 1) this.lastRenewed = Date.now();
        else this.set(false);
      } else {
        const got = await this.redis.set(key, nodeId, 'PX', this.ttlMs, 'NX');
        if (got === 'OK') {
          this.lastRenewed = Date.now();
          this.set(true);
        }
      }
    } catch (err) {
      if (this.isLeader && Date.now() - this.lastRenewed >= this.ttlMs) {
        this.opts.log?.warn({ err }, 'leader lock could not be renewed; stepping down');
        this.set(false);
      }
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.ticking?.catch(() => {});
    if (this.isLeader) {
      await this.redis.eval(RELEASE, 1, this.opts.key, this.opts.nodeId).catch(() => {});
      this.set(false);
    }
  }

  /** Stops renewing without releasing: what a crash looks like to the others (tests). */
  abandon(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.set(false);
  }
}
