// npm run bench [-- --quick] [-- --pin] [-- --duration 10 --rounds 2 --warmup 3] [-- --only <regex>] [-- --hold]
//
// Side-by-side throughput of the proxy against a direct connection and nginx, on
// loopback, one process per role: wrk → (nothing | nginx | proxy node) → upstream.
// It asserts nothing: it prints one table (and writes it to bench/results/latest.md).
// Every process is started first; then each round measures every cell once (a warm-up
// run, then the measured run) and the median over rounds is reported.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type AddressInfo } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes, randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import postgres from 'postgres';
import { REGISTRY_CHANNEL } from '../src/registry/cache.ts';
import { registrationBody } from '../test/support/ops.ts';
import { generateRsaKeyPair, signJwt } from '../test/support/platform-sim.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean' }, duration: { type: 'string' }, rounds: { type: 'string' }, warmup: { type: 'string' },
    // Only cells whose "scenario · configuration" matches this regular expression (for profiling one path).
    only: { type: 'string' },
    // Set everything up, print each cell's target and wait for Ctrl-C (to profile by hand).
    hold: { type: 'boolean' },
    // Extra node flags for the proxy processes (e.g. to compare V8 settings), space-separated.
    'node-flags': { type: 'string' },
    // Another build's dist/ directory (e.g. an earlier commit's, built with `npm run build` in a
    // worktree), measured beside this one as "proxy (uws), <dir's parent name>"; repeatable.
    compare: { type: 'string', multiple: true },
    // Pin the process under test (nginx, a floor, a proxy) to CPU 0 and wrk and the upstream to
    // CPU 1, so that a cell's CPU per request does not depend on how the scheduler mixed them.
    pin: { type: 'boolean' },
  },
});
const args_nodeFlags = args['node-flags'];
const DURATION = Number(args.duration ?? (args.quick ? 3 : 10));
const WARMUP = Number(args.warmup ?? (args.quick ? 1 : 3));
const ROUNDS = Number(args.rounds ?? (args.quick ? 1 : 2));
const WRK_THREADS = 2;
// Like test/support/env.ts: the real PostgreSQL of this machine unless told otherwise.
const PG = { host: process.env.BENCH_PG_HOST ?? '127.0.0.1', port: Number(process.env.BENCH_PG_PORT ?? 5432), user: process.env.BENCH_PG_USER ?? 'postgres' };
const SERVICE = 'bench';
const NODE_ID = 'bench-node';
/** The supervisor row's base_url; node tokens must carry its origin as `iss`. */
const SPV_BASE_URL = 'https://api.utilmeta.com/spv';

// ---- processes and cleanup -------------------------------------------------------------------

const TMP = mkdtempSync(join(tmpdir(), 'umbench-'));
const children = new Set<ChildProcess>();
const finalizers: Array<() => Promise<void>> = [];

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

function exited(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once('exit', () => (clearTimeout(t), resolve(true)));
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  child.kill('SIGTERM');
  if (!(await exited(child, 8000))) {
    child.kill('SIGKILL');
    await exited(child, 2000);
  }
}

let cleaning: Promise<void> | null = null;
function cleanup(): Promise<void> {
  return (cleaning ??= (async () => {
    await Promise.all([...children].map(stopChild));
    for (const fn of finalizers.reverse()) await fn().catch((err) => console.error(`cleanup: ${(err as Error).message}`));
    rmSync(TMP, { recursive: true, force: true });
  })());
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    interrupted = true;
    console.error(`\n${sig}: stopping children and dropping the benchmark databases…`);
    void cleanup().finally(() => process.exit(130));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer().once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, child: ChildProcess, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`process exited with code ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const c = createConnection(port, '127.0.0.1', () => (c.end(), resolve(true))).once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listens on port ${port} after ${ms} ms`);
}

/** The last lines of a child's log (the temp dir is gone after cleanup, so errors quote it). */
function tail(logFile: string): string {
  try {
    return readFileSync(logFile, 'utf8').trim().split('\n').slice(-15).join('\n');
  } catch {
    return '';
  }
}

