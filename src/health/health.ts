// One node's view of instance health: passive ejections, active probe results
// and drains, merged from this node's own observations and the cluster's (when
// a HealthSync is attached). The request path reads it through O(1) lookups.
//
// Rules:
// - An instance is out of rotation while it is draining, ejected by the
//   outlier detector, or reported down by the active prober (whose report holds
//   until its `validUntil`, renewed by every probe while it stays down).
// - `filter` keeps the given order and drops instances out of rotation. Draining
//   instances are always dropped. When every non-draining instance is out of
//   rotation, they are all returned (panic mode, as envoy does): sending to a
//   possibly bad instance beats refusing every request of the service.
// - `healthOf` reports, in this order of precedence: 'draining'; 'unhealthy'
//   when probes have held the instance down longer than `unhealthyAfterMs`;
//   'ejected' when it is out of rotation for a shorter time (passively or by
//   probes); else 'healthy'.
// - A drain lasts until `undrain` or its TTL (default 24 h; the instance is
//   normally deleted from the registry long before).
import { invalid } from '../core/errors.ts';
import { OutlierDetector, type AttemptOutcome, type Ejection, type OutlierOptions } from './outlier.ts';
import { HealthSync, type DrainEntry, type HealthMessage, type HealthSnapshot, type ProbeState, type SyncLogger } from './sync.ts';
import type { Redis } from 'ioredis';

export type HealthStateName = 'healthy' | 'ejected' | 'unhealthy' | 'draining';

export interface InstanceHealthReport {
  state: HealthStateName;
  /** Epoch ms the state began; null for an instance never seen out of rotation. */
  since: number | null;
  reason: string | null;
}

export interface InstanceRef {
  readonly id: string;
  readonly serviceId: string;
}

/** How an upstream attempt ended, as the proxy's UpstreamError describes it. */
export interface AttemptFailure {
  kind: string;
  unreached: boolean;
  /** The failure proves nothing serves there (refused, reset before any byte on a fresh connection). */
  gone?: boolean;
}

/**
 * Maps one attempt's result to an outcome, or null when it says nothing about
 * the instance (the client went away, the body was too large).
 */
export function outcomeOf(status: number | null, error?: AttemptFailure | null): AttemptOutcome | null {
  if (error) {
    // 'skipped': not attempted (its origin was proved gone just before).
    if (error.kind === 'client_aborted' || error.kind === 'body_too_large' || error.kind === 'skipped') return null;
    return error.unreached || error.gone ? 'unreached' : 'failure';
  }
  if (status === null) return null;
  return status >= 500 ? 'failure' : 'success';
}

export interface InstanceHealthOptions {
  /** Registered instances of a service (the max-ejection-percent base). */
  serviceSize: (serviceId: string) => number;
  outlier?: Partial<OutlierOptions>;
  /** Probes holding an instance down longer than this make it 'unhealthy' (default 5 min). */
  unhealthyAfterMs?: number;
  /** Default drain lifetime (default 24 h). */
  drainTtlMs?: number;
  /** Cluster sharing; omit to decide alone. `subscriber` is a connection dedicated to SUBSCRIBE (it may serve other channels too). */
  redis?: { client: Redis; subscriber: Redis; prefix?: string };
  /** This node's id in shared messages (default: random). */
  nodeId?: string;
  log?: SyncLogger;
  clock?: () => number;
  /** Called on every change of an instance's rotation, here or learned from the cluster (for logs). */
  onEvent?: (e: HealthEvent) => void;
}

export type HealthEvent =
  | { type: 'ejected'; source: 'local' | 'remote'; ejection: Ejection }
  | { type: 'lifted' | 'drained' | 'undrained'; source: 'local' | 'remote'; instanceId: string }
  | { type: 'probe_down' | 'probe_up'; source: 'local' | 'remote'; instanceId: string; reason: string };

export interface HealthMetrics {
  /** Ejections per service and instance, decided here ('local') or learned from other nodes ('remote'). */
  ejectionsTotal: Array<{ serviceId: string; instanceId: string; source: 'local' | 'remote'; count: number }>;
  /** Instances ejected now (passively), per service. */
  ejectedNow: Array<{ serviceId: string; count: number }>;
  /** Instances held down by probes now. */
  probeDownNow: number;
  drainingNow: number;
  /** null without Redis; false while it is unreachable (this node decides alone). */
  redisConnected: boolean | null;
  /** Health writes waiting for Redis to return. */
  pendingWrites: number;
}

