// Every node's in-memory copy of the access plane, on the live-view block:
//   snapshot:  the decision state (one REPEATABLE READ read of every authz table)
//              plus the decrypted access-key secrets and the seq it reflects;
//   feeds:     PostgreSQL NOTIFY and Redis pub/sub carry the same events; events
//              are deduplicated by seq;
//   tightening events (revocations, disables) apply straight from their payload,
//              at once and even out of order (a node that only hears Redis still
//              revokes);
//   in order:  events are taken in seq order by one worker: each run of contiguous
//              events re-reads, by key, the rows they name (reread-plan.ts) in one
//              REPEATABLE READ transaction and patches them into the state; tightening
//              events newer than that read are replayed on top, so nothing applied is
//              lost to a slower read. A gap is filled from authz_event; only events that
//              cannot be applied by key (see reread-plan.ts) reload everything;
//   resync:    every AUTHZ_RESYNC seconds the committed seq is compared with the
//              applied one (and the clock offset to PostgreSQL is measured).
// Decisions read only memory.
import type postgres from 'postgres';
import type { Logger } from 'pino';
import { LiveView, pgNotifyFeed, type ChangeFeed } from '../live/index.ts';
import { buildDecisionState, emptyRereadKeys, rereadKeyCount, withKeyedRows, type DecisionRows, type DecisionState, type RereadKeys, type RereadRows } from './decision-state.ts';
import { DECISION_QUERIES, EVENTS_AFTER, REREAD_QUERIES, REREAD_SECRETS } from './decision-load.ts';
import { BOTH_WAYS, planReread } from './reread-plan.ts';
import { draftOf } from './layered-map.ts';
import { applyEffect } from './tightening.ts';
import { decryptSecret, type MasterKeys } from './crypto.ts';
import { NOTIFY_CHANNEL, eventPayload, type CommittedEvent } from './store.ts';

export interface AccessSnapshot {
  readonly state: DecisionState;
  /** Decrypted SigV4 secrets; undefined for a key whose secret cannot be decrypted. */
  readonly secrets: ReadonlyMap<string, string | undefined>;
  /** The highest seq whose effect this snapshot contains (contiguously). */
  readonly seq: number;
}

export interface EventPayload { seq: number; action: string; at_ms: number; effect: Record<string, unknown> }

export interface AccessViewOptions {
  sql: postgres.Sql;
  log: Logger;
  masterKeys: MasterKeys | null;
  /** Seconds between seq checks (and clock measurements). */
  resyncSeconds: number;
  /** Extra feeds (Redis) besides PostgreSQL NOTIFY. */
  feeds?: ChangeFeed[];
  /** false for the embedded database, whose socket bridge drops notifications. */
  listen?: boolean;
  /** Observes each event's delay from commit to local apply, per channel. */
  onPropagation?: (channel: string, seconds: number) => void;
  /**
   * Called with each tightening event once applied, and with each re-read event once its rows
   * are in (to close the exchanges it ends; the callee re-checks them).
   */
  onTightened?: (action: string, effect: Record<string, unknown>, state: DecisionState) => void;
}

const EMPTY: AccessSnapshot = { state: buildDecisionState({}), secrets: new Map(), seq: 0 };
/** Events remembered for replay after a reload (and for dedupe). */
const KEEP = 4096;
/** Events one keyed re-read takes in. */
const RUN = 256;
/** How long a gap may wait for the other channel before it is read from authz_event (ms). */
const GAP_WAIT_MS = 20;
/** Backoff of the worker after a failed read (ms). */
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 5000;
/** A gap longer than this reloads everything instead of reading the events. */
const GAP_MAX = 1000;

/** Re-read actions that never end a session (or ended it from their payload, unconditionally). */
const NOT_RECHECKED: ReadonlySet<string> = new Set(['key.create', 'key.status', 'key.expire', 'key.rotate', 'token.issue', 'token.revoke', 'user.create', 'user.sso.add', 'org.create', 'dept.create', 'role.create', 'project.create', 'app.create', 'auth.add', 'api.upsert']);

