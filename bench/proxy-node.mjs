// One real proxy node in a child process of bench/run.ts, configured from the
// UTILMETA_PROXY_* environment exactly like the CLI. Plain JavaScript over the compiled
// dist/ (run.ts builds it first) and started without a TypeScript loader, so the
// benchmark measures the process production runs (a loader adds a thread and its heap).
// run.ts drives it over IPC: SQL against its own database clients (so setup works the same on PostgreSQL and
// on the embedded PGlite, which only this process can open), registry reloads
// and GC for the memory numbers.
import v8 from 'node:v8';

// As the launcher (bin/utilmeta-proxy.js) does, so the benchmark measures what production runs.
if (!process.env.BENCH_PRETENURING) v8.setFlagsFromString('--no-allocation-site-pretenuring');
// BENCH_DIST: another build's dist/ (an earlier commit's), for an A/B in the same run.
const DIST = process.env.BENCH_DIST ? new URL(`file://${process.env.BENCH_DIST.replace(/\/?$/, '/')}`) : new URL('../dist/', import.meta.url);
const { parseConfig } = await import(new URL('config/index.js', DIST).href);
const { createLogger } = await import(new URL('observability/log.js', DIST).href);
const { startNode } = await import(new URL('runtime/index.js', DIST).href);
const { openDatabase } = await import(new URL('db/index.js', DIST).href);

const config = parseConfig(process.env);
// pretty: false even on a terminal, so `info` measures the production JSON logger.
const log = createLogger({ level: config.logLevel, pretty: false });
// With listener threads the nodes live in the threads: this process keeps its own
// database clients for the benchmark's setup SQL, and the threads reload on NOTIFY.
const node = config.workers > 1 ? await threadsNode() : await startNode(config, log);

/** @returns {Promise<any>} */
async function threadsNode() {
  // Loaded only here: a --compare build may predate listener threads.
  const { startWorkers } = await import(new URL('runtime/workers.js', DIST).href);
  const group = await startWorkers(config, log, config.workers);
  const db = await openDatabase(config.db, log);
  return {
    origin: group.origin,
    listener: { kind: 'uws' },
    db,
    registry: { generation: -1, refresh: async () => ({ services: [], instanceCount: -1 }) },
    close: async () => {
      await group.close();
      await db.close();
    },
  };
}

/** @type {Promise<void> | null} */
let closing = null;
const shutdown = () => (closing ??= node.close().finally(() => process.exit(0)));
process.on('disconnect', shutdown);
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

/** @param {{ id: number; op: string; db?: 'registry' | 'ops'; text?: string; params?: unknown[] }} msg */
async function run(msg) {
  switch (msg.op) {
    case 'sql': {
      const rows = await node.db[msg.db].unsafe(msg.text, msg.params ?? []);
      return rows.map((/** @type {object} */ r) => ({ ...r }));
    }
    case 'refresh': {
      const snap = await node.registry.refresh();
      return { generation: node.registry.generation, services: snap.services.length, instances: snap.instanceCount };
    }
    case 'gc':
      // Started with --expose-gc; two passes let weak/finalized objects go too.
      globalThis.gc?.();
      globalThis.gc?.();
      return process.memoryUsage();
    case 'close':
      await shutdown();
      return null;
  }
}

process.on('message', (/** @type {any} */ msg) => {
  run(msg).then(
    (result) => process.send?.({ id: msg.id, result }),
    (err) => process.send?.({ id: msg.id, error: err.message }),
  );
});
process.send?.({ type: 'ready', origin: node.origin, listener: node.listener.kind });
