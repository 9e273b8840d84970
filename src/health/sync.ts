// Cluster sharing of health state through Redis.
//
// Rules:
// - Three hashes under the prefix hold the current state: `ejected` (passive
//   ejections), `drain` (draining instances) and `probe` (active probe results),
//   field = instance id, value = JSON with an absolute end time (`until` /
//   `validUntil`, epoch ms). Redis 7.0 has no per-field expiry, so readers skip
//   entries whose end time has passed and remove them, and each hash as a whole
//   expires after its longest entry (a cluster that stops writing leaves nothing
//   behind).
// - Every change is written and published in one Lua script (atomic), so a node
//   that subscribes late and then reads the hashes misses nothing, and a message
//   never announces state the hashes do not hold.
// - A node ignores its own messages (it applied the change before publishing).
// - On (re)connection of the subscriber the node re-reads the hashes: messages
//   published while it was away are lost by pub/sub.
// - Redis errors never reach the request path: writes are fire-and-forget with
//   a logged warning; without Redis each node decides alone.
import type { Redis } from 'ioredis';
import type { Ejection } from './outlier.ts';

export interface DrainEntry {
  instanceId: string;
  since: number;
  until: number;
}

export interface ProbeState {
  instanceId: string;
  serviceId: string;
  up: boolean;
  /** When the current up/down state began. */
  since: number;
  /** Until when a down state holds without a fresh probe (the prober's lease). */
  validUntil: number;
  reason: string;
  fails: number;
  passes: number;
}

export type HealthMessage =
  | { t: 'eject'; n: string; e: Ejection }
  | { t: 'lift'; n: string; id: string }
  | { t: 'drain'; n: string; d: DrainEntry }
  | { t: 'undrain'; n: string; id: string }
  | { t: 'probe'; n: string; p: ProbeState };

export interface HealthSnapshot {
  ejected: Ejection[];
  drain: DrainEntry[];
  probe: ProbeState[];
}

export interface SyncLogger {
  warn(obj: object, msg: string): void;
  info?(obj: object, msg: string): void;
}

// HSET + keep the hash alive at least as long as this entry + PUBLISH, atomically.
const SET_PUB = `
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1`;

const DEL_PUB = `
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1`;

export const DEFAULT_HEALTH_PREFIX = 'utilmeta_proxy:health:';

export class HealthSync {
  readonly channel: string;
  private readonly keys: { ejected: string; drain: string; probe: string };
  private onMessage: ((channel: string, message: string) => void) | null = null;
  private onReady: (() => void) | null = null;
  private warned = false;

  constructor(
    private readonly redis: Redis,
    private readonly subscriber: Redis,
    readonly nodeId: string,
    private readonly handlers: { message: (m: HealthMessage) => void; snapshot: (s: HealthSnapshot) => void },
    readonly prefix = DEFAULT_HEALTH_PREFIX,
    private readonly log?: SyncLogger,
  ) {
    this.channel = `${prefix}events`;
    this.keys = { ejected: `${prefix}ejected`, drain: `${prefix}drain`, probe: `${prefix}probe` };
  }

  async start(): Promise<void> {
    this.onMessage = (channel, message) => {
      if (channel !== this.channel) return;
      let m: HealthMessage;
      try {
        m = JSON.parse(message) as HealthMessage;
      } catch {
        return; // not ours, or corrupted: nothing to apply
      }
      if (!m || typeof m !== 'object' || m.n === this.nodeId) return;
      this.handlers.message(m);
    };
    this.subscriber.on('message', this.onMessage);
    await this.subscriber.subscribe(this.channel);
    // After a reconnect ioredis re-subscribes by itself; re-read what was missed.
    this.onReady = () => void this.reload().catch((err) => this.warn(err, 'health state reload failed'));
    this.subscriber.on('ready', this.onReady);
    await this.reload();
  }

  async stop(): Promise<void> {
    if (this.onMessage) this.subscriber.removeListener('message', this.onMessage);
    if (this.onReady) this.subscriber.removeListener('ready', this.onReady);
    this.onMessage = null;
    this.onReady = null;
    await this.subscriber.unsubscribe(this.channel).catch(() => {});
  }

  /** Reads the current state of the cluster, dropping entries whose time has passed. */
  async reload(now = Date.now()): Promise<HealthSnapshot> {
    const [ej, dr, pr] = await Promise.all([
      this.redis.hgetall(this.keys.ejected),
      this.redis.hgetall(this.keys.drain),
      this.redis.hgetall(this.keys.probe),
    ]);
    const snap: HealthSnapshot = {
      ejected: this.live<Ejection>(this.keys.ejected, ej, (e) => e.until, now),
      drain: this.live<DrainEntry>(this.keys.drain, dr, (d) => d.until, now),
      probe: this.live<ProbeState>(this.keys.probe, pr, (p) => p.validUntil, now),
    };
    this.handlers.snapshot(snap);
    return snap;
  }

  private live<T>(key: string, raw: Record<string, string>, end: (v: T) => number, now: number): T[] {
    const out: T[] = [];
    const stale: string[] = [];
    for (const [field, json] of Object.entries(raw)) {
      let v: T;
      try {
        v = JSON.parse(json) as T;
      } catch {
        stale.push(field);
        continue;
      }
      if (typeof end(v) === 'number' && end(v) > now) out.push(v);
      else stale.push(field);
    }
    if (stale.length) void this.redis.hdel(key, ...stale).catch(() => {});
    return out;
  }

  private set(key: string, field: string, value: unknown, until: number, message: HealthMessage): Promise<void> {
    const ttl = Math.max(1, Math.ceil(until - Date.now()));
    return this.redis
      .eval(SET_PUB, 1, key, field, JSON.stringify(value), String(ttl), this.channel, JSON.stringify(message))
      .then(() => undefined, (err) => this.warn(err, 'health state write to Redis failed; this node decides alone until it returns'));
  }

  private del(key: string, field: string, message: HealthMessage): Promise<void> {
    return this.redis
      .eval(DEL_PUB, 1, key, field, this.channel, JSON.stringify(message))
      .then(() => undefined, (err) => this.warn(err, 'health state write to Redis failed; this node decides alone until it returns'));
  }

  eject(e: Ejection): Promise<void> {
    return this.set(this.keys.ejected, e.instanceId, e, e.until, { t: 'eject', n: this.nodeId, e });
  }

  lift(instanceId: string): Promise<void> {
    return this.del(this.keys.ejected, instanceId, { t: 'lift', n: this.nodeId, id: instanceId });
  }

  drain(d: DrainEntry): Promise<void> {
    return this.set(this.keys.drain, d.instanceId, d, d.until, { t: 'drain', n: this.nodeId, d });
  }

  undrain(instanceId: string): Promise<void> {
    return this.del(this.keys.drain, instanceId, { t: 'undrain', n: this.nodeId, id: instanceId });
  }

  probe(p: ProbeState): Promise<void> {
    return this.set(this.keys.probe, p.instanceId, p, p.validUntil, { t: 'probe', n: this.nodeId, p });
  }

  private warn(err: unknown, msg: string): void {
    // One warning per outage, not one per write.
    if (this.warned) return;
    this.warned = true;
    this.log?.warn({ err }, msg);
    setTimeout(() => { this.warned = false; }, 30_000).unref();
  }
}
