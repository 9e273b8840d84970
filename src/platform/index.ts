// The platform link: everything that connects this node and its services to the
// UtilMeta platform. The runtime builds one and plugs its parts in: the proxy
// types' authority, the registration hook, what the node's own OperationsAPI
// needs, and the self-connect loop.
import { readFileSync } from 'node:fs';
import pRetry from 'p-retry';
import { request } from 'undici';
import type { Logger } from 'pino';
import type { Config } from '../config/index.ts';
import { DomainError } from '../core/errors.ts';
import { ConfigError, PREFIX, SPEC_VERSION } from '../config/index.ts';
import type { Database } from '../db/index.ts';
import { parseJwk, serializeJwk, KeyError } from '../tokens/keys.ts';
import type { Registration } from '../registry/registration.ts';
import { resourcesMetadata } from '../registry/registration.ts';
import { RegistryStore, type RegisterResult } from '../registry/store.ts';
import { SupervisorDirectory } from './directory.ts';
import { SupervisorRepository } from './supervisors.ts';
import { AccessTokenStore } from './tokens-store.ts';
import { Connector, PROXY_SERVICE_NAME, type ConnectDeps } from './connect.ts';
import { proxyOpenApi } from './openapi.ts';
import { PlatformAuthority } from './modes.ts';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string; description: string };

export interface LinkState {
  configured: boolean;
  connected: boolean;
  node_id: string | null;
  url: string | null;
  error: string | null;
  attempts: number;
}

export interface PlatformLink {
  directory: SupervisorDirectory;
  repo: SupervisorRepository;
  connector: Connector | null;
  /** Cluster public key as compact JWK JSON (what UtilMeta sends as X-Cluster-Key), or null. */
  clusterKey: string | null;
  /** True when SUPERVISOR_BASE_URL, _CLUSTER_ID and _CLUSTER_KEY are all set. */
  configured: boolean;
  /** Authentication and targets of the supervisor, operations and forward proxy types. */
  authority: PlatformAuthority;
  /** Platform token bookkeeping (utilmeta_access_token), for the node's own OperationsAPI. */
  tokens: AccessTokenStore;
  /** This node's OpenAPI document, served by its OperationsAPI. */
  openapi(): Record<string, unknown>;
  /** Connects a newly registered service, or re-syncs changed resources (registration hook). */
  afterRegister(reg: Registration, result: RegisterResult): Promise<void>;
  state(): LinkState;
  start(): Promise<void>;
  /** Starts the self-connect in the background (after the listener is up). */
  connectInBackground(): void;
  stop(): Promise<void>;
}

export interface PlatformOptions {
  clientOptions?: ConnectDeps['clientOptions'];
  /** Delay bounds of the self-connect retry loop (tests shorten them). */
  retry?: { minTimeout: number; maxTimeout: number };
  onRegistryChange?: () => Promise<void>;
  /** The registry's writer (the runtime shares its own). */
  store?: RegistryStore;
}

/** Decodes SUPERVISOR_CLUSTER_KEY (JSON or base64) once, failing the start with one line. */
export function clusterKeyOf(config: Config): string | null {
  const raw = config.supervisor.clusterKey;
  if (!raw) return null;
  try {
    return serializeJwk(parseJwk(raw));
  } catch (err) {
    if (err instanceof KeyError) throw new ConfigError(`${PREFIX}SUPERVISOR_CLUSTER_KEY: ${err.message}`);
    throw err;
  }
}

/** The node's own resources document (NodeMetadata + OpenAPI), uploaded after its connect. */
export function ownResources(config: Config): Record<string, unknown> {
  return {
    metadata: {
      ops_api: `${config.baseUrl}/ops`,
      name: PROXY_SERVICE_NAME,
      base_url: config.baseUrl,
      title: PROXY_SERVICE_NAME,
      description: pkg.description,
      version: pkg.version,
      spec_version: SPEC_VERSION,
      production: config.production,
      // Not a Python service: say what it is. utilmeta_version is the protocol level it speaks.
      language: 'javascript',
      language_version: process.versions.node,
      utilmeta_version: '2.9.0',
    },
    openapi: proxyOpenApi(config.baseUrl, pkg.version),
    tables: [],
    instances: [],
    databases: [],
    caches: [],
  };
}

/** NodeMetadata for add_node (spec §3.3): the service's own when it sent one. */
function serviceMetadata(reg: Registration): unknown {
  const own = resourcesMetadata(reg);
  if (own !== undefined && own !== null) return own;
  return {
    ops_api: reg.opsApi, name: reg.name, base_url: reg.baseUrl, title: reg.title, description: reg.description,
    version: reg.version, spec_version: SPEC_VERSION, production: reg.production, language: reg.language,
    language_version: reg.languageVersion ?? '', utilmeta_version: reg.utilmetaVersion,
  };
}

