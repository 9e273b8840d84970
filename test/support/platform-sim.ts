// A stand-in for the UtilMeta platform ("supervisor") for end-to-end tests.
//
// It speaks the supervisor API of spec §3.2 with real RSA keys, real JWE bodies and real JWTs
// (jose), and performs the add_node callback of §3.6 the way the real platform is inferred to:
// through the proxy for cluster nodes (`POST {proxy}/proxy`, type `operations`, cluster-signed
// Proxy-Authorization), or directly at `ops_api`. Every request is recorded with its decrypted
// body, and faults (500s, hangs) can be injected per request count and/or path.
//
// Not the real platform: its internals are unknown (spec §0). Where we had to choose (etags,
// ids, console URLs, resource remote ids, error bodies) the choice is marked.

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { CompactSign, exportJWK, generateKeyPair } from 'jose';
import { Agent, request } from 'undici';
import { decryptBody, readJweHeader } from '../../src/platform/jwe.ts';
import { importKey, keyEntry, sameKey, serializeJwk } from '../../src/tokens/keys.ts';

export type JwtAlg = 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'PS384' | 'PS512';

export interface SimKeyPair {
  /** Public JWK as compact sorted-key JSON `{alg,e,kid,kty,n}` (UtilMeta's generate_key_pair format). */
  publicKey: string;
  /** Private JWK JSON (adds d, dp, dq, p, q, qi). */
  privateKey: string;
  /** RFC 7638 thumbprint: the `kid` UtilMeta puts in JWE headers encrypted to this key. */
  thumbprint: string;
}

/** RSA-2048 key pair like `utilmeta.ops.spv.key.generate_key_pair(kid)`. */
export async function generateRsaKeyPair(kid: string): Promise<SimKeyPair> {
  const { privateKey } = await generateKeyPair('RSA-OAEP-256', { extractable: true });
  const j = await exportJWK(privateKey);
  const publicKey = serializeJwk({ alg: 'RSA-OAEP-256', e: j.e, kid, kty: 'RSA', n: j.n });
  const priv = serializeJwk({ alg: 'RSA-OAEP-256', d: j.d, dp: j.dp, dq: j.dq, e: j.e, kid, kty: 'RSA', n: j.n, p: j.p, q: j.q, qi: j.qi });
  return { publicKey, privateKey: priv, thumbprint: await keyEntry(publicKey).thumbprint() };
}

/**
 * Signs a JWT with a private JWK text. Claims are serialized as given (a claim set to
 * `undefined` is dropped), so tests can also produce malformed-but-signed tokens.
 */
export async function signJwt(
  claims: Record<string, unknown>,
  privateJwk: string,
  opts: { alg?: JwtAlg; header?: Record<string, unknown> } = {},
): Promise<string> {
  const alg = opts.alg ?? 'RS256';
  const payload = new TextEncoder().encode(JSON.stringify(claims));
  return new CompactSign(payload)
    .setProtectedHeader({ alg, typ: 'JWT', ...opts.header })
    .sign(await importKey(privateJwk, alg, true));
}

export interface SupervisorData {
  node_id: string;
  url: string | null;
  public_key: string | null;
  ops_api: string;
  ident: string;
  base_url: string | null;
  backup_urls: string[];
  init_key: string | null;
  local: boolean;
}

export interface ResourceData {
  remote_id: string;
  server_id?: string | null;
  type: string;
  ident: string;
  route: string;
  ref?: string | null;
  data: Record<string, unknown>;
}

export interface SimNode {
  id: string;
  name: string;
  opsApi: string;
  /** The service's own base_url from its metadata. */
  serviceBaseUrl: string;
  metadata: Record<string, unknown>;
  keys: SimKeyPair;
  /** Which platform key the node was created with. */
  via: 'cluster' | 'access';
  /** The key text received in X-Cluster-Key / X-Access-Key (echoed as init_key). */
  initKey: string;
  clusterId: string | null;
  url: string;
  supervisorData: SupervisorData;
  /** Etag of the last accepted resources upload (see `etagOf`). */
  lastEtag: string | null;
  resources: ResourceData[];
  /** Decrypted JSON of the last accepted resources upload. */
  lastResources: unknown;
  deleted: boolean;
}

