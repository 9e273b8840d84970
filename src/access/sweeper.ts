// The grant sweeper: one node of the cluster (the holder of a PostgreSQL
// advisory lock) closes the rows whose time has come, each with its event —
//   T12 CANCEL_SCHEDULED → CANCELLED at cancel_at          grant.cancel.effective
//   T13 ACTIVE / CANCEL_SCHEDULED → EXPIRED at end_at       grant.expire
//   an APPLY request unreviewed at its requested end → LAPSED, grant REJECTED  grant.lapse
//   a RENEW request unreviewed at its requested end → LAPSED                   grant.lapse
// and purges revoked platform token ids past their expiry and tokens expired or
// revoked more than 30 days ago.
//
// Enforcement never waits for it: decisions compare the grant's end with the
// PostgreSQL-corrected clock. Its events only bring lists and the audit trail
// up to date, so it sleeps until the earliest pending instant, at most 60 s.
import type postgres from 'postgres';
import type { Logger } from 'pino';
import { PgAdvisoryLeader, SoloLeader, type LeaderLock } from '../health/leader.ts';
import type { AuthzActor, AuthzStore } from './store.ts';

export const SWEEPER_LOCK_NAME = 'utilmeta_proxy_authz_sweeper';
const SYSTEM: AuthzActor = { type: 'SYSTEM', name: 'sweeper' };

export interface SweeperOptions {
  store: AuthzStore;
  /**
   * A client of its own with exactly one connection, for the session advisory
   * lock; null runs without an election (embedded single-node database).
   */
  leaderSql: postgres.Sql | null;
  log: Logger;
  /** Longest sleep between sweeps (ms). */
  maxSleepMs?: number;
  /** How often the leader checks it still holds the lock, and followers try to take it (ms). */
  leaderRoundMs?: number;
  /** Minimum time between purges (ms). */
  purgeEveryMs?: number;
}

export interface SweepResult {
  expired: number;
  cancelled: number;
  lapsed: number;
  purgedJtis: number;
  purgedTokens: number;
}