type SecretRow = { access_key_id: string; secret_ciphertext: Buffer; secret_nonce: Buffer; master_key_id: string };

function parsePayload(text: string | undefined): EventPayload | null {
  if (!text) return null;
  try {
    const p = JSON.parse(text) as EventPayload;
    if (!Number.isSafeInteger(p.seq) || typeof p.action !== 'string' || typeof p.effect !== 'object' || p.effect === null) return null;
    return p;
  } catch {
    return null;
  }
}

export class AccessView {
  readonly view: LiveView<AccessSnapshot>;
  /** Recent events by seq, for dedupe and replay after a reload. */
  private readonly recent = new Map<number, EventPayload>();
  private loaded = false;
  /** Local clock minus PostgreSQL's (ms): decisions use Date.now() - offset. */
  clockOffsetMs = 0;
  /** Date.now() when the state was last known current (a load or a seq check). */
  freshAt = 0;
  private timer: NodeJS.Timeout | null = null;
  /** The in-order worker (one at a time) and whether it must look again. */
  private draining: Promise<void> | null = null;
  private drainAgain = false;
  /** The highest seq known to be committed (from the database), which the worker must reach. */
  private wanted = 0;
  private waiters: Array<{ seq: number; resolve: () => void }> = [];
  private retryMs = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  /** Counts for tests and logs: keyed re-reads, full reloads, events fetched to fill gaps. */
  readonly stats = { keyed: 0, full: 0, gapEvents: 0 };

  constructor(private readonly opts: AccessViewOptions) {
    const feeds = [...(opts.listen === false ? [] : [pgNotifyFeed(opts.sql, NOTIFY_CHANNEL)]), ...(opts.feeds ?? [])];
    this.view = new LiveView<AccessSnapshot>({
      name: 'access plane',
      log: opts.log,
      initial: EMPTY,
      load: () => this.load(),
      feeds,
      apply: (current, payload, feed) => this.apply(current, parsePayload(payload), feed),
      onSwap: (next) => this.swapped(next),
    });
  }

  get current(): AccessSnapshot {
    return this.view.current;
  }

  /** False until the first load: discovery to ENFORCE services answers 503 until then. */
  get ready(): boolean {
    return this.loaded;
  }

  /** The clock decisions use: PostgreSQL's, as measured. */
  now(): number {
    return Date.now() - this.clockOffsetMs;
  }

  stalenessMs(): number {
    return this.freshAt === 0 ? Number.POSITIVE_INFINITY : Date.now() - this.freshAt;
  }

  private decrypt(rows: readonly SecretRow[], into: { set(k: string, v: string): unknown; delete(k: string): unknown }): number {
    let unusable = 0;
    for (const k of rows) {
      try {
        into.set(k.access_key_id, decryptSecret(this.opts.masterKeys, k.access_key_id, { ciphertext: k.secret_ciphertext, nonce: k.secret_nonce, kid: k.master_key_id }));
      } catch {
        into.delete(k.access_key_id); // no secret: its SigV4 requests answer key_unusable
        unusable++;
      }
    }
    if (unusable > 0) this.opts.log.error({ keys: unusable }, 'access keys whose secret does not decrypt with the configured master keys: their SigV4 requests are refused (key_unusable)');
    return unusable;
  }

  /** Tightening events received after `seq` applied again on `state` (a read may predate them). */
  private replayAfter(seq: number, state: DecisionState): DecisionState {
    for (const s of [...this.recent.keys()].filter((x) => x > seq).sort((a, b) => a - b)) {
      const p = this.recent.get(s)!;
      try {
        const r = applyEffect(state, p.action, p.effect, p.at_ms);
        if (r.outcome === 'applied') state = r.state;
      } catch {
        // a malformed payload was already reported when it arrived
      }
    }
    return state;
  }