export interface RecordedRequest {
  seq: number;
  time: number;
  method: string;
  /** Path relative to the supervisor base path, e.g. '/', '/resources'. */
  path: string;
  /** Raw request target as received. */
  url: string;
  query: string;
  /** Lower-cased names; repeated headers joined with ', '. */
  headers: Record<string, string>;
  /** Header pairs in wire order with the sender's casing. */
  rawHeaders: Array<[string, string]>;
  body: Buffer;
  bodyText: string;
  /** Protected header of a JWE body, null when the body is not a flattened JWE. */
  jweHeader: Record<string, unknown> | null;
  /** Decrypted JWE plaintext, when the `kid` names a key the simulator holds and decryption succeeded. */
  decrypted: Buffer | null;
  decryptedText: string | null;
  decryptedJson: unknown;
  /** 'cluster', 'access:<n>' or 'node:<id>'. */
  decryptedWith: string | null;
  decryptError: string | null;
  /** Response status; null while unanswered (hang). */
  status: number | null;
  response: unknown;
  injected: 'fail' | 'hang' | null;
}

export interface RecordedCallback {
  nodeId: string;
  mode: 'proxy' | 'direct';
  url: string;
  headers: Record<string, string>;
  body: string;
  status: number | null;
  response: unknown;
  error: string | null;
  /** True when the OperationsAPI answered 200 echoing the node id. */
  ok: boolean;
}

export interface FaultRule {
  mode: 'fail' | 'hang';
  /** How many matching requests it applies to (default 1; Infinity for "always"). */
  count?: number;
  /** Only requests to this relative path (e.g. '/resources'). */
  path?: string;
  method?: string;
  /** For 'fail': status (default 500), msg and state of the envelope. */
  status?: number;
  msg?: string;
  state?: string | number;
}

export type CallbackMode = 'auto' | 'proxy' | 'direct' | 'none';
export type ResourcesShape = '2.8' | '2.9';

export interface PlatformSimOptions {
  clusterId?: string;
  /** Path the supervisor API lives under (default '/spv', like https://api.utilmeta.com/spv). */
  basePath?: string;
  ident?: string;
  /** Proxy base URL (e.g. http://127.0.0.1:8888/api) for callbacks to cluster nodes; settable later. */
  proxyBaseUrl?: string;
  /**
   * How add_node reaches the node's OperationsAPI. 'auto' (default): through the proxy for
   * cluster nodes when proxyBaseUrl is set, else directly at ops_api. 'none' always answers
   * with SupervisorData, as when the platform cannot reach the node.
   */
  callbackMode?: CallbackMode;
  /** Shape of the 200 answer to POST /resources (default '2.8', what the Python proxy expects). */
  resourcesShape?: ResourcesShape;
  callbackTimeoutMs?: number;
  /**
   * Etag of an accepted upload, computed over the decrypted bytes. The real platform's
   * algorithm is unknown; the default is sha256 hex. Plug in UtilMeta's fast_digest to make the
   * client's etag pre-check (§3.4) match.
   */
  etagOf?: (decrypted: Buffer) => string;
}

interface Reply {
  status: number;
  /** undefined = no body (304). */
  body?: unknown;
}

const envelope = (result: unknown, msg = '', state: string | number = 1, count = 0) => ({ result, msg, state, count });
const errorReply = (status: number, msg: string, state: string | number = 0): Reply => ({ status, body: envelope(null, msg, state) });
const sha256 = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

export class PlatformSim {
  readonly clusterId: string;
  readonly basePath: string;
  readonly ident: string;
  proxyBaseUrl: string | undefined;
  callbackMode: CallbackMode;
  resourcesShape: ResourcesShape;
  callbackTimeoutMs: number;
  etagOf: (decrypted: Buffer) => string;
  /** Merged into `supervisor` of 2.9-shaped resources answers. */
  syncSettings: { heartbeat_interval: number | null; settings: unknown; alert_settings: unknown; report_settings: unknown } = {
    heartbeat_interval: 60,
    settings: {},
    alert_settings: {},
    report_settings: {},
  };

