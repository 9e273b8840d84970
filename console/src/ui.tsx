// Shared pieces: a list with search, paging, loading, empty, error and
// "not available on this node" states; copy button; plain-SVG charts.
import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { ApiError } from './api.ts';

export type Load<T> = { state: 'loading' } | { state: 'ok'; value: T } | { state: 'missing' } | { state: 'error'; message: string };

/** Runs `fn` whenever `deps` change (and on reload()), tracking its state. */
export function useLoad<T>(fn: () => Promise<T>, deps: unknown[]): [Load<T>, () => void] {
  const [state, setState] = useState<Load<T>>({ state: 'loading' });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => (s.state === 'ok' ? s : { state: 'loading' }));
    fn().then(
      (value) => live && setState({ state: 'ok', value }),
      (err: unknown) => {
        if (!live) return;
        if (err instanceof ApiError && err.missing) setState({ state: 'missing' });
        else setState({ state: 'error', message: err instanceof Error ? err.message : String(err) });
      },
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  return [state, () => setTick((t) => t + 1)];
}

export function Status<T>(props: { load: Load<T>; what: string; children: (v: T) => ComponentChildren }) {
  const l = props.load;
  if (l.state === 'loading') return <p class="state loading">Loading {props.what}…</p>;
  if (l.state === 'missing') return <p class="state missing" data-state="missing">{props.what}: not available on this node (the endpoint answered 404).</p>;
  if (l.state === 'error') return <p class="state error" role="alert">Could not load {props.what}: {l.message}</p>;
  return <>{props.children(l.value)}</>;
}

export interface Column<R> {
  title: string;
  render: (row: R) => ComponentChildren;
  /** text the search matches */
  text?: (row: R) => string;
}

/** A table with client-side search and paging over rows already loaded. */
export function Table<R>(props: { rows: R[]; columns: Column<R>[]; empty: string; pageSize?: number; label: string; searchable?: boolean }) {
  const [q, setQ] = useState('');
  const [page, setPage] = useState(0);
  const size = props.pageSize ?? 20;
  const needle = q.trim().toLowerCase();
  const rows = needle
    ? props.rows.filter((r) => props.columns.some((c) => (c.text ? c.text(r) : textOf(c.render(r))).toLowerCase().includes(needle)))
    : props.rows;
  const pages = Math.max(1, Math.ceil(rows.length / size));
  const p = Math.min(page, pages - 1);
  return (
    <div class="table" data-table={props.label}>
      {props.searchable !== false && (
        <input class="search" type="search" placeholder={`Search ${props.label}`} aria-label={`Search ${props.label}`} value={q}
          onInput={(e) => { setQ((e.target as HTMLInputElement).value); setPage(0); }} />
      )}
      {rows.length === 0 ? (
        <p class="state empty">{needle ? `No ${props.label} match “${q}”.` : props.empty}</p>
      ) : (
        <table>
          <thead><tr>{props.columns.map((c) => <th>{c.title}</th>)}</tr></thead>
          <tbody>{rows.slice(p * size, (p + 1) * size).map((r) => <tr>{props.columns.map((c) => <td>{c.render(r)}</td>)}</tr>)}</tbody>
        </table>
      )}
      {pages > 1 && <Pager page={p} pages={pages} onPage={setPage} />}
    </div>
  );
}

export function Pager(props: { page: number; pages: number | null; onPage: (p: number) => void; hasNext?: boolean }) {
  const next = props.pages === null ? props.hasNext === true : props.page < props.pages - 1;
  return (
    <nav class="pager">
      <button disabled={props.page === 0} onClick={() => props.onPage(props.page - 1)}>‹ Previous</button>
      <span>Page {props.page + 1}{props.pages !== null ? ` of ${props.pages}` : ''}</span>
      <button disabled={!next} onClick={() => props.onPage(props.page + 1)}>Next ›</button>
    </nav>
  );
}

function textOf(node: ComponentChildren): string {
  if (node === null || node === undefined || typeof node === 'boolean') return '';
  if (typeof node === 'string' || typeof node === 'number') return String(node);
  if (Array.isArray(node)) return node.map(textOf).join(' ');
  const props = (node as { props?: { children?: ComponentChildren } }).props;
  return props ? textOf(props.children) : '';
}

export function CopyButton(props: { text: string; label?: string }) {
  const [done, setDone] = useState(false);
  return (
    <button class="copy" onClick={() => navigator.clipboard?.writeText(props.text).then(() => setDone(true), () => setDone(false))}>
      {done ? 'Copied' : props.label ?? 'Copy'}
    </button>
  );
}

