// Test environment: fresh databases on the real PostgreSQL of this machine,
// proxy nodes started through the same runtime as the CLI, quiet logs.
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import postgres from 'postgres';
import { parseConfig, type Config } from '../../src/config/index.ts';
import { createLogger, type Logger } from '../../src/observability/log.ts';
import { startNode, type ProxyNode, type StartOptions } from '../../src/runtime/index.ts';
import type { ListenerKind } from '../../src/http/types.ts';

export const PG_HOST = process.env.TEST_PG_HOST ?? '127.0.0.1';
export const PG_PORT = Number(process.env.TEST_PG_PORT ?? 5432);
export const PG_USER = process.env.TEST_PG_USER ?? 'postgres';

/** Both listeners, so every HTTP test runs on each. */
export const LISTENERS: ListenerKind[] = ['uws', 'node'];

export function adminSql(database = 'postgres'): postgres.Sql {
  return postgres({ host: PG_HOST, port: PG_PORT, user: PG_USER, database, max: 2, onnotice: () => {} });
}

export interface TestDatabases {
  registryName: string;
  opsName: string;
  drop(): Promise<void>;
}

/** Names for a fresh pair of databases (migrate creates them); drop() removes them. */
export function freshDatabases(): TestDatabases {
  const base = `umtest_${randomBytes(5).toString('hex')}`;
  const names = { registryName: base, opsName: `${base}_ops` };
  return {
    ...names,
    async drop() {
      const sql = adminSql();
      try {
        for (const n of [names.registryName, names.opsName]) {
          await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${n} AND pid <> pg_backend_pid()`;
          await sql.unsafe(`DROP DATABASE IF EXISTS "${n}"`);
        }
      } finally {
        await sql.end();
      }
    },
  };
}

/** Collects log lines (JSON) so tests can assert on them. */
export class LogSink {
  lines: Array<Record<string, unknown>> = [];
  readonly stream = new Writable({
    write: (chunk, _enc, cb) => {
      for (const line of String(chunk).split('\n')) if (line) this.lines.push(JSON.parse(line));
      cb();
    },
  });
  text(): string {
    return this.lines.map((l) => JSON.stringify(l)).join('\n');
  }
}

export function testLogger(sink = new LogSink(), level = process.env.TEST_LOG_LEVEL ?? 'info'): Logger {
  return createLogger({ level, stream: sink.stream });
}

export function testConfig(dbs: TestDatabases | null, env: Record<string, string> = {}): Config {
  const base: Record<string, string> = {
    UTILMETA_PROXY_BIND_HOST: '127.0.0.1',
    UTILMETA_PROXY_BIND_PORT: '0',
    UTILMETA_PROXY_BASE_URL: 'http://127.0.0.1:8888/api',
    UTILMETA_PROXY_DEFAULT_TIMEOUT: '5',
    UTILMETA_PROXY_REGISTRY_REFRESH: '60',
  };
  if (dbs) {
    Object.assign(base, {
      UTILMETA_PROXY_DB_HOST: PG_HOST,
      UTILMETA_PROXY_DB_PORT: String(PG_PORT),
      UTILMETA_PROXY_DB_USER: PG_USER,
      UTILMETA_PROXY_DB_NAME: dbs.registryName,
      UTILMETA_PROXY_OPS_DB_NAME: dbs.opsName,
      UTILMETA_PROXY_DB_POOL_SIZE: '4',
    });
  }
  return parseConfig({ ...base, ...env });
}

export interface TestNode extends ProxyNode {
  logs: LogSink;
}

export async function startTestNode(server: ListenerKind, dbs: TestDatabases | null, env: Record<string, string> = {}, opts: StartOptions = {}): Promise<TestNode> {
  const logs = new LogSink();
  const config = testConfig(dbs, { UTILMETA_PROXY_SERVER: server, ...env });
  const node = await startNode(config, testLogger(logs, env.UTILMETA_PROXY_LOG_LEVEL ?? process.env.TEST_LOG_LEVEL ?? "info"), opts);
  if (node.listener.kind !== server) throw new Error(`asked for the ${server} listener, got ${node.listener.kind}`);
  return Object.assign(node, { logs });
}