/** Waits for the child's `{ type: 'ready' }` IPC message. */
function ready<T>(child: ChildProcess, what: string, logFile: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what} did not start within 60 s:\n${tail(logFile)}`)), 60_000);
    child.on('message', (m: { type?: string }) => m.type === 'ready' && (clearTimeout(t), resolve(m as T)));
    child.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`${what} exited (code ${code}) before it was ready:\n${tail(logFile)}`));
    });
  });
}

function nodeChild(script: string, args: string[], env: Record<string, string>, logName: string): { child: ChildProcess; logFile: string } {
  const logFile = join(TMP, logName);
  const fd = openSync(logFile, 'a');
  // The children's config comes only from us: drop any UTILMETA_PROXY_* of this shell.
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('UTILMETA_PROXY_')));
  const compiled = script.endsWith('.mjs'); // runs dist/ without a loader, as production does
  const extra = compiled && args_nodeFlags ? args_nodeFlags.split(/\s+/).filter(Boolean) : [];
  const loader = compiled ? [] : ['--import', 'tsx'];
  const child = track(spawn(process.execPath, ['--expose-gc', ...extra, ...loader, join(HERE, script), ...args], {
    stdio: ['ignore', fd, fd, 'ipc'], env: { ...base, ...env },
  }));
  closeSync(fd);
  return { child, logFile };
}

// ---- /proc readings --------------------------------------------------------------------------

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

function procStat(pid: number): string[] | null {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return s.slice(s.lastIndexOf(')') + 2).split(' '); // fields from #3 (state) on
  } catch {
    return null;
  }
}

/** Pins every thread of a process and of its direct children (nginx's worker) to `cpus`. */
function pin(pid: number, cpus: string): void {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const f = procStat(Number(entry));
    if (f && (Number(entry) === pid || Number(f[1]) === pid)) {
      const r = spawnSync('taskset', ['-a', '-p', '-c', cpus, entry], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`taskset ${entry}: ${r.stderr.trim()}`);
    }
  }
}

/** CPU ticks (user + system) of a process and its direct children (nginx's worker). */
function cpuTicks(pid: number): number {
  let ticks = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const f = procStat(Number(entry));
    if (f && (Number(entry) === pid || Number(f[1]) === pid)) ticks += Number(f[11]) + Number(f[12]);
  }
  return ticks;
}

function memKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** [steal, total] jiffies of all CPUs: the hypervisor's share shows how noisy this machine is. */
function cpuSteal(): [number, number] {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return [f[7] ?? 0, f.reduce((a, b) => a + b, 0)];
}

const mib = (kib: number) => `${(kib / 1024).toFixed(0)} MiB`;

// ---- machine ---------------------------------------------------------------------------------

function versionOf(cmd: string, args: string[]): string | null {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) return null;
  return `${r.stdout}${r.stderr}`.split('\n')[0].trim();
}

const NGINX = versionOf('nginx', ['-v']);
const WRK = versionOf('wrk', ['-v']);

function machine(): string[] {
  const model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpus()[0]?.model ?? 'unknown';
  return [
    `CPU: ${model}, ${cpus().length} cores`,
    `Node.js ${process.version}; ${NGINX ?? 'nginx: not installed'}; ${WRK?.replace(/ Copyright.*$/, '') ?? 'wrk: not installed'}`,
    `wrk: ${WRK_THREADS} threads; per cell ${ROUNDS} round(s) of ${WARMUP} s warm-up + ${DURATION} s measured, rounds interleaved across cells; median reported`,
    `Load average at the start: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`,
    args.pin
      ? 'Pinned (--pin): the process under test on CPU 0 (the 2-thread rows unpinned), wrk and the upstream on CPU 1'
      : 'Not pinned: every process may run on either CPU (--pin gives steadier µs/req)',
  ];
}

// ---- wrk -------------------------------------------------------------------------------------

interface Scenario {
  label: string;
  connections: number;
  method: 'GET' | 'POST';
  bodyBytes: number;
}

const SMALL32: Scenario = { label: 'GET small, 32 conn', connections: 32, method: 'GET', bodyBytes: 0 };
const SMALL256: Scenario = { label: 'GET small, 256 conn', connections: 256, method: 'GET', bodyBytes: 0 };
const POST32: Scenario = { label: 'POST 16 KiB, 32 conn', connections: 32, method: 'POST', bodyBytes: 16 * 1024 };
const REG32: Scenario = { label: 'GET, registry 1,000 svc × 3 inst, 32 conn', connections: 32, method: 'GET', bodyBytes: 0 };
const SCENARIOS = [SMALL32, SMALL256, POST32, REG32];

interface Target {
  config: string;
  url: string;
  headers: Record<string, string>;
  /** The process between wrk and the upstream (nginx master, proxy node), for CPU%. */
  pid?: number;
  /** File of JWTs to rotate through (one per request). */
  tokens?: string;
}

interface WrkRun {
  rps: number;
  p50: number; // µs
  p99: number; // µs
  /** wrk's error counters: http = responses with status >= 400; the rest are socket errors. */
  errors: Record<ErrorKind, number>;
  cpuMid: number; // % of one core
  cpuUp: number;
}

const ERROR_KINDS = ['http', 'connect', 'read', 'write', 'timeout'] as const;
type ErrorKind = (typeof ERROR_KINDS)[number];

interface Row extends WrkRun {
  scenario: Scenario;
  config: string;
  /** Median over rounds of req/s ÷ nginx's req/s in the same round (null without nginx). */
  vsNginx: number | null;
  /** Median over rounds of the middle process's CPU time per request, µs. */
  usPerReq: number;
}

const DISCOVERY = { 'X-UtilMeta-Proxy-Type': 'discovery', 'X-UtilMeta-Service-Name': SERVICE };
let upstreamPid = 0;

function wrk(target: Target, sc: Scenario, seconds: number): Promise<WrkRun> {
  const env: Record<string, string> = {
    BENCH_METHOD: sc.method,
    BENCH_HEADERS: Object.entries(target.headers).map(([k, v]) => `${k}: ${v}`).join('\n'),
    BENCH_BODY_BYTES: String(sc.bodyBytes),
    BENCH_THREADS: String(WRK_THREADS),
    ...(target.tokens ? { BENCH_TOKENS: target.tokens } : {}),
  };
  const argv = ['-t', String(WRK_THREADS), '-c', String(sc.connections), '-d', `${seconds}s`, '-s', join(HERE, 'wrk.lua'), target.url];
  const before = { mid: target.pid ? cpuTicks(target.pid) : 0, up: cpuTicks(upstreamPid), at: performance.now() };
  const child = track(args.pin
    ? spawn('taskset', ['-c', '1', 'wrk', ...argv], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn('wrk', argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] }));
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => {
      const secs = (performance.now() - before.at) / 1000;
      const pct = (ticks: number) => (ticks / CLK_TCK / secs) * 100;
      const m = /^BENCH (\{.*\})$/m.exec(out);
      if (!m) return reject(new Error(`wrk exited with ${code} without a result:\n${out}`));
      const r = JSON.parse(m[1]) as { requests: number; duration_us: number; p50_us: number; p99_us: number } & Record<ErrorKind, number>;
      resolve({
        rps: r.requests / (r.duration_us / 1e6),
        p50: r.p50_us,
        p99: r.p99_us,
        errors: Object.fromEntries(ERROR_KINDS.map((k) => [k, r[k]])) as Record<ErrorKind, number>,
        cpuMid: target.pid ? pct(cpuTicks(target.pid) - before.mid) : NaN,
        cpuUp: pct(cpuTicks(upstreamPid) - before.up),
      });
    });
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const rows: Row[] = [];

/** One wrk run, preceded by its own warm-up (the previous run was another configuration). */
async function measureOnce(target: Target, sc: Scenario): Promise<WrkRun> {
  await wrk(target, sc, WARMUP);
  return wrk(target, sc, DURATION);
}

function summarize(target: Target, sc: Scenario, runs: WrkRun[], nginxRuns: WrkRun[] | undefined): Row {
  return {
    scenario: sc,
    config: target.config,
    rps: median(runs.map((r) => r.rps)),
    p50: median(runs.map((r) => r.p50)),
    p99: median(runs.map((r) => r.p99)),
    errors: Object.fromEntries(ERROR_KINDS.map((k) => [k, runs.reduce((n, r) => n + r.errors[k], 0)])) as Record<ErrorKind, number>,
    // Per round, then the median: the cells of one scenario run close together in time, so a
    // slow period on this shared machine moves both sides of the ratio.
    vsNginx: nginxRuns ? median(runs.map((r, i) => r.rps / nginxRuns[i].rps)) : null,
    cpuMid: median(runs.map((r) => r.cpuMid)),
    cpuUp: median(runs.map((r) => r.cpuUp)),
    usPerReq: median(runs.map((r) => (r.cpuMid / 100 / r.rps) * 1e6)),
  };
}

// ---- upstream, nginx -------------------------------------------------------------------------

async function startUpstream(): Promise<number[]> {
  const { child, logFile } = nodeChild('upstream.ts', ['3'], {}, 'upstream.log');
  const { ports } = await ready<{ ports: number[] }>(child, 'upstream', logFile);
  upstreamPid = child.pid!;
  return ports;
}

/** bench/floor-proxy.mjs: the smallest relay on the proxy's stack (see that file). */
async function startFloor(mode: 'undici' | 'h1' | 'raw' | 'protocol', upstreamPort: number, listener: 'uws' | 'node' = 'uws'): Promise<{ port: number; pid: number }> {
  const { child, logFile } = nodeChild('floor-proxy.mjs', [mode, String(upstreamPort), listener], {}, `floor-${mode}-${listener}.log`);
  const { port } = await ready<{ port: number }>(child, `floor proxy (${mode}, ${listener})`, logFile);
  return { port, pid: child.pid! };
}

async function startNginx(ports: number[]): Promise<{ port: number; pid: number }> {
  const dir = join(TMP, 'nginx');
  mkdirSync(dir);
  const port = await freePort();
  const servers = (list: number[]) => list.map((p) => `server 127.0.0.1:${p};`).join(' ');
  // Every path nginx writes is inside the temp dir; as root the worker runs as root
  // too, so it can use them (nginx would otherwise switch to nobody).
  writeFileSync(join(dir, 'nginx.conf'), `
