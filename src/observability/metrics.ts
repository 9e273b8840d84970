// Prometheus metrics (prom-client) on a separate listener, loopback by default,
// so scraping never competes with or exposes the proxy port. Names follow the
// conventions: utilmeta_proxy_<what>_total for counters, _seconds for durations.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import client from 'prom-client';
import { PlainCounter, PlainHistogram } from './plain.ts';
import type { ProxyLogRecord } from './record.ts';

export interface MetricSources {
  /** Collect the process's default metrics here (false in a listener thread of several). */
  defaultMetrics?: boolean;
  registry: () => { services: ReadonlyArray<{ name: string; instances: ReadonlyArray<{ connected: boolean }> }>; instanceCount: number };
  platform: () => { configured: boolean; connected: boolean };
  lastSync: () => number | null;
  db: () => { up: boolean | null; poolSize: number; embedded: boolean };
  /** The access plane's view: applied seq, staleness (s), clock offset (s); Redis connected (null: not configured). */
  access?: () => { seq: number; stalenessSeconds: number; clockOffsetSeconds: number; redisUp: boolean | null };
  /** Instance health (see InstanceHealth.metrics) plus prober and retry-budget counters. */
  health?: () => HealthMetricSource;
  /** Relayed WebSocket sessions open now. */
  webSockets?: () => number;
}

export interface HealthMetricSource {
  ejectionsTotal: ReadonlyArray<{ serviceId: string; instanceId: string; source: 'local' | 'remote'; count: number }>;
  ejectedNow: ReadonlyArray<{ serviceId: string; count: number }>;
  probeDownNow: number;
  drainingNow: number;
  pendingWrites: number;
  probesTotal: number;
  probeFailuresTotal: number;
  retryBudget: ReadonlyArray<{ serviceId: string; granted: number; refused: number }>;
}

