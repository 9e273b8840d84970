// Access: the directory (users, departments, roles, projects, apps), a
// service's seed-001 authorizations, access keys (create, rotate, disable; the
// secret shown once), app grants with their ends on a timeline, the review queue
// and cancellation with its notice.
import { useState } from 'preact/hooks';
import { api, ApiError, qs, rowsOf, unwrap, type SessionUser } from '../api.ts';
import { CopyButton, Pager, Status, Table, Timeline, fmtTime, useLoad, type Column } from '../ui.tsx';

const DIR = '/minibase/portal/openapi/v1';
const TABS = ['users', 'departments', 'roles', 'projects', 'apps', 'authorizations', 'keys', 'grants', 'reviews'] as const;
type Tab = (typeof TABS)[number];
type Row = Record<string, unknown>;
const s = (v: unknown) => (v === null || v === undefined ? '—' : typeof v === 'object' ? JSON.stringify(v) : String(v));
const col = (title: string, key: string): Column<Row> => ({ title, render: (r) => s(r[key]) });
const PAGE = 20;
/** A reviewer cancellation takes effect after this notice (the access plane refuses less). */
export const CANCEL_NOTICE_SECONDS = 172800;

export function AccessPage(props: { user: SessionUser; tab: string; onTab: (t: string) => void }) {
  const tab: Tab = (TABS as readonly string[]).includes(props.tab) ? (props.tab as Tab) : 'users';
  return (
    <section>
      <h1>Access</h1>
      <nav class="tabs">{TABS.map((t) => <button class={t === tab ? 'active' : ''} onClick={() => props.onTab(t)}>{t}</button>)}</nav>
      {tab === 'users' && <Paged what="users" url={(p, q) => `${DIR}/users${qs({ page: p + 1, page_size: PAGE, fuzzy: q ? 1 : undefined, account: q || undefined })}`}
        columns={[col('Id', 'id'), col('Account', 'account'), col('Name', 'username'), col('Superuser', 'is_superuser'), col('Status', 'status'), col('Org', 'current_org_id')]} />}
      {tab === 'departments' && <OrgScoped what="departments" path={(org) => `/orgs/${org}/departments`} columns={[col('Id', 'id'), col('Name', 'name'), col('Parent', 'super_id'), col('Origin id', 'origin_id')]} />}
      {tab === 'roles' && <OrgScoped what="roles" path={(org) => `/orgs/${org}/roles`} columns={[col('Id', 'id'), col('Name', 'name'), col('Description', 'description'), col('Management', 'management_permissions')]} />}
      {tab === 'projects' && <Paged what="projects" url={(p) => `${DIR}/projects${qs({ page: p + 1, page_size: PAGE })}`}
        columns={[col('Id', 'id'), col('Name', 'name'), col('Org', 'org_id'), col('Start', 'start_date'), col('End', 'end_date')]} />}
      {tab === 'apps' && <ProjectScoped>{(pid) => <Paged what="apps" url={(p, q) => `/v1/${pid}/service/apps${qs({ offset: p * PAGE, limit: PAGE, name: q })}`}
        columns={[col('Id', 'id'), col('Name', 'name'), { title: 'Owner', render: (r) => s((r.owner as Row | undefined)?.account) }, col('Status', 'status'), col('Bound service', 'bound_service'), col('Created', 'create_time')]} />}</ProjectScoped>}
      {tab === 'authorizations' && <Authorizations />}
      {tab === 'keys' && <Keys user={props.user} />}
      {tab === 'grants' && <ProjectScoped>{(pid) => <Grants pid={pid} />}</ProjectScoped>}
      {tab === 'reviews' && <ProjectScoped>{(pid) => <Reviews pid={pid} />}</ProjectScoped>}
    </section>
  );
}

/** A server-paged list with a search box; pages of PAGE rows. */
function Paged(props: { what: string; url: (page: number, q: string) => string; columns: Column<Row>[]; extra?: (rows: Row[]) => preact.ComponentChildren }) {
  const [page, setPage] = useState(0);
  const [q, setQ] = useState('');
  const [applied, setApplied] = useState('');
  const [load] = useLoad(() => api('GET', props.url(page, applied)).then((b) => rowsOf(unwrap(b))), [page, applied, props.url(page, applied)]);
  return (
    <div>
      <form class="searchbar" onSubmit={(e) => { e.preventDefault(); setApplied(q); setPage(0); }}>
        <input type="search" placeholder={`Search ${props.what}`} aria-label={`Search ${props.what}`} value={q} onInput={(e) => setQ((e.target as HTMLInputElement).value)} />
        <button type="submit">Search</button>
      </form>
      <Status load={load} what={props.what}>
        {({ rows, total }) => (
          <>
            {props.extra?.(rows)}
            <Table label={props.what} rows={rows} columns={props.columns} searchable={false} pageSize={PAGE}
              empty={applied ? `No ${props.what} match “${applied}”.` : `No ${props.what} yet.`} />
            <Pager page={page} pages={total === null ? null : Math.max(1, Math.ceil(total / PAGE))} hasNext={rows.length === PAGE} onPage={setPage} />
          </>
        )}
      </Status>
    </div>
  );
}

