// A small UtilMeta-like service for end-to-end tests of the platform link (spec §2, §3.8, §4.2).
//
// It behaves like a utilmeta 2.9 service configured with `Operations(proxy=Operations.Proxy(...))`:
// * register(): makes sure its server + instance `utilmeta_resource` rows exist in the SHARED ops
//   database (spec §2.2), then sends `POST {proxy}/registry` with the resources document
//   (metadata with its private ops_api / base_url, openapi, instances, …) and keeps the node id
//   the proxy answers with (§2.4);
// * its API lives under /api (`/api/hello` → "world", `/api/echo` → JSON of what arrived);
// * its OperationsAPI lives at /api/ops (§3.8): `GET /` info, `POST /` = save_supervisor on the
//   shared ops DB (the same SupervisorRepository.saveSupervisor the proxy uses, which is what the
//   Python code does), and the token-protected `GET /openapi` and `GET /token/scope`, validating
//   the bearer per §4.2 against its own Supervisor row (verifyToken + AccessTokenStore + scopes);
// * forward(): outbound platform traffic through the proxy like `forward=True` (§2.5), with the
//   header names and order of the captured 2.9 heartbeat
//   (fixtures/service-startup/utilmeta-2.9-forward-heartbeat-request.json).
// Every request it receives is recorded in `seen`; every forward call's answer in `forwarded`.

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import postgres from 'postgres';
import { request } from 'undici';
import { SupervisorRepository, type SupervisorRow } from '../../src/platform/supervisors.ts';
import { AccessTokenStore } from '../../src/platform/tokens-store.ts';
import type { SupervisorData } from '../../src/platform/client.ts';
import { extractToken, hasScopes, parseScope, verifyToken, type TokenFailure } from '../../src/tokens/jwt.ts';
import { dumpsJs } from '../../src/pyjson/index.ts';
import { insertInstanceResource } from './ops.ts';
import { PG_HOST, PG_PORT, PG_USER } from './env.ts';

export const SPEC_VERSION = '0.4.0';

/** The captured forward heartbeat of a utilmeta 2.9 service (header names, order, values). */
export const FORWARD_FIXTURE = JSON.parse(
  readFileSync(new URL('../../../shared/fixtures/service-startup/utilmeta-2.9-forward-heartbeat-request.json', import.meta.url), 'utf8'),
) as { method: string; path: string; headers: Array<[string, string]>; body_length: number };

export interface FakeServiceOptions {
  name: string;
  /** The proxy's BASE_URL (…/api): registration goes to `{proxyBaseUrl}/registry`, forward traffic to `{proxyBaseUrl}/proxy`. */
  proxyBaseUrl: string;
  /** The shared ops database (the proxy's OPS_DB_NAME). */
  opsDatabase: string;
  /** Listen port (default: ephemeral). */
  port?: number;
  version?: string;
  title?: string | null;
  description?: string;
  /** Registers as a production instance (default false). */
  production?: boolean;
}

export interface ServiceSeen {
  method: string;
  url: string;
  path: string;
  query: URLSearchParams;
  /** Lower-cased names; repeated headers joined with ', '. */
  headers: Record<string, string>;
  rawHeaders: Array<[string, string]>;
  body: string;
  /** What the service answered. */
  status: number;
}

