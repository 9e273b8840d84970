// A live view: an immutable snapshot of some PostgreSQL tables that every node
// keeps in memory for its hot path, and the machinery that keeps it fresh —
//   snapshot:   a full load, swapped in atomically (indexes are built by the
//               snapshot itself when it is constructed, never per request);
//   change feed: signals from one or more channels (PostgreSQL NOTIFY, Redis),
//               each either applied incrementally or answered with a reload;
//   catch-up:   a reload whenever a feed (re)connects, so nothing notified while
//               it was down is missed;
//   resync:     a periodic reload as the safety net (and the only mechanism for
//               tables whose writers cannot notify).
// While the database is down the last good snapshot keeps serving.
import type { Logger } from 'pino';

/** A source of change signals. start() resolves with its stop function. */
export interface ChangeFeed {
  readonly name: string;
  start(onSignal: (payload: string | undefined) => void, onReconnect: () => void): Promise<() => Promise<void>>;
}

export interface LiveViewOptions<S> {
  /** For logs. */
  name: string;
  log: Logger;
  /** Reads the whole snapshot. */
  load: () => Promise<S>;
  /** The snapshot before the first load. */
  initial: S;
  feeds?: ChangeFeed[];
  /** Milliseconds between full reloads; 0 = none. */
  resyncMs?: number;
  /**
   * Applies one signal's payload to the current snapshot without a reload.
   * Returns the new snapshot, or undefined to ask for a full reload. Without it
   * every signal reloads.
   */
  apply?: (current: S, payload: string | undefined, feed: string) => S | undefined;
  /** Called after every swap (metrics, dependent caches). */
  onSwap?: (next: S, previous: S) => void;
}

export class LiveView<S> {
  private value: S;
  private inflight: Promise<S> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  private stops: Array<() => Promise<void>> = [];
  private failing = false;
  /** Bumped on every successful load or apply. */
  generation = 0;
  lastError: Error | null = null;
  /** Date.now() of the last successful full load (0: never). */
  loadedAt = 0;

  constructor(private readonly opts: LiveViewOptions<S>) {
    this.value = opts.initial;
  }

  get current(): S {
    return this.value;
  }

  private swap(next: S): void {
    const prev = this.value;
    this.value = next;
    this.generation++;
    this.opts.onSwap?.(next, prev);
  }

  /** Reloads now. Concurrent callers share one load; a call during a load schedules one more. */
  refresh(): Promise<S> {
    if (this.inflight) {
      this.again = true;
      return this.inflight;
    }
    this.inflight = this.load().finally(() => {
      this.inflight = null;
      if (this.again) {
        this.again = false;
        void this.refresh().catch(() => {});
      }
    });
    return this.inflight;
  }

  private async load(): Promise<S> {
    try {
      const next = await this.opts.load();
      this.swap(next);
      this.loadedAt = Date.now();
      if (this.failing) this.opts.log.info(`${this.opts.name} reload recovered`);
      this.failing = false;
      this.lastError = null;
      return next;
    } catch (err) {
      this.lastError = err as Error;
      if (!this.failing) this.opts.log.warn({ err }, `${this.opts.name} reload failed; serving the last known snapshot`);
      this.failing = true;
      throw err;
    }
  }

  /** Swaps in a snapshot the source derived itself (an asynchronous incremental apply). */
  replace(next: S): void {
    if (next !== this.value) this.swap(next);
  }

  /**
   * One change signal, as a feed delivers it (also for a writer's own changes).
   * An incremental apply runs even while a reload is in flight: the source must
   * make its reload keep what was applied meanwhile.
   */
  push(payload: string | undefined, feed: string): void {
    const apply = this.opts.apply;
    if (apply) {
      let next: S | undefined;
      try {
        next = apply(this.value, payload, feed);
      } catch (err) {
        this.opts.log.warn({ err, feed }, `${this.opts.name}: a change could not be applied; reloading`);
      }
      if (next !== undefined) {
        if (next !== this.value) this.swap(next);
        return;
      }
    }
    void this.refresh().catch(() => {});
  }

  /** The first load (rejects if it fails), then the feeds and the resync timer. */
  async start(): Promise<void> {
    await this.refresh();
    await this.listen();
  }

  /** Like start(), but serves the initial snapshot when the first load fails (it is retried by the resync). */
  async startLenient(): Promise<void> {
    await this.refresh().catch(() => {});
    await this.listen();
  }

  private async listen(): Promise<void> {
    for (const feed of this.opts.feeds ?? []) {
      try {
        this.stops.push(await feed.start((p) => this.push(p, feed.name), () => void this.refresh().catch(() => {})));
      } catch (err) {
        this.opts.log.warn({ err, feed: feed.name }, `${this.opts.name}: change feed unavailable; relying on periodic reloads`);
      }
    }
    const every = this.opts.resyncMs ?? 0;
    if (every > 0) {
      this.timer = setInterval(() => void this.refresh().catch(() => {}), every);
      this.timer.unref();
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const stops = this.stops;
    this.stops = [];
    for (const s of stops) await s().catch(() => {});
    await this.inflight?.catch(() => {});
  }
}

