// Long-lived exchanges (a streaming response, a slow upload) that were allowed
// by an authorization which has since ended. Each allowed exchange is indexed
// under the keys of what allowed it (`ak:`, `token:`, `user:`, `app:`,
// `grant:`, `service:`); a tightening event touching one of those keys, or the
// session's own deadline, closes it. Credential revocations (key, token) close
// unconditionally; anything else re-runs the session's check against the new
// state, so removing an unrelated membership leaves the stream alone.
//
// When an exchange ends and its keep-alive connection stays open, the
// connection stays indexed under the same keys and deadline until its next
// request or its close (`idle`): ending it then closes the connection.
//
// Deadlines sit in a timer wheel of 100 ms buckets with one setTimeout for the
// earliest bucket: thousands of streams cost one timer, and a cut lands at most
// 100 ms after its deadline.
import type { DecisionState } from './decision-state.ts';

export const BUCKET_MS = 100;
/** The key that stands for every session. */
export const ALL = '*';

export interface SessionSpec {
  keys: readonly string[];
  /** Epoch ms (the decision clock) when the authorization ends by itself; null: no end. */
  deadline: number | null;
  /** True while the exchange would still be allowed in `state`. */
  recheck: (state: DecisionState) => boolean;
  /** Ends the exchange (abort the upstream request, destroy the client connection). */
  close: (reason: string) => void;
}

/** What register() returns: the exchange's handle on its registration. */
export interface SessionHandle {
  readonly closed: boolean;
  /** The exchange ended and nothing stays: unregister. */
  end(): void;
  /**
   * The exchange ended and its connection stays open: keep the registration
   * (keys, deadline, re-check) for the connection, which `conn.close()` closes.
   * `release()` unregisters it (the next request on the connection, or its close).
   */
  idle(conn: { close(): void }): void;
  release(): void;
}

class Session implements SessionHandle {
  bucket: number | null = null;
  closed = false;
  readonly keys: readonly string[];
  readonly deadline: number | null;
  readonly recheck: (state: DecisionState) => boolean;
  /** The exchange's close; dropped once the exchange ended, so an idle connection does not hold it. */
  private closeExchange: ((reason: string) => void) | null;
  private conn: { close(): void } | null = null;

  constructor(private readonly index: SessionIndex, spec: SessionSpec) {
    this.keys = spec.keys;
    this.deadline = spec.deadline;
    this.recheck = spec.recheck;
    this.closeExchange = spec.close;
  }

  end(): void {
    this.index.remove(this);
  }

  release(): void {
    this.index.remove(this);
  }

  idle(conn: { close(): void }): void {
    this.conn = conn;
    this.closeExchange = null;
  }

  /** Ends what the session stands for: the exchange, or the idle connection. */
  cut(reason: string): void {
    if (this.conn !== null) this.conn.close();
    else this.closeExchange?.(reason);
  }
}

/** The keys a tightening event touches, from its effect (see tightening.ts for the payloads). */
export function keysOfEffect(action: string, effect: Record<string, unknown>): { keys: string[]; unconditional: boolean } {
  const s = (v: unknown) => (v === undefined || v === null ? null : String(v));
  const out: string[] = [];
  const push = (prefix: string, v: unknown) => {
    const x = s(v);
    if (x !== null) out.push(prefix + x);
  };
  switch (action) {
    case 'key.status':
    case 'key.expire':
    case 'key.delete':
      push('ak:', effect.ak);
      return { keys: out, unconditional: true };
    case 'token.revoke':
      if (Array.isArray(effect.token_ids)) for (const t of effect.token_ids) push('token:', t);
      return { keys: out, unconditional: true };
    case 'user.update':
    case 'user.delete':
    case 'org.user.remove':
    case 'role.subject.remove':
    case 'dept.user.remove':
      push('user:', effect.user_id);
      break;
    case 'auth.delete':
    case 'auth.replace':
    case 'service.auth.mode':
      push('service:', effect.service_id);
      break;
    case 'api.update':
      push('api:', effect.api_id);
      break;
    // Changes whose reach is not one key (every member of a role or department, every app of a
    // project, a whole service's settings): re-check every open session.
    case 'role.update':
    case 'dept.update':
    case 'dept.delete':
    case 'project.update':
    case 'project.delete':
    case 'service.apis.auth':
    case 'service.auth.settings':
    case 'api.deprecate':
      out.push(ALL);
      break;
    default:
      if (action.startsWith('grant.')) push('grant:', effect.grant_id);
      else if (action.startsWith('app.')) push('app:', effect.app_id);
  }
  return { keys: out, unconditional: false };
}

