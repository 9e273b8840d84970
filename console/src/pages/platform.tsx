// Platform: the node's readiness and its link to the UtilMeta platform.
import { api, ApiError } from '../api.ts';
import { Status, fmtTime, useLoad } from '../ui.tsx';

interface Ready {
  status: string; database?: string; error?: string;
  platform?: { configured: boolean; connected: boolean; node_id: string | null; url: string | null; error: string | null; attempts: number; cluster_id?: string | null; last_sync?: string | null; console_url?: string | null };
  access?: { loaded: boolean; seq: number };
  migrations?: { current: boolean };
  [k: string]: unknown;
}

export function PlatformPage() {
  // 503 still carries the readiness details: show them.
  const [load, reload] = useLoad(() => api<Ready>('GET', '/api/readyz').catch((e) => {
    if (e instanceof ApiError && e.status === 503 && e.body && typeof e.body === 'object') return e.body as Ready;
    throw e;
  }), []);
  return (
    <section>
      <h1>Platform</h1>
      <button onClick={reload}>Refresh</button>
      <Status load={load} what="the node's readiness">
        {(r) => {
          const p = r.platform;
          const rows: Array<[string, string]> = [
            ['Node readiness', r.status],
            ['Database', r.database ?? '—'],
            ['Migrations current', r.migrations ? String(r.migrations.current) : '—'],
            ['Access data', r.access ? `${r.access.loaded ? 'loaded' : 'not loaded'}, seq ${r.access.seq}` : '—'],
            ['Platform configured', p ? String(p.configured) : '—'],
            ['Connection', p ? (p.connected ? 'connected' : p.configured ? `not connected (${p.attempts} attempts)` : 'not configured') : '—'],
            ['Cluster id', p?.cluster_id ?? '—'],
            ['Node id', p?.node_id ?? '—'],
            ['Last sync', p?.last_sync ? fmtTime(p.last_sync) : '—'],
            ['Platform URL', p?.url ?? '—'],
            ['Console URL', p?.console_url ?? '—'],
            ['Last error', p?.error ?? r.error ?? '—'],
          ];
          return (
            <>
              <dl class="facts">{rows.map(([k, v]) => <><dt>{k}</dt><dd data-fact={k}>{v}</dd></>)}</dl>
              {p?.console_url
                ? <p>Platform console: <a href={p.console_url} rel="noreferrer noopener" target="_blank">{p.console_url}</a></p>
                : !p?.configured && <p class="state empty">This node is not linked to the UtilMeta platform (UTILMETA_PROXY_SUPERVISOR_* unset).</p>}
            </>
          );
        }}
      </Status>
    </section>
  );
}
