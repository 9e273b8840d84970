// The node's HTTP surface: /api/proxy (the request chain, matched first: it is
// the hot path) and the management routes under /api. Routing is a handful of
// prefix checks.
import type { Logger } from 'pino';
import type { Handler, HeaderList, IncomingRequest, ResponseWriter } from '../http/types.ts';
import { HttpError, corsHeaders, errorBody, sendJson, sendPreflight, toHttpError, requestId as makeRequestId } from '../api/index.ts';
import { SPEC_VERSION, type Config } from '../config/index.ts';
import { requestClientIp, isPrivateIp, sameIp } from '../net/ip.ts';
import type { ProxyHandler } from '../proxy/index.ts';
import type { RegistryCache } from '../registry/cache.ts';
import type { RegistryStore, RegisterResult } from '../registry/store.ts';
import { registryResponse } from '../registry/store.ts';
import { parseRegistration, type Registration } from '../registry/registration.ts';

const PROXY_METHODS = 'GET, POST, PATCH, PUT, DELETE, HEAD, OPTIONS';

export interface Readiness {
  ready: boolean;
  details: Record<string, unknown>;
}

export interface AppDeps {
  config: Config;
  log: Logger;
  proxy: ProxyHandler;
  registry: RegistryCache;
  store: RegistryStore;
  readiness: () => Promise<Readiness>;
  /** BASE_URL's host resolves to a global IP (spec §1.1 PUBLIC_BASE_URL). */
  publicBaseUrl: boolean;
  /** Runs after a registration committed (platform connect / resource sync). */
  afterRegister?: (reg: Registration, result: RegisterResult) => Promise<void>;
  /**
   * Surfaces mounted at a path prefix (the node's own OperationsAPI at /api/ops, the
   * access plane's management APIs, the console). Matched in order, before the
   * built-in /api routes; each answers everything under its prefix itself.
   */
  mounts?: Mount[];
  /** Instance health: its state in the listing, and drains. */
  health?: RegistryHealth;
}

/** What the registry routes need of instance health. */
export interface RegistryHealth {
  healthOf(instanceId: string): { state: string; since: number | null; reason: string | null };
  drain(instanceId: string): Promise<{ since: number; until: number; shared: boolean }>;
  undrain(instanceId: string): Promise<boolean>;
}

export interface Mount {
  prefix: string;
  handle: (req: IncomingRequest, res: ResponseWriter, rest: string, requestId: string) => void | Promise<void>;
}

/** `path` is `prefix` or below it (a segment boundary). */
export function under(path: string, prefix: string): boolean {
  return path === prefix || (path.startsWith(prefix) && (prefix.endsWith('/') || path.charCodeAt(prefix.length) === 47));
}

function healthView(h: RegistryHealth, id: string): { state: string; since: string | null; reason: string | null } {
  const r = h.healthOf(id);
  return { state: r.state, since: r.since === null ? null : new Date(r.since).toISOString(), reason: r.reason };
}