worker_processes 1;
${process.getuid?.() === 0 ? 'user root;' : ''}
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  # Keep the 16 KiB POST body in memory; the default 8k buffer spills it to a temp file.
  client_body_buffer_size 64k;
  # wrk and the proxy keep connections for the whole run; nginx closes after 1000 by default.
  keepalive_requests 1000000;
  upstream one { ${servers(ports.slice(0, 1))} keepalive 64; keepalive_requests 1000000; }
  upstream three { ${servers(ports)} keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${port};
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location /three/ { proxy_pass http://three/; }
    location / { proxy_pass http://one; }
  }
}
`);
  const child = track(spawn('nginx', ['-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: 'ignore' }));
  try {
    await waitForPort(port, child);
  } catch (err) {
    throw new Error(`nginx did not start (${(err as Error).message}): ${readFileSync(join(dir, 'error.log'), 'utf8').trim()}`);
  }
  return { port, pid: child.pid! };
}

// ---- databases -------------------------------------------------------------------------------

interface Databases {
  describe: string;
  embedded: boolean;
  /** UTILMETA_PROXY_DB_* for one fresh pair (PostgreSQL) or data directory (embedded). */
  env(tag: string): Record<string, string>;
}

async function databases(): Promise<Databases> {
  const admin = postgres({ ...PG, database: 'postgres', max: 1, connect_timeout: 3, onnotice: () => {} });
  let version: string | null = null;
  try {
    version = (await admin`SHOW server_version`)[0].server_version as string;
  } catch {
    await admin.end({ timeout: 1 }).catch(() => {});
  }
  if (version === null) {
    return {
      describe: `embedded PGlite (PostgreSQL at ${PG.host}:${PG.port} is unreachable)`,
      embedded: true,
      env: (tag) => ({ UTILMETA_PROXY_DATA_DIR: join(TMP, `data-${tag}`) }),
    };
  }
  const base = `umbench_${randomBytes(5).toString('hex')}`;
  const created: string[] = [];
  finalizers.push(async () => {
    try {
      for (const n of created) {
        await admin`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${n} AND pid <> pg_backend_pid()`;
        await admin.unsafe(`DROP DATABASE IF EXISTS "${n}"`);
      }
    } finally {
      await admin.end({ timeout: 2 });
    }
  });
  return {
    describe: `PostgreSQL ${version} at ${PG.host}:${PG.port} (fresh databases, dropped at the end)`,
    embedded: false,
    env(tag) {
      const name = `${base}_${tag}`;
      // The proxy's migrate creates them; remember both names so cleanup drops them.
      for (const n of [name, `${name}_ops`]) if (!created.includes(n)) created.push(n);
      return {
        UTILMETA_PROXY_DB_HOST: PG.host, UTILMETA_PROXY_DB_PORT: String(PG.port), UTILMETA_PROXY_DB_USER: PG.user,
        UTILMETA_PROXY_DB_NAME: name, UTILMETA_PROXY_OPS_DB_NAME: `${name}_ops`,
      };
    },
  };
}

// ---- proxy nodes -----------------------------------------------------------------------------

/** What run.ts asks of a proxy child (bench/proxy-node.mjs) over IPC. */
type ProxyRequest =
  | { id: number; op: 'sql'; db: 'registry' | 'ops'; text: string; params?: unknown[] }
  | { id: number; op: 'refresh' }
  | { id: number; op: 'gc' }
  | { id: number; op: 'close' };

interface ProxyChild {
  origin: string;
  pid: number;
  call<T = unknown>(req: DistributiveOmit<ProxyRequest, 'id'>): Promise<T>;
  sql<T = Record<string, unknown>>(db: 'registry' | 'ops', text: string, params?: unknown[]): Promise<T[]>;
  stop(): Promise<void>;
}
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

let proxyRuns = 0;
async function startProxy(server: 'uws' | 'node', level: string, dbEnv: Record<string, string>, workers = 1, client: 'h1' | 'undici' = 'h1', dist?: string): Promise<ProxyChild> {
  const port = await freePort();
  const { child, logFile } = nodeChild('proxy-node.mjs', [], {
    UTILMETA_PROXY_SERVER: server,
    UTILMETA_PROXY_BIND_HOST: '127.0.0.1',
    UTILMETA_PROXY_BIND_PORT: String(port),
    UTILMETA_PROXY_LOG_LEVEL: level,
    UTILMETA_PROXY_DB_POOL_SIZE: '4', // several nodes run at once; the hot path never queries
    UTILMETA_PROXY_WORKERS: String(workers),
    UTILMETA_PROXY_UPSTREAM_CLIENT: client,
    ...(dist ? { BENCH_DIST: dist } : {}),
    // The benchmark measures the request path; active health probes (which would call every
    // registered instance) stay off.
    UTILMETA_PROXY_HEALTH_PROBE_INTERVAL: '0',
    ...dbEnv,
  }, `proxy-${++proxyRuns}-${server}-${level}.log`);
  const { origin } = await ready<{ origin: string }>(child, `proxy (${server})`, logFile);
  let seq = 0;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  child.on('message', (m: { id?: number; result?: unknown; error?: string }) => {
    const p = m.id === undefined ? undefined : pending.get(m.id);
    if (!p) return;
    pending.delete(m.id!);
    if (m.error !== undefined) p.reject(new Error(m.error));
    else p.resolve(m.result);
  });
  const call = <T>(req: DistributiveOmit<ProxyRequest, 'id'>) =>
    new Promise<T>((resolve, reject) => {
      const id = ++seq;
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      child.send({ ...req, id });
    });
  return {
    origin,
    pid: child.pid!,
    call,
    sql: (db, text, params) => call({ op: 'sql', db, text, params }),
    stop: () => stopChild(child),
  };
}

/** The ops rows a UtilMeta service writes before registering (test/support/ops.ts), then POST /api/registry. */
async function registerInstance(p: ProxyChild, service: string, port: number): Promise<void> {
  const address = `127.0.0.1:${port}`;
  const mac = `02:00:00:${randomBytes(3).toString('hex').replace(/(..)(..)(..)/, '$1:$2:$3')}`;
  const [server] = await p.sql<{ id: string }>('ops', `
    INSERT INTO utilmeta_resource (service, node_id, type, ident, route, remote_id, created_time, data, deprecated, server_id, deleted_time, ref, updated_time)
    VALUES (NULL, NULL, 'server', $1, $2, NULL, now(), '{}'::jsonb, false, NULL, NULL, NULL, NULL) RETURNING id`, [mac, `server/${mac}`]);
  const [inst] = await p.sql<{ id: string }>('ops', `
    INSERT INTO utilmeta_resource (service, node_id, type, ident, route, remote_id, created_time, data, deprecated, server_id, deleted_time, ref, updated_time)
    VALUES ($1, NULL, 'instance', $2, $3, NULL, now(), '{}'::jsonb, false, $4, NULL, NULL, NULL) RETURNING id`,
    [service, address, `instance/${address}`, server.id]);
  const res = await fetch(`${p.origin}/api/registry`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(registrationBody({ name: service, address, instanceId: String(inst.id) })),
  });
  if (res.status !== 200) throw new Error(`registering ${address} failed: ${res.status} ${await res.text()}`);
}

/**
 * `services` × `perService` instances in bulk, with every column as RegistryStore.register
 * writes it (names recorded, app defaults). Hosts are distinct loopback addresses (127.1.x.y:8000,
 * nothing listens there), so even a probe could only reach this machine; the ops resource rows
 * are left out because the registry cache never reads them.
 */
async function bulkRegister(p: ProxyChild, prefix: string, services: number, perService: number): Promise<void> {
  await p.sql('registry', `
    INSERT INTO utilmeta_service (name, node_id, base_url, ops_api, routes, public, created_time, data)
    SELECT $1 || g, NULL, NULL, NULL, NULL, false, now(), '{}'::jsonb FROM generate_series(1, $2::int) g`, [prefix, services]);
  await p.sql('registry', `
    INSERT INTO utilmeta_service_name_record (service_id, name, created_time, deprecated_time)
    SELECT id, name, now(), NULL FROM utilmeta_service WHERE starts_with(name, $1)`, [prefix]);
  await p.sql('registry', `
    INSERT INTO utilmeta_instance (
      host, port, address, base_url, ops_api, resource_id, server_id, remote_id, cwd, weight, connected,
      public, version, version_major, version_minor, version_patch, asynchronous, production, language,
      language_version, utilmeta_version, backend, backend_version, created_time, deprecated, resources,
      resources_etag, data, avg_load, avg_time, avg_rps, service_id)
    SELECT a.host::inet, 8000, a.host || ':8000', 'http://' || a.host || ':8000/api', 'http://' || a.host || ':8000/api/ops',
      (900000000 + a.n)::text, NULL, NULL, '/srv/app', 1, true,
      false, '1.2.3', 1, 2, 3, true, false, 'python',
      '3.11.2', '2.9.0', 'starlette', '0.26.1', now(), false, NULL,
      NULL, '{}'::jsonb, 0, 0, 0, a.service_id
    FROM (
      SELECT s.id AS service_id, x.n, '127.' || (1 + ((x.n >> 16) & 127)) || '.' || ((x.n >> 8) & 255) || '.' || (x.n & 255) AS host
      FROM (SELECT id, (row_number() OVER (ORDER BY id))::int AS rn FROM utilmeta_service WHERE starts_with(name, $1)) s,
           LATERAL (SELECT (s.rn - 1) * $2::int + k AS n FROM generate_series(1, $2::int) k) x
    ) a`, [prefix, perService]);
  await p.sql('registry', `SELECT pg_notify($1, 'bench bulk insert')`, [REGISTRY_CHANNEL]);
}

/** Reloads until the node's snapshot holds `instances` (a NOTIFY-driven load may be in flight). */
async function reloadUntil(p: ProxyChild, instances: number): Promise<void> {
  for (let i = 0; i < 20; i++) {
    const r = await p.call<{ instances: number }>({ op: 'refresh' });
    if (r.instances === instances) return;
    await new Promise((res) => setTimeout(res, 200));
  }
  throw new Error(`the registry did not reach ${instances} instances`);
}

/** One request before measuring: a misconfigured cell would otherwise report fast 4xx/5xx. */
async function check(target: Target): Promise<void> {
  const headers = { ...target.headers };
  if (target.tokens) headers.Authorization = `Bearer ${readFileSync(target.tokens, 'utf8').split('\n')[0]}`;
  let last = '';
  // The supervisor directory and registry load asynchronously: allow a few seconds.
  for (let i = 0; i < 30; i++) {
    const res = await fetch(target.url, { headers });
    last = `${res.status} ${await res.text()}`;
    if (res.status === 200) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${target.config}: ${target.url} answers ${last}`);
}

