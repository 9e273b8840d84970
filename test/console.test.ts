// The operator console end to end: a real node (PostgreSQL) serving /console/,
// the cookie session over HTTP, and Debian's Chromium driven by playwright-core:
// sign in, see a registered service, visit every page (screenshots saved to
// docs/screenshots/), sign out.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import aws4 from 'aws4';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { authzBootstrap, type BootstrapResult } from '../src/access/cli.ts';
import { generateMasterKey } from '../src/access/crypto.ts';
import { createConsole, SECURITY_HEADERS, type ConsoleSurface } from '../src/routes/console.ts';
import { freshDatabases, startTestNode, LISTENERS, type TestDatabases, type TestNode } from './support/env.ts';
import { insertInstanceResource, registrationBody } from './support/ops.ts';
import { until } from './support/http.ts';
import { addApi, addProject, addUser, enableService, settle } from './support/grants-fixture.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
// Screenshots go to docs/ only when asked for (UPDATE_SCREENSHOTS=1): a test run must not rewrite tracked files.
const SHOTS = process.env.UPDATE_SCREENSHOTS ? join(root, 'docs', 'screenshots') : mkdtempSync(join(tmpdir(), 'umconsole-shots-'));
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

interface Reply { status: number; headers: Record<string, string | string[] | undefined>; text: string }
async function call(url: string, opts: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Reply> {
  const r = await request(url, { method: (opts.method ?? 'GET') as 'GET', headers: opts.headers, body: opts.body });
  return { status: r.statusCode, headers: r.headers, text: await r.body.text() };
}
const h1 = (r: Reply, name: string) => {
  const v = r.headers[name];
  return Array.isArray(v) ? v[0] : v;
};
const cookieOf = (r: Reply) => /umproxy_session=([^;]*)/.exec(h1(r, 'set-cookie') ?? '')?.[1];

for (const server of LISTENERS) describe(`web console (${server} listener)`, () => {
  let dbs: TestDatabases;
  let node: TestNode;
  let surface: ConsoleSurface;
  let admin: BootstrapResult;
  let context: BrowserContext;
  let profile: string;
  const service = 'console-orders';
  const address = `127.0.0.1:${30000 + Math.floor(Math.random() * 20000)}`;
  const json = { 'content-type': 'application/json', 'x-utilmeta-console': '1' };

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium (.ci/run does it)`);
    // Build the console the way npm start does (a no-op when it is up to date).
    const b = spawnSync(process.execPath, [join(root, 'scripts/build-console.mjs'), '--quiet'], { cwd: root, encoding: 'utf8' });
    assert.equal(b.status, 0, b.stderr);
    dbs = freshDatabases();
    node = await startTestNode(server, dbs, { UTILMETA_PROXY_AUTHZ_MASTER_KEYS: generateMasterKey('console') }, {
      extend: (deps, n) => {
        surface = createConsole({ config: n.config, log: deps.log, credentials: n.access.credentials, metricsText: () => n.metrics.text(), sampleIntervalMs: 300 });
        deps.mounts = [surface, ...(deps.mounts ?? [])];
      },
    });
    admin = await authzBootstrap(node.access.store, null, { account: 'console-admin' });
    const res = await insertInstanceResource(node.db.ops, { service, address });
    const reg = await call(`${node.origin}/api/registry`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(registrationBody({ name: service, address, instanceId: res.id, version: '2.4.1' })) });
    assert.equal(reg.status, 200, reg.text);
    // Some proxied requests for the traffic summary (refused ones count too).
    for (let i = 0; i < 5; i++) await call(`${node.origin}/api/proxy/x`, { headers: { 'x-utilmeta-proxy-type': 'discovery' } });
    profile = mkdtempSync(join(tmpdir(), 'umconsole-chromium-'));
    context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS, viewport: { width: 1280, height: 800 } });
    mkdirSync(SHOTS, { recursive: true });
  });

  after(async () => {
    await context?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
    surface?.close();
    await node?.close();
    await dbs?.drop();
  });

  it('serves the app with strict security headers, immutable hashed assets and a page fallback', async () => {
    const redirect = await call(`${node.origin}/console`);
    assert.equal(redirect.status, 308);
    assert.equal(h1(redirect, 'location'), '/console/');
    const index = await call(`${node.origin}/console/`);
    assert.equal(index.status, 200);
    assert.match(h1(index, 'content-type')!, /^text\/html/);
    assert.equal(h1(index, 'cache-control'), 'no-cache');
    for (const [k, v] of SECURITY_HEADERS) assert.equal(h1(index, k), v, k);
    assert.match(h1(index, 'content-security-policy')!, /frame-ancestors 'none'/);
    const script = /src="(\/console\/assets\/[^"]+\.js)"/.exec(index.text)?.[1];
    assert.ok(script, 'index.html loads a hashed bundle');
    assert.doesNotMatch(index.text, /https?:\/\//, 'no external asset in index.html');
    const js = await call(`${node.origin}${script}`);
    assert.equal(js.status, 200);
    assert.match(h1(js, 'content-type')!, /^text\/javascript/);
    assert.equal(h1(js, 'cache-control'), 'public, max-age=31536000, immutable');
    assert.equal(h1(js, 'x-content-type-options'), 'nosniff');
    const page = await call(`${node.origin}/console/access/keys`);
    assert.equal(page.status, 200);
    assert.equal(page.text, index.text, 'page paths answer index.html');
    const foreign = await call(`${node.origin}/console/`, { headers: { origin: 'http://evil.localhost' } });
    assert.equal(h1(foreign, 'access-control-allow-origin'), undefined, 'no CORS grant to a foreign origin');
  });

  it('a session cookie counts only with X-UtilMeta-Console: 1 from the own origin', async () => {
    const noHeader = await call(`${node.origin}/console/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ account: admin.account, password: admin.password }) });
    assert.equal(noHeader.status, 403, 'sign-in needs the console header');
    const wrong = await call(`${node.origin}/console/session`, { method: 'POST', headers: json, body: JSON.stringify({ account: admin.account, password: 'not-the-password' }) });
    assert.equal(wrong.status, 400);
    assert.equal(cookieOf(wrong), undefined);
    const missing = await call(`${node.origin}/console/session`, { method: 'POST', headers: json, body: JSON.stringify({ account: admin.account }) });
    assert.equal(missing.status, 400);
    assert.match(missing.text, /password/);
    const ok = await call(`${node.origin}/console/session`, { method: 'POST', headers: json, body: JSON.stringify({ account: admin.account, password: admin.password }) });
    assert.equal(ok.status, 200, ok.text);
    const setCookie = h1(ok, 'set-cookie')!;
    assert.match(setCookie, /HttpOnly/);
    assert.match(setCookie, /SameSite=Strict/);
    assert.match(setCookie, /Path=\//);
    assert.doesNotMatch(setCookie, /Secure/, 'plain http: no Secure');
    const token = cookieOf(ok)!;
    assert.match(token, /^umt_/);
    const cookie = `umproxy_session=${token}`;

    const withHeader = await call(`${node.origin}/console/session`, { headers: { cookie, 'x-utilmeta-console': '1' } });
    assert.equal(withHeader.status, 200);
    assert.equal(JSON.parse(withHeader.text).user.account, admin.account);
    const without = await call(`${node.origin}/console/session`, { headers: { cookie } });
    assert.equal(without.status, 401, 'the cookie alone does not authenticate');
    const crossSite = await call(`${node.origin}/console/session`, { headers: { cookie, 'x-utilmeta-console': '1', origin: 'http://evil.localhost' } });
    assert.equal(crossSite.status, 401);
    assert.equal(h1(crossSite, 'access-control-allow-origin'), undefined);
    // A cross-site page cannot send the console header: no preflight grants it, on the console or the management API.
    for (const path of ['/console/session', '/api/v1/access-keys', '/api/registry']) {
      const pre = await call(`${node.origin}${path}`, { method: 'OPTIONS', headers: { origin: 'http://evil.localhost', 'access-control-request-method': 'GET', 'access-control-request-headers': 'x-utilmeta-console' } });
      assert.doesNotMatch(String(h1(pre, 'access-control-allow-headers') ?? ''), /x-utilmeta-console/i, `${path}: preflight does not allow the console header`);
      if (path.startsWith('/console')) assert.equal(h1(pre, 'access-control-allow-origin'), undefined);
    }
    const metricsNoHeader = await call(`${node.origin}/console/api/metrics`, { headers: { cookie } });
    assert.equal(metricsNoHeader.status, 401);

    const metrics = await until('a traffic sample with the proxied requests', async () => {
      const r = await call(`${node.origin}/console/api/metrics`, { headers: { cookie, 'x-utilmeta-console': '1' } });
      assert.equal(r.status, 200);
      const m = JSON.parse(r.text) as { totals: Record<string, { requests: number }>; series: unknown[] };
      const total = Object.values(m.totals).reduce((a, t) => a + t.requests, 0);
      return total >= 5 && m.series.length > 0 ? m : null;
    });
    assert.ok(Object.keys(metrics.totals).length > 0);

    const out = await call(`${node.origin}/console/session`, { method: 'DELETE', headers: { cookie, 'x-utilmeta-console': '1' } });
    assert.equal(out.status, 200);
    assert.match(h1(out, 'set-cookie')!, /Max-Age=0/);
    const after = await call(`${node.origin}/console/session`, { headers: { cookie, 'x-utilmeta-console': '1' } });
    assert.equal(after.status, 401, 'the token was revoked on sign-out');
  });

  it('a pasted token signs in after a check; a bad one does not', async () => {
    const bad = await call(`${node.origin}/console/session`, { method: 'POST', headers: json, body: JSON.stringify({ token: 'umt_' + 'x'.repeat(43) }) });
    assert.equal(bad.status, 401);
    const malformed = await call(`${node.origin}/console/session`, { method: 'POST', headers: json, body: JSON.stringify({ token: 'nope' }) });
    assert.equal(malformed.status, 400);
    assert.match(malformed.text, /token/);
    const ok = await call(`${node.origin}/console/session`, { method: 'POST', headers: json, body: JSON.stringify({ token: admin.token }) });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(cookieOf(ok), admin.token);
  });

  /** Screenshots for the README come from the first listener's run. */
  async function shot(page: Page, name: string) {
    if (server !== LISTENERS[0]) return;
    await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
    assert.ok(readFileSync(join(SHOTS, `${name}.png`)).length > 1000);
  }

  it('in Chromium: sign in, see the registered service, visit every page, sign out', async () => {
    const page = await context.newPage();
    const violations: string[] = [];
    page.on('console', (m) => { if (/Content Security Policy/i.test(m.text())) violations.push(m.text()); });
    const external: string[] = [];
    page.on('request', (r) => { if (!r.url().startsWith(node.origin) && !r.url().startsWith('data:')) external.push(r.url()); });

    await page.goto(`${node.origin}/console/`);
    await page.getByLabel('Account').fill(admin.account);
    await page.getByLabel('Password').fill(admin.password);
    await shot(page, 'sign-in');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator(`[data-user="${admin.account}"]`).waitFor();

    const cookies = await context.cookies(node.origin);
    const session = cookies.find((c) => c.name === 'umproxy_session');
    assert.ok(session, 'the session cookie is set');
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Strict');
    assert.equal(await page.evaluate(() => document.cookie.includes('umproxy_session')), false, 'scripts cannot read the session');

    const svc = page.locator(`[data-service="${service}"]`);
    await svc.waitFor();
    assert.match(await svc.innerText(), new RegExp(address.replace(/\./g, '\\.')));
    assert.match(await svc.innerText(), /2\.4\.1/);
    await page.getByText(/requests/).first().waitFor();
    await page.getByPlaceholder('Filter services by name').fill('no-such-service');
    await page.getByText('No service matches').waitFor();
    await page.getByPlaceholder('Filter services by name').fill('');
    await page.locator('figure.chart svg').first().waitFor();
    await shot(page, 'registry');

    await page.getByRole('link', { name: 'Platform' }).click();
    await page.locator('[data-fact="Node readiness"]').waitFor();
    assert.equal(await page.locator('[data-fact="Node readiness"]').innerText(), 'ready');
    assert.equal(await page.locator('[data-fact="Platform configured"]').innerText(), 'false');
    await shot(page, 'platform');

    await page.getByRole('link', { name: 'Access' }).click();
    await page.locator('.state.missing, table, .state.empty, .state.error').first().waitFor();
    await shot(page, 'access');
    await page.getByRole('button', { name: 'keys' }).click();
    await page.locator('.state.missing, table, .state.empty, .state.error').first().waitFor();
    await shot(page, 'access-keys');

    await page.getByRole('link', { name: 'Audit' }).click();
    await page.locator('.state.missing, table, .state.empty, .state.error').first().waitFor();
    await shot(page, 'audit');

    // A reload on a page path lands on that page (the node answers index.html).
    await page.reload();
    await page.locator('h1', { hasText: 'Audit' }).waitFor();

    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('button', { name: 'Sign in' }).waitFor();
    const revoked = await call(`${node.origin}/console/session`, { headers: { cookie: `umproxy_session=${session.value}`, 'x-utilmeta-console': '1' } });
    assert.equal(revoked.status, 401, 'signing out revoked the token');
    assert.deepEqual(violations, [], 'no CSP violations');
    assert.deepEqual(external, [], 'nothing is fetched from outside the node');
    await page.close();
  });
  it('in Chromium: create and rotate an access key, disable it, and its signed calls fail', async () => {
    const signIn = await call(`${node.origin}/console/session`, { method: 'POST', headers: json, body: JSON.stringify({ account: admin.account, password: admin.password }) });
    const cookie = `umproxy_session=${cookieOf(signIn)}`;
    const probe = await call(`${node.origin}/api/v1/access-keys`, { headers: { cookie, 'x-utilmeta-console': '1' } });
    assert.equal(probe.status, 200, probe.text);
    const cookieOnly = await call(`${node.origin}/api/v1/access-keys`, { headers: { cookie } });
    assert.equal(cookieOnly.status, 401, 'the management API ignores the cookie without X-UtilMeta-Console: 1');

    const signed = (id: string, secret: string) => {
      const url = new URL(node.origin);
      const opts = aws4.sign({ host: url.host, path: '/api/v1/access-keys', method: 'GET', service: 'utilmeta', region: 'pri' }, { accessKeyId: id, secretAccessKey: secret });
      return call(`${node.origin}/api/v1/access-keys`, { headers: opts.headers as Record<string, string> });
    };
    const page = await context.newPage();
    await page.goto(`${node.origin}/console/`);
    await page.getByLabel('Account').fill(admin.account);
    await page.getByLabel('Password').fill(admin.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator(`[data-user="${admin.account}"]`).waitFor();
    await page.getByRole('link', { name: 'Access' }).click();
    // The directory through the session: the signed-in superuser is listed.
    await page.locator('[data-table="users"] td', { hasText: admin.account }).first().waitFor();
    await page.getByRole('button', { name: 'departments' }).click();
    await page.locator('[data-table="departments"]').waitFor();
    await page.getByRole('button', { name: 'keys' }).click();
    await page.getByRole('button', { name: 'Create access key' }).click();
    const firstId = await page.locator('[data-new-key]').innerText();
    const firstSecret = await page.locator('[data-secret]').innerText();
    assert.match(firstId, /^UMAK[A-Z2-7]{16}$/);
    assert.match(firstSecret, /^[A-Za-z0-9]{40}$/);
    await page.locator('tr', { hasText: firstId }).waitFor();
    assert.equal((await signed(firstId, firstSecret)).status, 200);
    await shot(page, 'access-keys');

    await page.locator('tr', { hasText: firstId }).getByRole('button', { name: 'Rotate' }).click();
    await page.locator('[data-new-key]', { hasNotText: firstId }).waitFor();
    const secondId = await page.locator('[data-new-key]').innerText();
    const secondSecret = await page.locator('[data-secret]').innerText();
    assert.notEqual(secondId, firstId);
    assert.equal((await signed(secondId, secondSecret)).status, 200);

    await page.locator('tr', { hasText: secondId }).getByRole('button', { name: 'Disable' }).click();
    await page.locator('tr', { hasText: secondId }).getByRole('button', { name: 'Enable' }).waitFor();
    const refused = await until('the disabled key refused', async () => ((await signed(secondId, secondSecret)).status === 403 ? true : null));
    assert.equal(refused, true);
    await page.close();
  });

  it('in Chromium: an app owner applies for an API, the admin approves it, the grant is ACTIVE with its end', async () => {
    // The world through the domain: a project, the service's authorization on with one API, an app owned by a second user.
    const { store, credentials } = node.access;
    const orgId = String(admin.orgId);
    const [svcRow] = await node.db.registry<{ id: string }[]>`SELECT id::text FROM utilmeta_service WHERE name = ${service}`;
    assert.ok(svcRow, 'the registered service has a row');
    await enableService(store, svcRow.id);
    const apiId = await addApi(store, svcRow.id, 'GET', '/console-grant/{id}');
    const owner = await addUser(store, credentials, orgId, 'app-owner');
    const projectId = await addProject(store, orgId, 'console-project');
    const mk = await call(`${node.origin}/v1/${projectId}/service/apps`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-auth-token': admin.token }, body: JSON.stringify({ name: 'owner-app', owner_user_id: Number(owner.id) }) });
    assert.equal(mk.status, 201, mk.text);
    const appId = JSON.parse(mk.text).id as string;
    await settle([node]);
    const end = new Date(Date.now() + 40 * 86400_000).toISOString().slice(0, 10);

    // Start signed out whatever an earlier test left in the shared profile.
    await context.clearCookies();
    const page = await context.newPage();
    // The owner signs in with a pasted token and applies on the grants page.
    await page.goto(`${node.origin}/console/`);
    await page.getByRole('button', { name: 'Paste a token' }).click();
    await page.getByLabel('Token').fill(owner.token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator(`[data-user="${owner.account}"]`).waitFor();
    await page.getByRole('link', { name: 'Access' }).click();
    await page.getByRole('button', { name: 'grants' }).click();
    await page.getByLabel('API to apply for').selectOption(apiId);
    await page.getByLabel('requested end').fill(end);
    await page.getByRole('button', { name: 'Apply for access' }).click();
    await page.getByText(/waits for a reviewer/).waitFor();
    await page.locator('[data-table="grants"] tr', { hasText: '/console-grant/{id}' }).getByText('PENDING').waitFor();
    const [pending] = await node.db.registry<{ state: string }[]>`SELECT g.state FROM authz_grant g JOIN authz_app a ON a.id = g.app_id WHERE a.app_id = ${appId} AND g.api_id = ${apiId}`;
    assert.equal(pending?.state, 'PENDING');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('button', { name: 'Sign in' }).waitFor();

    // The admin reviews: the request is in the queue with the applicant; approve it.
    await page.getByRole('button', { name: 'Account and password' }).click();
    await page.getByLabel('Account').fill(admin.account);
    await page.getByLabel('Password').fill(admin.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator(`[data-user="${admin.account}"]`).waitFor();
    await page.getByRole('link', { name: 'Access' }).click();
    await page.getByRole('button', { name: 'reviews' }).click();
    const request = page.locator('[data-table="requests"] tr', { hasText: '/console-grant/{id}' });
    await request.waitFor();
    assert.match(await request.innerText(), /app-owner/);
    assert.match(await request.innerText(), /owner-app/);
    await shot(page, 'access-reviews');
    await request.getByRole('button', { name: 'Approve' }).click();
    await page.getByText(/^Approved request/).waitFor();
    await page.getByText('The review queue is empty.').waitFor();

    await page.getByRole('button', { name: 'grants' }).click();
    const grant = page.locator('[data-table="grants"] tr', { hasText: '/console-grant/{id}' });
    await grant.getByText('ACTIVE').waitFor();
    assert.match(await grant.innerText(), new RegExp(`${end} 00:00:00Z`), 'the grant shows its end time');
    await shot(page, 'access-grants');
    const [row] = await node.db.registry<{ state: string; end_at: Date }[]>`SELECT g.state, g.end_at FROM authz_grant g JOIN authz_app a ON a.id = g.app_id WHERE a.app_id = ${appId} AND g.api_id = ${apiId}`;
    assert.equal(row?.state, 'ACTIVE');
    assert.equal(row.end_at.toISOString(), `${end}T00:00:00.000Z`);
    await page.close();
  });
});
