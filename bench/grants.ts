// npm run bench:grants
//
// App grants on real nodes (two nodes on one PostgreSQL database, NOTIFY and Redis):
//   1. app-owner cancel committed on node 1 → first refusal on node 2 (p50/p99 over 200 rounds);
//   2. a grant's scheduled end → first refusal on each node (the lag, per node);
//   3. 100,000 grants loaded: the decision state's memory and the per-request decision time
//      (mean, p50, p99) from the node's own view.
// It asserts nothing: it prints numbers. Needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379.
import { availableParallelism, loadavg } from 'node:os';
import { setImmediate as tick, setTimeout as sleep } from 'node:timers/promises';
import { freshDatabases, startTestNode, type TestNode } from '../test/support/env.ts';
import { seedWorld, settle } from '../test/support/grants-fixture.ts';
import { generateMasterKey } from '../src/access/crypto.ts';
import { Grants, type GrantsCaller } from '../src/access/grants.ts';
import { decide, type DecisionRequest, type Principal } from '../src/access/decide.ts';
import { buildDecisionState, type DecisionRows } from '../src/access/decision-state.ts';
import { DECISION_QUERIES } from '../src/access/decision-load.ts';
import { apiIdOf, routeKeyOf } from '../src/access/catalog.ts';

const ROUNDS = Number(process.env.ROUNDS ?? 200);
const N = 100_000;
const gc = (globalThis as { gc?: () => void }).gc;

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const fmt = (ms: number) => `${ms.toFixed(2)} ms`;

