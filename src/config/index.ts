// Configuration: environment variables with the original UTILMETA_PROXY_ names,
// optionally loaded from an env file (dotenv). Every value is validated once at
// start; an invalid one fails with a single line naming the variable.
import { readFileSync, existsSync } from 'node:fs';
import { BlockList, isIP } from 'node:net';
import dotenv from 'dotenv';
import { availableParallelism } from 'node:os';
import type { DbConfig } from '../db/index.ts';
import { parseMasterKeys, type MasterKeys } from './master-keys.ts';

export const PREFIX = 'UTILMETA_PROXY_';

/** UtilMeta operations spec version this node speaks (spec Appendix A). */
export const SPEC_VERSION = '0.4.0';

export class ConfigError extends Error {}

export interface Config {
  baseUrl: string;
  /** True when BASE_URL was not set and was derived from the bind address. */
  baseUrlDerived: boolean;
  bindHost: string;
  bindPort: number;
  server: 'auto' | 'uws' | 'node';
  /** Listener threads sharing the port (uWebSockets.js only). */
  workers: number;
  production: boolean;
  private: boolean;
  validateForwardIps: boolean;
  /** Peers whose X-Forwarded-For / X-Real-IP are believed (spec §6.19); null when none. */
  trustedProxies: BlockList | null;
  trustedProxiesText: string[];
  bodyLimit: number;
  defaultTimeout: number; // seconds
  maxTimeout: number; // seconds
  loadTimeout: number; // seconds
  corsMaxAge: number;
  upstreamConnections: number;
  upstreamKeepAlive: number; // ms
  /** 'h1': the built-in keep-alive client for plain-http, in-memory-body requests (undici for the rest); 'undici': undici for all. */
  upstreamClient: 'h1' | 'undici';
  registryRefresh: number; // seconds
  health: HealthConfig;
  /** ms: how long in-flight requests may take to finish after SIGTERM */
  drainTimeout: number;
  websocket: WebSocketConfig;
  db: DbConfig;
  supervisor: {
    baseUrl: string | null;
    clusterId: string | null;
    clusterKey: string | null;
    trustedHosts: string[];
  };
  authz: AuthzConfig;
  logLevel: string;
  metricsHost: string;
  metricsPort: number | null;
  /** Serve the operator web console at /console/ (UTILMETA_PROXY_CONSOLE). */
  console: boolean;
  envFile: string | null;
}

/** Proxied WebSockets. */
export interface WebSocketConfig {
  /** seconds without a frame before a side is pinged, then dropped; 0 = never */
  idleTimeout: number;
  /** largest message relayed, bytes */
  maxMessage: number;
  /** bytes buffered towards a slow upstream before the session closes with 1013 (uWS listener) */
  maxBuffer: number;
}

/** Active health checks and passive ejection. */
export interface HealthConfig {
  /** ms between probes of one instance; 0 turns active checks off */
  probeInterval: number;
  probeTimeout: number; // ms
  /** null: probe the instance's ops_api; else this path joined onto base_url */
  probePath: string | null;
  unhealthyThreshold: number;
  healthyThreshold: number;
  /** ms an instance stays probe-down before the registry lists it as unhealthy */
  unhealthyAfter: number;
  /** ms an instance may stay unhealthy before it is deregistered; 0 = never */
  instanceTtl: number;
  /** consecutive failures that eject an instance */
  ejectFailures: number;
  /** base ejection time, ms */
  ejectBase: number;
  /** share of a service's instances that may be ejected at once, percent */
  ejectMaxPercent: number;
}

/** The access plane's settings (Appendix A of the access-plane contract). */
export interface AuthzConfig {
  /** parsed UTILMETA_PROXY_AUTHZ_MASTER_KEYS; null when unset (embedded mode generates a key file) */
  masterKeys: MasterKeys | null;
  /** second propagation channel and shared login rate limits; null = PostgreSQL NOTIFY and per-node memory only */
  redisUrl: string | null;
  sigv4Region: string;
  sigv4Services: string[];
  /** seconds */
  sigv4MaxSkew: number;
  sigv4UnsignedPayload: boolean;
  /** reviewer-cancel notice, seconds */
  cancelNotice: number;
  /** seconds of fail-static before ENFORCE services fail closed; 0 = never */
  maxStaleness: number;
  /** seconds between seq checks */
  resync: number;
  /** SESSION token lifetime, seconds */
  tokenTtl: number;
  /** default access-key rotation grace, seconds */
  keyGrace: number;
  /** seed-002 instance_id */
  clusterId: string;
}

