// Active health: periodic probes of every registered instance, run by the
// cluster's leader only and shared with every node through InstanceHealth.
//
// Rules:
// - A probe is an HTTP GET with a timeout to the instance's OperationsAPI URL
//   (`ops_api`), or to `path` joined onto its `base_url` when one is configured.
//   Any answer below 500 means alive (the ops API may well answer 401 or 404 to
//   an anonymous GET: the process is up); a 5xx, a timeout or a transport error
//   is a failed probe.
// - Each instance is probed every `intervalMs`, jittered by ±`jitter` (default
//   20%) and started at a random point of the first interval, so probes of many
//   instances spread out instead of arriving in bursts.
// - `unhealthyThreshold` failed probes in a row (default 3) take an instance out
//   of rotation; `healthyThreshold` passed probes in a row (default 2) readmit
//   it. A down report is renewed at every probe and holds for `downLeaseMs`
//   (default 3 intervals plus a probe timeout), so when the prober dies its
//   verdicts lapse instead of lingering.
// - Only the leader probes. A new leader resumes from the shared down states
//   (their counters are part of them), so a failover neither forgets nor
//   re-counts a known-down instance.
import { Agent, request, type Dispatcher } from 'undici';
import { invalid } from '../core/errors.ts';
import type { InstanceHealth } from './health.ts';
import type { LeaderLock } from './leader.ts';
import type { ProbeState } from './sync.ts';

export interface ProbeTarget {
  readonly id: string;
  readonly serviceId: string;
  readonly baseUrl: string;
  readonly opsApi: string;
}

export interface ActiveCheckOptions {
  health: InstanceHealth;
  leader: LeaderLock;
  /** The instances to probe, read at every reconciliation (e.g. the registry snapshot's). */
  targets: () => Iterable<ProbeTarget>;
  intervalMs?: number;
  jitter?: number;
  timeoutMs?: number;
  /** Probe `base_url` + path instead of `ops_api`. Must start with '/'. */
  path?: string;
  unhealthyThreshold?: number;
  healthyThreshold?: number;
  /** How long a down verdict holds without a fresh probe (default 3 intervals + the probe timeout). */
  downLeaseMs?: number;
  dispatcher?: Dispatcher;
  random?: () => number;
}

