// UTILMETA_PROXY_WORKERS=N: N uWebSockets.js listener threads on one port (the
// kernel spreads connections across them with SO_REUSEPORT), in one process.
// Each thread is a whole node (its own live views, pools and upstream client);
// the main thread migrates once, serves the one metrics endpoint (the threads'
// registries summed, the process's own metrics once) and stops them all.
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import client from 'prom-client';
import type { Logger } from 'pino';
import type { Config } from '../config/index.ts';
import { openDatabase, migrate } from '../db/index.ts';
import type { MetricsServer } from '../observability/metrics.ts';
import { startMetricsServer } from '../observability/metrics.ts';

export interface WorkerGroup {
  /** The port every thread listens on. */
  port: number;
  origin: string;
  threads: number;
  close(): Promise<void>;
  /** Every thread stops accepting and drains its requests in flight (see ProxyNode.shutdown), then exits. */
  shutdown(drainMs?: number): Promise<boolean>;
}

interface WorkerInit { index: number; port: number; env: Record<string, string | undefined> }
type ToWorker = { op: 'metrics'; id: number } | { op: 'close' } | { op: 'shutdown'; drainMs?: number };
type FromWorker =
  | { type: 'ready'; port: number; origin: string }
  | { type: 'metrics'; id: number; json: unknown }
  | { type: 'failed'; message: string }
  | { type: 'closed'; drained?: boolean };

/** The file that runs in each listener thread (this one, compiled or not). */
const ENTRY = new URL(import.meta.url);

export async function startWorkers(config: Config, log: Logger, count: number): Promise<WorkerGroup> {
  // Migrate once here; the threads start without migrating.
  const db = await openDatabase(config.db, log);
  try {
    const report = await migrate(config.db, db, log);
    log.info({ ...report }, 'database ready');
  } finally {
    await db.close();
  }
  const workers: Worker[] = [];
  const pending = new Map<number, (json: unknown) => void>();
  let nextId = 0;
  const spawnOne = (index: number, port: number) =>
    new Promise<{ worker: Worker; port: number; origin: string }>((resolve, reject) => {
      const workerData: WorkerInit = { index, port, env: { ...process.env } };
      // Running from sources (development, tests), the thread registers the TypeScript
      // loader before loading this file; compiled, it loads the file directly.
      const worker = ENTRY.pathname.endsWith('.ts')
        ? new Worker(`import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(ENTRY.href)}); })`, { eval: true, workerData })
        : new Worker(ENTRY, { workerData });
      const onMessage = (m: FromWorker) => {
        if (m.type === 'ready') resolve({ worker, port: m.port, origin: m.origin });
        else if (m.type === 'failed') reject(new Error(`listener thread ${index}: ${m.message}`));
        else if (m.type === 'metrics') pending.get(m.id)?.(m.json);
      };
      worker.on('message', onMessage);
      worker.once('error', reject);
      worker.once('exit', (code) => {
        if (code !== 0) log.error({ thread: index, code }, 'listener thread exited');
      });
    });
  try {
    const first = await spawnOne(1, config.bindPort);
    workers.push(first.worker);
    for (let i = 2; i <= count; i++) workers.push((await spawnOne(i, first.port)).worker);
    log.info({ threads: count, port: first.port }, 'listener threads running');

    let metricsServer: MetricsServer | null = null;
    if (config.metricsPort !== null) {
      const own = new client.Registry();
      client.collectDefaultMetrics({ register: own, prefix: 'utilmeta_proxy_' });
      const ask = (w: Worker) => new Promise<unknown>((resolve) => {
        const id = ++nextId;
        const timer = setTimeout(() => {
          pending.delete(id);
          resolve([]);
        }, 2000);
        pending.set(id, (json) => {
          clearTimeout(timer);
          pending.delete(id);
          resolve(json);
        });
        w.postMessage({ op: 'metrics', id } satisfies ToWorker);
      });
      const sum = {
        registry: own,
        async text(): Promise<string> {
          const parts = (await Promise.all(workers.map(ask))) as object[][];
          const merged = client.AggregatorRegistry.aggregate([...parts, await own.getMetricsAsJSON()]);
          return merged.metrics();
        },
      };
      metricsServer = await startMetricsServer(sum, config.metricsHost, config.metricsPort);
      log.info({ address: `http://${config.metricsHost}:${metricsServer.port}/metrics` }, 'metrics listening');
    }
    let closed: Promise<boolean> | null = null;
    // Each thread reports whether it drained everything before it exits.
    const stopAll = (op: ToWorker) => (closed ??= (async () => {
      const results = await Promise.all(workers.map((w) => new Promise<boolean>((resolve) => {
        let drained = true;
        w.on('message', (m: FromWorker) => {
          if (m.type === 'closed' && m.drained === false) drained = false;
        });
        w.once('exit', () => resolve(drained));
        w.postMessage(op);
      })));
      await metricsServer?.close();
      return results.every(Boolean);
    })());
    return {
      port: first.port,
      origin: first.origin,
      threads: count,
      close: async () => void (await stopAll({ op: 'close' })),
      shutdown: (drainMs?: number) => stopAll({ op: 'shutdown', drainMs }),
    };
  } catch (err) {
    await Promise.all(workers.map((w) => w.terminate()));
    throw err;
  }
}

/** Body of a listener thread. */
async function runThread(init: WorkerInit): Promise<void> {
  const port = parentPort!;
  try {
    const { parseConfig } = await import('../config/index.ts');
    const { createLogger } = await import('../observability/log.ts');
    const { startNode } = await import('./index.ts');
    const config = parseConfig(init.env);
    const log = createLogger({ level: config.logLevel, pretty: false }).child({ thread: init.index });
    const node = await startNode({ ...config, server: 'uws' }, log, {
      migrate: false,
      selfConnect: init.index === 1,
      metricsServer: false,
      defaultMetrics: false,
      port: init.port,
    });
    port.on('message', (m: ToWorker) => {
      if (m.op === 'metrics') {
        void node.metrics.registry.getMetricsAsJSON().then((json) => port.postMessage({ type: 'metrics', id: m.id, json } satisfies FromWorker));
      } else if (m.op === 'close') {
        void node.close().finally(() => {
          port.postMessage({ type: 'closed' } satisfies FromWorker);
          process.exit(0);
        });
      } else if (m.op === 'shutdown') {
        void node.shutdown(m.drainMs).then((drained) => {
          port.postMessage({ type: 'closed', drained } satisfies FromWorker);
          process.exit(0);
        }, () => process.exit(1));
      }
    });
    port.postMessage({ type: 'ready', port: node.listener.port, origin: node.origin } satisfies FromWorker);
  } catch (err) {
    port.postMessage({ type: 'failed', message: (err as Error).message } satisfies FromWorker);
  }
}

if (!isMainThread && (workerData as WorkerInit | undefined)?.index) void runThread(workerData as WorkerInit);