/** Every variable, its default and meaning: the source for --help, the env example and the README table. */
export const VARIABLES: Array<{ name: string; default: string; help: string; group: string }> = [
  { group: 'Service', name: 'BASE_URL', default: 'http://127.0.0.1:<BIND_PORT>/api', help: 'Public base URL of this proxy, including /api. Services in the cluster use it as Operations.Proxy(base_url=...).' },
  { group: 'Service', name: 'BIND_HOST', default: '127.0.0.1', help: 'Address to listen on (0.0.0.0 or :: for all interfaces; the Docker image sets 0.0.0.0).' },
  { group: 'Service', name: 'BIND_PORT', default: "BASE_URL's port, else 8888", help: 'Port to listen on.' },
  { group: 'Service', name: 'SERVER', default: 'auto', help: 'Listener: auto (uWebSockets.js, falling back to node:http when the native addon cannot load), uws or node.' },
  { group: 'Service', name: 'WORKERS', default: '1', help: 'Listener threads sharing the one port (uWebSockets.js only): a number from 1 to 64, or auto for the available cores. Each thread keeps its own in-memory views; the metrics endpoint sums them.' },
  { group: 'Service', name: 'PRODUCTION', default: 'false', help: 'Production mode: platform URLs must be https.' },
  { group: 'Access', name: 'PRIVATE', default: 'false', help: 'Only accept registrations and discovery/forward calls from private-network client IPs.' },
  { group: 'Access', name: 'VALIDATE_FORWARD_IPS', default: 'false', help: 'discovery/forward callers must be registered instances (matched by client IP against instance host).' },
  { group: 'Access', name: 'TRUSTED_PROXIES', default: '(none)', help: 'Comma-separated IPs/CIDRs of reverse proxies in front of this node. Only their X-Forwarded-For / X-Real-IP are believed.' },
  { group: 'Proxy', name: 'DEFAULT_TIMEOUT', default: '15', help: 'Upstream timeout in seconds when the caller sends no X-UtilMeta-Request-Timeout.' },
  { group: 'Proxy', name: 'MAX_TIMEOUT', default: '120', help: 'Upper bound in seconds for X-UtilMeta-Request-Timeout.' },
  { group: 'Proxy', name: 'BODY_LIMIT', default: '10485760', help: 'Largest request body accepted, in bytes (registrations and proxied requests); larger bodies get 413.' },
  { group: 'Proxy', name: 'UPSTREAM_CONNECTIONS', default: '128', help: 'Keep-alive connection pool size per upstream origin.' },
  { group: 'Proxy', name: 'UPSTREAM_KEEPALIVE', default: '4000', help: 'Idle keep-alive time for upstream connections, in ms (keep below the upstream server’s own timeout).' },
  { group: 'Proxy', name: 'UPSTREAM_CLIENT', default: 'h1', help: 'h1: the built-in keep-alive HTTP/1.1 client carries plain-http requests whose body is absent or buffered (undici carries streamed uploads and https); undici: undici carries everything.' },
  { group: 'Proxy', name: 'CORS_MAX_AGE', default: '86400', help: 'Access-Control-Max-Age for preflight responses, in seconds.' },
  { group: 'Proxy', name: 'WS_IDLE_TIMEOUT', default: '60', help: 'Seconds a proxied WebSocket side (client or upstream) may stay silent: it is pinged halfway and dropped at the end without an answer. 0 or 8 to 86400 (the uWebSockets.js listener counts in steps of about 4 s).' },
  { group: 'Proxy', name: 'WS_MAX_MESSAGE', default: '1048576', help: 'Largest WebSocket message relayed, in bytes, either way; a larger one closes the session with 1009.' },
  { group: 'Proxy', name: 'WS_MAX_BUFFER', default: '8388608', help: 'Bytes of client messages held for a slow upstream WebSocket before the session closes with 1013 (uWebSockets.js listener; node:http stops reading the client instead).' },
  { group: 'Proxy', name: 'REGISTRY_REFRESH', default: '30', help: 'Seconds between full reloads of the in-memory registry (changes also arrive at once via LISTEN/NOTIFY).' },
  { group: 'Health', name: 'HEALTH_PROBE_INTERVAL', default: '10000', help: 'Milliseconds between active probes of each instance (jittered ±20%); only one node of the cluster probes (Redis lock, else PostgreSQL advisory lock). 0 turns active checks off.' },
  { group: 'Health', name: 'HEALTH_PROBE_TIMEOUT', default: '2000', help: 'Milliseconds a probe may take; slower counts as failed.' },
  { group: 'Health', name: 'HEALTH_PROBE_PATH', default: "(unset: the instance's ops_api)", help: 'Probe this path (starting with /) joined onto the instance base_url instead of its OperationsAPI. Any answer below 500 means alive.' },
  { group: 'Health', name: 'HEALTH_UNHEALTHY_THRESHOLD', default: '3', help: 'Failed probes in a row that take an instance out of rotation.' },
  { group: 'Health', name: 'HEALTH_HEALTHY_THRESHOLD', default: '2', help: 'Passed probes in a row that readmit it.' },
  { group: 'Health', name: 'HEALTH_UNHEALTHY_AFTER', default: '300000', help: 'Milliseconds out of rotation by probes after which the registry listing shows the instance as unhealthy (it is not deleted).' },
  { group: 'Health', name: 'HEALTH_INSTANCE_TTL', default: '0', help: 'Milliseconds an instance may stay unhealthy before the probing node deregisters it; 0 = never (deleting is the operator\'s call).' },
  { group: 'Health', name: 'EJECT_FAILURES', default: '5', help: 'Consecutive transport failures or 5xx answers from one instance that eject it (passive health).' },
  { group: 'Health', name: 'EJECT_BASE', default: '30000', help: 'Milliseconds of the first ejection; it grows with each repeated ejection, up to 10 times.' },
  { group: 'Health', name: 'EJECT_MAX_PERCENT', default: '50', help: 'Largest share of a service, in percent, ejected at once (at least one instance may always be ejected).' },
  { group: 'Health', name: 'DRAIN_TIMEOUT', default: '30000', help: 'Milliseconds in-flight requests get to finish after SIGTERM/SIGINT before the node closes anyway.' },
  { group: 'Database', name: 'DB_ENGINE', default: 'postgresql', help: 'Only postgresql is supported (the operations database is shared with Django-based services).' },
  { group: 'Database', name: 'DB_HOST', default: '(unset: embedded PGlite)', help: 'PostgreSQL host. When unset, an embedded single-node PGlite database under DATA_DIR is used (development default).' },
  { group: 'Database', name: 'DB_PORT', default: '5432', help: 'PostgreSQL port.' },
  { group: 'Database', name: 'DB_USER', default: 'postgres', help: 'PostgreSQL user.' },
  { group: 'Database', name: 'DB_PASSWORD', default: '(empty)', help: 'PostgreSQL password.' },
  { group: 'Database', name: 'DB_SSL', default: 'false', help: 'Connect to PostgreSQL over TLS.' },
  { group: 'Database', name: 'DB_NAME', default: 'utilmeta_proxy', help: 'Database holding the proxy registry tables.' },
  { group: 'Database', name: 'OPS_DB_NAME', default: 'utilmeta_proxy_ops', help: 'Operations database shared with the services (UTILMETA_OPERATIONS_DB_NAME on their side).' },
  { group: 'Database', name: 'DB_POOL_SIZE', default: '10', help: 'Connections per database pool.' },
  { group: 'Database', name: 'OPS_SCHEMA', default: '2.9', help: 'Ops schema to create in a NEW operations database: 2.9 (utilmeta 2.9, migration 0006) or 2.8 (utilmeta <= 2.8.1, migration 0005). An existing database is detected, never changed.' },
  { group: 'Database', name: 'DATA_DIR', default: './data', help: 'Where the embedded database keeps its files.' },
  { group: 'Platform', name: 'SUPERVISOR_BASE_URL', default: '(unset)', help: 'UtilMeta platform API, e.g. https://api.utilmeta.com/spv.' },
  { group: 'Platform', name: 'SUPERVISOR_CLUSTER_ID', default: '(unset)', help: 'Cluster id from the platform.' },
  { group: 'Platform', name: 'SUPERVISOR_CLUSTER_KEY', default: '(unset)', help: 'Cluster public key (JWK JSON, or base64 of it).' },
  { group: 'Platform', name: 'TRUSTED_HOSTS', default: '(none)', help: 'Extra platform hosts to trust besides utilmeta.com (comma-separated); 127.0.0.1 is trusted when not in production.' },
  { group: 'Platform', name: 'LOAD_TIMEOUT', default: '15', help: 'Seconds to wait for the own OperationsAPI before self-connecting.' },
  { group: 'Access plane', name: 'AUTHZ_MASTER_KEYS', default: '(unset; embedded DB: generated file)', help: 'kid:base64(32 bytes)[,kid2:...]: master keys for access-key secrets (AES-256-GCM). The first encrypts, all decrypt. Without one, access keys and SigV4 are unavailable; the embedded database generates DATA_DIR/authz-master.key.' },
  { group: 'Access plane', name: 'REDIS_URL', default: '(unset)', help: 'redis:// or rediss:// URL: second propagation channel for access changes and shared login rate limits. Without it only PostgreSQL NOTIFY and per-node limits are used.' },
  { group: 'Access plane', name: 'SIGV4_REGION', default: 'pri', help: 'Region required in the SigV4 credential scope.' },
  { group: 'Access plane', name: 'SIGV4_SERVICES', default: 'utilmeta,minibasebe', help: 'Service names accepted in the SigV4 credential scope (comma-separated).' },
  { group: 'Access plane', name: 'SIGV4_MAX_SKEW', default: '900', help: 'Seconds of clock skew allowed for SigV4 header signatures.' },
  { group: 'Access plane', name: 'SIGV4_UNSIGNED_PAYLOAD', default: 'true', help: 'Accept UNSIGNED-PAYLOAD on /api/proxy.' },
  { group: 'Access plane', name: 'AUTHZ_CANCEL_NOTICE', default: '172800', help: 'Notice in seconds before a reviewer cancellation of an app grant takes effect; below 172800 is refused when PRODUCTION=true.' },
  { group: 'Access plane', name: 'AUTHZ_MAX_STALENESS', default: '300', help: 'Seconds a node keeps deciding from memory without PostgreSQL before ENFORCE services fail closed; 0 = never.' },
  { group: 'Access plane', name: 'AUTHZ_RESYNC', default: '30', help: 'Seconds between checks that this node has applied every access change.' },
  { group: 'Access plane', name: 'AUTHZ_TOKEN_TTL', default: '43200', help: 'Lifetime of SESSION user tokens (password grant, token exchange), in seconds.' },
  { group: 'Access plane', name: 'AUTHZ_KEY_GRACE', default: '86400', help: 'Default seconds an access key stays valid after it is rotated.' },
  { group: 'Access plane', name: 'AUTHZ_CLUSTER_ID', default: 'SUPERVISOR_CLUSTER_ID, else default', help: 'instance_id reported by the app-grant API.' },
  { group: 'Observability', name: 'LOG_LEVEL', default: 'info', help: 'pino log level: trace, debug, info, warn, error, fatal, silent.' },
  { group: 'Observability', name: 'METRICS_HOST', default: '127.0.0.1', help: 'Address of the Prometheus metrics listener.' },
  { group: 'Observability', name: 'METRICS_PORT', default: '(unset: off)', help: 'Port of the Prometheus metrics listener (/metrics).' },
  { group: 'Observability', name: 'CONSOLE', default: 'true', help: 'Serve the operator web console at /console/ on the main listener: true or false.' },
];