function OrgScoped(props: { what: string; path: (org: string) => string; columns: Column<Row>[] }) {
  const [orgs] = useLoad(() => api('GET', `${DIR}/orgs`).then((b) => rowsOf(unwrap(b)).rows), []);
  const [org, setOrg] = useState<string | null>(null);
  return (
    <Status load={orgs} what="organisations">
      {(list) => {
        if (list.length === 0) return <p class="state empty">No organisations yet (utilmeta-proxy authz bootstrap creates one).</p>;
        const current = org ?? s(list[0].id);
        return (
          <>
            <label>Organisation <select value={current} onChange={(e) => setOrg((e.target as HTMLSelectElement).value)}>
              {list.map((o) => <option value={s(o.id)}>{s(o.name)}</option>)}
            </select></label>
            <Paged what={props.what} url={(p, q) => `${DIR}${props.path(current)}${qs({ page: p + 1, page_size: PAGE, name: q })}`} columns={props.columns} />
          </>
        );
      }}
    </Status>
  );
}

function ProjectScoped(props: { children: (pid: string) => preact.ComponentChildren }) {
  const [projects] = useLoad(() => api('GET', `${DIR}/projects`).then((b) => rowsOf(unwrap(b)).rows), []);
  const [pid, setPid] = useState<string | null>(null);
  return (
    <Status load={projects} what="projects">
      {(list) => {
        if (list.length === 0) return <p class="state empty">No projects yet: apps and grants live in a project.</p>;
        const current = pid ?? s(list[0].id);
        return (
          <>
            <label>Project <select value={current} onChange={(e) => setPid((e.target as HTMLSelectElement).value)}>
              {list.map((p) => <option value={s(p.id)}>{s(p.name)}</option>)}
            </select></label>
            {props.children(current)}
          </>
        );
      }}
    </Status>
  );
}

const PERMISSIONS = ['VIEW', 'TEST', 'CALL', 'EDIT', 'RELEASE', 'GRANT', 'SHARE', 'EXPORT', 'DELETE'];

function Authorizations() {
  const [services] = useLoad(() => api('GET', `/api/v1/services${qs({ pageSize: 2000 })}`).then((b) => rowsOf(unwrap(b)).rows), []);
  const [sid, setSid] = useState<string | null>(null);
  const [type, setType] = useState('USER');
  return (
    <Status load={services} what="services">
      {(list) => {
        if (list.length === 0) return <p class="state empty">No services yet.</p>;
        const current = sid ?? s(list[0].id);
        return (
          <>
            <label>Service <select value={current} onChange={(e) => setSid((e.target as HTMLSelectElement).value)}>
              {list.map((x) => <option value={s(x.id)}>{s(x.name)} ({s(x.authMode)})</option>)}
            </select></label>
            <label>Subject type <select value={type} onChange={(e) => setType((e.target as HTMLSelectElement).value)}>
              {['USER', 'DEPT', 'GROUP', 'APP'].map((t) => <option value={t}>{t}</option>)}
            </select></label>
            <Paged what="authorizations" url={(p) => `/api/v1/services/auth${qs({ serviceId: current, authObjectType: type, infoScope: 'DETAIL', pageNo: p + 1, pageSize: PAGE })}`}
              columns={[col('Id', 'id'), col('Subject', 'authObjectName'), col('Subject id', 'authObjectId'),
                { title: 'Permissions', render: (r) => <span class="perms">{PERMISSIONS.map((p) => <span class={`perm ${(r.permissions as string[] | undefined)?.includes(p) ? 'on' : 'off'}`}>{p}</span>)}</span>, text: (r) => s(r.permissions) },
                col('Updated', 'updatedDate'), col('By', 'updatedBy')]} />
          </>
        );
      }}
    </Status>
  );
}