// ---- the run ---------------------------------------------------------------------------------

const notes: string[] = [];
const memory: Array<{ config: string; rss: number; hwm: number }> = [];

/**
 * A proxy node with its own fresh databases, the bench service registered through the
 * HTTP API (one instance per given upstream port) and a connected supervisor row for
 * NODE_ID. With `bulk`, 999 more services × 3 instances are written in bulk.
 */
async function benchProxy(dbs: Databases, server: 'uws' | 'node', level: string, ports: number[], publicKey: string, bulk = false, workers = 1, client: 'h1' | 'undici' = 'h1', dist?: { dir: string; tag: string }): Promise<ProxyChild> {
  const name = `${server}_${level}${bulk ? '_reg' : ''}${workers > 1 ? `_w${workers}` : ''}${client === 'undici' ? '_undici' : ''}${dist ? `_${dist.tag}` : ''}`;
  const p = await startProxy(server, level, dbs.env(name), workers, client, dist?.dir);
  for (const port of ports) await registerInstance(p, SERVICE, port);
  // Every column as Supervisor.objects.create would write it (ops schema 2.9).
  await p.sql('ops', `
    INSERT INTO utilmeta_supervisor (service, node_id, ident, backup_urls, base_url, local, public_key, init_key,
      created_time, ops_api, url, default_timeout, heartbeat_interval, last_heartbeat, latency, connected, disabled,
      alert_settings, report_settings, settings, data, resources_etag)
    VALUES ($1, $2, NULL, '[]'::jsonb, $3, false, $4, NULL,
      now(), $5, NULL, NULL, NULL, NULL, NULL, true, false,
      '{}'::jsonb, '{}'::jsonb, '{}'::jsonb, '{}'::jsonb, NULL)`,
    [SERVICE, NODE_ID, SPV_BASE_URL, publicKey, `http://127.0.0.1:${ports[0]}/api/ops`]);
  if (bulk) {
    await bulkRegister(p, 'svc-', 999, 3);
    await reloadUntil(p, 999 * 3 + ports.length);
  }
  return p;
}