type Env = Record<string, string | undefined>;

/**
 * Reads the env file (when present) without overriding the process environment,
 * then builds the validated Config.
 */
export function loadConfig(opts: { env?: Env; envFile?: string | null } = {}): Config {
  const env: Env = { ...(opts.env ?? process.env) };
  let envFile: string | null = null;
  const file = opts.envFile === undefined ? 'utilmeta-proxy.env' : opts.envFile;
  if (file) {
    if (existsSync(file)) {
      const parsed = dotenv.parse(readFileSync(file));
      for (const [k, v] of Object.entries(parsed)) if (env[k] === undefined) env[k] = v;
      envFile = file;
    } else if (opts.envFile) {
      throw new ConfigError(`--env-file: ${file} does not exist`);
    }
  }
  return parseConfig(env, envFile);
}

export function parseConfig(env: Env, envFile: string | null = null): Config {
  const r = new Reader(env);
  const baseUrlRaw = r.str('BASE_URL');
  let baseUrl: URL | null = null;
  if (baseUrlRaw !== null) {
    baseUrl = r.url('BASE_URL', baseUrlRaw, ['http:', 'https:']);
  }
  const bindHost = r.str('BIND_HOST') ?? '127.0.0.1';
  if (isIP(bindHost) === 0 && bindHost !== 'localhost') {
    throw new ConfigError(`${PREFIX}BIND_HOST: expected an IP address, got '${bindHost}'`);
  }
  const basePort = baseUrl && baseUrl.port ? Number(baseUrl.port) : null;
  const bindPort = r.int('BIND_PORT', basePort ?? 8888, 0, 65535);
  let derived = false;
  let base: string;
  if (baseUrl) {
    base = baseUrl.toString().replace(/\/+$/, '');
  } else {
    derived = true;
    const h = bindHost === '0.0.0.0' || bindHost === '::' ? '127.0.0.1' : bindHost.includes(':') ? `[${bindHost}]` : bindHost;
    base = `http://${h}:${bindPort}/api`;
  }
  const server = r.choice('SERVER', ['auto', 'uws', 'node'] as const, 'auto');
  const workersRaw = r.str('WORKERS');
  const workers = workersRaw === 'auto' ? Math.max(1, Math.min(64, availableParallelism())) : r.int('WORKERS', 1, 1, 64);
  if (workers > 1 && server === 'node') {
    throw new ConfigError(`${PREFIX}WORKERS: ${workers} listener threads need the uWebSockets.js listener; node:http serves one (set ${PREFIX}SERVER=uws or auto)`);
  }
  const engine = r.str('DB_ENGINE');
  if (engine && !/^(postgres|postgresql|django\.db\.backends\.postgresql(_psycopg2)?)$/.test(engine)) {
    throw new ConfigError(`${PREFIX}DB_ENGINE: only postgresql is supported, got '${engine}'`);
  }
  const trustedText = r.list('TRUSTED_PROXIES');
  const trusted = new BlockList();
  for (const item of trustedText) {
    const [addr, bits] = item.split('/');
    const family = isIP(addr);
    if (family === 0) throw new ConfigError(`${PREFIX}TRUSTED_PROXIES: '${item}' is not an IP address or CIDR`);
    const type = family === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) trusted.addAddress(addr, type);
    else {
      const n = Number(bits);
      if (!Number.isInteger(n) || n < 0 || n > (family === 6 ? 128 : 32)) {
        throw new ConfigError(`${PREFIX}TRUSTED_PROXIES: '${item}' has an invalid prefix length`);
      }
      trusted.addSubnet(addr, n, type);
    }
  }
  const defaultTimeout = r.num('DEFAULT_TIMEOUT', 15, 0.001, 3600);
  const maxTimeout = r.num('MAX_TIMEOUT', Math.max(120, defaultTimeout), 0.001, 86400);
  if (maxTimeout < defaultTimeout) {
    throw new ConfigError(`${PREFIX}MAX_TIMEOUT: must be >= DEFAULT_TIMEOUT (${defaultTimeout}), got ${maxTimeout}`);
  }
  const spvUrl = r.str('SUPERVISOR_BASE_URL');
  if (spvUrl !== null) r.url('SUPERVISOR_BASE_URL', spvUrl, ['http:', 'https:']);
  const metricsPort = r.str('METRICS_PORT') === null ? null : r.int('METRICS_PORT', 0, 0, 65535);
  const logLevel = r.choice('LOG_LEVEL', ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const, 'info');
  const opsSchema = r.choice('OPS_SCHEMA', ['2.9', '2.8'] as const, '2.9');
  const production = r.bool('PRODUCTION', false);
  return {
    baseUrl: base,
    baseUrlDerived: derived,
    bindHost,
    bindPort,
    server,
    workers,
    production,
    private: r.bool('PRIVATE', false),
    validateForwardIps: r.bool('VALIDATE_FORWARD_IPS', false),
    trustedProxies: trustedText.length ? trusted : null,
    trustedProxiesText: trustedText,
    bodyLimit: r.int('BODY_LIMIT', 10 * 1024 * 1024, 1024, 2 ** 31),
    defaultTimeout,
    maxTimeout,
    loadTimeout: r.num('LOAD_TIMEOUT', 15, 0, 3600),
    corsMaxAge: r.int('CORS_MAX_AGE', 86400, 0, 10 * 365 * 86400),
    upstreamConnections: r.int('UPSTREAM_CONNECTIONS', 128, 1, 100000),
    upstreamKeepAlive: r.int('UPSTREAM_KEEPALIVE', 4000, 1, 3600_000),
    upstreamClient: r.choice('UPSTREAM_CLIENT', ['h1', 'undici'] as const, 'h1'),
    registryRefresh: r.num('REGISTRY_REFRESH', 30, 0.1, 86400),
    health: parseHealth(r),
    drainTimeout: r.int('DRAIN_TIMEOUT', 30_000, 0, 3600_000),
    websocket: parseWebSocket(r),
    db: {
      host: r.str('DB_HOST'),
      port: r.int('DB_PORT', 5432, 1, 65535),
      user: r.str('DB_USER') ?? 'postgres',
      password: r.str('DB_PASSWORD') ?? '',
      ssl: r.bool('DB_SSL', false),
      registryName: r.ident('DB_NAME', 'utilmeta_proxy'),
      opsName: r.ident('OPS_DB_NAME', 'utilmeta_proxy_ops'),
      poolSize: r.int('DB_POOL_SIZE', 10, 1, 1000),
      dataDir: r.str('DATA_DIR') ?? './data',
      opsSchema,
    },
    supervisor: {
      baseUrl: spvUrl ? spvUrl.replace(/\/+$/, '') : null,
      clusterId: r.str('SUPERVISOR_CLUSTER_ID'),
      clusterKey: r.str('SUPERVISOR_CLUSTER_KEY'),
      trustedHosts: r.list('TRUSTED_HOSTS'),
    },
    authz: parseAuthz(r, production),
    logLevel,
    metricsHost: r.str('METRICS_HOST') ?? '127.0.0.1',
    metricsPort,
    console: r.bool('CONSOLE', true),
    envFile,
  };
}

