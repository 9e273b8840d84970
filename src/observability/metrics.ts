// Prometheus metrics (prom-client) on a separate listener, loopback by default,
// so scraping never competes with or exposes the proxy port. Names follow the
// conventions: utilmeta_proxy_<what>_total for counters, _seconds for durations.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import client from 'prom-client';
import type { ProxyLogRecord } from './record.ts';

export interface MetricSources {
  registry: () => { services: ReadonlyArray<{ name: string; instances: ReadonlyArray<{ connected: boolean }> }>; instanceCount: number };
  platform: () => { configured: boolean; connected: boolean };
  lastSync: () => number | null;
  db: () => { up: boolean | null; poolSize: number; embedded: boolean };
}

const TOKEN_STATES = new Set(['token_required', 'token_invalid', 'token_expired', 'node_id_mismatch', 'issuer_mismatch', 'audience_mismatch', 'cluster_mismatch', 'supervisor_not_found', 'node_required', 'insufficient_scope']);
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

export class Metrics {
  readonly registry = new client.Registry();
  private readonly requests: client.Counter<'type' | 'method' | 'status'>;
  private readonly upstreamSeconds: client.Histogram<'type'>;
  private readonly durationSeconds: client.Histogram<'type'>;
  private readonly retries: client.Counter<'type'>;
  private readonly failovers: client.Counter<'type'>;
  private readonly upstreamErrors: client.Counter<'kind'>;
  private readonly tokenRejections: client.Counter<'reason'>;

  constructor(sources: MetricSources) {
    const r = this.registry;
    client.collectDefaultMetrics({ register: r, prefix: 'utilmeta_proxy_' });
    this.requests = new client.Counter({ name: 'utilmeta_proxy_requests_total', help: 'Proxied requests by proxy type, method and status code', labelNames: ['type', 'method', 'status'], registers: [r] });
    this.upstreamSeconds = new client.Histogram({
      name: 'utilmeta_proxy_upstream_duration_seconds', help: 'Time from the request to the final upstream response head',
      labelNames: ['type'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [r],
    });
    this.durationSeconds = new client.Histogram({
      name: 'utilmeta_proxy_request_duration_seconds', help: 'Total time of proxied requests in the proxy, body streaming included',
      labelNames: ['type'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [r],
    });
    this.retries = new client.Counter({ name: 'utilmeta_proxy_upstream_retries_total', help: 'Upstream attempts abandoned for the next candidate', labelNames: ['type'], registers: [r] });
    this.failovers = new client.Counter({ name: 'utilmeta_proxy_failovers_total', help: 'Requests answered by another candidate than the first', labelNames: ['type'], registers: [r] });
    this.upstreamErrors = new client.Counter({ name: 'utilmeta_proxy_upstream_errors_total', help: 'Requests that ended in an upstream failure, by kind', labelNames: ['kind'], registers: [r] });
    this.tokenRejections = new client.Counter({ name: 'utilmeta_proxy_token_rejections_total', help: 'Requests refused for their token, by reason (state)', labelNames: ['reason'], registers: [r] });

    // Gauges read their sources at scrape time: nothing to maintain on the hot path.
    new client.Gauge({
      name: 'utilmeta_proxy_registry_services', help: 'Registered services', registers: [r],
      collect() { this.set(sources.registry().services.length); },
    });
    new client.Gauge({
      name: 'utilmeta_proxy_registry_instances', help: 'Registered instances', registers: [r],
      collect() { this.set(sources.registry().instanceCount); },
    });
    new client.Gauge({
      name: 'utilmeta_proxy_service_instances', help: 'Connected instances per service', labelNames: ['service'], registers: [r],
      collect() {
        this.reset();
        for (const s of sources.registry().services) this.set({ service: s.name }, s.instances.filter((i) => i.connected).length);
      },
    });
    new client.Gauge({
      name: 'utilmeta_proxy_platform_connected', help: '1 when this node is connected to the platform (0 when not, -1 when not configured)', registers: [r],
      collect() {
        const p = sources.platform();
        this.set(p.configured ? (p.connected ? 1 : 0) : -1);
      },
    });
    new client.Gauge({
      name: 'utilmeta_proxy_platform_last_sync_timestamp_seconds', help: 'Unix time of the last resource upload accepted by the platform (0: never)', registers: [r],
      collect() { this.set((sources.lastSync() ?? 0) / 1000); },
    });
    new client.Gauge({
      name: 'utilmeta_proxy_database_up', help: '1 when the last registry reload succeeded', registers: [r],
      collect() {
        const d = sources.db();
        this.set(d.up === null ? 0 : d.up ? 1 : 0);
      },
    });
    new client.Gauge({
      name: 'utilmeta_proxy_database_pool_size', help: 'Connections allowed per database pool', registers: [r],
      collect() { this.set(sources.db().poolSize); },
    });
  }

  // Label children cached by key: prom-client hashes a label object on every call otherwise.
  private requestChildren = new Map<string, client.Counter.Internal>();
  private durationChildren = new Map<string, client.Histogram.Internal<'type'>>();
  private upstreamChildren = new Map<string, client.Histogram.Internal<'type'>>();

  /** Called once per proxied request (from the proxy's result hook). */
  observe(rec: ProxyLogRecord): void {
    const method = METHODS.has(rec.method) ? rec.method : 'OTHER';
    const key = `${rec.type} ${method} ${rec.status}`;
    let req = this.requestChildren.get(key);
    if (!req) this.requestChildren.set(key, (req = this.requests.labels(rec.type, method, String(rec.status))));
    req.inc();
    let dur = this.durationChildren.get(rec.type);
    if (!dur) this.durationChildren.set(rec.type, (dur = this.durationSeconds.labels(rec.type)));
    dur.observe(rec.durationMs / 1000);
    if (rec.upstreamMs !== undefined) {
      let up = this.upstreamChildren.get(rec.type);
      if (!up) this.upstreamChildren.set(rec.type, (up = this.upstreamSeconds.labels(rec.type)));
      up.observe(rec.upstreamMs / 1000);
    }
    if (rec.retries > 0) {
      this.retries.inc({ type: rec.type }, rec.retries);
      if (rec.errorKind === undefined) this.failovers.inc({ type: rec.type });
    }
    if (rec.errorKind && rec.errorKind !== 'client_aborted') this.upstreamErrors.inc({ kind: rec.errorKind });
    if (rec.state && TOKEN_STATES.has(rec.state)) this.tokenRejections.inc({ reason: rec.state });
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }
}

export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

export async function startMetricsServer(metrics: Metrics, host: string, port: number): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    if (req.url !== '/metrics' && !req.url?.startsWith('/metrics?')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('metrics are at /metrics\n');
      return;
    }
    metrics.text().then(
      (body) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(body),
      (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics collection failed: ${err.message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