export function createApp(deps: AppDeps): Handler {
  const { config, log } = deps;
  const ipOf = (req: IncomingRequest) => requestClientIp(req, config.trustedProxies);

  const debug = log.isLevelEnabled('debug');
  return (req, res) => {
    const requestId = makeRequestId(req.header('x-request-id'));
    // Headers only at debug, through the logger's redaction (secret names → [redacted]).
    if (debug) log.debug({ requestId, method: req.method, path: req.path, peer: req.remoteAddress, headers: req.headers }, 'request');
    const path = req.path;
    if (path.startsWith('/api/proxy') && (path.length === 10 || path.charCodeAt(10) === 47 /* / */)) {
      if (req.method === 'OPTIONS') return sendPreflight(req, res, PROXY_METHODS, config.corsMaxAge);
      return deps.proxy.handle(req, res, path.slice(10), ipOf(req), requestId);
    }
    for (const m of deps.mounts ?? []) {
      if (!under(path, m.prefix)) continue;
      try {
        const p = m.handle(req, res, path.slice(m.prefix.length), requestId);
        return p ? p.catch((err) => failed(req, res, requestId, err)) : undefined;
      } catch (err) {
        return failed(req, res, requestId, err);
      }
    }
    return api(req, res, requestId).catch((err) => failed(req, res, requestId, err));
  };

  /** A route threw: its HTTP error, or a 500 that names the request id (the log has the rest). */
  function failed(req: IncomingRequest, res: ResponseWriter, requestId: string, err: unknown): void {
    const e = toHttpError(err, config.bodyLimit);
    if (!e) log.error({ err, requestId, path: req.path }, 'request failed');
    const he = e ?? new HttpError(500, 'internal error; see the proxy log for request ' + requestId);
    if (!res.aborted) sendJson(res, he.status, errorBody(he), [...corsHeaders(req), ['x-request-id', requestId], ...he.headers]);
  }

  async function api(req: IncomingRequest, res: ResponseWriter, requestId: string): Promise<void> {
    const path = req.path.length > 4 && req.path.endsWith('/') ? req.path.slice(0, -1) : req.path;
    const common = (): HeaderList => [...corsHeaders(req), ['x-request-id', requestId]];
    const methods = (allowed: string) => {
      if (req.method === 'OPTIONS') {
        sendPreflight(req, res, allowed, config.corsMaxAge);
        return false;
      }
      if (!allowed.split(', ').includes(req.method)) {
        throw new HttpError(405, `method ${req.method} is not allowed on ${path}; allowed: ${allowed}`, undefined, [['allow', allowed]]);
      }
      return true;
    };
    if (path === '/api' || path === '/api/') {
      if (!methods('GET, HEAD')) return;
      return sendJson(res, 200, { utilmeta: SPEC_VERSION, type: 'proxy', registry_url: '/registry', proxy_url: '/proxy' }, common());
    }
    if (path === '/api/healthz') {
      if (!methods('GET, HEAD')) return;
      return sendJson(res, 200, { status: 'ok' }, common());
    }
    if (path === '/api/readyz') {
      if (!methods('GET, HEAD')) return;
      const r = await deps.readiness();
      return sendJson(res, r.ready ? 200 : 503, { status: r.ready ? 'ready' : 'not ready', ...r.details }, common());
    }
    if (path === '/api/registry') {
      if (!methods('GET, POST')) return;
      if (req.method === 'POST') return register(req, res, common());
      requireInternal(req);
      const service = new URLSearchParams(req.query).get('service') ?? undefined;
      const services = await deps.store.list({ service });
      const health = deps.health;
      if (health) for (const svc of services) for (const inst of svc.instances) (inst as { health?: unknown }).health = healthView(health, String(inst.id));
      return sendJson(res, 200, { services }, common());
    }
    if (path.startsWith('/api/registry/') && path.endsWith('/drain')) {
      if (!methods('POST, DELETE')) return;
      requireInternal(req);
      const key = registryKey(path.slice('/api/registry/'.length, -'/drain'.length));
      const id = instanceIdOf(key);
      if (id === null) throw new HttpError(404, `no registered instance with id or address '${key}'`);
      if (!deps.health) throw new HttpError(501, 'instance health is not enabled on this node');
      if (req.method === 'DELETE') {
        const shared = await deps.health.undrain(id);
        return sendJson(res, 200, { instance: id, shared, health: healthView(deps.health, id) }, common());
      }
      const d = await deps.health.drain(id);
      return sendJson(res, 200, { instance: id, shared: d.shared, until: new Date(d.until).toISOString(), health: healthView(deps.health, id) }, common());
    }
    if (path.startsWith('/api/registry/')) {
      if (!methods('DELETE')) return;
      requireInternal(req);
      const key = registryKey(path.slice('/api/registry/'.length));
      // New requests stop at once on every node; in-flight ones finish.
      const id = instanceIdOf(key);
      if (id !== null && deps.health) await deps.health.drain(id);
      const removed = await deps.store.deregister(key);
      if (!removed) throw new HttpError(404, `no registered instance with id or address '${key}'`);
      await deps.registry.refresh().catch(() => {});
      return sendJson(res, 200, { deleted: registryResponse(removed) }, common());
    }
    throw new HttpError(404, `no route for ${req.method} ${req.path}`);
  }

  function registryKey(raw: string): string {
    try {
      return decodeURIComponent(raw);
    } catch {
      throw new HttpError(400, `'${raw}' is not a valid percent-encoded instance id or address`);
    }
  }

  /** An instance id or address, as the registry knows it now. */
  function instanceIdOf(key: string): string | null {
    for (const svc of deps.registry.snapshot.services) {
      for (const inst of svc.instances) if (inst.id === key || inst.address === key) return inst.id;
    }
    return null;
  }

  /** Listing and deleting registry entries is for operators inside the network. */
  function requireInternal(req: IncomingRequest): void {
    const ip = ipOf(req);
    if (!isPrivateIp(ip)) throw new HttpError(403, `the registry admin API is only open to private network clients; your address is ${ip}`);
  }

  async function register(req: IncomingRequest, res: ResponseWriter, headers: HeaderList): Promise<void> {
    const ip = ipOf(req);
    if (config.private && !isPrivateIp(ip)) {
      throw new HttpError(403, `registration is only open to private network clients (PRIVATE is set); your address is ${ip}`);
    }
    const text = (await req.readBody(config.bodyLimit)).toString('utf8');
    const reg = await parseRegistration(text);
    if (config.private && !deps.publicBaseUrl && !sameIp(ip, reg.host)) {
      throw new HttpError(403, `service register failed, your request ip: ${ip} is inconsistent to instance host: ${reg.host}`);
    }
    const resource = await deps.store.findInstanceResource(reg);
    if (!resource) {
      throw new HttpError(400, `service register failed: instance(id=${reg.instanceId}, address=${reg.address}) of service '${reg.name}' not found in operations database`);
    }
    const result = await deps.store.register(reg, resource);
    await deps.registry.refresh().catch(() => {});
    log.info({ service: reg.name, address: reg.address, instance: result.instance.id, created: result.created, renamedFrom: result.renamedFrom ?? undefined }, 'instance registered');
    if (deps.afterRegister) {
      await deps.afterRegister(reg, result);
      // The platform link may have set the node id and instance remote id.
      result.instance = (await deps.store.instance(result.instance.id)) ?? result.instance;
    }
    sendJson(res, 200, registryResponse(result.instance), headers);
  }
}