function parseWebSocket(r: Reader): WebSocketConfig {
  const idleTimeout = r.int('WS_IDLE_TIMEOUT', 60, 0, 86400);
  // uWebSockets.js refuses idle timeouts from 1 to 7 s.
  if (idleTimeout > 0 && idleTimeout < 8) r.fail('WS_IDLE_TIMEOUT', '0 or an integer from 8 to 86400', String(idleTimeout));
  const maxMessage = r.int('WS_MAX_MESSAGE', 1024 * 1024, 125, 256 * 1024 * 1024);
  return { idleTimeout, maxMessage, maxBuffer: r.int('WS_MAX_BUFFER', 8 * 1024 * 1024, 64 * 1024, 2 ** 31) };
}

function parseHealth(r: Reader): HealthConfig {
  const probePath = r.str('HEALTH_PROBE_PATH');
  if (probePath !== null && !/^\/[\x21-\x7e]*$/.test(probePath)) r.fail('HEALTH_PROBE_PATH', 'a path starting with / (visible ASCII only)', probePath);
  const interval = r.int('HEALTH_PROBE_INTERVAL', 10_000, 0, 3600_000);
  if (interval > 0 && interval < 100) r.fail('HEALTH_PROBE_INTERVAL', '0 (off) or at least 100 ms', String(interval));
  return {
    probeInterval: interval,
    probeTimeout: r.int('HEALTH_PROBE_TIMEOUT', 2000, 10, 600_000),
    probePath,
    unhealthyThreshold: r.int('HEALTH_UNHEALTHY_THRESHOLD', 3, 1, 100),
    healthyThreshold: r.int('HEALTH_HEALTHY_THRESHOLD', 2, 1, 100),
    unhealthyAfter: r.int('HEALTH_UNHEALTHY_AFTER', 300_000, 0, 30 * 86400_000),
    instanceTtl: r.int('HEALTH_INSTANCE_TTL', 0, 0, 365 * 86400_000),
    ejectFailures: r.int('EJECT_FAILURES', 5, 1, 1000),
    ejectBase: r.int('EJECT_BASE', 30_000, 10, 86400_000),
    ejectMaxPercent: r.int('EJECT_MAX_PERCENT', 50, 1, 100),
  };
}