const TOKEN_STATES = new Set(['token_required', 'token_invalid', 'token_expired', 'node_id_mismatch', 'issuer_mismatch', 'audience_mismatch', 'cluster_mismatch', 'supervisor_not_found', 'node_required', 'insufficient_scope']);
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class Metrics {
  readonly registry = new client.Registry();
  private readonly requests: PlainCounter;
  private readonly requestCells = new Map<string, Map<string, Map<number, { n: number }>>>();
  private readonly upstreamSeconds: PlainHistogram;
  private readonly durationSeconds: PlainHistogram;
  private readonly retries: PlainCounter;
  private readonly failovers: PlainCounter;
  private readonly upstreamErrors: PlainCounter;
  private readonly tokenRejections: PlainCounter;
  private readonly authzPropagationSeconds: PlainHistogram;
  private readonly authzDecisions: PlainCounter;
  private readonly sigv4Failures: PlainCounter;
  private readonly wsClosed: PlainCounter;

  constructor(sources: MetricSources) {
    const r = this.registry;
    if (sources.defaultMetrics !== false) client.collectDefaultMetrics({ register: r, prefix: 'utilmeta_proxy_' });
    this.requests = new PlainCounter('utilmeta_proxy_requests_total', 'Proxied requests by proxy type, method and status code', ['type', 'method', 'status']).register(r);
    this.upstreamSeconds = new PlainHistogram('utilmeta_proxy_upstream_duration_seconds', 'Time from the request to the final upstream response head', ['type'], DURATION_BUCKETS).register(r);
    this.durationSeconds = new PlainHistogram('utilmeta_proxy_request_duration_seconds', 'Total time of proxied requests in the proxy, body streaming included', ['type'], DURATION_BUCKETS).register(r);
    this.retries = new PlainCounter('utilmeta_proxy_upstream_retries_total', 'Upstream attempts abandoned for the next candidate', ['type']).register(r);
    this.failovers = new PlainCounter('utilmeta_proxy_failovers_total', 'Requests answered by another candidate than the first', ['type']).register(r);
    this.upstreamErrors = new PlainCounter('utilmeta_proxy_upstream_errors_total', 'Requests that ended in an upstream failure, by kind', ['kind']).register(r);
    this.wsClosed = new PlainCounter('utilmeta_proxy_websocket_sessions_closed_total', 'Relayed WebSocket sessions that ended, by proxy type and who ended them (client, upstream, revoked, shutdown, overload, idle)', ['type', 'reason']).register(r);
    const webSockets = sources.webSockets;
    if (webSockets) {
      new client.Gauge({ name: 'utilmeta_proxy_websocket_sessions_open', help: 'Relayed WebSocket sessions open now', registers: [r], aggregator: 'sum', collect() { this.set(webSockets()); } });
    }
    this.tokenRejections = new PlainCounter('utilmeta_proxy_token_rejections_total', 'Requests refused for their token, by reason (state)', ['reason']).register(r);
    this.authzPropagationSeconds = new PlainHistogram('utilmeta_proxy_authz_propagation_seconds', 'Time from an access change committed (authz_event.at) to this node applying it, by channel', ['channel'], [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5]).register(r);
    this.authzDecisions = new PlainCounter('utilmeta_proxy_authz_decisions_total', 'Access decisions on the proxy path, by result, reason and credential', ['result', 'reason', 'cred']).register(r);
    this.sigv4Failures = new PlainCounter('utilmeta_proxy_sigv4_failures_total', 'SigV4 verification failures by AWS error code', ['code']).register(r);
    const access = sources.access;
    if (access) {
      new client.Gauge({ name: 'utilmeta_proxy_authz_applied_seq', help: 'The access event seq this node has applied', registers: [r], aggregator: 'min', collect() { this.set(access().seq); } });
      new client.Gauge({ name: 'utilmeta_proxy_authz_staleness_seconds', help: 'Seconds since the access state was last confirmed current', registers: [r], aggregator: 'max', collect() { const s = access().stalenessSeconds; this.set(Number.isFinite(s) ? s : -1); } });
      new client.Gauge({ name: 'utilmeta_proxy_authz_clock_offset_seconds', help: "This node's clock minus PostgreSQL's", registers: [r], aggregator: 'max', collect() { this.set(access().clockOffsetSeconds); } });
      new client.Gauge({ name: 'utilmeta_proxy_redis_up', help: '1 when Redis is connected, 0 when not, -1 when not configured', registers: [r], aggregator: 'min', collect() { const u = access().redisUp; this.set(u === null ? -1 : u ? 1 : 0); } });
    }

    const health = sources.health;
    if (health) {
      // Counters kept by the health library, exported at scrape time.
      new client.Counter({
        name: 'utilmeta_proxy_ejections_total', help: 'Instance ejections, decided on this node (local) or learned from another (remote)', labelNames: ['service_id', 'instance_id', 'source'], registers: [r],
        collect() { this.reset(); for (const e of health().ejectionsTotal) this.inc({ service_id: e.serviceId, instance_id: e.instanceId, source: e.source }, e.count); },
      });
      new client.Gauge({
        name: 'utilmeta_proxy_instances_ejected', help: 'Instances passively ejected now, per service', labelNames: ['service_id'], registers: [r], aggregator: 'max',
        collect() { this.reset(); for (const e of health().ejectedNow) this.set({ service_id: e.serviceId }, e.count); },
      });
      new client.Gauge({ name: 'utilmeta_proxy_instances_probe_down', help: 'Instances held out of rotation by active probes', registers: [r], aggregator: 'max', collect() { this.set(health().probeDownNow); } });
      new client.Gauge({ name: 'utilmeta_proxy_instances_draining', help: 'Instances drained by an operator', registers: [r], aggregator: 'max', collect() { this.set(health().drainingNow); } });
      new client.Gauge({ name: 'utilmeta_proxy_health_pending_writes', help: 'Health changes waiting for Redis to return', registers: [r], aggregator: 'max', collect() { this.set(health().pendingWrites); } });
      new client.Counter({ name: 'utilmeta_proxy_health_probes_total', help: 'Active health probes sent by this node', registers: [r], collect() { this.reset(); this.inc(health().probesTotal); } });
      new client.Counter({ name: 'utilmeta_proxy_health_probe_failures_total', help: 'Active health probes that failed', registers: [r], collect() { this.reset(); this.inc(health().probeFailuresTotal); } });
      new client.Counter({
        name: 'utilmeta_proxy_retry_budget_total', help: 'Retries granted or refused by the per-service retry budget', labelNames: ['service_id', 'result'], registers: [r],
        collect() {
          this.reset();
          for (const b of health().retryBudget) {
            this.inc({ service_id: b.serviceId, result: 'granted' }, b.granted);
            this.inc({ service_id: b.serviceId, result: 'refused' }, b.refused);
          }
        },
      });
    }

    // Gauges read their sources at scrape time: nothing to maintain on the hot path.
    // Every listener thread sees the same registry and link, so threads are merged
    // by max, not summed.
    new client.Gauge({
      name: 'utilmeta_proxy_registry_services', help: 'Registered services', registers: [r], aggregator: 'max',
      collect() { this.set(sources.registry().services.length); },
    });
    new client.Gauge({
      name: 'utilmeta_proxy_registry_instances', help: 'Registered instances', registers: [r], aggregator: 'max',
      collect() { this.set(sources.registry().instanceCount); },
    });
    new client.Gauge({
      name: 'utilmeta_proxy_service_instances', help: 'Connected instances per service', labelNames: ['service'], registers: [r], aggregator: 'max',
      collect() {
        this.reset();
        for (const s of sources.registry().services) this.set({ service: s.name }, s.instances.filter((i) => i.connected).length);
      },
    });
    new client.Gauge({
      name: 'utilmeta_proxy_platform_connected', help: '1 when this node is connected to the platform (0 when not, -1 when not configured)', registers: [r], aggregator: 'max',
      collect() {
        const p = sources.platform();
        this.set(p.configured ? (p.connected ? 1 : 0) : -1);
      },
    });
    new client.Gauge({
      name: 'utilmeta_proxy_platform_last_sync_timestamp_seconds', help: 'Unix time of the last resource upload accepted by the platform (0: never)', registers: [r], aggregator: 'max',
      collect() { this.set((sources.lastSync() ?? 0) / 1000); },
    });
    new client.Gauge({
      name: 'utilmeta_proxy_database_up', help: '1 when the last registry reload succeeded', registers: [r], aggregator: 'max',
      collect() {
        const d = sources.db();
        this.set(d.up === null ? 0 : d.up ? 1 : 0);
      },
    });
    new client.Gauge({
      name: 'utilmeta_proxy_database_pool_size', help: 'Connections allowed per database pool', registers: [r], aggregator: 'max',
      collect() { this.set(sources.db().poolSize); },
    });
  }

  /** Called once per proxied request (from the proxy's result hook): plain increments only. */
  observe(rec: ProxyLogRecord): void {
    this.requestCell(rec.type, METHODS.has(rec.method) ? rec.method : 'OTHER', rec.status).n++;
    // A WebSocket session lasts as long as its users want: not a request duration.
    if (rec.websocket) this.wsClosed.inc(`${rec.type}\u0000${rec.websocket.closedBy}`);
    else this.durationSeconds.observe(rec.type, rec.durationMs / 1000);
    if (rec.upstreamMs !== undefined) this.upstreamSeconds.observe(rec.type, rec.upstreamMs / 1000);
    if (rec.retries > 0) {
      this.retries.inc(rec.type, rec.retries);
      if (rec.errorKind === undefined) this.failovers.inc(rec.type);
    }
    if (rec.errorKind && rec.errorKind !== 'client_aborted') this.upstreamErrors.inc(rec.errorKind);
    if (rec.state && TOKEN_STATES.has(rec.state)) this.tokenRejections.inc(rec.state);
  }

  /**
   * requests_total's count for one type, method and status. Cached by the three
   * values: the type and method are constant strings and the status a number,
   * so no key string is built and hashed per request.
   */
  private requestCell(type: string, method: string, status: number): { n: number } {
    let byMethod = this.requestCells.get(type);
    if (!byMethod) this.requestCells.set(type, (byMethod = new Map()));
    let byStatus = byMethod.get(method);
    if (!byStatus) byMethod.set(method, (byStatus = new Map()));
    let c = byStatus.get(status);
    if (!c) byStatus.set(status, (c = this.requests.cell(`${type}\u0000${method}\u0000${status}`)));
    return c;
  }

  authzPropagation(channel: string, seconds: number): void {
    this.authzPropagationSeconds.observe(channel, seconds);
  }

  authzDecision(result: string, reason: string, cred: string): void {
    this.authzDecisions.inc(`${result}\u0000${reason}\u0000${cred}`);
  }

  sigv4Failure(code: string): void {
    this.sigv4Failures.inc(code);
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }
}

export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

/** What the metrics listener serves: one node's metrics, or the sum of several threads'. */
export interface MetricsText {
  registry: { contentType: string };
  text(): Promise<string>;
}

export async function startMetricsServer(metrics: MetricsText, host: string, port: number): Promise<MetricsServer> {
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
