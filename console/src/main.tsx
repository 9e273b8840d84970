// The console shell: sign-in (password or pasted token), navigation between the
// pages (paths under /console/, which the node answers with this app), sign-out.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, type SessionUser } from './api.ts';
import { AccessPage } from './pages/access.tsx';
import { AuditPage } from './pages/audit.tsx';
import { PlatformPage } from './pages/platform.tsx';
import { RegistryPage } from './pages/registry.tsx';
import './style.css';

const PAGES = ['registry', 'platform', 'access', 'audit'] as const;
type Page = (typeof PAGES)[number];

function route(): { page: Page; tab: string } {
  const [, , page = 'registry', tab = ''] = location.pathname.split('/');
  return { page: (PAGES as readonly string[]).includes(page) ? (page as Page) : 'registry', tab };
}

function SignIn(props: { onUser: (u: SessionUser) => void }) {
  const [mode, setMode] = useState<'password' | 'token'>('password');
  const [account, setAccount] = useState('');
  const [password, setPassword] = useState('');
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | null>(null);
  async function submit(e: Event) {
    e.preventDefault();
    setError(null);
    try {
      const body = mode === 'password' ? { account, password } : { token };
      const r = await api<{ user: SessionUser }>('POST', '/console/session', body);
      props.onUser(r.user);
    } catch (err) {
      setError((err as Error).message);
    }
  }
  return (
    <main class="signin">
      <h1>utilmeta-proxy console</h1>
      <nav class="tabs">
        <button class={mode === 'password' ? 'active' : ''} onClick={() => setMode('password')}>Account and password</button>
        <button class={mode === 'token' ? 'active' : ''} onClick={() => setMode('token')}>Paste a token</button>
      </nav>
      <form onSubmit={submit}>
        {mode === 'password' ? (
          <>
            <label>Account <input name="account" autocomplete="username" value={account} onInput={(e) => setAccount((e.target as HTMLInputElement).value)} /></label>
            <label>Password <input name="password" type="password" autocomplete="current-password" value={password} onInput={(e) => setPassword((e.target as HTMLInputElement).value)} /></label>
          </>
        ) : (
          <label>Token <input name="token" placeholder="umt_…" autocomplete="off" value={token} onInput={(e) => setToken((e.target as HTMLInputElement).value)} /></label>
        )}
        <button type="submit">Sign in</button>
        {error && <p class="state error" role="alert">{error}</p>}
      </form>
    </main>
  );
}

function App() {
  const [user, setUser] = useState<SessionUser | null | undefined>(undefined);
  const [where, setWhere] = useState(route());
  useEffect(() => {
    api<{ user: SessionUser }>('GET', '/console/session').then((r) => setUser(r.user), (e) => setUser(e instanceof ApiError && e.status === 401 ? null : null));
    const onPop = () => setWhere(route());
    addEventListener('popstate', onPop);
    return () => removeEventListener('popstate', onPop);
  }, []);
  const go = (page: Page, tab = '') => {
    history.pushState(null, '', `/console/${page}${tab ? `/${tab}` : ''}`);
    setWhere({ page, tab });
  };
  if (user === undefined) return <p class="state loading">Loading…</p>;
  if (user === null) return <SignIn onUser={setUser} />;
  return (
    <div class="shell">
      <header>
        <strong>utilmeta-proxy</strong>
        <nav>{PAGES.map((p) => <a href={`/console/${p}`} class={p === where.page ? 'active' : ''} onClick={(e) => { e.preventDefault(); go(p); }}>{p[0].toUpperCase() + p.slice(1)}</a>)}</nav>
        <span class="who" data-user={user.account}>{user.account}{user.isSuperuser ? ' (superuser)' : ''}</span>
        <button onClick={() => api('DELETE', '/console/session').finally(() => setUser(null))}>Sign out</button>
      </header>
      <main>
        {where.page === 'registry' && <RegistryPage />}
        {where.page === 'platform' && <PlatformPage />}
        {where.page === 'access' && <AccessPage user={user} tab={where.tab} onTab={(t) => go('access', t)} />}
        {where.page === 'audit' && <AuditPage />}
      </main>
    </div>
  );
}

render(<App />, document.getElementById('app')!);
