// Passive health (outlier ejection), modelled on envoy's outlier detection.
//
// Rules:
// - Every upstream attempt reports an outcome per instance: 'success' (any
//   answer below 500), 'failure' (a 5xx answer, a timeout, a reset or a broken
//   response) or 'unreached' (the connection was refused or never established).
//   Client aborts and oversized bodies say nothing about the instance and are
//   not reported.
// - A success resets the instance's consecutive-failure counter. After
//   `consecutiveFailures` failures in a row (default 5), or `consecutiveUnreached`
//   unreached attempts in a row (default 1: a refused connection means nothing
//   listens there, and waiting for more costs a failed request per attempt), the
//   instance is ejected.
// - An ejection lasts base × n (n = the instance's ejection count, this one
//   included), capped at `maxEjectionMs`. The count decays by one for every
//   `maxEjectionMs` the instance spent back in rotation since its last ejection
//   ended, so an instance that recovered for good starts again from base.
// - At most `maxEjectionPercent` of a service's instances are ejected at once
//   (at least one may be when the service has two or more, and never the last
//   one): a failure beyond that cap is counted but ejects nothing, so a bad
//   deploy cannot take a whole service out.
// - Ejection ends by itself when its time has passed (the instance gets traffic
//   again and its counters start from zero), or earlier by `lift` (an active
//   probe saw it recover, or an operator).
// - Ejections decided by other nodes are merged with `apply`: the later end wins.
//
// All times are epoch milliseconds passed in by the caller, so the rules are
// testable without clocks and every node compares the same absolute instants.
import { invalid } from '../core/errors.ts';

export type AttemptOutcome = 'success' | 'failure' | 'unreached';

export interface OutlierOptions {
  consecutiveFailures: number;
  consecutiveUnreached: number;
  baseEjectionMs: number;
  maxEjectionMs: number;
  maxEjectionPercent: number;
}

export const DEFAULT_OUTLIER_OPTIONS: OutlierOptions = {
  consecutiveFailures: 5,
  consecutiveUnreached: 1,
  baseEjectionMs: 30_000,
  maxEjectionMs: 300_000,
  maxEjectionPercent: 50,
};

export interface Ejection {
  instanceId: string;
  serviceId: string;
  /** When the ejection started. */
  since: number;
  /** When the instance returns to rotation. */
  until: number;
  /** The instance's ejection count (the backoff multiplier). */
  count: number;
  reason: string;
}

interface Tracker {
  failures: number;
  unreached: number;
  count: number;
  /** End of the last ejection, for the decay of `count`. */
  lastUntil: number;
  lastError: string;
}

export class OutlierDetector {
  readonly options: OutlierOptions;
  private readonly trackers = new Map<string, Tracker>();
  /** Current ejections, local and remote: the hot path reads only this map. */
  private readonly ejections = new Map<string, Ejection>();
  private readonly byService = new Map<string, Set<string>>();

  constructor(options: Partial<OutlierOptions> = {}) {
    this.options = { ...DEFAULT_OUTLIER_OPTIONS, ...options };
    validateOutlierOptions(this.options);
  }

  /** O(1): one map lookup and a comparison. */
  isEjected(instanceId: string, now: number): boolean {
    const e = this.ejections.get(instanceId);
    return e !== undefined && e.until > now;
  }

  ejection(instanceId: string, now: number): Ejection | undefined {
    const e = this.ejections.get(instanceId);
    return e !== undefined && e.until > now ? e : undefined;
  }

  /** Instances of the service ejected at `now` (expired entries are dropped on the way). */
  ejectedIn(serviceId: string, now: number): number {
    const set = this.byService.get(serviceId);
    if (!set) return 0;
    for (const id of set) {
      const e = this.ejections.get(id);
      if (!e || e.until <= now) this.expire(id);
    }
    return set.size;
  }

  /** All live ejections (for metrics and listings). */
  current(now: number): Ejection[] {
    const out: Ejection[] = [];
    for (const e of this.ejections.values()) if (e.until > now) out.push(e);
    return out;
  }

  /** How many instances of a service of `size` may be ejected at once. */
  maxEjected(size: number): number {
    if (size < 2 || this.options.maxEjectionPercent === 0) return 0;
    return Math.min(size - 1, Math.max(1, Math.floor((size * this.options.maxEjectionPercent) / 100)));
  }