export class InstanceHealth {
  readonly outlier: OutlierDetector;
  readonly nodeId: string;
  readonly unhealthyAfterMs: number;
  private readonly drainTtlMs: number;
  private readonly serviceSize: (serviceId: string) => number;
  private readonly clock: () => number;
  private readonly draining = new Map<string, DrainEntry>();
  /** Probe results that hold an instance down; up results only clear entries. */
  private readonly probeDown = new Map<string, ProbeState>();
  /** When an instance last returned to rotation (for `healthOf().since`). */
  private readonly recovered = new Map<string, number>();
  private readonly ejections = new Map<string, number>();
  readonly sync: HealthSync | null;
  private readonly onEvent: (e: HealthEvent) => void;

  constructor(opts: InstanceHealthOptions) {
    this.onEvent = opts.onEvent ?? (() => {});
    this.outlier = new OutlierDetector(opts.outlier);
    this.serviceSize = opts.serviceSize;
    this.clock = opts.clock ?? Date.now;
    this.unhealthyAfterMs = opts.unhealthyAfterMs ?? 300_000;
    this.drainTtlMs = opts.drainTtlMs ?? 86_400_000;
    this.nodeId = opts.nodeId ?? `node-${Math.random().toString(36).slice(2, 10)}`;
    this.sync = opts.redis
      ? new HealthSync(opts.redis.client, opts.redis.subscriber, this.nodeId, {
        message: (m) => this.applyMessage(m),
        snapshot: (s) => this.applySnapshot(s),
      }, opts.redis.prefix, opts.log)
      : null;
  }

  /** Subscribes and loads the cluster's current state (no-op without Redis). */
  async start(): Promise<void> {
    await this.sync?.start();
  }

  async stop(): Promise<void> {
    await this.sync?.stop();
  }

  // ---- hot path -------------------------------------------------------------

  /** O(1): may this instance receive new requests? */
  isAvailable(instanceId: string, now = this.clock()): boolean {
    const d = this.draining.get(instanceId);
    if (d !== undefined && d.until > now) return false;
    if (this.outlier.isEjected(instanceId, now)) return false;
    const p = this.probeDown.get(instanceId);
    return p === undefined || p.validUntil <= now;
  }

  isEjected(instanceId: string, now = this.clock()): boolean {
    return this.outlier.isEjected(instanceId, now);
  }

  isDraining(instanceId: string, now = this.clock()): boolean {
    const d = this.draining.get(instanceId);
    return d !== undefined && d.until > now;
  }

  /** Keeps order; drops draining and out-of-rotation instances (see the panic rule above). */
  filter<T extends { readonly id: string }>(instances: readonly T[], now = this.clock()): T[] {
    const open: T[] = [];
    let panic: T[] | null = null;
    for (const inst of instances) {
      if (this.isAvailable(inst.id, now)) open.push(inst);
      else if (!this.isDraining(inst.id, now)) (panic ??= []).push(inst);
    }
    return open.length > 0 || panic === null ? open : panic;
  }

  /** Reports one upstream attempt; returns the ejection it caused, if any. */
  report(inst: InstanceRef, outcome: AttemptOutcome | null, detail = ''): Ejection | null {
    if (outcome === null) return null;
    const now = this.clock();
    const e = this.outlier.record(inst.id, inst.serviceId, this.serviceSize(inst.serviceId), outcome, now, detail);
    if (e) {
      this.count(e, 'local');
      this.emit({ type: 'ejected', source: 'local', ejection: e });
      void this.sync?.eject(e);
    }
    return e;
  }

  /**
   * The instance answered 503 with Retry-After: out of rotation until then
   * (at most the longest ejection), here and, with Redis, on every node. Its
   * ejection count does not grow: the instance asked for this.
   */
  holdOff(inst: InstanceRef, retryAfterMs: number, reason: string): Ejection | null {
    if (!(retryAfterMs > 0)) return null;
    const now = this.clock();
    const cur = this.outlier.ejection(inst.id, now);
    const e: Ejection = {
      instanceId: inst.id, serviceId: inst.serviceId, since: cur?.since ?? now,
      until: now + Math.min(retryAfterMs, this.outlier.options.maxEjectionMs), count: cur?.count ?? 0, reason,
    };
    if (!this.outlier.apply(e, now)) return null;
    this.count(e, 'local');
    this.emit({ type: 'ejected', source: 'local', ejection: e });
    void this.sync?.eject(e);
    return e;
  }

