// utilmeta-proxy CLI: start | migrate | check | export-env | authz | version.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { request } from 'undici';
import { loadConfig, ConfigError, VARIABLES, PREFIX, type Config } from '../config/index.ts';
import { createLogger } from '../observability/log.ts';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const COMMANDS: Record<string, { summary: string; help: string }> = {
  start: {
    summary: 'migrate the databases if needed, then serve the proxy',
    help: `Runs the proxy node: migrates the registry and operations databases (idempotent),
loads the registry into memory, and listens on BIND_HOST:BIND_PORT.
With no UTILMETA_PROXY_DB_HOST, an embedded single-node PostgreSQL (PGlite)
under DATA_DIR is used.`,
  },
  migrate: {
    summary: 'create or check the registry and operations tables, then exit',
    help: `Creates the databases and tables exactly as Django would (schema of
utilmeta 2.9 by default, or 2.8 with UTILMETA_PROXY_OPS_SCHEMA=2.8), with the
django_migrations rows Python services expect. Safe to run from several nodes
at once and to re-run; an existing operations database is detected and never altered.`,
  },
  check: {
    summary: 'report whether the node is live, its database ready and the platform connected',
    help: `Calls GET {BASE_URL}/ and GET {BASE_URL}/readyz of the running node and prints
whether it is live, its database ready and (when configured) connected to the
platform, with the node's platform console URL. Exits 0 when all hold, 1 otherwise.`,
  },
  'export-env': {
    summary: 'print the variables services in the cluster need',
    help: `Prints UTILMETA_PROXY_BASE_URL and UTILMETA_OPERATIONS_DB_* for the services
that register with this proxy and share its operations database.`,
  },
  authz: {
    summary: 'access plane: bootstrap, create-key, gen-master-key, rekey',
    help: 'See `utilmeta-proxy authz --help`.',
  },
  version: { summary: 'print the version', help: 'Prints the utilmeta-proxy version.' },
};

function usage(): string {
  const lines = [
    `utilmeta-proxy ${pkg.version} — intranet proxy and service registry for UtilMeta services`,
    '',
    'Usage: utilmeta-proxy <command> [--env-file FILE] [--help]',
    '',
    'Commands:',
    ...Object.entries(COMMANDS).map(([n, c]) => `  ${n.padEnd(12)}${c.summary}`),
    '',
    'Options:',
    '  --env-file FILE  read variables from FILE (default: ./utilmeta-proxy.env when present);',
    '                   the process environment wins over the file',
    '  -h, --help       show help (also after a command)',
    '',
    `Environment (prefix ${PREFIX}):`,
  ];
  let group = '';
  for (const v of VARIABLES) {
    if (v.group !== group) {
      group = v.group;
      lines.push(`  ${group}:`);
    }
    lines.push(`    ${(PREFIX + v.name).padEnd(38)} ${v.help} [default: ${v.default}]`);
  }
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  // authz has its own subcommands and options (and its own --help).
  if (argv[0] === 'authz') {
    const { authzMain } = await import('../access/cli.ts');
    return authzMain(argv.slice(1));
  }
  const { values, positionals } = parseArgs({
    args: argv,
    options: { 'env-file': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
    strict: true,
  });
  const cmd = positionals[0];
  if (!cmd) {
    console.log(usage());
    return values.help ? 0 : 2;
  }
  const spec = COMMANDS[cmd];
  if (!spec) {
    console.error(`utilmeta-proxy: unknown command '${cmd}' (try --help)`);
    return 2;
  }
  if (values.help) {
    console.log(`Usage: utilmeta-proxy ${cmd} [--env-file FILE]\n\n${spec.help}\n\nSee 'utilmeta-proxy --help' for the environment variables.`);
    return 0;
  }
  if (cmd === 'version') {
    console.log(pkg.version);
    return 0;
  }
  let config: Config;
  try {
    config = loadConfig({ envFile: values['env-file'] ?? undefined });
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`utilmeta-proxy: ${err.message}`);
      return 2;
    }
    throw err;
  }
  if (cmd === 'export-env') return exportEnv(config);
  if (cmd === 'check') return check(config);
  const log = createLogger({ level: config.logLevel });
  if (cmd === 'migrate') {
    const { openDatabase, migrate } = await import('../db/index.ts');
    const db = await openDatabase(config.db, log);
    try {
      const report = await migrate(config.db, db, log);
      console.log(`migrated: registry ${report.registry}, ops ${report.ops} (schema ${report.opsState})` +
        (report.createdDatabases.length ? `; created databases ${report.createdDatabases.join(', ')}` : ''));
      return 0;
    } finally {
      await db.close();
    }
  }
  // start
  if (config.baseUrlDerived) log.warn({ baseUrl: config.baseUrl }, `${PREFIX}BASE_URL is not set; using the listen address`);
  type RunningNode = { close(): Promise<void>; shutdown(drainMs?: number): Promise<boolean> };
  // First signal: a graceful shutdown (readiness false, no new connections,
  // requests in flight finish within DRAIN_TIMEOUT, then pools and databases
  // close, exit 0). A second signal exits at once. The handlers are in place
  // before the node starts: a signal during start-up waits for it, then stops it.
  let startup: Promise<RunningNode> | null = null;
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      log.flush?.();
      process.exit(signal === 'SIGINT' ? 130 : 143);
    }
    stopping = true;
    log.info({ signal, drainMs: config.drainTimeout }, 'shutting down');
    const running = await startup?.catch(() => null);
    const drained = running
      ? await running.shutdown(config.drainTimeout).catch((err) => {
          log.error({ err }, 'error during shutdown');
          return false;
        })
      : true;
    log.info({ drained }, 'stopped');
    log.flush?.();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  startup = (async (): Promise<RunningNode> => {
    if (config.workers > 1) {
      const { uwsAvailable } = await import('../http/index.ts');
      if (uwsAvailable()) {
        const { startWorkers } = await import('../runtime/workers.ts');
        return startWorkers(config, log, config.workers);
      }
      log.warn({ workers: config.workers }, 'uWebSockets.js is unavailable: one node:http listener serves instead of several threads');
    }
    return (await import('../runtime/index.ts')).startNode(config, log);
  })();
  await startup;
  return -1; // keep running
}