/** Closes every row due at the database's `now()`, one transaction, one event per row. */
export async function sweepOnce(store: AuthzStore, opts: { purge?: boolean } = {}): Promise<SweepResult> {
  const out: SweepResult = { expired: 0, cancelled: 0, lapsed: 0, purgedJtis: 0, purgedTokens: 0 };
  const [due] = await store.read((sql) => sql<{ n: number }[]>`
    SELECT (SELECT count(*) FROM authz_grant WHERE state IN ('ACTIVE','CANCEL_SCHEDULED') AND LEAST(end_at, coalesce(cancel_at, end_at)) <= now())
         + (SELECT count(*) FROM authz_grant_request WHERE status = 'PENDING' AND requested_end_at <= now()) AS n`);
  if (Number(due!.n) > 0) {
    await store.write(SYSTEM, async (tx) => {
      const sql = tx.sql;
      // T13 first: a grant whose end comes no later than its cancellation expires.
      const expiring = await sql<{ id: string; app_id: string; api_id: string; end_at: Date; service_id: string }[]>`
        SELECT g.id, g.app_id, g.api_id, g.end_at, a.service_id FROM authz_grant g JOIN authz_api a ON a.api_id = g.api_id
        WHERE g.state IN ('ACTIVE','CANCEL_SCHEDULED') AND g.end_at <= now() AND (g.cancel_at IS NULL OR g.end_at <= g.cancel_at)
        ORDER BY g.id FOR UPDATE OF g`;
      for (const g of expiring) {
        const [row] = await sql`UPDATE authz_grant SET state = 'EXPIRED', closed_by = 'SYSTEM' WHERE id = ${g.id} RETURNING *`;
        await sql`UPDATE authz_grant_request SET status = 'LAPSED', decided_at = now() WHERE grant_id = ${g.id} AND status = 'PENDING'`;
        tx.event({ action: 'grant.expire', targetType: 'grant', targetId: g.id, serviceId: g.service_id, effect: { grant_id: Number(g.id), app_id: Number(g.app_id), api_id: g.api_id, effective_end: g.end_at.toISOString() }, after: { grant: row } });
      }
      out.expired = expiring.length;
      const cancelling = await sql<{ id: string; app_id: string; api_id: string; cancel_at: Date; service_id: string }[]>`
        SELECT g.id, g.app_id, g.api_id, g.cancel_at, a.service_id FROM authz_grant g JOIN authz_api a ON a.api_id = g.api_id
        WHERE g.state = 'CANCEL_SCHEDULED' AND g.cancel_at <= now() AND g.cancel_at < g.end_at
        ORDER BY g.id FOR UPDATE OF g`;
      for (const g of cancelling) {
        const [row] = await sql`UPDATE authz_grant SET state = 'CANCELLED', closed_by = 'SYSTEM' WHERE id = ${g.id} RETURNING *`;
        tx.event({ action: 'grant.cancel.effective', targetType: 'grant', targetId: g.id, serviceId: g.service_id, effect: { grant_id: Number(g.id), app_id: Number(g.app_id), api_id: g.api_id, effective_end: g.cancel_at.toISOString() }, after: { grant: row } });
      }
      out.cancelled = cancelling.length;
      const lapsing = await sql<{ id: string; grant_id: string; kind: string; service_id: string; app_id: string; api_id: string }[]>`
        SELECT r.id, r.grant_id, r.kind, a.service_id, g.app_id, g.api_id FROM authz_grant_request r
        JOIN authz_grant g ON g.id = r.grant_id JOIN authz_api a ON a.api_id = g.api_id
        WHERE r.status = 'PENDING' AND r.requested_end_at <= now() ORDER BY r.id FOR UPDATE OF r, g`;
      for (const r of lapsing) {
        const [req] = await sql`UPDATE authz_grant_request SET status = 'LAPSED', decided_at = now() WHERE id = ${r.id} RETURNING *`;
        let grant: unknown = null;
        if (r.kind === 'APPLY') [grant] = await sql`UPDATE authz_grant SET state = 'REJECTED', closed_by = 'SYSTEM' WHERE id = ${r.grant_id} AND state = 'PENDING' RETURNING *`;
        tx.event({ action: 'grant.lapse', targetType: 'grant', targetId: r.grant_id, serviceId: r.service_id, effect: { grant_id: Number(r.grant_id), request_id: Number(r.id) }, after: { request: req, grant } });
      }
      out.lapsed = lapsing.length;
      if (expiring.length + cancelling.length + lapsing.length === 0) {
        // Counted as due, then taken by a concurrent writer: nothing to record.
        throw new NothingDue();
      }
    }).catch((err) => {
      if (!(err instanceof NothingDue)) throw err;
    });
  }
  if (opts.purge) {
    // Revoked platform token ids past their expiry and tokens nobody can use any more.
    const [n] = await store.read((sql) => sql<{ jtis: number; tokens: number }[]>`
      SELECT (SELECT count(*)::int FROM authz_revoked_jti WHERE expires_at < now()) AS jtis,
             (SELECT count(*)::int FROM authz_token WHERE expires_at < now() - interval '30 days' OR revoked_at < now() - interval '30 days') AS tokens`);
    if (n!.jtis + n!.tokens > 0) {
      await store.write(SYSTEM, async (tx) => {
        const j = await tx.sql`DELETE FROM authz_revoked_jti WHERE expires_at < now() RETURNING jti`;
        const t = await tx.sql`DELETE FROM authz_token WHERE expires_at < now() - interval '30 days' OR revoked_at < now() - interval '30 days' RETURNING id`;
        out.purgedJtis = j.length;
        out.purgedTokens = t.length;
        tx.event({ action: 'authz.purge', targetType: 'state', targetId: 'purge', effect: {}, after: { jtis: j.length, tokens: t.length } });
      });
    }
  }
  return out;
}

class NothingDue extends Error {}

/** Milliseconds from the database's now until the earliest pending end, cancellation or lapse (null: none). */
export async function nextDueMs(store: AuthzStore): Promise<number | null> {
  const [r] = await store.read((sql) => sql<{ ms: number | null }[]>`
    SELECT (extract(epoch FROM (LEAST(
      (SELECT min(LEAST(end_at, coalesce(cancel_at, end_at))) FROM authz_grant WHERE state IN ('ACTIVE','CANCEL_SCHEDULED')),
      (SELECT min(requested_end_at) FROM authz_grant_request WHERE status = 'PENDING')) - clock_timestamp())) * 1000)::float8 AS ms`);
  return r!.ms === null ? null : Number(r!.ms);
}

