// Retry budget: stops retry storms when a whole service is failing.
//
// Rules:
// - Each service has its own budget. Every request sent to the service is a
//   deposit (`onRequest`); every retry (a second or later attempt of the same
//   request, failover included) is a withdrawal that must be granted
//   (`tryRetry`).
// - Over a sliding window (default 10 s, kept as 10 one-second buckets), retries
//   may reach max(ratio × requests, minPerSecond × window seconds): with the
//   defaults, 20% of the requests, but always at least 3 retries a second so a
//   quiet service can still fail over.
// - A refused retry is not counted; the caller answers with the last attempt's
//   result instead of trying again.
// Pure logic: the caller passes `now` (epoch or monotonic milliseconds).
import { invalid } from '../core/errors.ts';

export interface RetryBudgetOptions {
  ratio: number;
  windowMs: number;
  minPerSecond: number;
  buckets: number;
}

export const DEFAULT_RETRY_BUDGET: RetryBudgetOptions = { ratio: 0.2, windowMs: 10_000, minPerSecond: 3, buckets: 10 };

export class RetryBudget {
  readonly options: RetryBudgetOptions;
  private readonly bucketMs: number;
  private readonly requests: Float64Array;
  private readonly retries: Float64Array;
  /** Index (now / bucketMs) of the newest bucket. */
  private head = -1;
  private requestSum = 0;
  private retrySum = 0;
  /** Counters for metrics. */
  granted = 0;
  refused = 0;

  constructor(options: Partial<RetryBudgetOptions> = {}) {
    const o = { ...DEFAULT_RETRY_BUDGET, ...options };
    if (!(o.ratio >= 0 && o.ratio <= 1)) throw invalid(`retry budget ratio must be within 0..1, got ${o.ratio}`, { field: 'ratio' });
    if (!(Number.isSafeInteger(o.windowMs) && o.windowMs >= 1)) throw invalid(`retry budget windowMs must be a positive integer, got ${o.windowMs}`, { field: 'windowMs' });
    if (!(o.minPerSecond >= 0 && Number.isFinite(o.minPerSecond))) throw invalid(`retry budget minPerSecond must be ≥ 0, got ${o.minPerSecond}`, { field: 'minPerSecond' });
    if (!(Number.isSafeInteger(o.buckets) && o.buckets >= 1 && o.buckets <= o.windowMs)) throw invalid(`retry budget buckets must be an integer within 1..windowMs, got ${o.buckets}`, { field: 'buckets' });
    this.options = o;
    this.bucketMs = o.windowMs / o.buckets;
    this.requests = new Float64Array(o.buckets);
    this.retries = new Float64Array(o.buckets);
  }

  /** Moves the window to `now`, clearing the buckets that fell out of it. */
  private advance(now: number): number {
    const idx = Math.floor(now / this.bucketMs);
    if (this.head < 0 || idx - this.head >= this.options.buckets) {
      this.requests.fill(0);
      this.retries.fill(0);
      this.requestSum = 0;
      this.retrySum = 0;
    } else {
      // A clock that went back keeps writing into the newest bucket.
      for (let i = this.head + 1; i <= idx; i++) {
        const k = i % this.options.buckets;
        this.requestSum -= this.requests[k];
        this.retrySum -= this.retries[k];
        this.requests[k] = 0;
        this.retries[k] = 0;
      }
    }
    if (idx > this.head) this.head = idx;
    return this.head % this.options.buckets;
  }

  onRequest(now: number): void {
    const k = this.advance(now);
    this.requests[k]++;
    this.requestSum++;
  }

  /** Retries the window still allows. */
  available(now: number): number {
    this.advance(now);
    const o = this.options;
    const limit = Math.max(o.ratio * this.requestSum, (o.minPerSecond * o.windowMs) / 1000);
    return Math.max(0, Math.floor(limit - this.retrySum));
  }

  /** Grants and records one retry, or refuses it. */
  tryRetry(now: number): boolean {
    if (this.available(now) < 1) {
      this.refused++;
      return false;
    }
    const k = this.head % this.options.buckets;
    this.retries[k]++;
    this.retrySum++;
    this.granted++;
    return true;
  }

  /** Requests and retries in the window (for metrics and tests). */
  window(now: number): { requests: number; retries: number } {
    this.advance(now);
    return { requests: this.requestSum, retries: this.retrySum };
  }
}

/** One budget per service, created on first use. */
export class RetryBudgets {
  private readonly budgets = new Map<string, RetryBudget>();
  constructor(private readonly options: Partial<RetryBudgetOptions> = {}) {
    new RetryBudget(options); // validates once, at construction
  }

  of(serviceId: string): RetryBudget {
    let b = this.budgets.get(serviceId);
    if (!b) {
      b = new RetryBudget(this.options);
      this.budgets.set(serviceId, b);
    }
    return b;
  }

  /** Plain numbers for the integrator's metrics: retries granted and refused per service. */
  counters(): Array<{ serviceId: string; granted: number; refused: number }> {
    return [...this.budgets].map(([serviceId, b]) => ({ serviceId, granted: b.granted, refused: b.refused }));
  }

  forget(serviceId: string): void {
    this.budgets.delete(serviceId);
  }
}
