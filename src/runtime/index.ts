// Composition root: builds one proxy node from a Config. The CLI and the tests
// both start nodes through here, so they run the same code.
import { syncCatalog } from '../access/catalog-sync.ts';
import { SessionIndex } from '../access/sessions.ts';
import { lookup } from 'node:dns/promises';
import type { Logger } from 'pino';
import type { Config } from '../config/index.ts';
import { openDatabase, migrate, migrationStatus, type Database, type MigrationStatus } from '../db/index.ts';
import { RegistryCache } from '../registry/cache.ts';
import { RegistryStore } from '../registry/store.ts';
import { ProxyHandler, WS_HIGH_WATER } from '../proxy/index.ts';
import { Upstream } from '../proxy/upstream.ts';
import { createApp, type AppDeps } from '../routes/index.ts';
import { managementMounts } from '../routes/surfaces.ts';
import { createConsole } from '../routes/console.ts';
import { listen } from '../http/listen.ts';
import type { Listener } from '../http/types.ts';
import { isPrivateIp } from '../net/ip.ts';
import { createPlatformLink, type PlatformLink, type PlatformOptions } from '../platform/index.ts';
import { Metrics, startMetricsServer, type MetricsServer } from '../observability/metrics.ts';
import type { ProxyLogRecord } from '../proxy/index.ts';
import { AccessView, AuthzStore, Credentials, MemoryLoginLimiter, RedisLoginLimiter, effectiveMasterKeys, eventPayload } from '../access/index.ts';
import { authorizeDiscovery, authorizePlatform, testInstancesOnlyStage, type AccessDeps } from '../proxy/stages/authorize.ts';
import { captureRevoke } from '../proxy/stages/revoke-capture.ts';
import { connectRedis, redisFeed, redisUp, type Redis } from '../redis/index.ts';
import { startSweeper } from '../access/sweeper.ts';
import { createClient } from '../db/client.ts';
import { startHealth, type NodeHealth } from './health.ts';

export interface ProxyNode {
  config: Config;
  listener: Listener;
  db: Database;
  registry: RegistryCache;
  upstream: Upstream;
  proxy: ProxyHandler;
  platform: PlatformLink;
  /** The access plane: its live view, its one writer, credentials, and Redis when configured. */
  access: AccessPlane;
  metrics: Metrics;
  /** The /metrics listener, when METRICS_PORT is set. */
  metricsServer: MetricsServer | null;
  /** Instance health: ejection, probes, drains, retry budgets. */
  health: NodeHealth;
  /** http://host:port of the listener (for tests and logs). */
  origin: string;
  /** Closes at once: open connections are cut. */
  close(): Promise<void>;
  /**
   * Graceful: readiness turns false at once, the listener stops accepting,
   * requests in flight get up to `drainMs` (default DRAIN_TIMEOUT) to finish,
   * then everything closes. Resolves whether every request finished.
   */
  shutdown(drainMs?: number): Promise<boolean>;
  /** True from the start of a shutdown. */
  readonly draining: boolean;
}

export interface AccessPlane {
  view: AccessView;
  store: AuthzStore;
  credentials: Credentials;
  redis: Redis | null;
  /** The Redis channel access events are published on. */
  channel: string;
  /** Allowed exchanges in flight and idle connections that last carried them. */
  sessions: SessionIndex;
}

export interface StartOptions {
  /** Run migrations before serving (the default for `start`). */
  migrate?: boolean;
  /** Platform link tuning (tests shorten retries). */
  platform?: PlatformOptions;
  /** Start the platform self-connect loop (default true; one listener thread of several does). */
  selfConnect?: boolean;
  /** Serve METRICS_PORT from this node (default true; with workers the main thread serves the sum). */
  metricsServer?: boolean;
  /** Collect the process's default metrics (default true; with workers the main thread does). */
  defaultMetrics?: boolean;
  /** Listen on this port instead of BIND_PORT (the workers after the first share its port). */
  port?: number;
  /** LISTEN for access-plane events on PostgreSQL (default true; false leaves Redis and the resync, for tests and benchmarks). */
  authzListen?: boolean;
  /** Hook to extend the app (platform link, metrics). */
  extend?: (deps: AppDeps, node: Omit<ProxyNode, 'listener' | 'origin' | 'close' | 'shutdown' | 'draining'>) => void | Promise<void>;
}