function parseAuthz(r: Reader, production: boolean): AuthzConfig {
  const mkText = r.str('AUTHZ_MASTER_KEYS');
  let masterKeys: MasterKeys | null = null;
  if (mkText !== null) {
    try {
      masterKeys = parseMasterKeys(mkText);
    } catch (err) {
      // parseMasterKeys already names the variable and the entry; never the key material.
      throw new ConfigError((err as Error).message);
    }
  }
  const redisText = r.str('REDIS_URL');
  if (redisText !== null) r.url('REDIS_URL', redisText, ['redis:', 'rediss:']);
  const region = r.str('SIGV4_REGION') ?? 'pri';
  if (!/^[a-z0-9-]{1,64}$/.test(region)) r.fail('SIGV4_REGION', 'a region name of a-z, 0-9 and -', region);
  const services = r.str('SIGV4_SERVICES') === null ? ['utilmeta', 'minibasebe'] : r.list('SIGV4_SERVICES');
  for (const s of services) if (!/^[a-z0-9-]{1,64}$/.test(s)) r.fail('SIGV4_SERVICES', 'service names of a-z, 0-9 and -', s);
  if (services.length === 0) r.fail('SIGV4_SERVICES', 'at least one service name', '');
  const cancelNotice = r.int('AUTHZ_CANCEL_NOTICE', 172800, 0, 10 * 365 * 86400);
  if (production && cancelNotice < 172800) {
    throw new ConfigError(`${PREFIX}AUTHZ_CANCEL_NOTICE: must be at least 172800 (2 days) when PRODUCTION=true, got ${cancelNotice}`);
  }
  return {
    masterKeys,
    redisUrl: redisText,
    sigv4Region: region,
    sigv4Services: services,
    sigv4MaxSkew: r.int('SIGV4_MAX_SKEW', 900, 1, 7 * 86400),
    sigv4UnsignedPayload: r.bool('SIGV4_UNSIGNED_PAYLOAD', true),
    cancelNotice,
    maxStaleness: r.int('AUTHZ_MAX_STALENESS', 300, 0, 30 * 86400),
    resync: r.num('AUTHZ_RESYNC', 30, 0.1, 86400),
    tokenTtl: r.int('AUTHZ_TOKEN_TTL', 43200, 60, 366 * 86400),
    keyGrace: r.int('AUTHZ_KEY_GRACE', 86400, 0, 604800),
    clusterId: r.str('AUTHZ_CLUSTER_ID') ?? r.str('SUPERVISOR_CLUSTER_ID') ?? 'default',
  };
}

