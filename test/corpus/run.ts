// Replays the corpus against a real node (fresh databases, one registered
// upstream) and collects what each invariant needs. Used by the test and by
// the replay.ts report.
import type postgres from 'postgres';
import { adminSql, freshDatabases, startTestNode, type TestDatabases, type TestNode } from '../support/env.ts';
import { insertInstanceResource, registrationBody } from '../support/ops.ts';
import { startUpstream, type TestUpstream } from '../support/upstream.ts';
import type { ListenerKind } from '../../src/http/types.ts';
import { DB_SURFACES, buildRequest, escapesBase, exchange, judge, type CaseResult, type CorpusCase, type Vars } from './cases.ts';

/** Upstream timeouts of the node under test; a case may take this long plus a margin, no more. */
export const MAX_TIMEOUT_S = 3;
export const DEADLINE_MS = (MAX_TIMEOUT_S + 2) * 1000;
export const SERVICE = 'corpus';
export const BASE_PATH = '/api';

export interface CorpusEnv {
  listener: ListenerKind;
  node: TestNode;
  upstream: TestUpstream;
  vars: Vars;
  port: number;
  snapshot(): Promise<Map<string, string>>;
  /** Registers the upstream again with its valid document (after a case changed it). */
  restore(): Promise<void>;
  close(): Promise<void>;
}

/** Row content of every table of one database, as one digest per table (one round trip). */
async function digests(sql: postgres.Sql, prefix: string, out: Map<string, string>): Promise<void> {
  const tables = await sql<Array<{ t: string }>>`
    SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1`;
  if (tables.length === 0) return;
  const q = tables
    .map(({ t }) => `SELECT '${t.replace(/'/g, "''")}' AS t, count(*)::text || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') AS d FROM "${t.replace(/"/g, '""')}" x`)
    .join(' UNION ALL ');
  for (const r of await sql.unsafe<Array<{ t: string; d: string }>>(q)) out.set(`${prefix}.${r.t}`, r.d);
}

export function diffSnapshots(a: Map<string, string>, b: Map<string, string>): string[] {
  const keys = new Set([...a.keys(), ...b.keys()]);
  return [...keys].filter((k) => a.get(k) !== b.get(k)).sort();
}

export async function startCorpusEnv(listener: ListenerKind): Promise<CorpusEnv> {
  const dbs: TestDatabases = freshDatabases();
  const node = await startTestNode(listener, dbs, {
    UTILMETA_PROXY_DEFAULT_TIMEOUT: '2',
    UTILMETA_PROXY_MAX_TIMEOUT: String(MAX_TIMEOUT_S),
    UTILMETA_PROXY_LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'warn',
  });
  // A healthy upstream that answers every request the same small way: any 500
  // or internal detail in a response therefore comes from the proxy.
  const upstream = await startUpstream((_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end('{"upstream":"ok"}');
  });
  const resource = await insertInstanceResource(node.db.ops, { service: SERVICE, address: upstream.address });
  const register = async () => {
    const reg = await fetch(`${node.origin}/api/registry`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(registrationBody({ name: SERVICE, address: upstream.address, instanceId: resource.id, basePath: BASE_PATH })),
    });
    if (reg.status !== 200) throw new Error(`registering the corpus upstream failed: ${reg.status} ${await reg.text()}`);
  };
  await register();
  upstream.seen.length = 0;
  const port = node.listener.port;
  const regSql = adminSql(dbs.registryName);
  const opsSql = adminSql(dbs.opsName);
  return {
    listener,
    node,
    upstream,
    port,
    vars: { host: `127.0.0.1:${port}`, svc: SERVICE, address: upstream.address, instanceId: resource.id, base: `http://${upstream.address}${BASE_PATH}` },
    async snapshot() {
      const m = new Map<string, string>();
      await digests(regSql, 'registry', m);
      await digests(opsSql, 'ops', m);
      return m;
    },
    restore: register,
    async close() {
      await node.close();
      await upstream.close();
      await regSql.end();
      await opsSql.end();
      await dbs.drop();
    },
  };
}

export interface ReplayReport {
  listener: ListenerKind;
  results: CaseResult[];
  /** Tables changed while the non-database cases ran concurrently. */
  changedConcurrently: string[];
  /** Upstream requests whose path escaped the base path or kept dot-segments. */
  escapes: Array<{ id: string; url: string; why: string }>;
  alive: { status: string; ms: number };
  /** error-level log lines the node wrote during the replay. */
  errorLogs: number;
}