function exportEnv(config: Config): number {
  const db = config.db;
  const lines = [`UTILMETA_PROXY_BASE_URL=${config.baseUrl}`];
  if (!db.host) {
    lines.unshift('# The embedded database listens on this host\'s loopback only; services elsewhere cannot share it.',
      '# Configure UTILMETA_PROXY_DB_HOST (a PostgreSQL server) for a real cluster.');
  }
  lines.push(
    'UTILMETA_OPERATIONS_DB_ENGINE=postgresql',
    `UTILMETA_OPERATIONS_DB_HOST=${db.host ?? '127.0.0.1'}`,
    `UTILMETA_OPERATIONS_DB_PORT=${db.port}`,
    `UTILMETA_OPERATIONS_DB_USER=${db.user}`,
    `UTILMETA_OPERATIONS_DB_PASSWORD=${db.password}`,
    `UTILMETA_OPERATIONS_DB_NAME=${db.opsName}`,
  );
  console.log(lines.join('\n'));
  return 0;
}

async function check(config: Config): Promise<number> {
  const base = config.baseUrl.replace(/\/+$/, '');
  let ok = true;
  try {
    const ping = await request(`${base}/`, { headersTimeout: 5000, bodyTimeout: 5000 });
    const body = (await ping.body.json().catch(() => null)) as { utilmeta?: string } | null;
    const live = ping.statusCode === 200 && !!body?.utilmeta;
    console.log(`live:  ${live ? 'yes' : 'no'} (GET ${base}/ → ${ping.statusCode}${body?.utilmeta ? `, spec ${body.utilmeta}` : ''})`);
    ok &&= live;
    const ready = await request(`${base}/readyz`, { headersTimeout: 5000, bodyTimeout: 5000 });
    const r = (await ready.body.json().catch(() => ({}))) as Record<string, unknown>;
    console.log(`ready: ${ready.statusCode === 200 ? 'yes' : 'no'} (database ${String(r.database ?? 'unknown')})`);
    ok &&= ready.statusCode === 200;
    const p = r.platform as { configured?: boolean; connected?: boolean; node_id?: string; url?: string; error?: string } | undefined;
    if (p?.configured) {
      console.log(`platform: ${p.connected ? `connected as node ${p.node_id}` : `not connected${p.error ? ` (${p.error})` : ' yet'}`}`);
      if (p.url) console.log(`console: ${p.url}`);
      ok &&= Boolean(p.connected);
    } else {
      console.log('platform: not configured (SUPERVISOR_BASE_URL, SUPERVISOR_CLUSTER_ID, SUPERVISOR_CLUSTER_KEY)');
    }
  } catch (err) {
    console.log(`live:  no (${base}/ unreachable: ${(err as Error).message})`);
    ok = false;
  }
  return ok ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err) => {
    console.error(`utilmeta-proxy: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