export const fmtTime = (v: unknown) => (typeof v === 'string' && v ? new Date(v).toISOString().replace('T', ' ').slice(0, 19) + 'Z' : '—');
export const fmtNum = (v: number | null | undefined, digits = 2) => (v === null || v === undefined ? '—' : v.toFixed(digits));

const PALETTE = ['#2563eb', '#16a34a', '#dc2626', '#9333ea', '#ea580c', '#0891b2', '#4b5563'];

/** Lines over time in plain SVG: one series per key. */
export function LineChart(props: { title: string; unit: string; points: Array<{ t: string; values: Record<string, number | null> }> }) {
  const W = 640, H = 180, L = 48, B = 22;
  const keys = [...new Set(props.points.flatMap((p) => Object.keys(p.values)))];
  const times = props.points.map((p) => Date.parse(p.t));
  const t0 = Math.min(...times, Date.now() - 3600_000), t1 = Math.max(...times, t0 + 1);
  const max = Math.max(1e-9, ...props.points.flatMap((p) => Object.values(p.values).filter((v): v is number => v !== null)));
  const x = (t: number) => L + ((t - t0) / (t1 - t0)) * (W - L - 8);
  const y = (v: number) => H - B - (v / max) * (H - B - 10);
  return (
    <figure class="chart">
      <figcaption>{props.title}</figcaption>
      {keys.length === 0 ? <p class="state empty">No traffic sampled yet.</p> : (
        <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={props.title}>
          <line x1={L} y1={H - B} x2={W} y2={H - B} class="axis" />
          <line x1={L} y1={0} x2={L} y2={H - B} class="axis" />
          <text x={L - 4} y={14} class="tick" text-anchor="end">{max.toPrecision(2)}</text>
          <text x={L - 4} y={H - B} class="tick" text-anchor="end">0</text>
          <text x={L} y={H - 4} class="tick">{new Date(t0).toISOString().slice(11, 16)}</text>
          <text x={W - 4} y={H - 4} class="tick" text-anchor="end">{new Date(t1).toISOString().slice(11, 16)} UTC</text>
          <text x={L + 4} y={H - B - 4} class="tick">{props.unit}</text>
          {keys.map((k, i) => (
            <polyline class="series" stroke={PALETTE[i % PALETTE.length]} fill="none"
              points={props.points.filter((p) => p.values[k] !== null && p.values[k] !== undefined).map((p) => `${x(Date.parse(p.t)).toFixed(1)},${y(p.values[k] as number).toFixed(1)}`).join(' ')} />
          ))}
        </svg>
      )}
      <ul class="legend">{keys.map((k, i) => <li><span class={`swatch c${i % PALETTE.length}`} />{k}</li>)}</ul>
    </figure>
  );
}

/** Grant ends on a horizontal time axis from now. */
export function Timeline(props: { items: Array<{ label: string; end: string; state: string }> }) {
  const now = Date.now();
  const ends = props.items.map((i) => Date.parse(i.end)).filter((t) => !Number.isNaN(t));
  if (ends.length === 0) return <p class="state empty">No grant ends to show.</p>;
  const t1 = Math.max(now + 86400_000, ...ends);
  const W = 640, rowH = 18, L = 180, H = props.items.length * rowH + 28;
  const x = (t: number) => L + (Math.max(0, t - now) / (t1 - now)) * (W - L - 10);
  return (
    <figure class="chart">
      <figcaption>Grant ends (from now to {new Date(t1).toISOString().slice(0, 10)})</figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label="Grant ends on a timeline">
        <line x1={L} y1={H - 20} x2={W} y2={H - 20} class="axis" />
        <text x={L} y={H - 6} class="tick">now</text>
        <text x={W - 4} y={H - 6} class="tick" text-anchor="end">{new Date(t1).toISOString().slice(0, 10)}</text>
        {props.items.map((it, i) => {
          const t = Date.parse(it.end);
          return (
            <g>
              <text x={L - 6} y={i * rowH + 14} class="tick" text-anchor="end">{it.label.slice(0, 28)}</text>
              <line x1={L} y1={i * rowH + 10} x2={x(t)} y2={i * rowH + 10} class={`bar state-${it.state.toLowerCase()}`} />
              <circle cx={x(t)} cy={i * rowH + 10} r={4} class={`dot state-${it.state.toLowerCase()}`} />
            </g>
          );
        })}
      </svg>
    </figure>
  );
}