  /**
   * Records one attempt's outcome; returns the new ejection when this one
   * crossed a threshold (and the cap allowed it), otherwise null.
   * `serviceSize` is the number of registered instances of the service.
   */
  record(instanceId: string, serviceId: string, serviceSize: number, outcome: AttemptOutcome, now: number, detail = ''): Ejection | null {
    let t = this.trackers.get(instanceId);
    if (outcome === 'success') {
      if (t) {
        t.failures = 0;
        t.unreached = 0;
      }
      return null;
    }
    if (!t) {
      t = { failures: 0, unreached: 0, count: 0, lastUntil: 0, lastError: '' };
      this.trackers.set(instanceId, t);
    }
    // An instance still ejected (by another node, or a straggling in-flight
    // request) is not ejected again: its backoff would grow for one incident.
    if (this.isEjected(instanceId, now)) return null;
    t.failures++;
    if (outcome === 'unreached') t.unreached++;
    else t.unreached = 0;
    t.lastError = detail || outcome;
    const o = this.options;
    const hit = t.failures >= o.consecutiveFailures || t.unreached >= o.consecutiveUnreached;
    if (!hit) return null;
    if (this.ejectedIn(serviceId, now) >= this.maxEjected(serviceSize)) return null;
    const decay = t.lastUntil > 0 ? Math.floor(Math.max(0, now - t.lastUntil) / o.maxEjectionMs) : 0;
    const count = Math.max(0, t.count - decay) + 1;
    const reason = t.unreached >= o.consecutiveUnreached
      ? `${t.unreached} unreached attempt(s) in a row (${t.lastError})`
      : `${t.failures} consecutive failures (last: ${t.lastError})`;
    const e: Ejection = { instanceId, serviceId, since: now, until: now + this.ejectionMs(count), count, reason };
    t.failures = 0;
    t.unreached = 0;
    t.count = count;
    t.lastUntil = e.until;
    this.put(e);
    return e;
  }

  /** base × count, capped. */
  ejectionMs(count: number): number {
    return Math.min(this.options.baseEjectionMs * Math.max(1, count), this.options.maxEjectionMs);
  }

  /** Merges an ejection decided elsewhere; returns false when it changes nothing. */
  apply(e: Ejection, now: number): boolean {
    if (e.until <= now) return false;
    const cur = this.ejections.get(e.instanceId);
    if (cur && cur.until >= e.until) return false;
    this.put(e);
    const t = this.trackers.get(e.instanceId);
    if (t) {
      t.failures = 0;
      t.unreached = 0;
      t.count = Math.max(t.count, e.count);
      t.lastUntil = Math.max(t.lastUntil, e.until);
    } else {
      this.trackers.set(e.instanceId, { failures: 0, unreached: 0, count: e.count, lastUntil: e.until, lastError: '' });
    }
    return true;
  }

  /** Ends an ejection early; returns whether there was one. */
  lift(instanceId: string, now: number): boolean {
    const had = this.isEjected(instanceId, now);
    const t = this.trackers.get(instanceId);
    if (had && t) t.lastUntil = now;
    this.expire(instanceId);
    return had;
  }

  /** Forgets every instance not in `liveIds` (call after a registry reload). */
  retain(liveIds: ReadonlySet<string>): void {
    for (const id of [...this.trackers.keys()]) if (!liveIds.has(id)) this.trackers.delete(id);
    for (const id of [...this.ejections.keys()]) if (!liveIds.has(id)) this.expire(id);
  }

  /** Forgets an instance that left the registry. */
  forget(instanceId: string): void {
    this.expire(instanceId);
    this.trackers.delete(instanceId);
  }

  private put(e: Ejection): void {
    this.ejections.set(e.instanceId, e);
    let set = this.byService.get(e.serviceId);
    if (!set) {
      set = new Set();
      this.byService.set(e.serviceId, set);
    }
    set.add(e.instanceId);
  }

  private expire(instanceId: string): void {
    const e = this.ejections.get(instanceId);
    if (!e) return;
    this.ejections.delete(instanceId);
    const set = this.byService.get(e.serviceId);
    if (set) {
      set.delete(instanceId);
      if (set.size === 0) this.byService.delete(e.serviceId);
    }
  }
}

export function validateOutlierOptions(o: OutlierOptions): void {
  const positiveInt = (name: keyof OutlierOptions) => {
    if (!Number.isSafeInteger(o[name]) || o[name] < 1) throw invalid(`outlier option ${name} must be a positive integer, got ${o[name]}`, { field: name });
  };
  positiveInt('consecutiveFailures');
  positiveInt('consecutiveUnreached');
  positiveInt('baseEjectionMs');
  positiveInt('maxEjectionMs');
  if (o.maxEjectionMs < o.baseEjectionMs) throw invalid('outlier option maxEjectionMs must be at least baseEjectionMs', { field: 'maxEjectionMs' });
  if (!(o.maxEjectionPercent >= 0 && o.maxEjectionPercent <= 100)) throw invalid(`outlier option maxEjectionPercent must be within 0..100, got ${o.maxEjectionPercent}`, { field: 'maxEjectionPercent' });
}