async function isPublicHost(baseUrl: string): Promise<boolean> {
  try {
    const host = new URL(baseUrl).hostname.replace(/^\[|\]$/g, '');
    const { address } = await lookup(host);
    return !isPrivateIp(address) && address !== '0.0.0.0' && address !== '::';
  } catch {
    return false;
  }
}

/** Rejects with `message` when `p` takes longer than `ms`. */
function within<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
    timer.unref();
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export async function startNode(config: Config, log: Logger, opts: StartOptions = {}): Promise<ProxyNode> {
  const db = await openDatabase(config.db, log);
  const cleanup: Array<() => Promise<void>> = [() => db.close()];
  try {
    if (opts.migrate !== false) {
      const report = await migrate(config.db, db, log);
      log.info({ ...report }, 'database ready');
    }
    const registry = new RegistryCache(db.registry, log, config.registryRefresh, !db.embedded);
    await registry.start();
    cleanup.unshift(() => registry.stop());
    const upstream = new Upstream({
      connections: config.upstreamConnections,
      keepAliveMs: config.upstreamKeepAlive,
      client: config.upstreamClient,
      connectTimeoutMs: Math.min(10_000, config.maxTimeout * 1000),
    });
    cleanup.unshift(() => upstream.close());
    const store = new RegistryStore(db.registry, db.ops);
    const platform = createPlatformLink(config, db, log, { ...opts.platform, store, onRegistryChange: async () => void (await registry.refresh().catch(() => {})) });
    await platform.start();
    cleanup.unshift(() => platform.stop());
    // The access plane: one writer (the store), a live view fed by NOTIFY, Redis and
    // this node's own commits, and the credentials domain on top.
    const redisUrl = config.authz.redisUrl;
    const redis = redisUrl ? connectRedis(redisUrl, log) : null;
    if (redis) cleanup.unshift(async () => void redis.disconnect());
    const channel = `utilmeta-proxy:authz:${config.db.registryName}`;
    const masterKeys = effectiveMasterKeys(config);
    const propagation: Array<(channel: string, seconds: number) => void> = [];
    const sessions = new SessionIndex(() => accessView.now());
    const accessView = new AccessView({
      sql: db.registry, log, masterKeys, resyncSeconds: config.authz.resync, listen: !db.embedded && opts.authzListen !== false,
      feeds: redisUrl ? [redisFeed(redisUrl, channel, log)] : [],
      onPropagation: (c, s) => propagation.forEach((f) => f(c, s)),
      onTightened: (action, effect, state) => void sessions.onEffect(action, effect, state),
    });
    await accessView.start();
    cleanup.unshift(() => accessView.stop());
    const authzStore = new AuthzStore(db.registry);
    authzStore.onCommit((events) => {
      if (redisUp(redis)) for (const e of events) void redis!.publish(channel, JSON.stringify(eventPayload(e))).catch(() => {});
      return accessView.applyLocal(events);
    });
    const credentials = new Credentials(
      authzStore,
      { masterKeys, tokenTtlSeconds: config.authz.tokenTtl, keyGraceSeconds: config.authz.keyGrace },
      { limiter: redis ? new RedisLoginLimiter(redis) : new MemoryLoginLimiter() },
    );
    const access: AccessPlane = { view: accessView, store: authzStore, credentials, redis, channel, sessions };
    // Grant sweeper: the advisory-lock holder closes expired, cancelled and lapsed rows (a dedicated one-connection client for the session lock).
    const sweeperSql = db.embedded || config.db.host === null ? null : createClient({ host: config.db.host, port: config.db.port, user: config.db.user, password: config.db.password, ssl: config.db.ssl, database: config.db.registryName, max: 1 }, log);
    const sweeper = await startSweeper({ store: authzStore, leaderSql: sweeperSql, log });
    cleanup.unshift(async () => { await sweeper.stop(); await sweeperSql?.end({ timeout: 5 }); });
    // Health shares ejections, probe results and drains over Redis on a
    // subscriber connection of its own (a subscribed connection runs no commands).
    const healthSub = redisUrl ? connectRedis(redisUrl, log, 'utilmeta-proxy-health-sub') : null;
    if (healthSub) cleanup.unshift(async () => void healthSub.disconnect());
    const health = await startHealth({ config, log, db, registry, store, redis: redis && healthSub ? { client: redis, subscriber: healthSub } : null });
    cleanup.unshift(() => health.close());
    upstream.onAttempt = health.onAttempt;
    const metrics = new Metrics({
      defaultMetrics: opts.defaultMetrics !== false,
      registry: () => registry.snapshot,
      platform: () => platform.state(),
      lastSync: () => platform.connector?.lastSync ?? null,
      db: () => ({ up: registry.generation === 0 ? null : registry.lastError === null, poolSize: db.embedded ? 1 : config.db.poolSize, embedded: db.embedded }),
      health: () => ({
        ...health.health.metrics(), probesTotal: health.checker?.probesTotal ?? 0, probeFailuresTotal: health.checker?.probeFailuresTotal ?? 0,
        retryBudget: health.retryBudgets.counters(),
      }),
      webSockets: () => proxy.webSockets.size,
      access: () => ({ seq: accessView.current.seq, stalenessSeconds: accessView.stalenessMs() / 1000, clockOffsetSeconds: accessView.clockOffsetMs / 1000, redisUp: redis ? redisUp(redis) : null }),
    });
    let metricsServer: MetricsServer | null = null;
    if (config.metricsPort !== null && opts.metricsServer !== false) {
      metricsServer = await startMetricsServer(metrics, config.metricsHost, config.metricsPort);
      cleanup.unshift(() => metricsServer!.close());
      log.info({ address: `http://${config.metricsHost}:${metricsServer.port}/metrics` }, 'metrics listening');
    }
    // The operator console (same listener, /console/). A listener thread of several sees
    // only its own traffic; the summed metrics are the metrics endpoint's.
    const consoleSurface = createConsole({ config, log, credentials, metricsText: () => metrics.text() });
    cleanup.unshift(async () => consoleSurface.close());
    const logRequests = log.isLevelEnabled('info');
    const accessDeps: AccessDeps = {
      view: accessView,
      sigv4: { region: config.authz.sigv4Region, services: config.authz.sigv4Services, maxSkewSeconds: config.authz.sigv4MaxSkew, unsignedPayload: config.authz.sigv4UnsignedPayload },
      maxStalenessMs: config.authz.maxStaleness * 1000,
      onDecision: (result, reason, cred) => metrics.authzDecision(result, reason, cred),
      onSigV4Failure: (code) => metrics.sigv4Failure(code),
      sessions,
    };
    propagation.push((c, s) => metrics.authzPropagation(c, s));
    const proxy = new ProxyHandler({
      config,
      log,
      upstream,
      extensions: {
        authorize: {
          discovery: [authorizeDiscovery(accessDeps, config)],
          supervisor: [authorizePlatform(accessDeps, 'supervisor')],
          operations: [authorizePlatform(accessDeps, 'operations'), captureRevoke(authzStore, log)],
        },
        choose: { discovery: [health.stage], supervisor: [testInstancesOnlyStage(), health.stage], operations: [health.stage] },
      },
      retryPolicy: health.retryPolicy,
      idempotency: health.idempotency,
      snapshot: () => registry.snapshot,
      platform: platform.authority,
      onResult: (r: ProxyLogRecord) => {
        metrics.observe(r);
        consoleSurface.traffic.observe(r);
        // One line per proxied request; bodies and headers are never logged at info.
        if (logRequests) log.info(r, 'proxied');
      },
    });
    let migrations: { at: number; status: MigrationStatus } | null = null;
    let draining = false;
    const deps: AppDeps = {
      config,
      log,
      proxy,
      registry,
      store,
      publicBaseUrl: await isPublicHost(config.baseUrl),
      afterRegister: async (reg, result) => { await platform.afterRegister(reg, result); await syncCatalog(authzStore, log, { serviceId: result.instance.service_id, resources: reg.resources }); },
      health: health.health,
      mounts: [consoleSurface, ...managementMounts({
        config, log, db, registry, registryStore: store, platform, access,
        auth: { view: accessView, sigv4: accessDeps.sigv4, bodyLimit: config.bodyLimit },
      })],
      readiness: async () => {
        if (draining) return { ready: false, details: { status: 'shutting down' } };
        try {
          // Every probe: both pools answer. The migration state (six catalog queries)
          // only changes when something migrates, so it is re-read at most every 30 s.
          await within(Promise.all([db.registry`SELECT 1`, db.ops`SELECT 1`]), 2000, 'database did not answer within 2s');
          if (!migrations || Date.now() - migrations.at > 30_000) {
            migrations = { at: Date.now(), status: await within(migrationStatus(db), 10_000, 'reading the migration state took over 10s') };
          }
          const status = migrations.status;
          return {
            ready: status.current && accessView.ready,
            details: { database: db.embedded ? 'embedded' : 'postgresql', migrations: status, registry_generation: registry.generation, access: { loaded: accessView.ready, seq: accessView.current.seq }, platform: platform.state() },
          };
        } catch (err) {
          return { ready: false, details: { database: 'unreachable', error: (err as Error).message } };
        }
      },
    };
    await opts.extend?.(deps, { config, db, registry, upstream, proxy, platform, access, metrics, metricsServer, health });
    const listener = await listen(createApp(deps), {
      host: config.bindHost, port: opts.port ?? config.bindPort, server: config.server,
      websocket: { idleTimeoutSeconds: config.websocket.idleTimeout, maxPayloadLength: config.websocket.maxMessage, highWaterMark: WS_HIGH_WATER },
    }, log);
    cleanup.unshift(() => listener.close());
    const hostText = listener.host.includes(':') ? `[${listener.host}]` : listener.host;
    const origin = `http://${hostText === '0.0.0.0' ? '127.0.0.1' : hostText === '[::]' ? '[::1]' : hostText}:${listener.port}`;
    log.info({ listener: listener.kind, address: origin, baseUrl: config.baseUrl, database: db.describe }, 'utilmeta-proxy listening');
    if (opts.selfConnect !== false) platform.connectInBackground();
    let closed: Promise<void> | null = null;
    let shut: Promise<boolean> | null = null;
    const close = () => (closed ??= (async () => {
      for (const fn of cleanup) await fn().catch((err) => log.warn({ err }, 'error during shutdown'));
    })());
    return {
      config, listener, db, registry, upstream, proxy, platform, access, metrics, metricsServer, origin, health,
      get draining() {
        return draining;
      },
      close,
      shutdown: (drainMs = config.drainTimeout) => (shut ??= (async () => {
        draining = true;
        await listener.stopAccepting();
        // WebSockets do not finish by themselves: both sides of every relayed
        // session get 1001 now, and any other accepted socket too.
        const sockets = proxy.webSockets.size;
        proxy.webSockets.closeAll(1001, 'server shutting down', 'shutdown');
        listener.closeWebSockets(1001, 'server shutting down');
        const inFlight = listener.inFlight;
        log.info({ inFlight, webSockets: sockets, drainMs }, 'draining: no new connections; waiting for requests in flight');
        const all = await listener.drained(drainMs);
        if (!all) log.warn({ left: listener.inFlight, drainMs }, 'drain timeout: closing with requests still in flight');
        await close();
        return all;
      })()),
    };
  } catch (err) {
    for (const fn of cleanup) await fn().catch(() => {});
    throw err;
  }
}