  private async load(): Promise<AccessSnapshot> {
    const { sql } = this.opts;
    const result = await sql.begin('isolation level repeatable read read only', async (tx) => {
      const [{ seq }] = await tx<{ seq: string }[]>`SELECT seq FROM authz_state`;
      const rows: Partial<DecisionRows> = {};
      for (const [name, text] of Object.entries(DECISION_QUERIES) as Array<[keyof DecisionRows, string]>) {
        (rows as Record<string, unknown>)[name] = await tx.unsafe(text);
      }
      const secrets = await tx<SecretRow[]>`
        SELECT access_key_id, secret_ciphertext, secret_nonce, master_key_id FROM authz_access_key`;
      return { seq: Number(seq), rows, secrets };
    });
    const secrets = new Map<string, string | undefined>();
    this.decrypt(result.secrets, secrets);
    // Replay what arrived while the read ran (tightening only; anything else is in the read,
    // or is taken in by the worker, which resumes after the reload's seq).
    const snap: AccessSnapshot = { state: this.replayAfter(result.seq, buildDecisionState(result.rows)), secrets, seq: result.seq };
    for (const seq of this.recent.keys()) if (seq <= snap.seq) this.recent.delete(seq);
    this.wanted = Math.max(this.wanted, snap.seq);
    this.loaded = true;
    this.freshAt = Date.now();
    this.stats.full++;
    return snap;
  }

  private apply(current: AccessSnapshot, p: EventPayload | null, channel: string): AccessSnapshot | undefined {
    if (p === null) return undefined; // unreadable signal: reload
    if (p.seq <= current.seq || this.recent.has(p.seq)) return current; // already applied (the other channel)
    this.recent.set(p.seq, p);
    if (this.recent.size > KEEP) this.recent.delete(this.recent.keys().next().value!);
    if (channel !== 'catch-up') this.opts.onPropagation?.(channel, Math.max(0, (this.now() - p.at_ms) / 1000));
    if (BOTH_WAYS.has(p.action) && this.newerThan(p.seq)) {
      // An older value must not overwrite a newer one: the worker re-reads the row.
      this.kick();
      return current;
    }
    const r = applyEffect(current.state, p.action, p.effect, p.at_ms);
    const state = r.outcome === 'applied' ? r.state : current.state;
    if (r.outcome === 'applied' && this.opts.onTightened) {
      try {
        this.opts.onTightened(p.action, p.effect, state);
      } catch (err) {
        this.opts.log.warn({ err, action: p.action }, 'closing the sessions an access change ended failed');
      }
    }
    if (r.outcome === 'applied' && p.seq === current.seq + 1 && planReread(p.action, p.effect, emptyRereadKeys()) === 'none') {
      // Complete from the payload and next in order. Kept in `recent` until a reload covers
      // it: a reload already in flight may have read before this commit and must replay it.
      this.freshAt = Date.now();
      return { ...current, state, seq: p.seq };
    }
    // A loosening change, a partial payload or a gap: the tightening part (if any) is in
    // force now; the worker takes the event in, in seq order.
    this.kick();
    return state === current.state ? current : { ...current, state };
  }

  private swapped(next: AccessSnapshot): void {
    if (this.waiters.length) {
      const ready = this.waiters.filter((w) => w.seq <= next.seq);
      if (ready.length) {
        this.waiters = this.waiters.filter((w) => w.seq > next.seq);
        for (const w of ready) w.resolve();
      }
    }
    // After a reload, events newer than it may wait in `recent`.
    if (this.pendingAfter(next.seq)) this.kick();
  }

  private newerThan(seq: number): boolean {
    for (const s of this.recent.keys()) if (s > seq) return true;
    return false;
  }

  private pendingAfter(seq: number): boolean {
    if (this.wanted > seq) return true;
    for (const s of this.recent.keys()) if (s > seq) return true;
    return false;
  }

