// What the console shows about traffic: the node's Prometheus text summarised
// (requests and durations by proxy type), and per-service / per-instance counts
// from the proxy's per-request records. Both are sampled every 10 s into a ring
// buffer of one hour kept here, on the node: the charts then cover the last hour
// as soon as a page opens, and any number of open tabs share one sampler.
import type { ProxyLogRecord } from '../observability/record.ts';

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const LINE_RE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL_RE = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/**
 * Parses the Prometheus text exposition format (samples only; HELP/TYPE lines
 * and timestamps are skipped). Hand-written: the node produces this text itself
 * with a fixed shape, and a dozen lines beat a parser dependency for it.
 */
export function parsePrometheus(text: string): PromSample[] {
  const out: PromSample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = LINE_RE.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    if (m[2]) for (const l of m[2].matchAll(LABEL_RE)) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    if (!Number.isNaN(value)) out.push({ name: m[1], labels, value });
  }
  return out;
}

/** Cumulative counters of one proxy type (or service, or instance) at one instant. */
export interface Counters {
  requests: number;
  errors: number; // status >= 500
  durationSum: number; // seconds
  durationCount: number;
  /** cumulative histogram buckets: upper bound (s) → count */
  buckets: Array<[number, number]>;
}

const emptyCounters = (): Counters => ({ requests: 0, errors: 0, durationSum: 0, durationCount: 0, buckets: [] });

/** Requests and durations by proxy type, from the node's metrics text. */
export function countersByType(samples: PromSample[]): Map<string, Counters> {
  const by = new Map<string, Counters>();
  const get = (type: string | undefined) => {
    const k = type ?? '';
    let c = by.get(k);
    if (!c) by.set(k, (c = emptyCounters()));
    return c;
  };
  for (const s of samples) {
    if (s.name === 'utilmeta_proxy_requests_total') {
      const c = get(s.labels.type);
      c.requests += s.value;
      if (Number(s.labels.status) >= 500) c.errors += s.value;
    } else if (s.name === 'utilmeta_proxy_request_duration_seconds_sum') get(s.labels.type).durationSum += s.value;
    else if (s.name === 'utilmeta_proxy_request_duration_seconds_count') get(s.labels.type).durationCount += s.value;
    else if (s.name === 'utilmeta_proxy_request_duration_seconds_bucket') {
      const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
      get(s.labels.type).buckets.push([le, s.value]);
    }
  }
  for (const c of by.values()) c.buckets.sort((a, b) => a[0] - b[0]);
  return by;
}

/** The q-quantile (seconds) of the observations between two cumulative histograms, linear within a bucket. */
export function quantile(q: number, now: Array<[number, number]>, before: Array<[number, number]> = []): number | null {
  const prev = new Map(before);
  const deltas = now.map(([le, n]) => [le, n - (prev.get(le) ?? 0)] as [number, number]);
  const total = deltas.length ? deltas[deltas.length - 1][1] : 0;
  if (!(total > 0)) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [le, n] of deltas) {
    if (n >= rank) {
      if (le === Infinity) return lower;
      const inBucket = n - below;
      return inBucket > 0 ? lower + ((le - lower) * (rank - below)) / inBucket : le;
    }
    lower = le;
    below = n;
  }
  return lower;
}

export interface Rate {
  /** requests per second over the interval */
  rps: number;
  /** server errors per second */
  errorsPerSecond: number;
  /** mean duration in ms, null when nothing was observed */
  meanMs: number | null;
  p95Ms: number | null;
}

export function rateBetween(a: Counters | undefined, b: Counters, seconds: number): Rate {
  const base = a ?? emptyCounters();
  const n = b.durationCount - base.durationCount;
  const sum = b.durationSum - base.durationSum;
  const p95 = b.buckets.length ? quantile(0.95, b.buckets, base.buckets) : null;
  return {
    rps: seconds > 0 ? Math.max(0, b.requests - base.requests) / seconds : 0,
    errorsPerSecond: seconds > 0 ? Math.max(0, b.errors - base.errors) / seconds : 0,
    meanMs: n > 0 ? (sum / n) * 1000 : null,
    p95Ms: p95 === null ? null : p95 * 1000,
  };
}

/** Per-service and per-instance counters fed by the proxy's per-request records. */
export class TrafficCounters {
  readonly services = new Map<string, Counters>();
  readonly instances = new Map<string, Counters & { service: string }>();