export function createPlatformLink(config: Config, db: Database, log: Logger, opts: PlatformOptions = {}): PlatformLink {
  const clusterKey = clusterKeyOf(config);
  const configured = Boolean(config.supervisor.baseUrl && config.supervisor.clusterId && clusterKey);
  const repo = new SupervisorRepository(db.ops, { log });
  const tokens = new AccessTokenStore(db.ops);
  const directory = new SupervisorDirectory(db.ops, log);
  const onRegistryChange = async () => {
    await directory.refresh().catch(() => {});
    await opts.onRegistryChange?.();
  };
  const connector = configured
    ? new Connector({ config, db, log, clusterKey: clusterKey!, repo, store: opts.store ?? new RegistryStore(db.registry, db.ops), clientOptions: opts.clientOptions, onRegistryChange })
    : null;
  const modeDeps = { config, directory, clusterKey };
  const state: LinkState = { configured, connected: false, node_id: null, url: null, error: null, attempts: 0 };
  const abort = new AbortController();
  let background: Promise<void> | null = null;

  if (!configured && (config.supervisor.baseUrl || config.supervisor.clusterId || clusterKey)) {
    log.warn('the platform link needs SUPERVISOR_BASE_URL, SUPERVISOR_CLUSTER_ID and SUPERVISOR_CLUSTER_KEY; it stays off');
  }

  return {
    directory,
    repo,
    connector,
    clusterKey,
    configured,
    authority: new PlatformAuthority(modeDeps),
    tokens,
    openapi: () => proxyOpenApi(config.baseUrl, pkg.version),

    async afterRegister(reg, result) {
      if (!connector) return;
      const inst = result.instance;
      try {
        if (!inst.node_id) {
          await connector.connectService({
            serviceId: inst.service_id, service: inst.service_name, opsApi: reg.opsApi,
            metadata: serviceMetadata(reg) as Record<string, unknown>, resourcesJson: reg.resourcesJson, resourcesEtag: reg.resourcesEtag,
          });
        } else if (reg.resourcesJson !== null) {
          await connector.syncResources(inst.service_name, inst.node_id, reg.resourcesJson, reg.resourcesEtag);
        }
      } catch (err) {
        log.warn({ err, service: inst.service_name }, 'platform link failed for a registration');
        const what = inst.node_id ? 'syncing its resources' : 'connecting it';
        throw new DomainError('bad_gateway', `service '${inst.service_name}' is registered, but ${what} to the platform failed: ${(err as Error).message}; the next registration retries`, { state: inst.node_id ? 'sync_failed' : 'connect_failed' });
      }
    },

    state: () => ({ ...state }),

    start: () => directory.start(),

    connectInBackground() {
      if (!connector || background) return;
      const opsApi = `${config.baseUrl}/ops`;
      const host = new URL(opsApi).hostname.replace(/^\[|\]$/g, '');
      if (config.production && (host === 'localhost' || host === '::1' || host.startsWith('127.'))) {
        // §1.6: the platform cannot call a loopback OperationsAPI. Outside production a
        // loopback BASE_URL is allowed (a platform on the same machine, and the tests).
        state.error = `BASE_URL ${config.baseUrl} is a loopback address: the platform cannot reach ${opsApi}`;
        log.error(state.error + '; not connecting this node');
        return;
      }
      background = (async () => {
        // LOAD_TIMEOUT: wait until our OperationsAPI answers at its public URL (the
        // platform will call it there); go on regardless, the connect retries.
        const deadline = Date.now() + config.loadTimeout * 1000;
        while (Date.now() < deadline && !abort.signal.aborted) {
          const ok = await request(opsApi, { headersTimeout: 2000, bodyTimeout: 2000 })
            .then(async (r) => r.statusCode === 200 && Boolean(((await r.body.json()) as { result?: { utilmeta?: string } })?.result?.utilmeta))
            .catch(() => false);
          if (ok) break;
          await new Promise((r) => setTimeout(r, 500));
        }
        const row = await pRetry(
          async () => {
            state.attempts++;
            return connector.connectSelf(opsApi, ownResources(config));
          },
          {
            retries: Number.POSITIVE_INFINITY,
            minTimeout: opts.retry?.minTimeout ?? 1000,
            maxTimeout: opts.retry?.maxTimeout ?? 60_000,
            randomize: true,
            signal: abort.signal,
            onFailedAttempt: ({ error, attemptNumber }) => {
              state.error = error.message;
              log.warn({ attempt: attemptNumber, err: error.message }, 'connecting this node to the platform failed; retrying');
            },
          },
        );
        Object.assign(state, { connected: true, node_id: row.node_id, url: row.url, error: null });
        await directory.refresh().catch(() => {});
        log.info({ node: row.node_id, url: row.url }, 'this node is connected to the platform');
      })().catch((err) => {
        if (!abort.signal.aborted) log.error({ err }, 'self-connect stopped');
      });
    },

    async stop() {
      abort.abort();
      await background?.catch(() => {});
      await directory.stop();
    },
  };
}

export { PlatformAuthority, type PlatformCaller, type PlatformCallInput, type ForwardTarget } from './modes.ts';
export { SupervisorDirectory, type SupervisorEntry } from './directory.ts';
export { SupervisorRepository } from './supervisors.ts';
export { AccessTokenStore } from './tokens-store.ts';
export { PROXY_SERVICE_NAME } from './connect.ts';
