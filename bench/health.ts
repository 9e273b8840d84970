// node --import tsx bench/health.ts [--quick]
//
// Costs of the health building blocks, printed as a table (asserts nothing):
// the hot-path lookups per request, and the cluster propagation of an ejection
// and of an idempotency claim through the real Redis on loopback.
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { IdempotencyStore, InstanceHealth, RetryBudget } from '../src/health/index.ts';

const { values: args } = parseArgs({ options: { quick: { type: 'boolean' } } });
const N = args.quick ? 200_000 : 2_000_000;
const TRIALS = args.quick ? 50 : 300;
const rows: Array<[string, string, string]> = [];

function perOp(name: string, n: number, fn: (i: number) => void): void {
  for (let i = 0; i < Math.min(n, 50_000); i++) fn(i); // warm-up
  const t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn(i);
  const ns = Number(process.hrtime.bigint() - t) / n;
  rows.push([name, `${ns.toFixed(1)} ns/op`, `${n} ops`]);
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

const instances = Array.from({ length: 3000 }, (_, i) => ({ id: String(i), serviceId: `s${i % 100}` }));
const local = new InstanceHealth({ serviceSize: () => 30 });
for (let i = 0; i < 300; i += 10) local.report(instances[i], 'unreached');
const three = instances.slice(0, 3);
perOp('isAvailable (3,000 instances, 30 ejected)', N, (i) => { local.isAvailable(instances[i % 3000].id); });
perOp('filter of 3 candidates', N, () => { local.filter(three); });
perOp('report success', N, (i) => { local.report(instances[i % 3000], 'success'); });
const budget = new RetryBudget();
perOp('retry budget onRequest + available', N, (i) => { budget.onRequest(i); budget.available(i); });

const host = process.env.BENCH_REDIS_HOST ?? '127.0.0.1';
const port = Number(process.env.BENCH_REDIS_PORT ?? 6379);
const conns: Redis[] = [];
const conn = async () => {
  const r = new Redis({ host, port, lazyConnect: true });
  await r.connect();
  conns.push(r);
  return r;
};
const prefix = `umbench:health:${process.pid}:`;
const sizes = () => 1_000_000;
const a = new InstanceHealth({ serviceSize: sizes, redis: { client: await conn(), subscriber: await conn(), prefix } });
const b = new InstanceHealth({ serviceSize: sizes, redis: { client: await conn(), subscriber: await conn(), prefix } });
await a.start();
await b.start();
const lat: number[] = [];
for (let i = 0; i < TRIALS; i++) {
  const inst = { id: `p${i}`, serviceId: 'bench' };
  const t = performance.now();
  a.report(inst, 'unreached');
  while (!b.isEjected(inst.id)) await new Promise((r) => setImmediate(r));
  lat.push(performance.now() - t);
}
rows.push(['ejection on node A → seen on node B (Redis pub/sub)', `p50 ${pct(lat, 50).toFixed(2)} ms, p99 ${pct(lat, 99).toFixed(2)} ms`, `${TRIALS} trials`]);

const store = new IdempotencyStore({ redis: await conn(), prefix });
const begin: number[] = [];
for (let i = 0; i < TRIALS; i++) {
  const t = performance.now();
  const r = await store.begin('bench', `k${i}`, 'fp');
  begin.push(performance.now() - t);
  if (r.state === 'acquired') await store.complete(r.lease, { status: 200, headers: [], body: Buffer.from('ok') });
}
rows.push(['idempotency begin (SET NX PX)', `p50 ${pct(begin, 50).toFixed(2)} ms, p99 ${pct(begin, 99).toFixed(2)} ms`, `${TRIALS} trials`]);

await a.stop();
await b.stop();
const keys = await conns[0].keys(`${prefix}*`);
if (keys.length) await conns[0].del(...keys);
await Promise.all(conns.map((c) => c.quit()));

const w = [0, 1, 2].map((k) => Math.max(...rows.map((r) => r[k].length), ['what', 'cost', 'sample'][k].length));
const line = (r: string[]) => `| ${r.map((c, k) => c.padEnd(w[k])).join(' | ')} |`;
console.log(line(['what', 'cost', 'sample']));
console.log(`|${w.map((x) => '-'.repeat(x + 2)).join('|')}|`);
for (const r of rows) console.log(line(r));
console.log(`node ${process.version}, loopback Redis ${host}:${port}`);