  readonly requests: RecordedRequest[] = [];
  readonly callbacks: RecordedCallback[] = [];
  readonly nodes = new Map<string, SimNode>();

  private server!: http.Server;
  private port = 0;
  private cluster!: SimKeyPair;
  private readonly accessKeys: SimKeyPair[] = [];
  /** thumbprint -> (private key, label) for decrypting bodies by their JWE kid. */
  private readonly byKid = new Map<string, { privateKey: string; label: string }>();
  private readonly faults: Array<Required<Pick<FaultRule, 'mode' | 'count'>> & FaultRule> = [];
  private readonly hanging = new Set<http.ServerResponse>();
  private readonly agent = new Agent({ keepAliveTimeout: 1000 });
  private seq = 0;

  private constructor(opts: PlatformSimOptions) {
    this.clusterId = opts.clusterId ?? 'cluster-1';
    this.basePath = (opts.basePath ?? '/spv').replace(/\/+$/, '');
    this.ident = opts.ident ?? 'sim-spv';
    this.proxyBaseUrl = opts.proxyBaseUrl;
    this.callbackMode = opts.callbackMode ?? 'auto';
    this.resourcesShape = opts.resourcesShape ?? '2.8';
    this.callbackTimeoutMs = opts.callbackTimeoutMs ?? 5000;
    this.etagOf = opts.etagOf ?? ((b) => sha256(b));
  }