export interface CallResult {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

interface OpsFailure {
  status: number;
  msg: string;
  state: string | number;
}

class OpsError extends Error {
  constructor(readonly status: number, message: string, readonly state: string | number = 0) {
    super(message);
  }
}

async function readText(res: { body: { text(): Promise<string> } }): Promise<string> {
  return res.body.text();
}

function parseJson(text: string): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export class FakeService {
  readonly name: string;
  readonly proxyBaseUrl: string;
  version: string;
  title: string | null;
  description: string;
  readonly production: boolean;
  /** Its own connection to the shared ops DB (like the service's Django `ops` database). */
  readonly ops: postgres.Sql;
  readonly repo: SupervisorRepository;
  readonly tokens: AccessTokenStore;
  readonly seen: ServiceSeen[] = [];
  readonly forwarded: Array<{ path: string; headers: Record<string, string>; result: CallResult }> = [];
  /** The node id from the last successful registration (what the service writes to its ini). */
  nodeId: string | null = null;
  /** PK of its instance row in utilmeta_resource (sent as instance_id). */
  instanceId: string | null = null;
  serverId: string | null = null;
  /** PK of the utilmeta_version_log row written with the instance row. */
  versionLogId: string | null = null;
  /** Extra OpenAPI paths: tests change them to change the resources document. */
  readonly extraPaths: Record<string, unknown> = {};
  /** Last registration answer. */
  lastRegistration: CallResult | null = null;

  private server!: http.Server;
  private port = 0;

  private constructor(opts: FakeServiceOptions) {
    this.name = opts.name;
    this.proxyBaseUrl = opts.proxyBaseUrl.replace(/\/+$/, '');
    this.version = opts.version ?? '1.2.3';
    this.title = opts.title === undefined ? `Fake ${opts.name}` : opts.title;
    this.description = opts.description ?? 'fake UtilMeta service for utilmeta-proxy tests';
    this.production = opts.production ?? false;
    this.ops = postgres({ host: PG_HOST, port: PG_PORT, user: PG_USER, database: opts.opsDatabase, max: 3, onnotice: () => {} });
    this.repo = new SupervisorRepository(this.ops);
    this.tokens = new AccessTokenStore(this.ops);
  }

  static async start(opts: FakeServiceOptions): Promise<FakeService> {
    const svc = new FakeService(opts);
    svc.server = http.createServer((req, res) => void svc.handle(req, res));
    svc.server.keepAliveTimeout = 10_000;
    await new Promise<void>((resolve, reject) => {
      svc.server.once('error', reject);
      svc.server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
    });
    svc.port = (svc.server.address() as AddressInfo).port;
    return svc;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await this.ops.end({ timeout: 5 });
  }

  /** Its node:http server (a test may serve WebSocket upgrades on it). */
  get httpServer(): http.Server {
    return this.server;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get origin(): string {
    return `http://${this.address}`;
  }

  /** proxy_base_url (spec §2.1): what it registers as base_url. */
  get baseUrl(): string {
    return `${this.origin}/api`;
  }

  /** proxy_ops_api (spec §2.1): its private OperationsAPI. */
  get opsApi(): string {
    return `${this.baseUrl}/ops`;
  }

  /** Requests it received on a path (without query), optionally by method. */
  seenAt(path: string, method?: string): ServiceSeen[] {
    return this.seen.filter((s) => s.path === path && (!method || s.method === method.toUpperCase()));
  }

  // ---- shared ops DB -----------------------------------------------------------------------

  /** `Supervisor.current()`: by the known node id, else by service name, with Supervisor.filter semantics. */
  async supervisor(): Promise<SupervisorRow | null> {
    if (this.nodeId) return (await this.repo.filterByNode(this.nodeId))[0] ?? null;
    const [row] = await this.ops<{ id: string }[]>`
      SELECT id::text AS id FROM utilmeta_supervisor
      WHERE service = ${this.name} AND node_id IS NOT NULL AND disabled = false AND (local OR public_key IS NOT NULL)
      ORDER BY id LIMIT 1`;
    return row ? this.repo.getById(row.id) : null;
  }

  /** Spec §2.2: find (Resource.get_current_instance) or create its server + instance rows. */
  async ensureResourceRows(): Promise<string> {
    const [found] = await this.ops<{ id: string; server_id: string | null }[]>`
      SELECT id::text AS id, server_id::text AS server_id FROM utilmeta_resource
      WHERE type = 'instance' AND service = ${this.name} AND ident = ${this.address} AND deleted_time IS NULL
      ORDER BY id LIMIT 1`;
    if (found) {
      this.instanceId = found.id;
      this.serverId = found.server_id;
      return found.id;
    }
    const created = await insertInstanceResource(this.ops, { service: this.name, address: this.address, nodeId: this.nodeId });
    this.instanceId = created.id;
    this.serverId = created.serverId;
    // A starting service also logs its version (VersionLog); without a node it is an orphan
    // that a connect attaches (spec §3.6.1 step 8).
    const [log] = await this.ops<{ id: string }[]>`
      INSERT INTO utilmeta_version_log (service, node_id, "time", down_time, success, restart_data, version, remote_id, instance_id)
      VALUES (${this.name}, ${this.nodeId}, ${new Date()}, NULL, true, '{}'::jsonb, ${this.version}, NULL, ${created.id})
      RETURNING id::text AS id`;
    this.versionLogId = log.id;
    return created.id;
  }

  // ---- registration ------------------------------------------------------------------------

  metadata(): Record<string, unknown> {
    return {
      ops_api: this.opsApi,
      name: this.name,
      base_url: this.baseUrl,
      title: this.title,
      description: this.description,
      version: this.version,
      spec_version: SPEC_VERSION,
      production: this.production,
      language: 'python',
      language_version: '3.11.2',
      utilmeta_version: '2.9.0',
    };
  }

  openapi(): Record<string, unknown> {
    return {
      openapi: '3.1.0',
      info: { title: this.title ?? this.name, version: this.version, description: this.description },
      paths: {
        '/hello': { get: { operationId: 'hello', responses: {} } },
        '/echo': { get: { operationId: 'echo', responses: {} } },
        ...this.extraPaths,
      },
      servers: [{ url: this.baseUrl }],
    };
  }

  /** The ResourcesSchema document (spec §3.3) it would upload. */
  resources(): Record<string, unknown> {
    return {
      metadata: this.metadata(),
      config: {
        worker_cycle_interval: 5, max_retention_time: 7776000, max_sync_retries: 10, max_backlog: 100,
        secret_names: ['password', 'secret'], trusted_hosts: ['127.0.0.1', 'utilmeta.com'],
        disabled_scope: [], local_scope: ['*'], private_scope: [],
      },
      openapi: this.openapi(),
      tables: [],
      instances: [
        {
          description: '',
          server: { ip: '127.0.0.1', mac: '02:fc:00:00:00:01', system: 'linux', hostname: 'fake', cpu_num: 2 },
          version: this.version,
          asynchronous: true,
          production: this.production,
          language: 'python',
          utilmeta_version: '2.9.0',
          language_version: '3.11.2',
          backend: 'starlette',
          backend_version: '0.26.1',
          cwd: '/srv/fake',
          port: this.port,
          address: this.address,
        },
      ],
      databases: [],
      caches: [],
      events: [],
      metrics: [],
      actions: [],
    };
  }

  /** The registration body of spec §2.4 (`resources` null means "unchanged"). */
  registrationBody(resources: Record<string, unknown> | null): Record<string, unknown> {
    return {
      name: this.name,
      instance_id: Number(this.instanceId),
      address: this.address,
      ops_api: this.opsApi,
      base_url: this.baseUrl,
      cwd: '/srv/fake',
      version: this.version,
      title: this.title,
      description: this.description,
      production: this.production,
      asynchronous: true,
      backend: 'starlette',
      backend_version: '0.26.1',
      language: 'python',
      language_version: '3.11.2',
      utilmeta_version: '2.9.0',
      resources,
    };
  }

  /**
   * register_service (spec §2.4): ensure the ops rows, then `POST {proxy}/registry` with a
   * Python-json.dumps body. `resources: null` sends "unchanged"; default is the full document.
   */
  async register(opts: { resources?: Record<string, unknown> | null } = {}): Promise<CallResult> {
    await this.ensureResourceRows();
    const resources = opts.resources === undefined ? this.resources() : opts.resources;
    const res = await request(`${this.proxyBaseUrl}/registry`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: dumpsJs(this.registrationBody(resources)),
    });
    const text = await readText(res);
    const result: CallResult = { status: res.statusCode, headers: res.headers, text, json: parseJson(text) };
    this.lastRegistration = result;
    if (res.statusCode === 200 && typeof result.json?.node_id === 'string') this.nodeId = result.json.node_id;
    return result;
  }

  // ---- forward traffic ---------------------------------------------------------------------

  /**
   * An outbound SupervisorClient call in forward mode (spec §2.5): `{proxy}/proxy{path}` with the
   * fixture's headers (x-utilmeta-proxy-type: forward, X-Node-ID, X-Node-Key = its row's key).
   */
  async forward(path: string, opts: { method?: string; body?: string; headers?: Record<string, string> } = {}): Promise<CallResult> {
    const row = await this.supervisor();
    const nodeId = this.nodeId ?? row?.node_id;
    if (!nodeId) throw new Error(`fake service ${this.name}: no node id yet, cannot forward`);
    const headers: Record<string, string> = {};
    for (const [name, value] of FORWARD_FIXTURE.headers) {
      const lc = name.toLowerCase();
      if (lc === 'host' || lc === 'content-length' || lc === 'connection') continue; // set by the transport
      if (lc === 'x-node-id') headers[name] = nodeId;
      else if (lc === 'x-node-key') {
        if (row?.public_key) headers[name] = row.public_key;
      } else headers[name] = value;
    }
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    Object.assign(headers, opts.headers);
    const res = await request(`${this.proxyBaseUrl}/proxy${path}`, {
      method: (opts.method ?? 'POST') as 'POST',
      headers,
      body: opts.body ?? '',
    });
    const text = await readText(res);
    const result: CallResult = { status: res.statusCode, headers: res.headers, text, json: parseJson(text) };
    this.forwarded.push({ path, headers, result });
    return result;
  }

  // ---- HTTP --------------------------------------------------------------------------------

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    try {
      for await (const c of req) chunks.push(c as Buffer);
    } catch {
      return;
    }
    const url = req.url ?? '/';
    const u = new URL(url, this.origin);
    const headers: Record<string, string> = {};
    const rawHeaders: Array<[string, string]> = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i];
      const value = req.rawHeaders[i + 1];
      rawHeaders.push([name, value]);
      const lc = name.toLowerCase();
      headers[lc] = lc in headers ? `${headers[lc]}, ${value}` : value;
    }
    const seen: ServiceSeen = {
      method: (req.method ?? 'GET').toUpperCase(), url, path: u.pathname, query: u.searchParams, headers, rawHeaders,
      body: Buffer.concat(chunks).toString('utf8'), status: 0,
    };
    this.seen.push(seen);
    const send = (status: number, body: string, type = 'application/json', extra: Record<string, string> = {}) => {
      seen.status = status;
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...extra });
      res.end(body);
    };
    try {
      const path = u.pathname.replace(/\/+$/, '') || '/';
      if (path === '/api/hello' && seen.method === 'GET') return send(200, 'world', 'text/plain; charset=utf-8');
      if (path === '/api/echo') {
        return send(200, JSON.stringify({ service: this.name, method: seen.method, url, headers, body: seen.body }));
      }
      if (path === '/api/ops' || path.startsWith('/api/ops/')) {
        const { status, body } = await this.operations(path.slice('/api/ops'.length) || '/', seen);
        return send(status, JSON.stringify(body));
      }
      return send(404, JSON.stringify({ error: `NotFound: ${seen.method} ${u.pathname}` }));
    } catch (err) {
      return send(500, JSON.stringify({ error: `fake service error: ${(err as Error).message}` }));
    }
  }

  /** Token ids revoked through its OperationsAPI. */
  readonly revoked: string[] = [];

  private info(): Record<string, unknown> {
    return { utilmeta: SPEC_VERSION, service: this.name, timestamp: Date.now(), requires: ['authorization'] };
  }

  /** The OperationsAPI (spec §3.8), wrapped envelope {result, msg, state, count}. */
  private async operations(path: string, seen: ServiceSeen): Promise<{ status: number; body: unknown }> {
    const ok = (result: unknown) => ({ status: 200, body: { result, msg: '', state: 1, count: Array.isArray(result) ? result.length : 0 } });
    const failure = (f: OpsFailure) => ({ status: f.status, body: { result: null, msg: f.msg, state: f.state, count: 0 } });
    try {
      if (path === '/' && seen.method === 'GET') return ok(this.info());
      if (path === '/' && seen.method === 'POST') {
        // Unauthenticated, gated by init_key: save_supervisor (spec §3.6.1 step 6).
        const data = parseJson(seen.body) as SupervisorData | undefined;
        if (!data || typeof data !== 'object') throw new OpsError(400, 'body must be SupervisorData');
        if (!data.init_key) throw new OpsError(400, 'Missing init_key for supervisor to be saved');
        const r = await this.repo.saveSupervisor(data);
        if (!r.ok || !r.row) throw new OpsError(r.status, r.message);
        // Echo node_id so the platform can tell a POST that silently became a GET.
        return ok({ node_id: r.row.node_id, ...this.info() });
      }
      if (path === '/openapi' && seen.method === 'GET') {
        await this.authenticate(seen, ['api.view']);
        return ok(this.openapi());
      }
      if (path === '/token/revoke' && seen.method === 'POST') {
        // Like UtilMeta's: a JSON array of token ids; answers the ids it revoked.
        await this.authenticate(seen, ['token.revoke']);
        const ids = parseJson(seen.body);
        if (!Array.isArray(ids) || !ids.every((x) => typeof x === 'string')) throw new OpsError(400, 'body must be a JSON array of token ids');
        this.revoked.push(...(ids as string[]));
        return ok(ids);
      }
      if (path === '/token/scope' && seen.method === 'GET') {
        const { scopes } = await this.authenticate(seen, []);
        return ok(scopes);
      }
      throw new OpsError(404, `no OperationsAPI route for ${seen.method} ${path}`);
    } catch (err) {
      if (err instanceof OpsError) return failure({ status: err.status, msg: err.message, state: err.state });
      throw err;
    }
  }

  /** handle_token (spec §4.2) against this service's Supervisor rows, with §4.3 bookkeeping. */
  private async authenticate(seen: ServiceSeen, required: string[]): Promise<{ row: SupervisorRow; scopes: string[] }> {
    const token = extractToken(seen.headers.authorization);
    if (!token) throw new OpsError(401, 'authorization required', 'token_required');
    const nodeId = seen.headers['x-utilmeta-node-id'] ?? seen.headers['x-node-id'] ?? seen.query.get('node') ?? '';
    if (!nodeId) throw new OpsError(400, 'node id required', 'node_required');
    let last: TokenFailure | undefined;
    for (const row of await this.repo.tokenSupervisors(nodeId)) {
      const r = await verifyToken(token, { key: row.public_key!, nodeId, issuerBase: row.base_url, requireJti: true });
      if (!r.ok) {
        last = r;
        continue;
      }
      const ip = (seen.headers['x-forwarded-for'] ?? '').split(',')[0].trim() || null;
      const used = await this.tokens.recordUse(row.id, r.claims, ip);
      if (!used.ok) throw new OpsError(used.status, used.message, used.state);
      const { scopes } = parseScope(r.claims.scope);
      if (required.length && !hasScopes(required, scopes)) throw new OpsError(403, 'insufficient scope', 'insufficient_scope');
      return { row, scopes };
    }
    if (last) throw new OpsError(last.status, last.message, last.state);
    throw new OpsError(400, 'Supervisor not found', 'supervisor_not_found');
  }
}