  // ---- operator and prober actions -------------------------------------------

  /**
   * Stops new requests to the instance on every node. Resolves with
   * `shared: false` when Redis is absent or unreachable (the drain is sent when it returns).
   */
  async drain(instanceId: string, ttlMs = this.drainTtlMs): Promise<DrainEntry & { shared: boolean }> {
    validateId(instanceId);
    if (!(Number.isSafeInteger(ttlMs) && ttlMs > 0)) throw invalid(`drain ttl must be a positive integer of milliseconds, got ${ttlMs}`, { field: 'ttlMs' });
    const now = this.clock();
    const d: DrainEntry = { instanceId, since: this.draining.get(instanceId)?.since ?? now, until: now + ttlMs };
    this.draining.set(instanceId, d);
    this.emit({ type: 'drained', source: 'local', instanceId });
    const shared = (await this.sync?.drain(d)) ?? false;
    return { ...d, shared };
  }

  /** Resolves whether the change reached the cluster (see `drain`). */
  async undrain(instanceId: string): Promise<boolean> {
    validateId(instanceId);
    if (this.draining.delete(instanceId)) {
      this.recovered.set(instanceId, this.clock());
      this.emit({ type: 'undrained', source: 'local', instanceId });
    }
    return (await this.sync?.undrain(instanceId)) ?? false;
  }

  /** Ends a passive ejection early on every node (an operator, or probes saw it recover). */
  async lift(instanceId: string): Promise<boolean> {
    validateId(instanceId);
    const now = this.clock();
    if (this.outlier.lift(instanceId, now)) {
      this.recovered.set(instanceId, now);
      this.emit({ type: 'lifted', source: 'local', instanceId });
    }
    return (await this.sync?.lift(instanceId)) ?? false;
  }

  /** Records a probe result from this node's prober and shares it. */
  async probed(p: ProbeState): Promise<void> {
    const was = this.applyProbe(p, 'local');
    // A passed probe also ends any passive ejection: the instance answers again.
    // A failed probe below the down threshold still reports `up` and must not.
    if (passed(p) && this.outlier.isEjected(p.instanceId, this.clock())) await this.lift(p.instanceId);
    // Up results are shared only when they change something, down results on
    // every probe (they renew the lease that keeps the instance out).
    if (!p.up || was) await this.sync?.probe(p);
  }

  /** The prober's last shared state of an instance (to resume counting after a leader change). */
  probeState(instanceId: string): ProbeState | undefined {
    return this.probeDown.get(instanceId);
  }

  // ---- read API -------------------------------------------------------------

  healthOf(instanceId: string, now = this.clock()): InstanceHealthReport {
    const d = this.draining.get(instanceId);
    if (d && d.until > now) return { state: 'draining', since: d.since, reason: 'drained by an operator' };
    const p = this.probeDown.get(instanceId);
    const probeDown = p !== undefined && p.validUntil > now;
    if (probeDown && now - p.since >= this.unhealthyAfterMs) return { state: 'unhealthy', since: p.since, reason: p.reason };
    const e = this.outlier.ejection(instanceId, now);
    if (probeDown && (!e || p.since <= e.since)) return { state: 'ejected', since: p.since, reason: p.reason };
    if (e) return { state: 'ejected', since: e.since, reason: e.reason };
    const back = Math.max(this.recovered.get(instanceId) ?? 0, this.lastEnd(instanceId, now));
    return { state: 'healthy', since: back > 0 ? back : null, reason: null };
  }

  metrics(now = this.clock()): HealthMetrics {
    const ejectionsTotal: HealthMetrics['ejectionsTotal'] = [];
    for (const [k, count] of this.ejections) {
      const [source, serviceId, instanceId] = k.split('\u0000') as ['local' | 'remote', string, string];
      ejectionsTotal.push({ serviceId, instanceId, source, count });
    }
    const per = new Map<string, number>();
    for (const e of this.outlier.current(now)) per.set(e.serviceId, (per.get(e.serviceId) ?? 0) + 1);
    let probeDownNow = 0;
    for (const p of this.probeDown.values()) if (p.validUntil > now) probeDownNow++;
    let drainingNow = 0;
    for (const d of this.draining.values()) if (d.until > now) drainingNow++;
    return {
      ejectionsTotal, ejectedNow: [...per].map(([serviceId, count]) => ({ serviceId, count })), probeDownNow, drainingNow,
      redisConnected: this.sync ? this.sync.connected : null, pendingWrites: this.sync?.pendingWrites ?? 0,
    };
  }

