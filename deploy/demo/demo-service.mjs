#!/usr/bin/env node
// A demo UtilMeta-like service for the Compose cluster: it registers itself with the proxy the
// way a utilmeta service configured with Operations(proxy=Operations.Proxy(base_url=...)) does,
// then answers GET /api/hello and /api/echo so calls through the proxy can be tried.
//
// Registration has no credentials: a service proves it belongs to the cluster by writing its
// own instance row into the SHARED operations database (a 'server' row for its machine and an
// 'instance' row for host:port), then sends that row's id in POST {proxy}/registry. The proxy
// looks the row up before accepting. Python services retry each worker cycle until it works, so
// this does too (the proxy or its migrations may not be up yet).
//
// Plain JavaScript with only the proxy image's own dependencies (postgres), so the same image
// runs it. Environment:
//   UTILMETA_PROXY_BASE_URL         the proxy's base URL, e.g. http://lb:8080/api
//   DEMO_NAME (demo)                service name
//   DEMO_BIND_HOST (0.0.0.0), DEMO_PORT (8000)
//   DEMO_ADDRESS                    host:port the proxy reaches this instance at
//                                   (default: the bind address, or the host name when bound to all)
//   DEMO_RETRY_SECONDS (5)          wait between registration attempts
//   UTILMETA_OPERATIONS_DB_HOST/PORT/USER/PASSWORD/NAME   the shared ops database
import http from 'node:http';
import { hostname } from 'node:os';
import postgres from 'postgres';

const env = process.env;
const name = env.DEMO_NAME || 'demo';
const port = Number(env.DEMO_PORT || 8000);
const bindHost = env.DEMO_BIND_HOST || '0.0.0.0';
const proxyBase = (env.UTILMETA_PROXY_BASE_URL || '').replace(/\/+$/, '');
const retryMs = Number(env.DEMO_RETRY_SECONDS || 5) * 1000;
const version = '1.0.0';
if (!/^https?:\/\//.test(proxyBase)) {
  console.error('demo-service: UTILMETA_PROXY_BASE_URL must be the proxy base URL, e.g. http://lb:8080/api');
  process.exit(2);
}

const log = (msg, extra = {}) => console.log(JSON.stringify({ time: new Date().toISOString(), service: name, msg, ...extra }));

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const path = new URL(req.url ?? '/', 'http://demo').pathname.replace(/\/+$/, '') || '/';
    const send = (status, body, type = 'application/json') => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    if (path === '/api/hello') return send(200, `hello from ${name} at ${address}`, 'text/plain; charset=utf-8');
    if (path === '/api/echo') {
      return send(200, JSON.stringify({ service: name, method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') }));
    }
    if (path === '/api/ops') return send(200, JSON.stringify({ result: { utilmeta: '0.4.0', service: name, timestamp: Date.now() }, msg: '', state: 1, count: 0 }));
    return send(404, JSON.stringify({ error: `NotFound: ${req.method} ${path}` }));
  });
});
await new Promise((resolve, reject) => server.once('error', reject).listen(port, bindHost, resolve));
const actualPort = server.address().port;
// Bound to one address: that is where the proxy reaches it; bound to all: its host name.
const address = env.DEMO_ADDRESS || (bindHost === '0.0.0.0' || bindHost === '::' ? `${hostname()}:${actualPort}` : `${bindHost}:${actualPort}`);
log('listening', { bind: `${bindHost}:${actualPort}`, address });

const ops = postgres({
  host: env.UTILMETA_OPERATIONS_DB_HOST || '127.0.0.1',
  port: Number(env.UTILMETA_OPERATIONS_DB_PORT || 5432),
  user: env.UTILMETA_OPERATIONS_DB_USER || 'postgres',
  password: env.UTILMETA_OPERATIONS_DB_PASSWORD || undefined,
  database: env.UTILMETA_OPERATIONS_DB_NAME || 'utilmeta_proxy_ops',
  max: 2,
  onnotice: () => {},
});

/** Finds or creates this instance's rows in utilmeta_resource, as the service's ops store does. */
async function instanceRow() {
  const [found] = await ops`
    SELECT id::text AS id FROM utilmeta_resource
    WHERE type = 'instance' AND service = ${name} AND ident = ${address} AND deleted_time IS NULL
    ORDER BY id LIMIT 1`;
  if (found) return found.id;
  const now = new Date();
  // The server row is keyed by the machine's MAC address; a container has a fresh one per run,
  // so the hostname stands in for it.
  const mac = `demo-${hostname()}`;
  const data = { version, asynchronous: false, production: false, language: 'javascript', language_version: process.versions.node, utilmeta_version: '2.9.0', spec_version: '0.4.0', backend: 'node', backend_version: process.versions.node, cwd: process.cwd(), port: actualPort, address };
  return ops.begin(async (tx) => {
    const [srv] = await tx`
      INSERT INTO utilmeta_resource (service, node_id, type, ident, route, remote_id, created_time, data, deprecated, server_id, deleted_time, ref, updated_time)
      VALUES (NULL, NULL, 'server', ${mac}, ${'server/' + mac}, NULL, ${now}, '{}'::jsonb, false, NULL, NULL, NULL, NULL)
      RETURNING id`;
    const [inst] = await tx`
      INSERT INTO utilmeta_resource (service, node_id, type, ident, route, remote_id, created_time, data, deprecated, server_id, deleted_time, ref, updated_time)
      VALUES (${name}, NULL, 'instance', ${address}, ${'instance/' + address}, NULL, ${now}, ${tx.json(data)}, false, ${srv.id}, NULL, NULL, NULL)
      RETURNING id::text AS id`;
    return inst.id;
  });
}

async function register() {
  const instanceId = await instanceRow();
  const body = {
    name, instance_id: Number(instanceId), address,
    ops_api: `http://${address}/api/ops`, base_url: `http://${address}/api`,
    cwd: process.cwd(), version, title: 'Demo service', description: 'demo upstream of the utilmeta-proxy Compose cluster',
    production: false, asynchronous: false, backend: 'node', backend_version: process.versions.node,
    language: 'javascript', language_version: process.versions.node, utilmeta_version: '2.9.0', resources: null,
  };
  const res = await fetch(`${proxyBase}/registry`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`POST ${proxyBase}/registry → ${res.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text);
}

let stopping = false;
const stop = async () => {
  stopping = true;
  server.close();
  await ops.end({ timeout: 2 });
  process.exit(0);
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);

while (!stopping) {
  try {
    const r = await register();
    log('registered', { instance: r.id, node_id: r.node_id, address: r.address, base_url: r.base_url });
    break;
  } catch (err) {
    log('registration failed; retrying', { error: err instanceof Error ? err.message : String(err), retryInSeconds: retryMs / 1000 });
    await new Promise((r) => setTimeout(r, retryMs));
  }
}
