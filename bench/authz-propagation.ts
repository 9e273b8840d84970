// npm run bench:authz [-- --rounds 200 --interval-ms 2]
//
// Two nodes on the local PostgreSQL and Redis (fresh databases, dropped
// afterwards). Each round disables an access key on node 1 (in process, through
// its one writer) while node 2 is probed every 2 ms with a SigV4-signed
// directory request (GET /orgs) made with that key; it prints p50/p99 of the
// time from node 1's COMMIT to the first refusal node 2 answers, for both
// channels, PostgreSQL NOTIFY alone (node 2 without REDIS_URL) and Redis alone
// (node 2 not LISTENing). Then the key is re-enabled (a loosening: node 2
// re-reads the key's row) and it prints the time from that commit to node 2's
// first acceptance. Then it runs the SigV4 and decision-state
// benchmarks (bench/sigv4.ts, bench/authz-decide.ts) for the verification cost
// and the memory of 100k keys/tokens. Asserts nothing.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import aws4 from 'aws4';
import { Agent, request } from 'undici';
import { freshDatabases, startTestNode, type TestNode } from '../test/support/env.ts';
import { authzBootstrap } from '../src/access/cli.ts';
import { effectiveMasterKeys } from '../src/access/index.ts';
import { CLI_CALLER } from '../src/access/credentials.ts';

const { values: args } = parseArgs({ options: { rounds: { type: 'string' }, 'interval-ms': { type: 'string' }, 'skip-micro': { type: 'boolean' } } });
const ROUNDS = Number(args.rounds ?? 200);
const INTERVAL = Number(args['interval-ms'] ?? 2);
const REDIS = 'redis://127.0.0.1:6379';
const MASTER = `k1:${randomBytes(32).toString('base64')}`;
const PATH = '/minibase/portal/openapi/v1/orgs';

const agent = new Agent({ connections: 64, pipelining: 1 });

function probe(node: TestNode, key: { id: string; secret: string }): Promise<number> {
  const host = new URL(node.origin).host;
  const signed = aws4.sign({ host, path: PATH, method: 'GET', service: 'minibasebe', region: 'pri', headers: {} }, { accessKeyId: key.id, secretAccessKey: key.secret });
  return request(`${node.origin}${PATH}`, { method: 'GET', headers: signed.headers as Record<string, string>, dispatcher: agent }).then(async (r) => {
    await r.body.dump();
    return r.statusCode;
  });
}

/** Probes every INTERVAL ms until one answers `status`; resolves with that answer's arrival time. */
function firstAnswer(node: TestNode, key: { id: string; secret: string }, status: number, timeoutMs = 5000): Promise<number> {
  return new Promise((resolve, reject) => {
    let done = false;
    const started = performance.now();
    const timer = setInterval(() => {
      if (done) return;
      if (performance.now() - started > timeoutMs) {
        done = true;
        clearInterval(timer);
        reject(new Error(`no ${status} from node 2 within ${timeoutMs} ms`));
        return;
      }
      probe(node, key).then((s) => {
        if (!done && s === status) {
          done = true;
          clearInterval(timer);
          resolve(performance.now());
        }
      }, () => {});
    }, INTERVAL);
  });
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};

interface Scenario { name: string; env2: Record<string, string>; listen2: boolean }
const SCENARIOS: Scenario[] = [
  { name: 'both channels (NOTIFY + Redis)', env2: { UTILMETA_PROXY_REDIS_URL: REDIS }, listen2: true },
  { name: 'PostgreSQL NOTIFY only', env2: {}, listen2: true },
  { name: 'Redis only', env2: { UTILMETA_PROXY_REDIS_URL: REDIS }, listen2: false },
];

console.log(`authz propagation: ${ROUNDS} rounds per scenario, node 2 probed every ${INTERVAL} ms; ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, node ${process.version}; local PostgreSQL and Redis over loopback, uws listeners`);
for (const sc of SCENARIOS) {
  const dbs = freshDatabases();
  const common = { UTILMETA_PROXY_AUTHZ_MASTER_KEYS: MASTER, UTILMETA_PROXY_AUTHZ_RESYNC: '3600', UTILMETA_PROXY_LOG_LEVEL: 'warn' };
  const n1 = await startTestNode('uws', dbs, { ...common, UTILMETA_PROXY_REDIS_URL: REDIS });
  const n2 = await startTestNode('uws', dbs, { ...common, ...sc.env2 }, { authzListen: sc.listen2 });
  try {
    const boot = await authzBootstrap(n1.access.store, effectiveMasterKeys(n1.config), { account: 'bench' });
    const key = { id: boot.accessKeyId!, secret: boot.secretAccessKey! };
    let commitAt = 0;
    n1.access.store.onCommit(() => {
      commitAt = performance.now();
    });
    await firstAnswer(n2, key, 200, 30_000);
    const lat: number[] = [];
    const back: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const refused = firstAnswer(n2, key, 403);
      await n1.access.credentials.patchKey(CLI_CALLER, key.id, { status: 'Inactive' });
      const at = await refused;
      lat.push(at - commitAt);
      // Re-enabling is a loosening: node 2 re-reads the key's row.
      const accepted = firstAnswer(n2, key, 200);
      await n1.access.credentials.patchKey(CLI_CALLER, key.id, { status: 'Active' });
      back.push((await accepted) - commitAt);
    }
    const line = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(1)} ms  p99 ${pct(xs, 99).toFixed(1)} ms  max ${Math.max(...xs).toFixed(1)} ms`;
    console.log(`  ${sc.name.padEnd(32)} commit → first refusal on node 2:   ${line(lat)}  (n=${lat.length}, load ${loadavg()[0]!.toFixed(2)})`);
    console.log(`  ${''.padEnd(32)} commit → first acceptance (re-enable): ${line(back)}`);
  } finally {
    await n2.close();
    await n1.close();
    await dbs.drop();
  }
}
await agent.close();

if (!args['skip-micro']) {
  const run = (title: string, nodeArgs: string[]) => {
    console.log(`\n${title}`);
    const r = spawnSync(process.execPath, nodeArgs, { stdio: 'inherit', cwd: new URL('..', import.meta.url).pathname });
    if (r.status !== 0) console.log(`  (exited ${r.status})`);
  };
  run('SigV4 verification cost (bench/sigv4.ts, cached signing key):', ['--import', 'tsx', 'bench/sigv4.ts', '--iterations', '20000', '--rounds', '5']);
  run('Decision-state memory and decision cost (bench/authz-decide.ts):', ['--expose-gc', '--import', 'tsx', 'bench/authz-decide.ts']);
}
process.exit(0);