  /** Starts the in-order worker, or asks the running one to look again. */
  private kick(): void {
    if (this.stopped) return;
    if (this.draining) {
      this.drainAgain = true;
      return;
    }
    this.draining = this.drain()
      .then(() => {
        this.retryMs = 0;
      }, (err) => {
        // The database is unreachable or refused the read: try again with a backoff (and on
        // the next change); tightening events keep applying from their payload meanwhile.
        this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs ? this.retryMs * 2 : RETRY_MIN_MS);
        if (this.retryMs === RETRY_MIN_MS) this.opts.log.warn({ err }, 'access plane: applying changes by key failed; retrying');
        if (!this.retryTimer && !this.stopped) {
          this.retryTimer = setTimeout(() => {
            this.retryTimer = null;
            this.kick();
          }, this.retryMs);
          this.retryTimer.unref();
        }
      })
      .finally(() => {
        this.draining = null;
        if (this.drainAgain) {
          this.drainAgain = false;
          this.kick();
        }
      });
  }

  private async drain(): Promise<void> {
    let waited = false;
    for (let rounds = 0; rounds < 10_000; rounds++) {
      this.drainAgain = false;
      const cur = this.current;
      const run: EventPayload[] = [];
      for (let seq = cur.seq + 1; run.length < RUN; seq++) {
        const e = this.recent.get(seq);
        if (!e) break;
        run.push(e);
      }
      if (run.length === 0) {
        if (!this.pendingAfter(cur.seq)) return;
        // A gap: the missing events are usually a few milliseconds behind on the other channel.
        if (!waited) {
          waited = true;
          await new Promise((r) => setTimeout(r, GAP_WAIT_MS));
          continue;
        }
        // Nothing found: stop here; the next change or resync looks again.
        if (!(await this.fillGap(cur.seq))) return;
        waited = false;
        continue;
      }
      const keys = emptyRereadKeys();
      let full = false;
      for (const e of run) {
        if (planReread(e.action, e.effect, keys) === 'full') {
          full = true;
          break;
        }
      }
      if (full) {
        await this.view.refresh();
        continue;
      }
      const end = run[run.length - 1].seq;
      if (rereadKeyCount(keys) === 0) {
        this.view.replace({ ...this.current, seq: Math.max(this.current.seq, end) });
        this.freshAt = Date.now();
        continue;
      }
      const read = await this.reread(keys);
      const now = this.current;
      if (now.seq !== cur.seq) continue; // a reload moved on meanwhile: plan again from there
      let state = withKeyedRows(now.state, keys, read.rows);
      state = this.replayAfter(read.seq, state);
      let secrets = now.secrets;
      if (keys.accessKeys.size) {
        const draft = draftOf(now.secrets);
        for (const k of keys.accessKeys) draft.delete(k);
        this.decrypt(read.secrets, draft);
        secrets = draft;
      }
      this.stats.keyed++;
      this.freshAt = Date.now();
      this.view.replace({ state, secrets, seq: end });
      // A re-read can take access away too (a child role or a department moved, a project
      // shortened): open sessions touched by these events are re-checked against the new state.
      if (this.opts.onTightened) {
        for (const e of run) {
          if (NOT_RECHECKED.has(e.action)) continue;
          try {
            this.opts.onTightened(e.action, e.effect, state);
          } catch (err) {
            this.opts.log.warn({ err, action: e.action }, 'closing the sessions an access change ended failed');
          }
        }
      }
    }
  }

  /** One REPEATABLE READ transaction: the rows of every key, the secrets of the keys named, and the seq they reflect. */
  private async reread(keys: RereadKeys): Promise<{ seq: number; rows: RereadRows; secrets: SecretRow[] }> {
    return this.opts.sql.begin('isolation level repeatable read read only', async (tx) => {
      const jobs: Array<Promise<unknown>> = [tx<{ seq: string }[]>`SELECT seq FROM authz_state`];
      const rows: Record<string, unknown[]> = {};
      const names: string[] = [];
      for (const [kind, queries] of Object.entries(REREAD_QUERIES) as Array<[keyof RereadKeys, Record<string, string>]>) {
        const ids = [...keys[kind]];
        if (!ids.length) continue;
        for (const [name, text] of Object.entries(queries)) {
          names.push(name);
          jobs.push(tx.unsafe(text, [ids]));
        }
      }
      const secretIds = [...keys.accessKeys];
      if (secretIds.length) jobs.push(tx.unsafe(REREAD_SECRETS, [secretIds]));
      // Sent together: postgres.js pipelines them on the transaction's connection.
      const out = await Promise.all(jobs);
      names.forEach((name, i) => {
        (rows[name] ??= []).push(...(out[i + 1] as unknown[]));
      });
      const [{ seq }] = out[0] as Array<{ seq: string }>;
      return { seq: Number(seq), rows: rows as RereadRows, secrets: secretIds.length ? (out[out.length - 1] as SecretRow[]) : [] };
    });
  }

  /** Reads the events after `seq` that no channel delivered, and feeds them in; a long gap reloads. False: nothing to read. */
  private async fillGap(seq: number): Promise<boolean> {
    let upTo = this.wanted;
    for (const s of this.recent.keys()) if (s > upTo) upTo = s;
    const rows = await this.opts.sql.unsafe<Array<{ seq: string; action: string; at_ms: number; effect: Record<string, unknown> }>>(EVENTS_AFTER, [seq, upTo, GAP_MAX + 1]);
    if (rows.length === 0) {
      // The database has no such events: what arrived beyond `seq` is not this cluster's (or
      // not yet visible). Forgotten once a second old, so it cannot keep the worker busy.
      let dropped = 0;
      for (const [s, p] of this.recent) {
        if (s > seq && this.now() - p.at_ms > 1000) {
          this.recent.delete(s);
          dropped++;
        }
      }
      if (dropped) this.opts.log.warn({ after: seq, dropped }, 'access plane: events received that the database does not hold were dropped');
      if (this.wanted > seq) this.wanted = seq;
      return false;
    }
    if (rows.length > GAP_MAX || Number(rows[0].seq) !== seq + 1) {
      // Too much to read, or events already deleted by retention: start over from a full read.
      await this.view.refresh();
      return true;
    }
    this.stats.gapEvents += rows.length;
    for (const r of rows) this.view.push(JSON.stringify({ seq: Number(r.seq), action: r.action, at_ms: Number(r.at_ms), effect: r.effect }), 'catch-up');
    return true;
  }

  /** Resolves once the view has taken in every event up to `seq` (falling back to reloads). */
  async settle(seq: number, timeoutMs = 2000): Promise<void> {
    if (this.current.seq >= seq) return;
    this.wanted = Math.max(this.wanted, seq);
    const reached = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      timer.unref();
      this.waiters.push({ seq, resolve: () => { clearTimeout(timer); resolve(true); } });
    });
    this.kick();
    if (await reached) return;
    for (let i = 0; i < 3 && this.current.seq < seq; i++) await this.view.refresh().catch(() => undefined);
  }

  /**
   * The writer's own commits, without waiting for a channel: tightening ones at
   * once; the promise settles when the view has taken them all in, so the
   * writer reads its own writes.
   */
  applyLocal(events: readonly CommittedEvent[]): Promise<void> {
    for (const e of events) this.view.push(JSON.stringify(eventPayload(e)), 'local');
    const last = events.length ? events[events.length - 1].seq : 0;
    return this.settle(last);
  }

  private async check(): Promise<void> {
    const { sql } = this.opts;
    const t0 = Date.now();
    const [row] = await sql<{ seq: string; now_ms: string }[]>`SELECT seq, (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms FROM authz_state`;
    const t1 = Date.now();
    this.clockOffsetMs = Math.round((t0 + t1) / 2 - Number(row.now_ms));
    if (Math.abs(this.clockOffsetMs) > 1000) this.opts.log.warn({ offsetMs: this.clockOffsetMs }, 'this node\'s clock differs from PostgreSQL\'s by more than 1 s; access decisions use PostgreSQL\'s');
    if (Number(row.seq) > this.current.seq) await this.settle(Number(row.seq));
    else if (Number(row.seq) < this.current.seq) {
      this.opts.log.warn({ committed: row.seq, applied: this.current.seq }, 'authz seq went backwards (restored database?): rebuilding');
      this.recent.clear();
      this.wanted = 0;
      await this.view.refresh();
    }
    this.freshAt = Date.now();
  }

  async start(): Promise<void> {
    await this.view.startLenient();
    await this.check().catch(() => {});
    this.timer = setInterval(() => void this.check().catch(() => {}), this.opts.resyncSeconds * 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.view.stop();
  }
}