async function main(): Promise<void> {
  const header = machine();
  for (const l of header) console.log(l);
  if (!WRK) {
    console.log('wrk: not installed (apt-get install wrk) — nothing can be measured');
    return;
  }
  // The proxy children run the compiled dist/ (as `npm start` does): build it when stale.
  const built = spawnSync(process.execPath, [join(HERE, '..', 'scripts', 'build.mjs'), '--quiet'], { stdio: 'inherit' });
  if (built.status !== 0) throw new Error('npm run build failed: the benchmark runs the compiled dist/');
  const ports = await startUpstream();
  const nginx = NGINX ? await startNginx(ports) : null;
  if (!nginx) {
    const line = 'nginx: not installed (apt-get install nginx-light) — skipped';
    console.log(line);
    notes.push(line);
  }
  const dbs = await databases();
  header.push(`Database: ${dbs.describe}`);
  if (dbs.embedded) notes.push('Memory figures include the embedded PGlite database, which runs inside each proxy process.');
  console.log(header.at(-1));

  // Node tokens for the operations path: one reused token (the platform reuses a token for
  // its lifetime, so the proxy's verified-signature cache hits), and more distinct tokens
  // than that cache holds (256) for wrk to cycle through, so every request pays an RSA verify.
  const keys = await generateRsaKeyPair(NODE_ID);
  const iss = new URL(SPV_BASE_URL).origin;
  const exp = Math.floor(Date.now() / 1000) + 10 * 365 * 86400;
  const sign = () => signJwt({ iss, nid: NODE_ID, exp, iat: Math.floor(Date.now() / 1000), jti: randomUUID() }, keys.privateKey);
  const token = await sign();
  const tokensFile = join(TMP, 'tokens.txt');
  const many: string[] = [];
  for (let i = 0; i < 600; i++) many.push(await sign());
  writeFileSync(tokensFile, many.join('\n') + '\n');

  // Every process is started up front and every cell is measured once per round, the rounds
  // interleaved: on a shared machine a slow period then hits all configurations alike.
  const cells: Array<{ target: Target; sc: Scenario; runs: WrkRun[] }> = [];
  const add = (target: Target, ...scs: Scenario[]) => scs.forEach((sc) => cells.push({ target, sc, runs: [] }));
  const proxies: Array<{ name: string; p: ProxyChild }> = [];
  const discovery = (p: ProxyChild, config: string): Target => ({ config, url: `${p.origin}/api/proxy/bench`, headers: { ...DISCOVERY }, pid: p.pid });

  for (const sc of SCENARIOS) {
    add({ config: 'direct', url: `http://127.0.0.1:${ports[0]}/api/bench`, headers: { ...DISCOVERY } }, sc);
    if (nginx) {
      const path = sc === REG32 ? '/three/api/bench' : '/api/bench';
      add({ config: 'nginx', url: `http://127.0.0.1:${nginx.port}${path}`, headers: { ...DISCOVERY }, pid: nginx.pid }, sc);
    }
  }
  // The floor: what a 40-line relay on the same runtime costs (no chain at all).
  const floors = [
    ['undici', 'uws', 'floor: uWS + undici relay'],
    ['h1', 'uws', 'floor: uWS + h1 client relay'],
    ['raw', 'uws', 'floor: uWS + bare HTTP/1.1 client'],
    // What the protocol asks of any relay on this stack (headers both ways, X-Forwarded-For, the proxy's response headers).
    ['protocol', 'uws', 'protocol floor: uWS + h1, protocol headers'],
    ['h1', 'node', 'floor: node:http + h1 client relay'],
    ['protocol', 'node', 'protocol floor: node:http + h1, protocol headers'],
  ] as const;
  for (const [mode, listener, config] of floors) {
    const f = await startFloor(mode, ports[0], listener);
    add({ config, url: `http://127.0.0.1:${f.port}/api/bench`, headers: { ...DISCOVERY }, pid: f.pid }, SMALL32, SMALL256);
  }
  console.log('setting up proxy nodes…');
  for (const [i, dir] of (args.compare ?? []).entries()) {
    const label = `proxy (uws), ${dir.replace(/\/dist\/?$/, '').split('/').pop()}`;
    const p = await benchProxy(dbs, 'uws', 'warn', ports.slice(0, 1), keys.publicKey, false, 1, 'h1', { dir, tag: `cmp${i}` });
    proxies.push({ name: label, p });
    add(discovery(p, label), SMALL32, SMALL256);
  }
  for (const [server, name] of [['uws', 'proxy (uws)'], ['node', 'proxy (node:http)']] as const) {
    const p = await benchProxy(dbs, server, 'warn', ports.slice(0, 1), keys.publicKey);
    proxies.push({ name: `${name}, 1 instance`, p });
    add(discovery(p, name), SMALL32, SMALL256, POST32);
    const ops: Target = {
      config: `${name}, operations + node JWT`,
      url: `${p.origin}/api/proxy/bench`,
      headers: { 'X-UtilMeta-Proxy-Type': 'operations', 'X-UtilMeta-Node-Id': NODE_ID, Authorization: `Bearer ${token}` },
      pid: p.pid,
    };
    const { Authorization: _, ...noAuth } = ops.headers;
    add(ops, SMALL32);
    add({ ...ops, config: `${name}, operations + new JWT per request`, headers: noAuth, tokens: tokensFile }, SMALL32);

    // The same node with undici carrying every upstream request (UTILMETA_PROXY_UPSTREAM_CLIENT=undici).
    const und = await benchProxy(dbs, server, 'warn', ports.slice(0, 1), keys.publicKey, false, 1, 'undici');
    proxies.push({ name: `${name}, undici client`, p: und });
    add(discovery(und, `${name}, undici client`), SMALL32);

    // One JSON log line per request (LOG_LEVEL=info, to a file), the production logger.
    const info = await benchProxy(dbs, server, 'info', ports.slice(0, 1), keys.publicKey);
    proxies.push({ name: `${name}, LOG_LEVEL=info`, p: info });
    add(discovery(info, `${name}, LOG_LEVEL=info`), SMALL32);

    if (server === 'uws') {
      // Two listener threads on one port in one process (UTILMETA_PROXY_WORKERS=2).
      const w2 = await benchProxy(dbs, server, 'warn', ports.slice(0, 1), keys.publicKey, false, 2);
      proxies.push({ name: `${name}, 2 listener threads`, p: w2 });
      add(discovery(w2, `${name}, 2 threads`), SMALL32, SMALL256);
    }
    // 1,000 services × 3 instances; the loaded service's three instances are all the upstream.
    const reg = await benchProxy(dbs, server, 'warn', ports, keys.publicKey, true);
    proxies.push({ name: `${name}, 3,000 instances`, p: reg });
    add(discovery(reg, name), REG32);
  }
  if (args.only) {
    const re = new RegExp(args.only);
    cells.splice(0, cells.length, ...cells.filter((c) => re.test(`${c.sc.label} · ${c.target.config}`)));
  }
  for (const c of cells) await check(c.target);
  if (args.pin) {
    pin(upstreamPid, '1');
    // Two listener threads on one CPU would measure nothing: that row stays unpinned.
    for (const c of cells) if (c.target.pid && !/threads/.test(c.target.config)) pin(c.target.pid, '0');
  }
  if (args.hold) {
    for (const c of cells) {
      const h = Object.entries(c.target.headers).map(([k, v]) => ` -H '${k}: ${v}'`).join('');
      console.log(`${c.sc.label} · ${c.target.config}${c.target.pid ? ` (pid ${c.target.pid})` : ''}\n  wrk -t${WRK_THREADS} -c${c.sc.connections}${h} ${c.target.url}`);
    }
    console.log('\nholding; Ctrl-C stops everything and drops the databases');
    await new Promise(() => {});
  }

  const perRun = WARMUP + DURATION;
  console.log(`measuring ${cells.length} cells × ${ROUNDS} rounds ≈ ${Math.ceil((cells.length * ROUNDS * perRun) / 60)} min\n`);
  const steal0 = cpuSteal();
  for (let round = 1; round <= ROUNDS; round++) {
    for (const sc of SCENARIOS) {
      for (const c of cells.filter((x) => x.sc === sc)) {
        const r = await measureOnce(c.target, sc);
        c.runs.push(r);
        console.error(`  round ${round}/${ROUNDS}  ${sc.label.padEnd(42)} ${c.target.config.padEnd(52)} ${Math.round(r.rps).toLocaleString('en-US').padStart(7)} req/s`);
      }
    }
  }
  const steal1 = cpuSteal();
  const stealPct = ((steal1[0] - steal0[0]) / Math.max(1, steal1[1] - steal0[1])) * 100;
  for (const c of cells) {
    const ref = cells.find((x) => x.sc === c.sc && x.target.config === 'nginx');
    rows.push(summarize(c.target, c.sc, c.runs, ref?.runs));
  }
  for (const { name, p } of proxies) {
    memory.push({ config: name, rss: memKiB(p.pid, 'VmRSS'), hwm: memKiB(p.pid, 'VmHWM') });
    await p.stop();
  }

  // Memory of a registry of 10,000 instances (own databases), no load.
  const p = await startProxy('uws', 'warn', dbs.env('r10k'));
  try {
    await p.call({ op: 'gc' });
    const empty = memKiB(p.pid, 'VmRSS');
    await bulkRegister(p, 'svc-', 2500, 4);
    await reloadUntil(p, 10_000);
    const heap = await p.call<NodeJS.MemoryUsage>({ op: 'gc' });
    const full = memKiB(p.pid, 'VmRSS');
    notes.push(`Proxy (uws) RSS after GC, no load: empty registry ${mib(empty)}; 10,000 instances in 2,500 services ${mib(full)} (+${mib(full - empty)}); V8 heap used then ${mib(heap.heapUsed / 1024)}.`);
  } finally {
    await p.stop();
  }
  header.push(`During the measurements: CPU steal ${stealPct.toFixed(0)}% (time the hypervisor gave to other guests); load average at the end ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  console.log(`\n${header.at(-1)}`);
  report(header);
}

// ---- output ----------------------------------------------------------------------------------

function report(header: string[]): void {
  const ms = (us: number) => `${(us / 1000).toFixed(2)} ms`;
  const pct = (x: number) => (Number.isNaN(x) ? '–' : `${Math.round(x)}%`);
  const errors = (e: Record<ErrorKind, number>) => {
    const parts = ERROR_KINDS.filter((k) => e[k] > 0).map((k) => `${e[k]} ${k}`);
    return parts.length === 0 ? '0' : parts.join(', ');
  };
  const head = ['Scenario', 'Configuration', 'req/s', 'p50', 'p99', 'errors', 'vs nginx', 'CPU mid / upstream', 'mid CPU µs/req'];
  const body = rows
    .sort((a, b) => SCENARIOS.indexOf(a.scenario) - SCENARIOS.indexOf(b.scenario))
    .map((r) => [
      r.scenario.label, r.config, Math.round(r.rps).toLocaleString('en-US'), ms(r.p50), ms(r.p99), errors(r.errors),
      r.vsNginx === null ? '–' : `${r.vsNginx.toFixed(2)}×`, `${pct(r.cpuMid)} / ${pct(r.cpuUp)}`,
      Number.isNaN(r.usPerReq) ? '–' : String(Math.round(r.usPerReq)),
    ]);
  const memHead = ['Proxy process', 'RSS after load', 'peak RSS'];
  const memBody = memory.map((m) => [m.config, mib(m.rss), mib(m.hwm)]);
  const footnotes = [
    'errors: summed over the measured rounds; http = responses with status ≥ 400 (how wrk counts them), the others are socket errors (timeout: no answer within 2 s).',
    'CPU: the process between wrk and the upstream ("mid": nginx master + worker, or the proxy node) / the upstream, in % of one core; µs/req = mid CPU time per request, steadier than req/s when neighbours steal CPU.',
    '"vs nginx": req/s ÷ nginx\'s req/s in the same scenario and round, median over rounds (info-logging and operations rows are GET small, 32 conn).',
    ...notes,
  ];

  const text = (h: string[], b: string[][]) => {
    const w = h.map((_, i) => Math.max(h[i].length, ...b.map((r) => r[i].length)));
    const line = (r: string[]) => r.map((c, i) => (i >= 2 && i < h.length ? c.padStart(w[i]) : c.padEnd(w[i]))).join('  ');
    return [line(h), w.map((n) => '-'.repeat(n)).join('  '), ...b.map(line)].join('\n');
  };
  const md = (h: string[], b: string[][]) =>
    [`| ${h.join(' | ')} |`, `|${h.map((_, i) => (i >= 2 ? ' ---: ' : ' --- ')).join('|')}|`, ...b.map((r) => `| ${r.join(' | ')} |`)].join('\n');

  console.log('');
  console.log(text(head, body));
  console.log('');
  console.log(text(memHead, memBody));
  console.log('');
  for (const f of footnotes) console.log(f);

  mkdirSync(join(HERE, 'results'), { recursive: true });
  writeFileSync(join(HERE, 'results', 'latest.md'), [
    `# utilmeta-proxy benchmark (${new Date().toISOString().slice(0, 10)})`, '',
    ...header.map((l) => `- ${l}`), '',
    md(head, body), '',
    md(memHead, memBody), '',
    ...footnotes.map((f) => `- ${f}`), '',
  ].join('\n'));
  console.log(`\nwritten to ${join('bench', 'results', 'latest.md')}`);
}

main()
  .catch((err) => {
    if (interrupted) return; // the signal handler reports and exits
    console.error(`bench failed: ${(err as Error).stack ?? err}`);
    process.exitCode = 1;
  })
  .finally(() => cleanup());