async function main() {
  console.log(`node ${process.version}, ${availableParallelism()} CPUs, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  const dbs = freshDatabases();
  const env = { UTILMETA_PROXY_AUTHZ_MASTER_KEYS: generateMasterKey('k1'), UTILMETA_PROXY_REDIS_URL: 'redis://127.0.0.1:6379', UTILMETA_PROXY_LOG_LEVEL: 'warn' };
  const n1 = await startTestNode('node', dbs, env);
  const n2 = await startTestNode('node', dbs, env);
  try {
    const w = await seedWorld(n1, { templates: [['GET', '/hello'], ['GET', '/short']] });
    const caller = (u: { id: string; account: string }): GrantsCaller => ({ userId: u.id, account: u.account, credential: 'bench' });
    const g1 = new Grants({ store: n1.access.store, view: n1.access.view, cancelNoticeSeconds: 172800, clusterId: 'default' });
    await settle([n1, n2]);
    const app = await g1.createApp(caller(w.alice), w.projectId, { name: 'bench' });
    await settle([n1, n2]);
    const appDb = n1.access.view.current.state.appIds.get(app.id as string)!;
    const principal: Principal = { kind: 'app', appId: appDb, via: 'sigv4', accessKeyId: 'UMAKBENCHBENCHBENCHB' };
    const req = (path: string): DecisionRequest => ({ serviceId: w.serviceId, serviceName: w.serviceName, method: 'GET', rawPath: path });
    const allowedOn = (n: TestNode, path: string, at = n.access.view.now()) => decide(n.access.view.current.state, req(path), principal, at).result === 'ALLOW';
    const bob = caller(w.bob);
    const alice = caller(w.alice);
    const hello = w.apis['GET /hello']!;

    // 1. Owner cancel on node 1 → first refusal on node 2.
    let committedAt = 0;
    n1.access.store.onCommit((events) => {
      if (events.some((e) => e.action === 'grant.cancel.app')) committedAt = performance.now();
    });
    const lags: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      await g1.action(bob, w.projectId, { api_id: hello, app_id: app.id, apply_type: 'APPLY_TYPE_AUTHORIZE', time: new Date(Date.now() + 86_400_000).toISOString() });
      await settle([n1, n2]);
      while (!allowedOn(n2, '/hello')) await tick();
      committedAt = 0;
      const cancel = g1.action(alice, w.projectId, { api_id: hello, app_id: app.id, apply_type: 'APPLY_TYPE_APP_CANCEL_AUTHORIZE' });
      // Poll node 2's decision on every turn of the event loop until it refuses.
      let refusedAt = 0;
      while (refusedAt === 0) {
        if (committedAt !== 0 && !allowedOn(n2, '/hello')) refusedAt = performance.now();
        else await tick();
      }
      await cancel;
      lags.push(refusedAt - committedAt);
    }
    console.log(`owner cancel committed on node 1 → first refusal on node 2 (${ROUNDS} rounds, NOTIFY + Redis, same host): p50 ${fmt(pct(lags, 50))}, p99 ${fmt(pct(lags, 99))}, max ${fmt(Math.max(...lags))}`);

    // 2. A scheduled end → first refusal on each node, each deciding against its PostgreSQL-corrected clock.
    const short = w.apis['GET /short']!;
    const endLags: Array<[number, number]> = [];
    for (let i = 0; i < 5; i++) {
      const end = Date.now() + 1500;
      await g1.action(bob, w.projectId, { api_id: short, app_id: app.id, apply_type: 'APPLY_TYPE_AUTHORIZE', time: new Date(end).toISOString() });
      await settle([n1, n2]);
      const first: [number, number] = [0, 0];
      // Sleep until just before the end, then ask both nodes on every spin (a request arriving at that
      // moment): what is measured is the decision, not the event loop's scheduling.
      await sleep(Math.max(0, end - n1.access.view.now() - 30));
      while (first[0] === 0 || first[1] === 0) {
        for (const [k, n] of [n1, n2].entries()) {
          if (first[k] === 0 && !allowedOn(n, '/short')) first[k] = n.access.view.now();
        }
      }
      endLags.push([first[0] - end, first[1] - end]);
      await sleep(50);
    }
    console.log(`scheduled end → first refusal (5 grants, each node asked continuously from 30 ms before the end, clock offsets ${n1.access.view.clockOffsetMs} / ${n2.access.view.clockOffsetMs} ms): node 1 max ${Math.max(...endLags.map((x) => x[0]))} ms, node 2 max ${Math.max(...endLags.map((x) => x[1]))} ms (0 = refused at the instant)`);

    // 3. 100,000 grants: 1,000 apps × 100 APIs, written in one transaction with a reload event.
    await n1.access.store.write({ type: 'CLI', credential: 'cli' }, async (tx) => {
      await tx.sql`INSERT INTO authz_app (app_id, project_id, name, owner_user_id)
        SELECT md5('bench-app-' || i), ${w.projectId}, 'b' || i, ${w.alice.id} FROM generate_series(1, 1000) i`;
      const apis = Array.from({ length: 100 }, (_, i) => {
        const t = `/r${i}/{id}`;
        return { api_id: apiIdOf(w.serviceId, 'GET', routeKeyOf(t)), t, rk: routeKeyOf(t) };
      });
      for (const a of apis) await tx.sql`INSERT INTO authz_api (api_id, service_id, method, path_template, route_key, source) VALUES (${a.api_id}, ${w.serviceId}, 'GET', ${a.t}, ${a.rk}, 'manual')`;
      await tx.sql`INSERT INTO authz_grant (app_id, api_id, state, start_at, end_at)
        SELECT ap.id, api.api_id, 'ACTIVE', now(), now() + interval '30 days'
        FROM authz_app ap CROSS JOIN authz_api api WHERE ap.name LIKE 'b%' AND api.path_template LIKE '/r%'`;
      tx.event({ action: 'grant.bulk', targetType: 'grant', targetId: 'bench', effect: { reload: true } });
    });
    await settle([n1, n2]);
    const [{ n }] = await n1.db.registry<{ n: number }[]>`SELECT count(*)::int AS n FROM authz_grant WHERE state = 'ACTIVE'`;
    // Memory: the same reads the view makes, then the state built from them.
    const rows: Partial<DecisionRows> = {};
    for (const [k, text] of Object.entries(DECISION_QUERIES)) (rows as Record<string, unknown>)[k] = [...(await n1.db.registry.unsafe(text))];
    const emptyRows = { ...rows, grants: [] };
    gc?.();
    const h0 = process.memoryUsage().heapUsed;
    const withoutGrants = buildDecisionState(emptyRows);
    gc?.();
    const h1 = process.memoryUsage().heapUsed;
    const withGrants = buildDecisionState(rows);
    gc?.();
    const h2 = process.memoryUsage().heapUsed;
    void withoutGrants;
    const perGrant = (h2 - h1) / (rows.grants?.length ?? 1);
    console.log(`decision state with ${rows.grants?.length} grants (${n} active): ${((h2 - h1) / 1e6).toFixed(1)} MB for the grants ≈ ${perGrant.toFixed(0)} B per grant${gc ? '' : ' (run with --expose-gc for exact figures)'}; rest of the state ${((h1 - h0) / 1e6).toFixed(1)} MB`);
    void withGrants;
    // Decision time per request from node 1's live view, 100 APIs × 1,000 apps.
    const state = n1.access.view.current.state;
    const apps = [...state.apps.values()].filter((a) => a.name.startsWith('b')).map((a) => a.id);
    const times: number[] = [];
    let allowed = 0;
    const now = n1.access.view.now();
    for (let i = 0; i < 200_000; i++) {
      const p: Principal = { kind: 'app', appId: apps[i % apps.length]!, via: 'sigv4', accessKeyId: 'UMAKBENCHBENCHBENCHB' };
      const t0 = performance.now();
      const d = decide(state, req(`/r${i % 100}/${i}`), p, now);
      times.push(performance.now() - t0);
      if (d.result === 'ALLOW') allowed++;
    }
    const steady = times.slice(20_000);
    const mean = steady.reduce((a, b) => a + b, 0) / steady.length;
    console.log(`grant decision per request with ${n} grants loaded (200,000 decisions, first 20,000 as warm-up): mean ${(mean * 1000).toFixed(2)} µs, p50 ${(pct(steady, 50) * 1000).toFixed(2)} µs, p99 ${(pct(steady, 99) * 1000).toFixed(2)} µs (${allowed} allowed)`);
  } finally {
    await n1.close();
    await n2.close();
    await dbs.drop();
  }
}

await main();