function Keys(props: { user: SessionUser }) {
  const [page, setPage] = useState(0);
  const [load, reload] = useLoad(() => api('GET', `/api/v1/access-keys${qs({ pageNo: page + 1, pageSize: PAGE })}`).then((b) => rowsOf(unwrap(b))), [page]);
  const [secret, setSecret] = useState<{ id: string; secret: string } | null>(null);
  const [error, setError] = useState<string | null>(null);
  async function run(fn: () => Promise<unknown>) {
    setError(null);
    try {
      const data = unwrap(await fn()) as Row;
      if (data && typeof data.secretAccessKey === 'string') setSecret({ id: s(data.accessKeyId), secret: data.secretAccessKey });
      reload();
    } catch (err) {
      setError(err instanceof ApiError && err.missing ? 'Access keys are not available on this node.' : (err as Error).message);
    }
  }
  return (
    <div>
      <button onClick={() => run(() => api('POST', '/api/v1/access-keys', { ownerType: 'USER', ownerId: Number(props.user.userId), description: 'created in the console' }))}>Create access key</button>
      {error && <p class="state error" role="alert">{error}</p>}
      {secret && (
        <div class="secret" role="status">
          <p>Secret access key for <code data-new-key>{secret.id}</code> — shown only now; copy it before leaving this page.</p>
          <code data-secret>{secret.secret}</code> <CopyButton text={secret.secret} /> <button onClick={() => setSecret(null)}>Done</button>
        </div>
      )}
      <Status load={load} what="access keys">
        {({ rows, total }) => (
          <>
            <Table label="access keys" rows={rows} searchable={rows.length > 5} empty="No access keys yet." columns={[
              col('Access key id', 'accessKeyId'), col('Owner', 'ownerType'), col('Owner id', 'ownerId'), col('Status', 'status'), col('Description', 'description'),
              { title: 'Created', render: (r) => fmtTime(r.createdDate) }, { title: 'Expires', render: (r) => fmtTime(r.expiresDate) }, { title: 'Last used', render: (r) => fmtTime(r.lastUsedDate) },
              { title: 'Actions', render: (r) => (
                <span class="actions">
                  <button onClick={() => run(() => api('POST', `/api/v1/access-keys/${s(r.accessKeyId)}/rotate`, {}))}>Rotate</button>
                  {r.status === 'Active'
                    ? <button class="danger" onClick={() => run(() => api('PATCH', `/api/v1/access-keys/${s(r.accessKeyId)}`, { status: 'Inactive' }))}>Disable</button>
                    : <button onClick={() => run(() => api('PATCH', `/api/v1/access-keys/${s(r.accessKeyId)}`, { status: 'Active' }))}>Enable</button>}
                </span>
              ) },
            ]} />
            <Pager page={page} pages={total === null ? null : Math.max(1, Math.ceil(total / PAGE))} hasNext={rows.length === PAGE} onPage={setPage} />
          </>
        )}
      </Status>
    </div>
  );
}

const plusNotice = () => new Date(Date.now() + CANCEL_NOTICE_SECONDS * 1000 + 60_000).toISOString();

function Grants(props: { pid: string }) {
  const [apps] = useLoad(() => api('GET', `/v1/${props.pid}/service/apps${qs({ limit: 100 })}`).then((b) => rowsOf(unwrap(b)).rows), [props.pid]);
  const [appId, setAppId] = useState<string | null>(null);
  return (
    <Status load={apps} what="apps">
      {(list) => {
        if (list.length === 0) return <p class="state empty">No apps in this project yet.</p>;
        const current = appId ?? s(list[0].id);
        return (
          <>
            <label>App <select value={current} onChange={(e) => setAppId((e.target as HTMLSelectElement).value)}>
              {list.map((a) => <option value={s(a.id)}>{s(a.name)}</option>)}
            </select></label>
            <AppGrants pid={props.pid} appId={current} />
          </>
        );
      }}
    </Status>
  );
}