  observe(r: Pick<ProxyLogRecord, 'service' | 'target' | 'instance' | 'status' | 'durationMs'>): void {
    if (!r.service) return;
    const add = (c: Counters) => {
      c.requests++;
      if (r.status >= 500) c.errors++;
      c.durationSum += r.durationMs / 1000;
      c.durationCount++;
    };
    let s = this.services.get(r.service);
    if (!s) this.services.set(r.service, (s = emptyCounters()));
    add(s);
    const key = r.target ?? r.instance;
    if (key) {
      let i = this.instances.get(key);
      if (!i) this.instances.set(key, (i = { ...emptyCounters(), service: r.service }));
      add(i);
    }
  }
}

interface Snapshot {
  at: number; // ms
  types: Map<string, Counters>;
  services: Map<string, Counters>;
  instances: Map<string, Counters & { service: string }>;
}

const clone = <C extends Counters>(m: Map<string, C>): Map<string, C> => new Map([...m].map(([k, c]) => [k, { ...c, buckets: [...c.buckets] }]));

export interface SeriesPoint {
  t: string;
  byType: Record<string, Rate>;
  byService: Record<string, Rate>;
}

export interface MetricsSummary {
  sampledAt: string | null;
  intervalSeconds: number;
  totals: Record<string, { requests: number; errors: number; meanMs: number | null; p95Ms: number | null }>;
  /** rates over the last interval */
  types: Record<string, Rate>;
  services: Record<string, Rate & { requests: number }>;
  instances: Record<string, Rate & { requests: number; service: string }>;
  /** the last hour, one point per interval */
  series: SeriesPoint[];
}

/** Samples every `intervalMs` and keeps `capacity` snapshots (one hour at 10 s). */
export class MetricsSampler {
  private readonly ring: Snapshot[] = [];
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly text: () => Promise<string>,
    readonly traffic: TrafficCounters,
    readonly intervalMs = 10_000,
    private readonly capacity = 361,
  ) {}

  start(): void {
    if (this.timer) return;
    void this.sample();
    this.timer = setInterval(() => void this.sample(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async sample(now = Date.now()): Promise<void> {
    let types: Map<string, Counters>;
    try {
      types = countersByType(parsePrometheus(await this.text()));
    } catch {
      return; // a failed scrape leaves a gap; the next one fills the rate
    }
    this.ring.push({ at: now, types, services: clone(this.traffic.services), instances: clone(this.traffic.instances) });
    if (this.ring.length > this.capacity) this.ring.shift();
  }

  summary(): MetricsSummary {
    const r = this.ring;
    const last = r[r.length - 1];
    const prev = r[r.length - 2];
    const secs = last && prev ? (last.at - prev.at) / 1000 : 0;
    const rates = <C extends Counters>(a: Map<string, C> | undefined, b: Map<string, C>) =>
      Object.fromEntries([...b].map(([k, c]) => [k, rateBetween(a?.get(k), c, secs)]));
    const series: SeriesPoint[] = [];
    for (let i = 1; i < r.length; i++) {
      const s = (r[i].at - r[i - 1].at) / 1000;
      series.push({
        t: new Date(r[i].at).toISOString(),
        byType: Object.fromEntries([...r[i].types].map(([k, c]) => [k, rateBetween(r[i - 1].types.get(k), c, s)])),
        byService: Object.fromEntries([...r[i].services].map(([k, c]) => [k, rateBetween(r[i - 1].services.get(k), c, s)])),
      });
    }
    return {
      sampledAt: last ? new Date(last.at).toISOString() : null,
      intervalSeconds: this.intervalMs / 1000,
      totals: last
        ? Object.fromEntries([...last.types].map(([k, c]) => {
            const t = rateBetween(undefined, c, 0);
            return [k, { requests: c.requests, errors: c.errors, meanMs: t.meanMs, p95Ms: t.p95Ms }];
          }))
        : {},
      types: last ? rates(prev?.types, last.types) : {},
      services: last ? Object.fromEntries([...last.services].map(([k, c]) => [k, { ...rateBetween(prev?.services.get(k), c, secs), requests: c.requests }])) : {},
      instances: last ? Object.fromEntries([...last.instances].map(([k, c]) => [k, { ...rateBetween(prev?.instances.get(k), c, secs), requests: c.requests, service: c.service }])) : {},
      series,
    };
  }
}