export class SessionIndex {
  private readonly byKey = new Map<string, Set<Session>>();
  private live = 0;
  private readonly buckets = new Map<number, Set<Session>>();
  private timer: NodeJS.Timeout | null = null;
  private timerBucket = Infinity;

  /** `now` is the decision clock (PostgreSQL-corrected). */
  constructor(private readonly now: () => number = Date.now) {}

  get size(): number {
    let n = 0;
    for (const set of this.byKey.values()) n += set.size;
    return n;
  }

  /** Sessions registered (exchanges in flight and idle connections). */
  get count(): number {
    return this.live;
  }

  /** Registers an allowed exchange; end() (or idle()) it when the exchange ends normally. */
  register(spec: SessionSpec): SessionHandle {
    const s = new Session(this, spec);
    this.live++;
    for (const k of s.keys) {
      let set = this.byKey.get(k);
      if (!set) this.byKey.set(k, (set = new Set()));
      set.add(s);
    }
    if (spec.deadline !== null && Number.isFinite(spec.deadline)) {
      const b = Math.ceil(spec.deadline / BUCKET_MS);
      s.bucket = b;
      let set = this.buckets.get(b);
      if (!set) this.buckets.set(b, (set = new Set()));
      set.add(s);
      this.schedule();
    }
    return s;
  }

  /** A tightening event was applied and `state` is the result: close what it ends. Returns how many were closed. */
  onEffect(action: string, effect: Record<string, unknown>, state: DecisionState): number {
    const { keys, unconditional } = keysOfEffect(action, effect);
    let closed = 0;
    const seen = new Set<Session>();
    for (const k of keys) {
      const set = k === ALL ? new Set([...this.byKey.values()].flatMap((x) => [...x])) : this.byKey.get(k);
      if (!set) continue;
      for (const s of [...set]) {
        if (seen.has(s)) continue;
        seen.add(s);
        let keep = !unconditional;
        if (keep) {
          try {
            keep = s.recheck(state);
          } catch {
            keep = false; // a check that cannot run is no authorization
          }
        }
        if (!keep) {
          this.end(s, `authorization ended: ${action}`);
          closed++;
        }
      }
    }
    return closed;
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.timerBucket = Infinity;
  }

  private end(s: Session, reason: string): void {
    this.remove(s);
    try {
      s.cut(reason);
    } catch {
      // the exchange is already gone
    }
  }

  /** @internal through SessionHandle.end/release */
  remove(s: Session): void {
    if (s.closed) return;
    s.closed = true;
    this.live--;
    for (const k of s.keys) {
      const set = this.byKey.get(k);
      if (!set) continue;
      set.delete(s);
      if (set.size === 0) this.byKey.delete(k);
    }
    if (s.bucket !== null) {
      const set = this.buckets.get(s.bucket);
      set?.delete(s);
      if (set && set.size === 0) this.buckets.delete(s.bucket);
    }
  }

  private schedule(): void {
    let earliest = Infinity;
    for (const b of this.buckets.keys()) if (b < earliest) earliest = b;
    if (earliest === this.timerBucket) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.timerBucket = earliest;
    if (earliest === Infinity) return;
    const delay = Math.max(0, earliest * BUCKET_MS - this.now());
    this.timer = setTimeout(() => this.fire(), delay);
    this.timer.unref();
  }

  private fire(): void {
    this.timer = null;
    this.timerBucket = Infinity;
    const now = this.now();
    for (const [b, set] of [...this.buckets]) {
      if (b * BUCKET_MS > now) continue;
      for (const s of [...set]) if (s.deadline !== null && s.deadline <= now) this.end(s, 'authorization ended: deadline');
    }
    this.schedule();
  }
}