const TIMEOUTS = new Set(['TimeoutError', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT']);

/** A short reason for a failed probe: the error's string code (DOMException's `code` is a number, so its name is used). */
export function probeFailure(err: unknown, timeoutMs: number): string {
  const e = err as { code?: unknown; name?: unknown; cause?: { code?: unknown } };
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  const code = str(e?.code) ?? str(e?.cause?.code) ?? str(e?.name) ?? 'error';
  return TIMEOUTS.has(code) ? `probe timed out after ${timeoutMs} ms` : `probe failed: ${code}`;
}

interface Counter { fails: number; passes: number; up: boolean; since: number; reason: string }

export class ActiveHealthChecker {
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly unhealthyThreshold: number;
  readonly healthyThreshold: number;
  readonly downLeaseMs: number;
  private readonly jitter: number;
  private readonly path: string | null;
  private readonly random: () => number;
  private readonly dispatcher: Dispatcher;
  private readonly ownDispatcher: boolean;
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly counters = new Map<string, Counter>();
  private readonly targets = new Map<string, ProbeTarget>();
  private reconcileTimer: NodeJS.Timeout | null = null;
  private running = false;
  /** Plain counters for the integrator's metrics. */
  probesTotal = 0;
  probeFailuresTotal = 0;

  constructor(private readonly opts: ActiveCheckOptions) {
    this.intervalMs = opts.intervalMs ?? 10_000;
    this.jitter = opts.jitter ?? 0.2;
    this.timeoutMs = opts.timeoutMs ?? 2_000;
    this.unhealthyThreshold = opts.unhealthyThreshold ?? 3;
    this.healthyThreshold = opts.healthyThreshold ?? 2;
    this.path = opts.path ?? null;
    this.downLeaseMs = opts.downLeaseMs ?? 3 * this.intervalMs + this.timeoutMs;
    this.random = opts.random ?? Math.random;
    const int = (name: string, v: number, min: number) => {
      if (!(Number.isSafeInteger(v) && v >= min)) throw invalid(`active health ${name} must be an integer ≥ ${min}, got ${v}`, { field: name });
    };
    int('intervalMs', this.intervalMs, 10);
    int('timeoutMs', this.timeoutMs, 1);
    int('unhealthyThreshold', this.unhealthyThreshold, 1);
    int('healthyThreshold', this.healthyThreshold, 1);
    int('downLeaseMs', this.downLeaseMs, this.intervalMs);
    if (!(this.jitter >= 0 && this.jitter < 1)) throw invalid(`active health jitter must be within [0, 1), got ${this.jitter}`, { field: 'jitter' });
    if (this.path !== null && (!this.path.startsWith('/') || this.path.startsWith('//') || /[\s#]/.test(this.path))) {
      throw invalid(`active health path must be an absolute path such as /health, got ${JSON.stringify(this.path)}`, { field: 'path' });
    }
    this.ownDispatcher = !opts.dispatcher;
    // Probes get their own small pool so they never wait behind proxied traffic.
    this.dispatcher = opts.dispatcher ?? new Agent({ connections: 4, keepAliveTimeout: 1_000, connect: { timeout: this.timeoutMs } });
    opts.leader.onChange((leader) => {
      if (!this.running) return;
      if (leader) this.reconcile();
      else this.clearTimers();
    });
  }

  async start(): Promise<void> {
    this.running = true;
    this.reconcileTimer = setInterval(() => this.reconcile(), this.intervalMs);
    this.reconcileTimer.unref();
    await this.opts.leader.start();
    this.reconcile();
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.reconcileTimer) clearInterval(this.reconcileTimer);
    this.reconcileTimer = null;
    this.clearTimers();
    await this.opts.leader.stop();
    if (this.ownDispatcher) await this.dispatcher.close().catch(() => {});
  }

  get isLeader(): boolean {
    return this.opts.leader.isLeader;
  }

  /** The URL a probe of this instance requests. */
  probeUrl(t: ProbeTarget): string {
    if (this.path === null) return t.opsApi;
    return t.baseUrl.replace(/\/+$/, '') + this.path;
  }

  /** One probe: true when the instance answered below 500 within the timeout. */
  async probe(t: ProbeTarget): Promise<{ ok: boolean; reason: string }> {
    this.probesTotal++;
    try {
      const res = await request(this.probeUrl(t), {
        method: 'GET',
        dispatcher: this.dispatcher,
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
        signal: AbortSignal.timeout(this.timeoutMs),
        headers: { 'user-agent': 'utilmeta-proxy-health' },
      });
      await res.body.dump().catch(() => {});
      if (res.statusCode < 500) return { ok: true, reason: `answered ${res.statusCode}` };
      this.probeFailuresTotal++;
      return { ok: false, reason: `probe answered ${res.statusCode}` };
    } catch (err) {
      this.probeFailuresTotal++;
      return { ok: false, reason: probeFailure(err, this.timeoutMs) };
    }
  }

  /** Probes one instance and applies the thresholds; returns the state shared. */
  async check(t: ProbeTarget): Promise<ProbeState> {
    const r = await this.probe(t);
    const now = Date.now();
    let c = this.counters.get(t.id);
    if (!c) {
      // Resume from the cluster's view (a previous leader's down verdict).
      const shared = this.opts.health.probeState(t.id);
      c = shared && !shared.up
        ? { fails: shared.fails, passes: shared.passes, up: false, since: shared.since, reason: shared.reason }
        : { fails: 0, passes: 0, up: true, since: now, reason: '' };
      this.counters.set(t.id, c);
    }
    if (r.ok) {
      c.passes++;
      c.fails = 0;
      if (!c.up && c.passes >= this.healthyThreshold) {
        c.up = true;
        c.since = now;
        c.reason = '';
      }
    } else {
      c.fails++;
      c.passes = 0;
      if (c.up && c.fails >= this.unhealthyThreshold) {
        c.up = false;
        c.since = now;
      }
      c.reason = `${c.fails} failed probes in a row (last: ${r.reason})`;
    }
    const state: ProbeState = {
      instanceId: t.id, serviceId: t.serviceId, up: c.up, since: c.since,
      validUntil: now + this.downLeaseMs, reason: c.up ? '' : c.reason, fails: c.fails, passes: c.passes,
    };
    await this.opts.health.probed(state);
    return state;
  }

  /** Aligns the probe timers with the current targets and leadership. */
  reconcile(): void {
    if (!this.running) return;
    if (!this.opts.leader.isLeader) {
      this.clearTimers();
      return;
    }
    const seen = new Set<string>();
    for (const t of this.opts.targets()) {
      seen.add(t.id);
      this.targets.set(t.id, t);
      if (!this.timers.has(t.id)) this.schedule(t.id, this.random() * this.intervalMs);
    }
    for (const id of [...this.targets.keys()]) {
      if (seen.has(id)) continue;
      this.targets.delete(id);
      this.counters.delete(id);
      const timer = this.timers.get(id);
      if (timer) clearTimeout(timer);
      this.timers.delete(id);
    }
  }

  private schedule(id: string, delay: number): void {
    const timer = setTimeout(async () => {
      const t = this.targets.get(id);
      if (!t || !this.running || !this.opts.leader.isLeader) {
        this.timers.delete(id);
        return;
      }
      try {
        await this.check(t);
      } catch {
        // check() never throws by design; a bug must not stop the probe loop.
      }
      if (this.timers.get(id) === timer && this.running && this.opts.leader.isLeader) {
        this.schedule(id, this.intervalMs * (1 + this.jitter * (2 * this.random() - 1)));
      }
    }, delay);
    timer.unref();
    this.timers.set(id, timer);
  }

  private clearTimers(): void {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    // Counters restart from the shared state when leadership returns.
    this.counters.clear();
  }
}
