// Registry: services and their instances (version, health, ejection), drain and
// deregister, live request rates from the node's traffic summary, and the last
// hour of rate and latency per service.
import { useEffect, useState } from 'preact/hooks';
import { api, ApiError } from '../api.ts';
import { LineChart, Status, Table, fmtNum, fmtTime, useLoad } from '../ui.tsx';

interface Instance {
  id: number; address: string; base_url: string; version: string; connected: boolean; weight: number;
  health?: string | { state: string; since: number | null; reason: string | null }; ejected?: boolean; ejected_until?: string | null; draining?: boolean; [k: string]: unknown;
}
interface Service { id: string; name: string; names: string[]; created_time: string; instances: Instance[] }
interface Rate { rps: number; errorsPerSecond: number; meanMs: number | null; p95Ms: number | null; requests?: number }
export interface MetricsSummary {
  sampledAt: string | null; intervalSeconds: number;
  totals: Record<string, { requests: number; errors: number; meanMs: number | null; p95Ms: number | null }>;
  types: Record<string, Rate>; services: Record<string, Rate>; instances: Record<string, Rate & { service: string }>;
  series: Array<{ t: string; byType: Record<string, Rate>; byService: Record<string, Rate> }>;
}

/** Polls the node's traffic summary every 10 s (the node samples at that interval). */
export function useMetrics(): MetricsSummary | null {
  const [m, setM] = useState<MetricsSummary | null>(null);
  useEffect(() => {
    let live = true;
    const get = () => api<MetricsSummary>('GET', '/console/api/metrics').then((v) => live && setM(v), () => {});
    void get();
    const t = setInterval(get, 10_000);
    return () => { live = false; clearInterval(t); };
  }, []);
  return m;
}

/** The health the node reports (healthy, ejected, unhealthy, draining, with why and since when), else the registry's connected flag. */
function healthOf(i: Instance): string {
  const h = i.health;
  if (h && typeof h === 'object') return `${h.state}${h.reason ? ` (${h.reason})` : ''}${h.since ? ` since ${fmtTime(new Date(h.since).toISOString())}` : ''}`;
  if (i.draining) return 'draining';
  if (i.ejected) return `ejected${i.ejected_until ? ` until ${fmtTime(i.ejected_until)}` : ''}`;
  if (typeof h === 'string') return h;
  return i.connected ? 'connected' : 'disconnected';
}

export function RegistryPage() {
  const [filter, setFilter] = useState('');
  const [load, reload] = useLoad(() => api<{ services: Service[] }>('GET', '/api/registry').then((r) => r.services), []);
  const metrics = useMetrics();
  const [notice, setNotice] = useState<string | null>(null);

  async function act(what: 'drain' | 'deregister', inst: Instance) {
    if (what === 'deregister' && !confirm(`Deregister ${inst.address}? It stops receiving traffic until it registers again.`)) return;
    try {
      if (what === 'drain') await api('POST', `/api/registry/${encodeURIComponent(String(inst.id))}/drain`);
      else await api('DELETE', `/api/registry/${encodeURIComponent(String(inst.id))}`);
      setNotice(`${what === 'drain' ? 'Draining' : 'Deregistered'} ${inst.address}.`);
      reload();
    } catch (err) {
      setNotice(err instanceof ApiError && err.missing ? `${what} is not available on this node.` : `${what} failed: ${(err as Error).message}`);
    }
  }

  const rateOf = (i: Instance) => metrics?.instances[i.address] ?? metrics?.instances[i.base_url] ?? metrics?.instances[String(i.remote_id ?? '')];
  return (
    <section>
      <h1>Registry</h1>
      {notice && <p class="notice" role="status">{notice}</p>}
      <div class="charts">
        <LineChart title="Requests per second by service (last hour)" unit="req/s"
          points={(metrics?.series ?? []).map((p) => ({ t: p.t, values: Object.fromEntries(Object.entries(Object.keys(p.byService).length ? p.byService : p.byType).map(([k, r]) => [k, r.rps])) }))} />
        <LineChart title="Mean latency by service (last hour)" unit="ms"
          points={(metrics?.series ?? []).map((p) => ({ t: p.t, values: Object.fromEntries(Object.entries(Object.keys(p.byService).length ? p.byService : p.byType).map(([k, r]) => [k, r.meanMs])) }))} />
      </div>
      {metrics && (
        <p class="totals" data-totals>
          {Object.keys(metrics.totals).length === 0 ? 'No proxied requests yet.' :
            Object.entries(metrics.totals).map(([type, t]) => `${type || 'all'}: ${t.requests} requests, ${t.errors} errors, mean ${fmtNum(t.meanMs)} ms`).join(' · ')}
        </p>
      )}
      <input class="search" type="search" placeholder="Filter services by name" aria-label="Filter services" value={filter}
        onInput={(e) => setFilter((e.target as HTMLInputElement).value)} />
      <Status load={load} what="the registry">
        {(services) => {
          const shown = services.filter((s) => !filter || [s.name, ...s.names].some((n) => n.toLowerCase().includes(filter.toLowerCase())));
          if (services.length === 0) return <p class="state empty">No services are registered yet. Services register with POST /api/registry.</p>;
          if (shown.length === 0) return <p class="state empty">No service matches “{filter}”.</p>;
          return shown.map((s) => (
            <article class="service" data-service={s.name}>
              <h2>{s.name} <small>id {s.id} · {s.instances.length} instance(s) · since {fmtTime(s.created_time)}</small></h2>
              <Table label={`instances of ${s.name}`} rows={s.instances} empty="No instances." searchable={s.instances.length > 5} columns={[
                { title: 'Address', render: (i) => i.address },
                { title: 'Version', render: (i) => i.version },
                { title: 'Health', render: (i) => <span class={`pill ${healthOf(i).split(' ')[0]}`}>{healthOf(i)}</span> },
                { title: 'Weight', render: (i) => String(i.weight) },
                { title: 'req/s', render: (i) => fmtNum(rateOf(i)?.rps ?? null) },
                { title: 'mean ms', render: (i) => fmtNum(rateOf(i)?.meanMs ?? null, 1) },
                { title: 'Actions', render: (i) => (
                  <span class="actions">
                    <button onClick={() => act('drain', i)}>Drain</button>
                    <button class="danger" onClick={() => act('deregister', i)}>Deregister</button>
                  </span>
                ) },
              ]} />
            </article>
          ));
        }}
      </Status>
    </section>
  );
}