  static async start(opts: PlatformSimOptions = {}): Promise<PlatformSim> {
    const sim = new PlatformSim(opts);
    sim.cluster = await generateRsaKeyPair(`${sim.clusterId}-key`);
    sim.byKid.set(sim.cluster.thumbprint, { privateKey: sim.cluster.privateKey, label: 'cluster' });
    sim.server = http.createServer((req, res) => void sim.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      sim.server.once('error', reject);
      sim.server.listen(0, '127.0.0.1', () => resolve());
    });
    sim.port = (sim.server.address() as AddressInfo).port;
    return sim;
  }

  async close(): Promise<void> {
    for (const res of this.hanging) res.destroy();
    this.hanging.clear();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await this.agent.close();
  }

  /** `http://127.0.0.1:<port>`; also the `iss` of every token the simulator mints. */
  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The supervisor base URL (SUPERVISOR_BASE_URL), e.g. `http://127.0.0.1:<port>/spv`. */
  get baseUrl(): string {
    return this.origin + this.basePath;
  }

  /** Cluster public key JSON: what the proxy gets as SUPERVISOR_CLUSTER_KEY. */
  get clusterPublicKey(): string {
    return this.cluster.publicKey;
  }

  get clusterPrivateKey(): string {
    return this.cluster.privateKey;
  }

  /** Issues an access key (for direct `meta connect --key` flows); returns its public JWK JSON. */
  async createAccessKey(): Promise<string> {
    const kp = await generateRsaKeyPair(`access-${this.accessKeys.length + 1}`);
    this.accessKeys.push(kp);
    this.byKid.set(kp.thumbprint, { privateKey: kp.privateKey, label: `access:${this.accessKeys.length}` });
    return kp.publicKey;
  }

  node(nodeId: string): SimNode {
    const n = this.nodes.get(nodeId);
    if (!n) throw new Error(`platform-sim: unknown node ${nodeId}`);
    return n;
  }

  /** Recorded requests, optionally filtered by relative path and method. */
  requestsTo(path: string, method?: string): RecordedRequest[] {
    return this.requests.filter((r) => r.path === path && (!method || r.method === method.toUpperCase()));
  }

  // ---- fault injection -------------------------------------------------------------------

  inject(rule: FaultRule): void {
    this.faults.push({ ...rule, count: rule.count ?? 1, method: rule.method?.toUpperCase() });
  }

  /** The next `count` matching requests get `status` (default 500) with `msg`. */
  failNext(count = 1, opts: Omit<FaultRule, 'mode' | 'count'> = {}): void {
    this.inject({ ...opts, mode: 'fail', count });
  }

  /** The next `count` matching requests are never answered (the client times out). */
  hangNext(count = 1, opts: Pick<FaultRule, 'path' | 'method'> = {}): void {
    this.inject({ ...opts, mode: 'hang', count });
  }

  clearFaults(): void {
    this.faults.length = 0;
  }

  private takeFault(method: string, path: string): FaultRule | null {
    for (const f of this.faults) {
      if (f.count <= 0) continue;
      if (f.path !== undefined && f.path !== path) continue;
      if (f.method !== undefined && f.method !== method) continue;
      f.count -= 1;
      return f;
    }
    return null;
  }

  // ---- tokens --------------------------------------------------------------------------------

  /**
   * Cluster-signed token for `Proxy-Authorization` (§4.1): nid, aud = cluster id, iss = origin,
   * iat, exp (+5 min), jti. `overrides` replace claims; a claim set to undefined is removed.
   */
  async proxyToken(nodeId: string, overrides: Record<string, unknown> = {}, opts: { alg?: JwtAlg; header?: Record<string, unknown> } = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const claims = stripUndefined({
      iss: this.origin,
      aud: this.clusterId,
      nid: nodeId,
      iat: now,
      exp: now + 300,
      jti: `px-${randomBytes(8).toString('hex')}`,
      ...overrides,
    });
    return signJwt(claims, this.cluster.privateKey, opts);
  }

  /**
   * Node-signed OperationsAPI bearer token (§4.2): nid, iss = origin, aud = the node's ops_api,
   * sub, scope (default '*'), iat, exp (+5 min), jti.
   */
  async nodeToken(
    nodeId: string,
    overrides: { scope?: string; jti?: string; [claim: string]: unknown } = {},
    opts: { alg?: JwtAlg; header?: Record<string, unknown> } = {},
  ): Promise<string> {
    const node = this.node(nodeId);
    const now = Math.floor(Date.now() / 1000);
    const claims = stripUndefined({
      iss: this.origin,
      aud: node.opsApi,
      sub: 'sim-user',
      nid: nodeId,
      scope: '*',
      iat: now,
      exp: now + 300,
      jti: `nt-${randomBytes(8).toString('hex')}`,
      ...overrides,
    });
    return signJwt(claims, node.keys.privateKey, opts);
  }

  // ---- HTTP ------------------------------------------------------------------------------------

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    try {
      for await (const c of req) chunks.push(c as Buffer);
    } catch {
      return; // client went away mid-body
    }
    const body = Buffer.concat(chunks);
    const url = req.url ?? '/';
    const qi = url.indexOf('?');
    const rawPath = qi < 0 ? url : url.slice(0, qi);
    const method = (req.method ?? 'GET').toUpperCase();
    let path: string | null = null;
    if (rawPath === this.basePath || rawPath === this.basePath + '/') path = '/';
    else if (rawPath.startsWith(this.basePath + '/')) path = rawPath.slice(this.basePath.length).replace(/\/+$/, '') || '/';

    const headers: Record<string, string> = {};
    const rawHeaders: Array<[string, string]> = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i];
      const value = req.rawHeaders[i + 1];
      rawHeaders.push([name, value]);
      const lc = name.toLowerCase();
      headers[lc] = lc in headers ? `${headers[lc]}, ${value}` : value;
    }

    const rec: RecordedRequest = {
      seq: ++this.seq,
      time: Date.now(),
      method,
      path: path ?? rawPath,
      url,
      query: qi < 0 ? '' : url.slice(qi + 1),
      headers,
      rawHeaders,
      body,
      bodyText: body.toString('utf8'),
      jweHeader: null,
      decrypted: null,
      decryptedText: null,
      decryptedJson: undefined,
      decryptedWith: null,
      decryptError: null,
      status: null,
      response: undefined,
      injected: null,
    };
    this.requests.push(rec);
    if (body.length) await this.tryDecrypt(rec);

    let reply: Reply;
    const fault = path === null ? null : this.takeFault(method, path);
    if (fault?.mode === 'hang') {
      rec.injected = 'hang';
      this.hanging.add(res);
      res.on('close', () => this.hanging.delete(res));
      return;
    }
    if (fault) {
      rec.injected = 'fail';
      reply = errorReply(fault.status ?? 500, fault.msg ?? 'platform-sim: injected failure', fault.state ?? 'server_error');
    } else {
      try {
        reply = path === null ? errorReply(404, 'not found', 'not_found') : await this.route(method, path, rec);
      } catch (err) {
        reply = errorReply(500, `platform-sim: ${(err as Error).message}`, 'server_error');
      }
    }
    rec.status = reply.status;
    rec.response = reply.body;
    if (reply.body === undefined) {
      res.writeHead(reply.status);
      res.end();
    } else {
      const text = JSON.stringify(reply.body);
      res.writeHead(reply.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    }
  }

  /** Decrypts a JWE body with whichever held key its `kid` names (recorded, not enforced). */
  private async tryDecrypt(rec: RecordedRequest): Promise<void> {
    const header = readJweHeader(rec.bodyText);
    rec.jweHeader = header;
    if (!header) return;
    const holder = typeof header.kid === 'string' ? this.byKid.get(header.kid) : undefined;
    if (!holder) {
      rec.decryptError = `no key with kid ${String(header.kid)}`;
      return;
    }
    try {
      const pt = Buffer.from(await decryptBody(rec.bodyText, holder.privateKey));
      rec.decrypted = pt;
      rec.decryptedText = pt.toString('utf8');
      rec.decryptedWith = holder.label;
      try {
        rec.decryptedJson = JSON.parse(rec.decryptedText);
      } catch {
        rec.decryptedJson = undefined;
      }
    } catch (err) {
      rec.decryptError = (err as Error).message;
    }
  }

  private async route(method: string, path: string, rec: RecordedRequest): Promise<Reply> {
    switch (`${method} ${path}`) {
      case 'POST /':
        return this.addNode(rec);
      case 'DELETE /':
        return this.deleteNode(rec);
      case 'GET /':
        return { status: 200, body: envelope({ utilmeta: '0.4.0', supervisor: this.ident, timestamp: Date.now() }) };
      case 'GET /list':
        return { status: 200, body: envelope([{ base_url: this.baseUrl, ident: this.ident }], '', 1, 1) };
      case 'POST /resources':
        return this.uploadResources(rec);
      case 'POST /report':
      case 'POST /report/batch':
      case 'POST /alert':
      case 'POST /alert/recovery':
      case 'POST /heartbeat':
        return this.nodeScoped(path, rec);
      default:
        return errorReply(404, `not found: ${method} ${path}`, 'not_found');
    }
  }

  // POST / (add_node, §3.6.1 / §3.6.2)
  private async addNode(rec: RecordedRequest): Promise<Reply> {
    const h = rec.headers;
    let via: 'cluster' | 'access';
    let initKey: string;
    let expectedLabel: string;
    if (h['x-cluster-key'] !== undefined) {
      if (!(await sameKey(h['x-cluster-key'], this.cluster.publicKey))) return errorReply(403, 'invalid cluster key', 'invalid_key');
      if (h['x-cluster-id'] !== this.clusterId) return errorReply(403, `invalid cluster id: ${h['x-cluster-id'] ?? '(missing)'}`, 'invalid_cluster');
      via = 'cluster';
      initKey = h['x-cluster-key'];
      expectedLabel = 'cluster';
    } else if (h['x-access-key'] !== undefined) {
      const i = await this.findAccessKey(h['x-access-key']);
      if (i < 0) return errorReply(403, 'invalid access key', 'invalid_key');
      via = 'access';
      initKey = h['x-access-key'];
      expectedLabel = `access:${i + 1}`;
    } else {
      return errorReply(401, 'X-Access-Key or X-Cluster-Key required', 'key_required');
    }
    if (rec.decryptedWith !== expectedLabel) {
      return errorReply(400, `body must be a JWE encrypted to the ${via} key (${rec.decryptError ?? 'not a JWE for that key'})`, 'invalid_body');
    }
    const meta = rec.decryptedJson as Record<string, unknown> | undefined;
    if (!meta || typeof meta !== 'object' || Array.isArray(meta)) return errorReply(422, 'NodeMetadata must be a JSON object', 'invalid_body');
    for (const k of ['ops_api', 'name', 'base_url']) {
      if (typeof meta[k] !== 'string' || !meta[k]) return errorReply(422, `NodeMetadata.${k} required`, 'invalid_body');
    }

    // Node ids and console URLs are our own invention; the platform's format is unknown.
    const id = `snode-${randomBytes(8).toString('hex')}`;
    const keys = await generateRsaKeyPair(id);
    this.byKid.set(keys.thumbprint, { privateKey: keys.privateKey, label: `node:${id}` });
    const url = `${this.origin}/console/node/${id}`;
    const data: SupervisorData = {
      node_id: id,
      url,
      public_key: keys.publicKey,
      ops_api: meta.ops_api as string,
      ident: this.ident,
      base_url: this.baseUrl,
      backup_urls: [],
      init_key: initKey,
      local: false,
    };
    const node: SimNode = {
      id,
      name: meta.name as string,
      opsApi: meta.ops_api as string,
      serviceBaseUrl: meta.base_url as string,
      metadata: meta,
      keys,
      via,
      initKey,
      clusterId: via === 'cluster' ? this.clusterId : null,
      url,
      supervisorData: data,
      lastEtag: null,
      resources: [],
      lastResources: undefined,
      deleted: false,
    };
    this.nodes.set(id, node);

    let mode: 'proxy' | 'direct' | null = null;
    // The proxy's own node publishes its ops_api at {proxy}/ops: the platform reaches it directly.
    const ownNode = this.proxyBaseUrl !== undefined && node.opsApi.replace(/\/+$/, '') === `${this.proxyBaseUrl.replace(/\/+$/, '')}/ops`;
    if (this.callbackMode === 'proxy' || (this.callbackMode === 'auto' && via === 'cluster' && this.proxyBaseUrl && !ownNode)) mode = 'proxy';
    else if (this.callbackMode === 'direct' || this.callbackMode === 'auto') mode = 'direct';
    const reached = mode ? await this.callback(node, mode) : false;
    // Like the real platform (inferred from the utilmeta mock): null when the node saved the
    // supervisor itself through the callback, else the SupervisorData for the client to save.
    return { status: 200, body: envelope(reached ? null : data) };
  }

  private async findAccessKey(text: string): Promise<number> {
    for (let i = 0; i < this.accessKeys.length; i++) {
      if (await sameKey(text, this.accessKeys[i].publicKey)) return i;
    }
    return -1;
  }

  /** POST {ops_api}/ with SupervisorData, directly or via the proxy. True when the node echoed its id. */
  private async callback(node: SimNode, mode: 'proxy' | 'direct'): Promise<boolean> {
    const body = JSON.stringify(node.supervisorData);
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    let url: string;
    if (mode === 'proxy') {
      if (!this.proxyBaseUrl) {
        this.callbacks.push({ nodeId: node.id, mode, url: '', headers, body, status: null, response: undefined, error: 'proxyBaseUrl not set', ok: false });
        return false;
      }
      url = `${this.proxyBaseUrl.replace(/\/+$/, '')}/proxy`;
      headers['x-utilmeta-proxy-type'] = 'operations';
      headers['x-utilmeta-cluster-id'] = this.clusterId;
      headers['x-utilmeta-node-id'] = node.id;
      headers['x-utilmeta-service-name'] = node.name;
      headers['proxy-authorization'] = `Bearer ${await this.proxyToken(node.id)}`;
    } else {
      // url_join(ops_api, '/') is ops_api itself (§3.1).
      url = node.opsApi;
      headers['x-node-id'] = node.id;
    }
    const cb: RecordedCallback = { nodeId: node.id, mode, url, headers, body, status: null, response: undefined, error: null, ok: false };
    this.callbacks.push(cb);
    try {
      const r = await request(url, {
        method: 'POST',
        headers,
        body,
        dispatcher: this.agent,
        headersTimeout: this.callbackTimeoutMs,
        bodyTimeout: this.callbackTimeoutMs,
        signal: AbortSignal.timeout(this.callbackTimeoutMs),
      });
      cb.status = r.statusCode;
      const text = await r.body.text();
      try {
        cb.response = JSON.parse(text);
      } catch {
        cb.response = text;
      }
      // The OperationsAPI echoes node_id so a POST silently turned into a GET is detected (§3.6.1 step 6).
      const result = (cb.response as { result?: { node_id?: unknown } } | null)?.result;
      cb.ok = r.statusCode === 200 && result?.node_id === node.id;
    } catch (err) {
      cb.error = (err as Error).message;
    }
    return cb.ok;
  }

  // DELETE / (§3.7 delete flow). The platform's own DELETE {ops_api}/ call is not simulated.
  private async deleteNode(rec: RecordedRequest): Promise<Reply> {
    const h = rec.headers;
    const keyText = h['x-access-key'] ?? h['x-cluster-key'];
    if (keyText === undefined) return errorReply(401, 'X-Access-Key or X-Cluster-Key required', 'key_required');
    const known = (await sameKey(keyText, this.cluster.publicKey)) || (await this.findAccessKey(keyText)) >= 0;
    if (!known) return errorReply(403, 'invalid access key', 'invalid_key');
    const id = h['x-node-id'];
    if (!id) return errorReply(400, 'X-Node-ID required', 'node_required');
    const node = this.nodes.get(id);
    if (!node || node.deleted) return errorReply(404, `node not exists: ${id}`, 'node_not_exists');
    node.deleted = true;
    return { status: 200, body: envelope(id) };
  }

  /** Resolves X-Node-ID and checks X-Node-Key / X-Cluster-Id when sent. */
  private async nodeFor(rec: RecordedRequest): Promise<SimNode | Reply> {
    const id = rec.headers['x-node-id'];
    if (!id) return errorReply(400, 'X-Node-ID required', 'node_required');
    const node = this.nodes.get(id);
    if (!node || node.deleted) return errorReply(404, `node not exists: ${id}`, 'node_not_exists');
    const nodeKey = rec.headers['x-node-key'];
    if (nodeKey !== undefined && !(await sameKey(nodeKey, node.keys.publicKey))) return errorReply(403, 'X-Node-Key does not match the node', 'invalid_key');
    const cid = rec.headers['x-cluster-id'];
    if (cid !== undefined && cid !== node.clusterId) return errorReply(403, `invalid cluster id: ${cid}`, 'invalid_cluster');
    return node;
  }

  /** The decrypted JSON of a body that must be encrypted to the node key. */
  private nodeBody(rec: RecordedRequest, node: SimNode): { json: unknown } | Reply {
    if (rec.decryptedWith !== `node:${node.id}`) {
      return errorReply(400, `body must be a JWE encrypted to the node key (${rec.decryptError ?? 'not a JWE for that key'})`, 'invalid_body');
    }
    if (rec.decryptedJson === undefined) return errorReply(422, 'body is not JSON', 'invalid_body');
    return { json: rec.decryptedJson };
  }

  // POST /resources (§3.3, §3.4)
  private async uploadResources(rec: RecordedRequest): Promise<Reply> {
    const node = await this.nodeFor(rec);
    if ('status' in node) return node;
    const b = this.nodeBody(rec, node);
    if ('status' in b) return b;
    if (typeof b.json !== 'object' || b.json === null || Array.isArray(b.json)) return errorReply(422, 'ResourcesSchema must be an object', 'invalid_body');
    // Etag over the exact decrypted bytes (sha256 by default — the real algorithm is unknown).
    const etag = this.etagOf(rec.decrypted!);
    if (etag === node.lastEtag) return { status: 304 };
    node.lastEtag = etag;
    node.lastResources = b.json;
    node.resources = buildResources(node, b.json as Record<string, unknown>);
    const result =
      this.resourcesShape === '2.9'
        ? {
            resources: node.resources,
            supervisor: { node_id: node.id, url: node.url, resources_etag: etag, ...this.syncSettings },
          }
        : { url: node.url, resources: node.resources, resources_etag: etag };
    return { status: 200, body: envelope(result) };
  }

  // POST /report, /report/batch, /alert, /alert/recovery, /heartbeat
  private async nodeScoped(path: string, rec: RecordedRequest): Promise<Reply> {
    const node = await this.nodeFor(rec);
    if ('status' in node) return node;
    if (path === '/heartbeat') return { status: 200, body: envelope(null) };
    const b = this.nodeBody(rec, node);
    if ('status' in b) return b;
    const json = b.json as Record<string, unknown>;
    switch (path) {
      case '/report':
        return { status: 200, body: envelope({ id: `report-${rec.seq}`, created_records: 0 }) };
      case '/report/batch':
        if (!Array.isArray(b.json)) return errorReply(422, 'batch report must be a list', 'invalid_body');
        return { status: 200, body: envelope(b.json.map((_, i) => ({ id: `report-${rec.seq}-${i}` })), '', 1, b.json.length) };
      case '/alert':
        return { status: 200, body: envelope({ id: `alert-${rec.seq}`, status: 'open' }) };
      default: // /alert/recovery
        return {
          status: 200,
          body: envelope({ id: json?.id ?? `alert-${rec.seq}`, status: 'recovered', recovered_time: json?.recovered_time ?? Date.now() / 1000 }),
        };
    }
  }
}