const isHead = (c: CorpusCase) => (c.kind === 'http' ? c.method === 'HEAD' : c.raw!.startsWith('HEAD '));

async function runOne(env: CorpusEnv, c: CorpusCase, changed: string[] = []): Promise<CaseResult> {
  const o = await exchange(env.port, buildRequest(c, env.vars), { halfClose: c.halfClose, isHead: isHead(c), deadlineMs: DEADLINE_MS });
  return judge(c, o, changed);
}

/**
 * Database surfaces run one at a time between two snapshots, so a changed row
 * names its case; everything else runs `concurrency` at a time.
 */
export async function replayCorpus(env: CorpusEnv, cases: CorpusCase[], opts: { concurrency?: number } = {}): Promise<ReplayReport> {
  const logsBefore = env.node.logs.lines.length;
  const results: CaseResult[] = [];
  // Non-database cases first, against the pristine registration.
  const rest = cases.filter((x) => !DB_SURFACES.has(x.surface));
  const before = await env.snapshot();
  let next = 0;
  const worker = async () => {
    while (next < rest.length) {
      const c = rest[next++];
      results.push(await runOne(env, c));
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency ?? 8 }, worker));
  const changedConcurrently = diffSnapshots(before, await env.snapshot());
  for (const c of cases.filter((x) => DB_SURFACES.has(x.surface))) {
    const before = await env.snapshot();
    const r = await runOne(env, c);
    r.changed = diffSnapshots(before, await env.snapshot());
    // An accepted (wrongly or not) registration rewrote the upstream's entry: put it back.
    if (r.changed.length) await env.restore();
    results.push(r);
  }

  const escapes: ReplayReport['escapes'] = [];
  for (const s of env.upstream.seen) {
    const why = escapesBase(s.url, BASE_PATH);
    if (why) escapes.push({ id: s.headers.find(([k]) => k === 'x-corpus-case')?.[1] ?? '?', url: s.url, why });
  }
  const alive = await exchange(env.port, Buffer.from(`GET /api/ HTTP/1.1\r\nHost: ${env.vars.host}\r\nConnection: close\r\n\r\n`), { deadlineMs: DEADLINE_MS });
  const order = new Map(cases.map((c, i) => [c.id, i]));
  results.sort((a, b) => order.get(a.case.id)! - order.get(b.case.id)!);
  return {
    listener: env.listener,
    results,
    changedConcurrently,
    escapes,
    alive: { status: alive.responses[0] ? String(alive.responses[0].status) : alive.timedOut ? 'timeout' : 'close', ms: alive.ms },
    errorLogs: env.node.logs.lines.slice(logsBefore).filter((l) => Number(l.level) >= 50).length,
  };
}

/** One line per failing case and invariant, for test messages and the replay table. */
export function failures(report: ReplayReport): Record<string, string[]> {
  const f: Record<string, string[]> = { status500: [], leaks: [], hangs: [], unacceptable: [], rowsChanged: [], upstreamEscapes: [] };
  for (const r of report.results) {
    const id = r.case.id;
    if (r.status500) f.status500.push(`${id} -> 500`);
    if (r.leaked.length) f.leaks.push(`${id} -> ${r.leaked.join(', ')}`);
    if (r.outcome.timedOut) f.hangs.push(`${id} -> no answer within ${DEADLINE_MS} ms`);
    if (!r.accepted) {
      const n = r.outcome.responses.length;
      f.unacceptable.push(`${id} -> ${r.label}${n > 1 ? ` (+${n - 1} more responses)` : ''} (${r.outcome.ms} ms), accepts ${r.case.accept.join('|')}${r.case.maxResponses !== undefined ? ` max ${r.case.maxResponses} response(s)` : ''}`);
    }
    // Only a rejected request must leave the tables alone; a wrongly accepted one is reported as unacceptable.
    const rejected = !r.outcome.responses.some((x) => x.status >= 200 && x.status < 300);
    if (r.changed.length && rejected) f.rowsChanged.push(`${id} (${r.label}) changed ${r.changed.join(', ')}`);
  }
  if (report.changedConcurrently.length) f.rowsChanged.push(`non-database cases changed ${report.changedConcurrently.join(', ')}`);
  for (const e of report.escapes) f.upstreamEscapes.push(`${e.id} -> upstream got ${JSON.stringify(e.url.length > 120 ? e.url.slice(0, 120) + '…' : e.url)} (${e.why})`);
  return f;
}