/** Typed accessors that fail with one line naming the variable and the problem. */
class Reader {
  constructor(private env: Env) {}
  str(name: string): string | null {
    const v = this.env[PREFIX + name];
    if (v === undefined) return null;
    const t = v.trim();
    return t === '' ? null : t;
  }
  fail(name: string, what: string, got: string): never {
    throw new ConfigError(`${PREFIX}${name}: expected ${what}, got '${got}'`);
  }
  bool(name: string, def: boolean): boolean {
    const v = this.str(name);
    if (v === null) return def;
    const l = v.toLowerCase();
    if (['1', 'true', 'yes', 'on'].includes(l)) return true;
    if (['0', 'false', 'no', 'off'].includes(l)) return false;
    return this.fail(name, 'a boolean (true/false)', v);
  }
  int(name: string, def: number, min: number, max: number): number {
    const v = this.str(name);
    if (v === null) return def;
    if (!/^-?\d+$/.test(v) || Number(v) < min || Number(v) > max) this.fail(name, `an integer from ${min} to ${max}`, v);
    return Number(v);
  }
  num(name: string, def: number, min: number, max: number): number {
    const v = this.str(name);
    if (v === null) return def;
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || n > max) this.fail(name, `a number from ${min} to ${max}`, v);
    return n;
  }
  choice<T extends string>(name: string, options: readonly T[], def: T): T {
    const v = this.str(name);
    if (v === null) return def;
    if (!(options as readonly string[]).includes(v)) this.fail(name, `one of ${options.join(', ')}`, v);
    return v as T;
  }
  list(name: string): string[] {
    const v = this.str(name);
    return v === null ? [] : v.split(',').map((s) => s.trim()).filter(Boolean);
  }
  ident(name: string, def: string): string {
    const v = this.str(name);
    if (v === null) return def;
    if (!/^[A-Za-z_][A-Za-z0-9_$-]{0,62}$/.test(v)) this.fail(name, 'a PostgreSQL database name', v);
    return v;
  }
  url(name: string, v: string, schemes: string[]): URL {
    let u: URL;
    try {
      u = new URL(v);
    } catch {
      return this.fail(name, 'an absolute URL', v);
    }
    if (!schemes.includes(u.protocol)) this.fail(name, `a ${schemes.join(' or ')} URL`, v);
    return u;
  }
}