function AppGrants(props: { pid: string; appId: string }) {
  const [load, reload] = useLoad(() => api('GET', `/v1/${props.pid}/service/apps/${props.appId}/apis${qs({ limit: 100, state: 'PENDING,ACTIVE,CANCEL_SCHEDULED,EXPIRED,CANCELLED,REJECTED' })}`).then((b) => rowsOf(unwrap(b)).rows), [props.pid, props.appId]);
  // The catalog's APIs under authorization: applying for one without it would grant nothing.
  const [apis] = useLoad(() => api('GET', `/v1/${props.pid}/service/apis${qs({ limit: 100 })}`).then((b) => rowsOf(unwrap(b)).rows.filter((a) => a.auth_enabled !== false)), [props.pid]);
  const [msg, setMsg] = useState<string | null>(null);
  const [apiId, setApiId] = useState('');
  const [end, setEnd] = useState(() => new Date(Date.now() + 30 * 86400_000).toISOString().slice(0, 10));
  async function action(body: Row, done: string) {
    setMsg(null);
    try {
      await api('POST', `/v1/${props.pid}/service/apis/authorize/action`, { app_id: props.appId, ...body });
      setMsg(done);
      reload();
    } catch (err) {
      setMsg(`Failed: ${(err as Error).message}`);
    }
  }
  return (
    <div>
      <form class="searchbar" onSubmit={(e) => { e.preventDefault(); void action({ api_id: apiId, apply_type: 'APPLY_TYPE_APPLY', time: new Date(`${end}T00:00:00.000Z`).toISOString() }, `Applied for ${apiId}; it waits for a reviewer.`); }}>
        <Status load={apis} what="APIs">
          {(list) => (
            <select aria-label="API to apply for" value={apiId} onChange={(e) => setApiId((e.target as HTMLSelectElement).value)}>
              <option value="">Choose an API…</option>
              {list.map((a) => <option value={s(a.api_id)}>{s(a.service)}: {s(a.method)} {s(a.path)}{a.summary ? ` — ${s(a.summary)}` : ''}</option>)}
            </select>
          )}
        </Status>
        <label>until <input type="date" aria-label="requested end" value={end} onInput={(e) => setEnd((e.target as HTMLInputElement).value)} /></label>
        <button type="submit">Apply for access</button>
      </form>
      {msg && <p class="notice" role="status">{msg}</p>}
      <Status load={load} what="grants">
        {(rows) => (
          <>
            <Timeline items={rows.filter((g) => g.state === 'ACTIVE' || g.state === 'CANCEL_SCHEDULED').map((g) => ({ label: s(g.api_name), end: s(g.cancel_time !== null && g.cancel_time !== undefined ? g.cancel_time : g.end_time), state: s(g.state) }))} />
            <Table label="grants" rows={rows} empty="This app has no grants yet." columns={[
              col('Grant', 'grant_id'), col('API', 'api_name'), col('Service', 'service'),
              { title: 'State', render: (g) => <span class={`pill ${s(g.state).toLowerCase()}`}>{s(g.state)}{g.expiring ? ' (expiring)' : ''}{g.renew_pending ? ' (renewal pending)' : ''}</span> },
              { title: 'Ends', render: (g) => fmtTime(g.end_time) }, { title: 'Cancels at', render: (g) => fmtTime(g.cancel_time) },
              { title: 'Actions', render: (g) => (g.state === 'ACTIVE' ? (
                <span class="actions">
                  <button onClick={() => confirm(`Cancel this grant? Reviewer cancellations take effect after the two-day notice, at ${fmtTime(plusNotice())}.`) &&
                    action({ api_id: g.api_id, apply_type: 'APPLY_TYPE_API_CANCEL_AUTHORIZE', time: plusNotice() }, `Cancellation scheduled: the grant ends at ${fmtTime(plusNotice())} (two days' notice).`)}>
                    Cancel (2-day notice)
                  </button>
                </span>
              ) : '—') },
            ]} />
            <p class="hint">A reviewer's cancellation takes effect no sooner than two days ({CANCEL_NOTICE_SECONDS} s) after it is scheduled; the app keeps access until then.</p>
          </>
        )}
      </Status>
    </div>
  );
}

function Reviews(props: { pid: string }) {
  const [status, setStatus] = useState('PENDING');
  const [load, reload] = useLoad(() => api('GET', `/v1/${props.pid}/service/applys${qs({ apply_status: status, limit: 100 })}`).then((b) => rowsOf(unwrap(b)).rows), [props.pid, status]);
  const [msg, setMsg] = useState<string | null>(null);
  async function review(id: unknown, action: 'APPROVE' | 'REJECT') {
    setMsg(null);
    try {
      await api('POST', `/v1/${props.pid}/service/applys/${s(id)}/action`, { action });
      setMsg(`${action === 'APPROVE' ? 'Approved' : 'Rejected'} request ${s(id)}.`);
      reload();
    } catch (err) {
      setMsg(`Failed: ${(err as Error).message}`);
    }
  }
  return (
    <div>
      <label>Status <select value={status} onChange={(e) => setStatus((e.target as HTMLSelectElement).value)}>
        {['PENDING', 'APPROVED', 'REJECTED', 'WITHDRAWN', 'SUPERSEDED', 'LAPSED'].map((x) => <option value={x}>{x}</option>)}
      </select></label>
      {msg && <p class="notice" role="status">{msg}</p>}
      <Status load={load} what="the review queue">
        {(rows) => (
          <Table label="requests" rows={rows} empty={status === 'PENDING' ? 'The review queue is empty.' : `No ${status.toLowerCase()} requests.`} columns={[
            col('Request', 'apply_id'), col('Type', 'apply_type'), col('API', 'api_name'), col('Service', 'service'), col('App', 'app_name'), col('Applicant', 'applicant'),
            { title: 'Requested end', render: (r) => fmtTime(r.time) }, { title: 'Applied', render: (r) => fmtTime(r.apply_time) },
            { title: 'Actions', render: (r) => (r.apply_status === 'PENDING' ? (
              <span class="actions"><button onClick={() => review(r.apply_id, 'APPROVE')}>Approve</button><button class="danger" onClick={() => review(r.apply_id, 'REJECT')}>Reject</button></span>
            ) : s(r.apply_status)) },
          ]} />
        )}
      </Status>
    </div>
  );
}