function stripUndefined(o: Record<string, unknown>): Record<string, unknown> {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}

/**
 * ResourceData for an upload: servers (from instances[].server), instances, tables, databases,
 * caches. remote ids are stable hashes of (type, node, ident) — our own scheme.
 */
function buildResources(node: SimNode, body: Record<string, unknown>): ResourceData[] {
  const out: ResourceData[] = [];
  const rid = (prefix: string, scope: string, ident: string) => `${prefix}-${sha256(`${scope}/${ident}`).slice(0, 10)}`;
  const list = (k: string) => (Array.isArray(body[k]) ? (body[k] as Array<Record<string, unknown>>) : []);
  const servers = new Map<string, string>();
  for (const inst of list('instances')) {
    const server = (inst.server ?? {}) as Record<string, unknown>;
    const ip = String(server.ip ?? '127.0.0.1');
    let serverId = servers.get(ip);
    if (!serverId) {
      serverId = rid('srv', 'server', ip); // servers are not node-scoped
      servers.set(ip, serverId);
      out.push({ remote_id: serverId, type: 'server', ident: ip, route: `server/${ip}`, data: {} });
    }
    const ident = String(inst.address ?? `${ip}:${String(inst.port ?? '')}`);
    out.push({ remote_id: rid('inst', node.id, ident), server_id: serverId, type: 'instance', ident, route: `instance/${node.id}/${ident}`, data: {} });
  }
  for (const [k, type, prefix, identOf] of [
    ['tables', 'table', 'tab', (t: Record<string, unknown>) => t.ident ?? t.ref ?? t.name],
    ['databases', 'database', 'dat', (t: Record<string, unknown>) => t.alias],
    ['caches', 'cache', 'cac', (t: Record<string, unknown>) => t.alias],
  ] as const) {
    for (const item of list(k)) {
      const ident = String(identOf(item) ?? '');
      if (!ident) continue;
      out.push({ remote_id: rid(prefix, node.id, ident), type, ident, route: `${type}/${node.id}/${ident}`, ref: (item.ref as string) ?? null, data: {} });
    }
  }
  return out;
}
