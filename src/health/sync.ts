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
// - Redis errors never reach the request path. While Redis is unreachable each
//   node decides alone: writes are kept (the latest per instance and kind) and
//   sent when the connection is ready again, then the node re-reads the hashes.
//   Every Redis round trip is bounded by `timeoutMs`.
import type { Redis } from 'ioredis';
import type { Ejection } from './outlier.ts';
import { withTimeout } from './timeout.ts';

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

// Shapes read back from Redis are checked before use: the keys are shared with
// other software and other versions of this node, and a malformed entry must be
// skipped, never crash the subscriber.
const isStr = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= 64;
const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

export function isEjection(v: unknown): v is Ejection {
  const e = v as Ejection;
  return !!e && typeof e === 'object' && isStr(e.instanceId) && isStr(e.serviceId) && isTime(e.since) && isTime(e.until)
    // count 0: a hold asked for by the instance (503 Retry-After), not an ejection it earned.
    && Number.isSafeInteger(e.count) && e.count >= 0 && typeof e.reason === 'string';
}

export function isDrainEntry(v: unknown): v is DrainEntry {
  const d = v as DrainEntry;
  return !!d && typeof d === 'object' && isStr(d.instanceId) && isTime(d.since) && isTime(d.until);
}

export function isProbeState(v: unknown): v is ProbeState {
  const p = v as ProbeState;
  return !!p && typeof p === 'object' && isStr(p.instanceId) && isStr(p.serviceId) && typeof p.up === 'boolean'
    && isTime(p.since) && isTime(p.validUntil) && typeof p.reason === 'string'
    && Number.isSafeInteger(p.fails) && Number.isSafeInteger(p.passes);
}

