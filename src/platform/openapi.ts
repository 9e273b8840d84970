// OpenAPI 3.1 document of the proxy's own API (served at {BASE_URL}/ops/openapi
// and uploaded with the node's resources).
const error = { $ref: '#/components/responses/Error' };
const header = (name: string, description: string, required = false) => ({ in: 'header', name, required, schema: { type: 'string' }, description });

export function proxyOpenApi(baseUrl: string, version: string): Record<string, unknown> {
  const proxyOp = (method: string) => ({
    operationId: `proxy_${method}`,
    tags: ['proxy'],
    summary: 'Relay to a registered instance or to the platform',
    parameters: [
      { in: 'path', name: 'path', required: true, schema: { type: 'string' } },
      header('X-UtilMeta-Proxy-Type', 'discovery | supervisor | operations | forward', true),
      header('X-UtilMeta-Service-Name', 'target service (discovery)'),
      header('X-UtilMeta-Accept-Version', 'version range: 1.2, ^1.2, ~1.2.3, *'),
      header('X-UtilMeta-Instance-Id', 'pin an instance by remote id'),
      header('X-UtilMeta-Node-Id', 'node id (supervisor, operations, forward)'),
      header('X-UtilMeta-Cluster-Id', 'cluster id (with Proxy-Authorization)'),
      header('X-UtilMeta-Operation-Idempotent', 'true/false: allow failover'),
      header('X-UtilMeta-Request-Timeout', 'seconds'),
    ],
    responses: { default: { description: 'the upstream response, relayed' }, '4XX': error, '5XX': error },
  });
  return {
    openapi: '3.1.0',
    info: { title: 'utilmeta-proxy', version, description: 'Intranet proxy and service registry for UtilMeta services' },
    servers: [{ url: baseUrl }],
    paths: {
      '/': { get: { operationId: 'ping', tags: ['proxy'], responses: { 200: { description: 'spec version and routes' } } } },
      '/healthz': { get: { operationId: 'healthz', tags: ['ops'], responses: { 200: { description: 'alive' } } } },
      '/readyz': { get: { operationId: 'readyz', tags: ['ops'], responses: { 200: { description: 'ready' }, 503: { description: 'not ready' } } } },
      '/registry': {
        post: {
          operationId: 'register', tags: ['registry'],
          requestBody: { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/Registration' } } } },
          responses: { 200: { description: 'the registered instance' }, '4XX': error },
        },
        get: { operationId: 'registry_list', tags: ['registry'], parameters: [{ in: 'query', name: 'service', schema: { type: 'string' } }], responses: { 200: { description: 'services and instances' } } },
      },
      '/registry/{instance}': {
        delete: { operationId: 'deregister', tags: ['registry'], parameters: [{ in: 'path', name: 'instance', required: true, schema: { type: 'string' } }], responses: { 200: { description: 'removed' }, 404: error } },
      },
      '/proxy/{path}': Object.fromEntries(['get', 'post', 'put', 'patch', 'delete', 'head'].map((m) => [m, proxyOp(m)])),
    },
    components: {
      responses: { Error: { description: 'error', content: { 'application/json': { schema: { type: 'object', properties: { error: { type: 'string' }, state: { type: 'string' } }, required: ['error'] } } } } },
      schemas: {
        Registration: {
          type: 'object',
          required: ['name', 'address', 'base_url', 'ops_api', 'instance_id', 'version', 'language', 'utilmeta_version'],
          properties: {
            name: { type: 'string' }, title: { type: ['string', 'null'] }, description: { type: 'string' }, address: { type: 'string' },
            base_url: { type: 'string' }, ops_api: { type: 'string' }, instance_id: { type: ['string', 'integer'] }, cwd: { type: ['string', 'null'] },
            version: { type: 'string' }, asynchronous: { type: 'boolean' }, production: { type: 'boolean' }, language: { type: 'string' },
            language_version: { type: 'string' }, utilmeta_version: { type: 'string' }, backend: { type: 'string' }, backend_version: { type: 'string' },
            resources: { type: ['object', 'null'] },
          },
        },
      },
    },
  };
}
