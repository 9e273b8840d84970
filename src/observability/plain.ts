// Counters and histograms as plain numbers on the hot path, rendered by
// prom-client only when scraped: prom-client's own metrics hash a label object
// and walk its structures on every observation, which showed in profiles of the
// proxied request. These objects speak prom-client's metric interface
// (name/help/type/aggregator/get), so a Registry renders and aggregates them
// (workers' registries are summed by Registry.aggregate).
import type client from 'prom-client';

type Labels = Record<string, string>;
interface Value { value: number; labels: Labels; metricName?: string }
interface MetricJson { name: string; help: string; type: string; aggregator: 'sum'; values: Value[] }

abstract class PlainMetric {
  readonly aggregator = 'sum' as const;
  constructor(readonly name: string, readonly help: string, protected readonly labelNames: readonly string[]) {}
  protected labelsOf(key: string): Labels {
    const parts = key.split('\u0000');
    const out: Labels = {};
    for (let i = 0; i < this.labelNames.length; i++) out[this.labelNames[i]] = parts[i] ?? '';
    return out;
  }
  abstract get(): Promise<MetricJson>;
  /** Registers with a prom-client Registry (its type accepts only its own classes). */
  register(registry: client.Registry): this {
    registry.registerMetric(this as unknown as client.Metric);
    return this;
  }
}

/** A monotonically increasing count per label combination (key: label values joined by NUL). */
export class PlainCounter extends PlainMetric {
  readonly type = 'counter';
  private readonly counts = new Map<string, { n: number }>();

  inc(key: string, by = 1): void {
    this.cell(key).n += by;
  }

  /** The count of one label combination, to increment directly (a caller that caches it skips building the key). */
  cell(key: string): { n: number } {
    let c = this.counts.get(key);
    if (!c) this.counts.set(key, (c = { n: 0 }));
    return c;
  }

  value(key: string): number {
    return this.counts.get(key)?.n ?? 0;
  }

  async get(): Promise<MetricJson> {
    const values: Value[] = [];
    for (const [k, c] of this.counts) values.push({ value: c.n, labels: this.labelsOf(k) });
    return { name: this.name, help: this.help, type: this.type, aggregator: 'sum', values };
  }
}

/** Cumulative buckets per label combination, kept as one Float64Array each. */
export class PlainHistogram extends PlainMetric {
  readonly type = 'histogram';
  private readonly series = new Map<string, Float64Array>(); // [bucket counts…, sum, count]

  constructor(name: string, help: string, labelNames: readonly string[], private readonly buckets: readonly number[]) {
    super(name, help, labelNames);
  }

  observe(key: string, seconds: number): void {
    let s = this.series.get(key);
    if (!s) this.series.set(key, (s = new Float64Array(this.buckets.length + 2)));
    const b = this.buckets;
    // Non-cumulative here (one increment per observation); cumulated when rendered.
    let i = 0;
    while (i < b.length && seconds > b[i]) i++;
    if (i < b.length) s[i]++;
    s[b.length] += seconds;
    s[b.length + 1]++;
  }

  async get(): Promise<MetricJson> {
    const values: Value[] = [];
    const n = this.buckets.length;
    for (const [k, s] of this.series) {
      const labels = this.labelsOf(k);
      let acc = 0;
      for (let i = 0; i < n; i++) {
        acc += s[i];
        values.push({ value: acc, labels: { le: String(this.buckets[i]), ...labels }, metricName: `${this.name}_bucket` });
      }
      values.push({ value: s[n + 1], labels: { le: '+Inf', ...labels }, metricName: `${this.name}_bucket` });
      values.push({ value: s[n], labels, metricName: `${this.name}_sum` });
      values.push({ value: s[n + 1], labels, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: 'sum', values };
  }
}