export class Sweeper {
  private leader: LeaderLock | null = null;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  private lastPurge = 0;
  private unsubscribe: (() => void) | null = null;
  private retry: NodeJS.Timeout | null = null;
  /** Consecutive failed sweeps: the retry backs off and only the first is logged as a warning. */
  private failures = 0;
  /** Sweeps done by this node (for tests and logs). */
  sweeps = 0;
  readonly maxSleepMs: number;

  constructor(private readonly opts: SweeperOptions) {
    this.maxSleepMs = opts.maxSleepMs ?? 60_000;
  }

  get isLeader(): boolean {
    return this.leader?.isLeader === true;
  }

  /** Never throws: without the database the election is retried until it answers. */
  async start(): Promise<void> {
    const { leaderSql } = this.opts;
    if (leaderSql) {
      try {
        // pg_try_advisory_lock(hashtext(name)): the key every node computes the same way.
        const [k] = await leaderSql<{ k: number }[]>`SELECT hashtext(${SWEEPER_LOCK_NAME}) AS k`;
        this.leader = new PgAdvisoryLeader(leaderSql, { lockKey: BigInt(k!.k), roundMs: this.opts.leaderRoundMs ?? 5_000, log: this.opts.log });
      } catch (err) {
        if (this.stopped) return;
        this.opts.log.warn({ err }, 'authz sweeper: the database did not answer; retrying the election in 5 s');
        this.retry = setTimeout(() => void this.start(), 5_000);
        this.retry.unref();
        return;
      }
    } else {
      this.leader = new SoloLeader();
    }
    this.leader.onChange((leading) => {
      if (leading) this.schedule(0);
      else this.clear();
    });
    // A local commit may bring an earlier deadline than the one being slept on.
    this.unsubscribe ??= this.opts.store.onCommit((events) => {
      if (this.isLeader && events.some((e) => e.action.startsWith('grant.') && e.action !== 'grant.expire' && e.action !== 'grant.cancel.effective' && e.action !== 'grant.lapse')) this.schedule(0);
    });
    await this.leader.start();
  }

  private clear(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(ms: number): void {
    if (this.stopped || !this.isLeader) return;
    this.clear();
    this.timer = setTimeout(() => void this.run(), Math.max(0, Math.min(ms, this.maxSleepMs)));
    this.timer.unref();
  }

  /** One sweep and the next wake-up; serialized. */
  run(): Promise<void> {
    this.running ??= (async () => {
      let next = this.maxSleepMs;
      try {
        if (!this.isLeader) return;
        const purge = Date.now() - this.lastPurge >= (this.opts.purgeEveryMs ?? 3_600_000);
        const r = await sweepOnce(this.opts.store, { purge });
        if (purge) this.lastPurge = Date.now();
        this.sweeps++;
        if (r.expired + r.cancelled + r.lapsed + r.purgedJtis + r.purgedTokens > 0) this.opts.log.info({ ...r }, 'authz sweeper closed rows');
        const due = await nextDueMs(this.opts.store);
        // Wake just after the instant: the closing transaction's now() must have passed it.
        if (due !== null) next = Math.max(5, due + 5);
        this.failures = 0;
      } catch (err) {
        if (this.failures === 0) this.opts.log.warn({ err }, 'authz sweeper failed; retrying with backoff');
        else this.opts.log.debug({ err, failures: this.failures }, 'authz sweeper failed again');
        next = Math.min(this.maxSleepMs, 1_000 * 2 ** Math.min(this.failures, 10));
        this.failures++;
      } finally {
        this.running = null;
      }
      this.schedule(next);
    })();
    return this.running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.clear();
    if (this.retry) clearTimeout(this.retry);
    this.unsubscribe?.();
    await this.running?.catch(() => {});
    await this.leader?.stop();
  }
}

/** Creates and starts the sweeper. */
export async function startSweeper(opts: SweeperOptions): Promise<Sweeper> {
  const s = new Sweeper(opts);
  await s.start();
  return s;
}
