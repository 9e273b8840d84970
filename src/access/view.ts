// Every node's in-memory copy of the access plane, on the live-view block:
//   snapshot:  the decision state (one REPEATABLE READ read of every authz table)
//              plus the decrypted access-key secrets and the seq it reflects;
//   feeds:     PostgreSQL NOTIFY and Redis pub/sub carry the same events; events
//              are deduplicated by seq;
//   tightening events (revocations, disables) apply straight from their payload,
//              at once and even out of order (a node that only hears Redis still
//              revokes); anything else — a loosening, a gap, a reload request —
//              triggers a reload, after which events newer than the reload are
//              replayed, so nothing applied is lost to a slower read;
//   resync:    every AUTHZ_RESYNC seconds the committed seq is compared with the
//              applied one (and the clock offset to PostgreSQL is measured).
// Decisions read only memory.
import type postgres from 'postgres';
import type { Logger } from 'pino';
import { LiveView, pgNotifyFeed, type ChangeFeed } from '../live/index.ts';
import { buildDecisionState, type DecisionRows, type DecisionState } from './decision-state.ts';
import { DECISION_QUERIES } from './decision-load.ts';
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
  /** Called with each tightening event once applied (to close the exchanges it ends). */
  onTightened?: (action: string, effect: Record<string, unknown>, state: DecisionState) => void;
}

const EMPTY: AccessSnapshot = { state: buildDecisionState({}), secrets: new Map(), seq: 0 };
/** Events remembered for replay after a reload (and for dedupe). */
const KEEP = 4096;

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

  constructor(private readonly opts: AccessViewOptions) {
    const feeds = [...(opts.listen === false ? [] : [pgNotifyFeed(opts.sql, NOTIFY_CHANNEL)]), ...(opts.feeds ?? [])];
    this.view = new LiveView<AccessSnapshot>({
      name: 'access plane',
      log: opts.log,
      initial: EMPTY,
      load: () => this.load(),
      feeds,
      apply: (current, payload, feed) => this.apply(current, parsePayload(payload), feed),
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

  private async load(): Promise<AccessSnapshot> {
    const { sql, masterKeys, log } = this.opts;
    const result = await sql.begin('isolation level repeatable read read only', async (tx) => {
      const [{ seq }] = await tx<{ seq: string }[]>`SELECT seq FROM authz_state`;
      const rows: Partial<DecisionRows> = {};
      for (const [name, text] of Object.entries(DECISION_QUERIES) as Array<[keyof DecisionRows, string]>) {
        (rows as Record<string, unknown>)[name] = await tx.unsafe(text);
      }
      const secrets = await tx<{ access_key_id: string; secret_ciphertext: Buffer; secret_nonce: Buffer; master_key_id: string }[]>`
        SELECT access_key_id, secret_ciphertext, secret_nonce, master_key_id FROM authz_access_key`;
      return { seq: Number(seq), rows, secrets };
    });
    const secrets = new Map<string, string | undefined>();
    let unusable = 0;
    for (const k of result.secrets) {
      try {
        secrets.set(k.access_key_id, decryptSecret(masterKeys, k.access_key_id, { ciphertext: k.secret_ciphertext, nonce: k.secret_nonce, kid: k.master_key_id }));
      } catch {
        secrets.set(k.access_key_id, undefined);
        unusable++;
      }
    }
    if (unusable > 0) log.error({ keys: unusable }, 'access keys whose secret does not decrypt with the configured master keys: their SigV4 requests are refused (key_unusable)');
    let snap: AccessSnapshot = { state: buildDecisionState(result.rows), secrets, seq: result.seq };
    // Replay what arrived while the read ran (tightening only; anything else is in the read).
    for (const seq of [...this.recent.keys()].sort((a, b) => a - b)) {
      if (seq <= snap.seq) continue;
      const p = this.recent.get(seq)!;
      const r = applyEffect(snap.state, p.action, p.effect, p.at_ms);
      if (r.outcome === 'applied') snap = { ...snap, state: r.state };
    }
    for (const seq of this.recent.keys()) if (seq <= snap.seq) this.recent.delete(seq);
    this.loaded = true;
    this.freshAt = Date.now();
    return snap;
  }

  private apply(current: AccessSnapshot, p: EventPayload | null, channel: string): AccessSnapshot | undefined {
    if (p === null) return undefined; // unreadable signal: reload
    if (p.seq <= current.seq || this.recent.has(p.seq)) return current; // already applied (the other channel)
    this.recent.set(p.seq, p);
    if (this.recent.size > KEEP) this.recent.delete(this.recent.keys().next().value!);
    this.opts.onPropagation?.(channel, Math.max(0, (this.now() - p.at_ms) / 1000));
    const r = applyEffect(current.state, p.action, p.effect, p.at_ms);
    const state = r.outcome === 'applied' ? r.state : current.state;
    if (r.outcome === 'applied' && this.opts.onTightened) {
      try {
        this.opts.onTightened(p.action, p.effect, state);
      } catch (err) {
        this.opts.log.warn({ err, action: p.action }, 'closing the sessions an access change ended failed');
      }
    }
    if (r.outcome === 'applied' && p.seq === current.seq + 1) {
      // Kept in `recent` until a reload covers it: a reload already in flight may
      // have read before this commit and must replay it.
      this.freshAt = Date.now();
      return { ...current, state, seq: p.seq };
    }
    // A loosening change, a gap or a reload request: the tightening part (if any) is
    // in force now; the rest comes with the reload this triggers.
    if (state !== current.state) {
      const applied = { ...current, state };
      queueMicrotask(() => void this.view.refresh().catch(() => {}));
      return applied;
    }
    return undefined;
  }

  /**
   * The writer's own commits, without waiting for a channel: tightening ones at
   * once; the promise settles when a reload (for anything else) has finished, so
   * the writer reads its own writes.
   */
  applyLocal(events: readonly CommittedEvent[]): Promise<void> {
    for (const e of events) this.view.push(JSON.stringify(eventPayload(e)), 'local');
    const last = events.length ? events[events.length - 1].seq : 0;
    if (this.current.seq >= last) return Promise.resolve();
    // A reload already in flight may have read before this commit: wait for one that did not.
    return (async () => {
      for (let i = 0; i < 3 && this.current.seq < last; i++) await this.view.refresh().catch(() => undefined);
    })();
  }


  private async check(): Promise<void> {
    const { sql } = this.opts;
    const t0 = Date.now();
    const [row] = await sql<{ seq: string; now_ms: string }[]>`SELECT seq, (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now_ms FROM authz_state`;
    const t1 = Date.now();
    this.clockOffsetMs = Math.round((t0 + t1) / 2 - Number(row.now_ms));
    if (Math.abs(this.clockOffsetMs) > 1000) this.opts.log.warn({ offsetMs: this.clockOffsetMs }, 'this node\'s clock differs from PostgreSQL\'s by more than 1 s; access decisions use PostgreSQL\'s');
    if (Number(row.seq) > this.current.seq) await this.view.refresh();
    else if (Number(row.seq) < this.current.seq) {
      this.opts.log.warn({ committed: row.seq, applied: this.current.seq }, 'authz seq went backwards (restored database?): rebuilding');
      this.recent.clear();
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
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.view.stop();
  }
}