  /** Drops state of instances no longer registered (call after a registry reload). */
  retain(liveIds: ReadonlySet<string>): void {
    for (const id of [...this.draining.keys()]) if (!liveIds.has(id)) this.draining.delete(id);
    for (const id of [...this.probeDown.keys()]) if (!liveIds.has(id)) this.probeDown.delete(id);
    for (const id of [...this.recovered.keys()]) if (!liveIds.has(id)) this.recovered.delete(id);
    for (const id of [...this.endedAt.keys()]) if (!liveIds.has(id)) this.endedAt.delete(id);
    this.outlier.retain(liveIds);
  }

  // ---- merging the cluster's state -------------------------------------------

  private lastEnd(instanceId: string, now: number): number {
    // An ejection that ended by itself: the instance is back since its end.
    const t = this.endedAt.get(instanceId);
    return t !== undefined && t <= now ? t : 0;
  }

  private readonly endedAt = new Map<string, number>();

  private count(e: Ejection, source: 'local' | 'remote'): void {
    const k = `${source}\u0000${e.serviceId}\u0000${e.instanceId}`;
    this.ejections.set(k, (this.ejections.get(k) ?? 0) + 1);
    this.endedAt.set(e.instanceId, e.until);
  }

  /** Returns whether the instance's up/down state changed. */
  private applyProbe(p: ProbeState, source: 'local' | 'remote'): boolean {
    const now = this.clock();
    const cur = this.probeDown.get(p.instanceId);
    const wasDown = cur !== undefined && cur.validUntil > now;
    if (p.up) {
      if (cur) this.probeDown.delete(p.instanceId);
      if (wasDown) {
        this.recovered.set(p.instanceId, now);
        this.emit({ type: 'probe_up', source, instanceId: p.instanceId, reason: p.reason });
      }
      return wasDown;
    }
    this.probeDown.set(p.instanceId, p);
    if (!wasDown) this.emit({ type: 'probe_down', source, instanceId: p.instanceId, reason: p.reason });
    return !wasDown;
  }

  private emit(e: HealthEvent): void {
    try {
      this.onEvent(e);
    } catch {
      // A logging hook must not break health bookkeeping.
    }
  }

  private applyMessage(m: HealthMessage): void {
    const now = this.clock();
    switch (m.t) {
      case 'eject':
        if (this.outlier.apply(m.e, now)) {
          this.count(m.e, 'remote');
          this.emit({ type: 'ejected', source: 'remote', ejection: m.e });
        }
        break;
      case 'lift':
        if (this.outlier.lift(m.id, now)) {
          this.recovered.set(m.id, now);
          this.emit({ type: 'lifted', source: 'remote', instanceId: m.id });
        }
        break;
      case 'drain':
        if (!this.isDraining(m.d.instanceId, now)) this.emit({ type: 'drained', source: 'remote', instanceId: m.d.instanceId });
        this.draining.set(m.d.instanceId, m.d);
        break;
      case 'undrain':
        if (this.draining.delete(m.id)) {
          this.recovered.set(m.id, now);
          this.emit({ type: 'undrained', source: 'remote', instanceId: m.id });
        }
        break;
      case 'probe':
        if (passed(m.p) && this.outlier.isEjected(m.p.instanceId, now)) this.outlier.lift(m.p.instanceId, now);
        this.applyProbe(m.p, 'remote');
        break;
    }
  }

  private applySnapshot(s: HealthSnapshot): void {
    const now = this.clock();
    for (const e of s.ejected) {
      if (this.outlier.apply(e, now)) {
        this.count(e, 'remote');
        this.emit({ type: 'ejected', source: 'remote', ejection: e });
      }
    }
    for (const d of s.drain) {
      if (!this.isDraining(d.instanceId, now)) this.emit({ type: 'drained', source: 'remote', instanceId: d.instanceId });
      this.draining.set(d.instanceId, d);
    }
    for (const p of s.probe) this.applyProbe(p, 'remote');
  }
}

/** The probe behind this state passed (not merely: the instance is not down yet). */
function passed(p: ProbeState): boolean {
  return p.up && p.fails === 0 && p.passes > 0;
}

function validateId(instanceId: unknown): asserts instanceId is string {
  if (typeof instanceId !== 'string' || instanceId === '' || instanceId.length > 64) {
    throw invalid('instance id must be a non-empty string of at most 64 characters', { field: 'instanceId' });
  }
}
