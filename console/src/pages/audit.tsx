// Audit: the access plane's event stream, newest first, filterable by action,
// actor, target and service (server-side filters of the seed-001 list query).
import { useState } from 'preact/hooks';
import { api, rowsOf, unwrap } from '../api.ts';
import { Pager, Status, Table, fmtTime, useLoad } from '../ui.tsx';

const PAGE = 50;
type Row = Record<string, unknown>;
const s = (v: unknown) => (v === null || v === undefined ? '—' : typeof v === 'object' ? JSON.stringify(v) : String(v));

export function auditQuery(page: number, f: { action: string; actorId: string; targetType: string; serviceId: string }): string {
  const u = new URLSearchParams({ pageNo: String(page + 1), pageSize: String(PAGE), orderSort: 'DESC' });
  let i = 0;
  const add = (key: string, op: string, value: string) => {
    if (!value.trim()) return;
    u.set(`filters[${i}].key`, key);
    u.set(`filters[${i}].op`, op);
    u.set(`filters[${i}].value`, value.trim());
    i++;
  };
  add('action', 'MATCH', f.action);
  add('actorId', 'EQUAL', f.actorId);
  add('targetType', 'EQUAL', f.targetType);
  add('serviceId', 'EQUAL', f.serviceId);
  return `/api/v1/audit-events?${u}`;
}

export function AuditPage() {
  const [page, setPage] = useState(0);
  const [draft, setDraft] = useState({ action: '', actorId: '', targetType: '', serviceId: '' });
  const [filters, setFilters] = useState(draft);
  const [load, reload] = useLoad(() => api('GET', auditQuery(page, filters)).then((b) => rowsOf(unwrap(b))), [page, filters]);
  const field = (k: keyof typeof draft, label: string) => (
    <input placeholder={label} aria-label={label} value={draft[k]} onInput={(e) => setDraft({ ...draft, [k]: (e.target as HTMLInputElement).value })} />
  );
  return (
    <section>
      <h1>Audit</h1>
      <form class="searchbar" onSubmit={(e) => { e.preventDefault(); setFilters(draft); setPage(0); }}>
        {field('action', 'action contains')}{field('actorId', 'actor id')}{field('targetType', 'target type')}{field('serviceId', 'service id')}
        <button type="submit">Filter</button> <button type="button" onClick={reload}>Refresh</button>
      </form>
      <Status load={load} what="audit events">
        {({ rows, total }) => (
          <>
            <Table label="events" rows={rows} searchable={false} pageSize={PAGE} empty="No audit events match." columns={[
              { title: 'Seq', render: (r: Row) => s(r.seq) }, { title: 'At', render: (r: Row) => fmtTime(r.at) }, { title: 'Action', render: (r: Row) => s(r.action) },
              { title: 'Actor', render: (r: Row) => `${s(r.actorType)} ${s(r.actorName ?? r.actorId)}` }, { title: 'Target', render: (r: Row) => `${s(r.targetType)} ${s(r.targetId)}` },
              { title: 'Service', render: (r: Row) => s(r.serviceId) }, { title: 'Detail', render: (r: Row) => <code class="detail">{s(r.payload ?? r.detail ?? r.data)}</code> },
            ]} />
            <Pager page={page} pages={total === null ? null : Math.max(1, Math.ceil(total / PAGE))} hasNext={rows.length === PAGE} onPage={setPage} />
          </>
        )}
      </Status>
    </section>
  );
}