function isMessage(v: unknown): v is HealthMessage {
  const m = v as HealthMessage;
  if (!m || typeof m !== 'object' || typeof m.n !== 'string') return false;
  switch (m.t) {
    case 'eject': return isEjection(m.e);
    case 'drain': return isDrainEntry(m.d);
    case 'probe': return isProbeState(m.p);
    case 'lift':
    case 'undrain': return isStr(m.id);
    default: return false;
  }
}

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
  /** Writes made while Redis was unreachable, by hash and field: only the latest matters. */
  private readonly pending = new Map<string, () => Promise<boolean>>();
  private readonly latest = new Map<string, number>();
  private generation = 0;
  private warned = false;
  timeoutMs = 1_000;

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

  /** Both connections are up: writes go out now instead of waiting. */
  get connected(): boolean {
    return this.redis.status === 'ready' && this.subscriber.status === 'ready';
  }

  /**
   * Subscribes and loads the cluster's state. Returns at once when Redis is
   * unreachable: the node starts alone and catches up when it connects.
   */
  async start(): Promise<void> {
    this.onMessage = (channel, message) => {
      if (channel !== this.channel) return;
      let m: unknown;
      try {
        m = JSON.parse(message);
      } catch {
        return; // not ours, or corrupted: nothing to apply
      }
      if (!isMessage(m) || m.n === this.nodeId) return;
      this.handlers.message(m);
    };
    this.subscriber.on('message', this.onMessage);
    // ioredis re-subscribes by itself after a reconnect; a first subscribe that
    // never went out is repeated here. Then send what was kept and re-read what
    // was missed (pub/sub does not replay).
    this.onReady = () => void this.catchUp();
    this.subscriber.on('ready', this.onReady);
    if (this.redis !== this.subscriber) this.redis.on('ready', this.onReady);
    if (this.connected) {
      try {
        await withTimeout(this.subscriber.subscribe(this.channel), this.timeoutMs);
        await this.reload();
      } catch (err) {
        this.warn(err, 'health state could not be loaded from Redis; this node decides alone until it can');
      }
    }
  }

  private async catchUp(): Promise<void> {
    if (!this.connected) return;
    try {
      await withTimeout(this.subscriber.subscribe(this.channel), this.timeoutMs);
      const writes = [...this.pending.values()];
      this.pending.clear();
      for (const w of writes) await w();
      await this.reload();
    } catch (err) {
      this.warn(err, 'health state reload from Redis failed');
    }
  }

  async stop(): Promise<void> {
    if (this.onMessage) this.subscriber.removeListener('message', this.onMessage);
    if (this.onReady) {
      this.subscriber.removeListener('ready', this.onReady);
      this.redis.removeListener('ready', this.onReady);
    }
    this.onMessage = null;
    this.onReady = null;
    if (this.subscriber.status === 'ready') await withTimeout(this.subscriber.unsubscribe(this.channel), this.timeoutMs).catch(() => {});
  }

  /** Reads the current state of the cluster, dropping entries whose time has passed. */
  async reload(now = Date.now()): Promise<HealthSnapshot> {
    const [ej, dr, pr] = await withTimeout(Promise.all([
      this.redis.hgetall(this.keys.ejected),
      this.redis.hgetall(this.keys.drain),
      this.redis.hgetall(this.keys.probe),
    ]), this.timeoutMs);
    const snap: HealthSnapshot = {
      ejected: this.live(this.keys.ejected, ej, isEjection, (e) => e.until, now),
      drain: this.live(this.keys.drain, dr, isDrainEntry, (d) => d.until, now),
      probe: this.live(this.keys.probe, pr, isProbeState, (p) => p.validUntil, now),
    };
    this.handlers.snapshot(snap);
    return snap;
  }

  private live<T>(key: string, raw: Record<string, string>, valid: (v: unknown) => v is T, end: (v: T) => number, now: number): T[] {
    const out: T[] = [];
    const stale: string[] = [];
    for (const [field, json] of Object.entries(raw)) {
      let v: unknown;
      try {
        v = JSON.parse(json);
      } catch {
        stale.push(field);
        continue;
      }
      if (valid(v) && end(v) > now) out.push(v);
      else stale.push(field);
    }
    if (stale.length) void this.redis.hdel(key, ...stale).catch(() => {});
    return out;
  }

  /** Runs a write now, or keeps it for when Redis is back; resolves whether it reached Redis. */
  private write(key: string, field: string, send: () => Promise<unknown>): Promise<boolean> {
    const slot = `${key}\u0000${field}`;
    const gen = ++this.generation;
    this.latest.set(slot, gen);
    const attempt = async (): Promise<boolean> => {
      try {
        await withTimeout(send(), this.timeoutMs);
        if (this.latest.get(slot) === gen) this.latest.delete(slot);
        return true;
      } catch (err) {
        // Kept for later unless a newer write to the same entry came since.
        if (this.latest.get(slot) === gen) this.pending.set(slot, attempt);
        this.warn(err, 'health state write to Redis failed; this node decides alone until it returns');
        return false;
      }
    };
    this.pending.delete(slot);
    if (!this.connected) {
      this.pending.set(slot, attempt);
      return Promise.resolve(false);
    }
    return attempt();
  }

  private set(key: string, field: string, value: unknown, until: number, message: HealthMessage): Promise<boolean> {
    return this.write(key, field, () => {
      const ttl = Math.ceil(until - Date.now());
      // Already over while it waited for Redis: nothing left to share.
      if (ttl <= 0) return Promise.resolve();
      return this.redis.eval(SET_PUB, 1, key, field, JSON.stringify(value), String(ttl), this.channel, JSON.stringify(message));
    });
  }

  private del(key: string, field: string, message: HealthMessage): Promise<boolean> {
    return this.write(key, field, () => this.redis.eval(DEL_PUB, 1, key, field, this.channel, JSON.stringify(message)));
  }

  eject(e: Ejection): Promise<boolean> {
    return this.set(this.keys.ejected, e.instanceId, e, e.until, { t: 'eject', n: this.nodeId, e });
  }

  lift(instanceId: string): Promise<boolean> {
    return this.del(this.keys.ejected, instanceId, { t: 'lift', n: this.nodeId, id: instanceId });
  }

  drain(d: DrainEntry): Promise<boolean> {
    return this.set(this.keys.drain, d.instanceId, d, d.until, { t: 'drain', n: this.nodeId, d });
  }

  undrain(instanceId: string): Promise<boolean> {
    return this.del(this.keys.drain, instanceId, { t: 'undrain', n: this.nodeId, id: instanceId });
  }

  probe(p: ProbeState): Promise<boolean> {
    return this.set(this.keys.probe, p.instanceId, p, p.validUntil, { t: 'probe', n: this.nodeId, p });
  }

  /** Writes waiting for Redis (for metrics and tests). */
  get pendingWrites(): number {
    return this.pending.size;
  }

  private warn(err: unknown, msg: string): void {
    // One warning per outage, not one per write.
    if (this.warned) return;
    this.warned = true;
    this.log?.warn({ err }, msg);
    setTimeout(() => { this.warned = false; }, 30_000).unref();
  }
}
