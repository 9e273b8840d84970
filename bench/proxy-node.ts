// One real proxy node in a child process of bench/run.ts, configured from the
// UTILMETA_PROXY_* environment exactly like the CLI. run.ts drives it over IPC:
// SQL against its own database clients (so setup works the same on PostgreSQL and
// on the embedded PGlite, which only this process can open), registry reloads
// and GC for the memory numbers.
import v8 from 'node:v8';
import { parseConfig } from '../src/config/index.ts';

// As the launcher (bin/utilmeta-proxy.js) does, so the benchmark measures what production runs.
if (!process.env.BENCH_PRETENURING) v8.setFlagsFromString('--no-allocation-site-pretenuring');
import { createLogger } from '../src/observability/log.ts';
import { startNode } from '../src/runtime/index.ts';
import { startWorkers } from '../src/runtime/workers.ts';
import { openDatabase } from '../src/db/index.ts';

export type ProxyRequest =
  | { id: number; op: 'sql'; db: 'registry' | 'ops'; text: string; params?: unknown[] }
  | { id: number; op: 'refresh' }
  | { id: number; op: 'gc' }
  | { id: number; op: 'close' };

const config = parseConfig(process.env);
// pretty: false even on a terminal, so `info` measures the production JSON logger.
const log = createLogger({ level: config.logLevel, pretty: false });
// With listener threads the nodes live in the threads: this process keeps its own
// database clients for the benchmark's setup SQL, and the threads reload on NOTIFY.
const node = config.workers > 1 ? await threadsNode() : await startNode(config, log);

async function threadsNode() {
  const group = await startWorkers(config, log, config.workers);
  const db = await openDatabase(config.db, log);
  return {
    origin: group.origin,
    listener: { kind: 'uws' as const },
    db,
    registry: { generation: -1, refresh: async () => ({ services: [] as unknown[], instanceCount: -1 }) },
    close: async () => {
      await group.close();
      await db.close();
    },
  };
}

let closing: Promise<void> | null = null;
const shutdown = () => (closing ??= node.close().finally(() => process.exit(0)));
process.on('disconnect', shutdown);
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

async function run(msg: ProxyRequest): Promise<unknown> {
  switch (msg.op) {
    case 'sql': {
      const rows = await node.db[msg.db].unsafe(msg.text, (msg.params ?? []) as never[]);
      return rows.map((r) => ({ ...r }));
    }
    case 'refresh': {
      const snap = await node.registry.refresh();
      return { generation: node.registry.generation, services: snap.services.length, instances: snap.instanceCount };
    }
    case 'gc':
      // Started with --expose-gc; two passes let weak/finalized objects go too.
      (globalThis as { gc?: () => void }).gc?.();
      (globalThis as { gc?: () => void }).gc?.();
      return process.memoryUsage();
    case 'close':
      await shutdown();
      return null;
  }
}

process.on('message', (msg: ProxyRequest) => {
  run(msg).then(
    (result) => process.send?.({ id: msg.id, result }),
    (err: Error) => process.send?.({ id: msg.id, error: err.message }),
  );
});
process.send?.({ type: 'ready', origin: node.origin, listener: node.listener.kind });
