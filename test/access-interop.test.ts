// Real clients against a running node, on both listeners: the directory surface
// signed by botocore (SigV4Auth(cred, "minibasebe", "pri"), as the directory's
// own example does), @smithy/signature-v4, @aws-sdk/signature-v4 (v3.374) and
// aws4 — GET with a query, POST with JSON, presigned URLs, unicode and reserved
// characters, repeated query keys. Then the platform side with the simulator:
// RFC 8693 token exchange of a node JWT, and /token/revoke on the node's own
// OperationsAPI refusing that jti at `operations` proxying (and the umt_ token
// exchanged from it).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { freshDatabases, startTestNode, LISTENERS, type TestDatabases, type TestNode } from './support/env.ts';
import { call, until } from './support/http.ts';
import { SIGV4_CLIENTS, botocoreVersion, jsonOf, sendSigned, type SignedCall, type SigV4ClientName } from './support/sigv4-clients.ts';
import { deadPort } from './support/upstream.ts';
import { PlatformSim } from './support/platform-sim.ts';
import { FakeService } from './support/fake-service.ts';
import { authzBootstrap, type BootstrapResult } from '../src/access/cli.ts';
import { effectiveMasterKeys } from '../src/access/index.ts';

const DIR = '/minibase/portal/openapi/v1';
const asciiJson = (v: unknown) => JSON.stringify(v).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
const MASTER = `k1:${randomBytes(32).toString('base64')}`;

before(async () => {
  assert.ok(await botocoreVersion(), 'python3-botocore is installed (.ci/run installs it)');
});

for (const server of LISTENERS) {
  describe(`directory from real SigV4 clients (${server} listener)`, () => {
    let dbs: TestDatabases;
    let node: TestNode;
    let boot: BootstrapResult;

    before(async () => {
      dbs = freshDatabases();
      node = await startTestNode(server, dbs, { UTILMETA_PROXY_AUTHZ_MASTER_KEYS: MASTER });
      boot = await authzBootstrap(node.access.store, effectiveMasterKeys(node.config), { account: 'admin' });
      await node.access.view.view.refresh();
    });
    after(async () => {
      await node?.close();
      await dbs?.drop();
    });

    const sign = (client: SigV4ClientName, c: Omit<SignedCall, 'baseUrl' | 'accessKeyId' | 'secretAccessKey' | 'service' | 'region'>) =>
      sendSigned(client, { baseUrl: node.origin, accessKeyId: boot.accessKeyId!, secretAccessKey: boot.secretAccessKey!, service: 'minibasebe', region: 'pri', ...c });

    for (const client of SIGV4_CLIENTS) {
      it(`${client}: POST JSON, GET with unicode and repeated query keys, presigned, reserved characters in the path`, async () => {
        const account = `u-${client}-${server}`;
        const username = `Zoë 李 ${client} +&=/?%`;
        let r = await sign(client, {
          method: 'POST', path: `${DIR}/users`, headers: { 'content-type': 'application/json' },
          // Non-ASCII escaped in the JSON text: botocore's transport only sends Latin-1 str bodies.
          body: asciiJson([{ account, username, password: 'long enough password' }]),
        });
        assert.equal(r.status, 200, r.body);
        assert.equal(jsonOf(r).code, 200);

        // repeated key: the last value wins
        r = await sign(client, { method: 'GET', path: `${DIR}/users`, query: [['fuzzy', '1'], ['username', 'no such user'], ['username', username]] });
        assert.equal(r.status, 200, r.body);
        const text = JSON.stringify(jsonOf(r).data);
        assert.ok(text.includes(JSON.stringify(account)), `found by its unicode username: ${r.body.slice(0, 400)}`);

        r = await sign(client, { method: 'GET', path: `${DIR}/users`, query: [['account', account], ['page', '1'], ['page_size', '5']] });
        assert.equal(r.status, 200, r.body);
        assert.ok(JSON.stringify(jsonOf(r).data).includes(JSON.stringify(username)), r.body.slice(0, 400));

        r = await sign(client, { method: 'GET', path: `${DIR}/orgs`, presignExpires: 300 });
        assert.equal(r.status, 200, r.body);
        assert.equal(jsonOf(r).message, 'success');

        r = await sign(client, { method: 'GET', path: `${DIR}/users`, query: [['account', account]], presignExpires: 300 });
        assert.equal(r.status, 200, r.body);

        // unicode and reserved characters in a path segment: the signature holds, the account is refused by name
        r = await sign(client, { method: 'GET', path: `${DIR}/users/account_%C3%A9t%C3%A9%2B%20x/roles` });
        assert.equal(r.status, 400, r.body);
        assert.equal(jsonOf(r).message, 'PARAM_INVALID', r.body);
        assert.equal(jsonOf(r).data.field, 'user_id', r.body);
        r = await sign(client, { method: 'GET', path: `${DIR}/users/account_no.one%40example/roles` });
        assert.equal(r.status, 404, r.body);
        assert.equal(jsonOf(r).message, 'USER_NOT_FOUND', r.body);

        // a tampered body is refused before anything runs, in the AWS shape
        r = await sign(client, {
          method: 'POST', path: `${DIR}/orgs`, headers: { 'content-type': 'application/json' }, declarePayloadHash: true,
          body: JSON.stringify({ name: `signed-${client}` }), tamper: { body: JSON.stringify({ name: `tamper-${client}` }) },
        });
        assert.ok(r.status >= 400 && r.status < 500, r.body);
        assert.ok(jsonOf(r)?.__type, `${r.status} ${JSON.stringify(r.headers)} ${r.body}`);
        const [tampered] = await node.db.registry`SELECT 1 FROM authz_org WHERE name = ${`tamper-${client}`}`;
        assert.equal(tampered, undefined);
      });
    }
  });

  describe(`platform tokens at the edge (${server} listener)`, () => {
    let sim: PlatformSim;
    let dbs: TestDatabases;
    let node: TestNode;
    let svc: FakeService;
    let boot: BootstrapResult;
    let proxyNode: string;
    let serviceNode: string;

    before(async () => {
      sim = await PlatformSim.start({ clusterId: 'cluster-1', callbackMode: 'direct' });
      dbs = freshDatabases();
      const port = await deadPort();
      const baseUrl = `http://127.0.0.1:${port}/api`;
      sim.proxyBaseUrl = baseUrl;
      node = await startTestNode(server, dbs, {
        UTILMETA_PROXY_BIND_PORT: String(port),
        UTILMETA_PROXY_BASE_URL: baseUrl,
        UTILMETA_PROXY_SUPERVISOR_BASE_URL: sim.baseUrl,
        UTILMETA_PROXY_SUPERVISOR_CLUSTER_ID: 'cluster-1',
        UTILMETA_PROXY_SUPERVISOR_CLUSTER_KEY: sim.clusterPublicKey,
        UTILMETA_PROXY_LOAD_TIMEOUT: '1',
        UTILMETA_PROXY_AUTHZ_MASTER_KEYS: MASTER,
      }, {
        platform: {
          clientOptions: { retries: 1, timeoutMs: 5000, retryTiming: { minTimeoutMs: 20, maxTimeoutMs: 50 } },
          retry: { minTimeout: 50, maxTimeout: 200 },
        },
      });
      boot = await authzBootstrap(node.access.store, effectiveMasterKeys(node.config), { account: 'admin' });
      const state = await until('the self-connect', () => (node.platform.state().connected ? node.platform.state() : null));
      proxyNode = state.node_id!;
      sim.callbackMode = 'auto';
      svc = await FakeService.start({ name: 'orders', proxyBaseUrl: baseUrl, opsDatabase: dbs.opsName });
      const r = await svc.register();
      assert.equal(r.status, 200, r.text);
      serviceNode = r.json.node_id;
      assert.ok(serviceNode);
    });
    after(async () => {
      await svc?.close();
      await node?.close();
      await sim?.close();
      await dbs?.drop();
    });

    it('token exchange: a platform node JWT whose sub is SSO-bound becomes a umt_ token; /token/revoke of its jti kills both at the edge', async () => {
      // bind the platform user to alice
      const H = { authorization: `Bearer ${boot.token}`, 'content-type': 'application/json' };
      let r = await call(`${node.origin}${DIR}/users`, { method: 'POST', headers: H, body: JSON.stringify([{ account: 'alice', username: 'Alice', password: 'long enough password' }]) });
      assert.equal(r.status, 200, r.text);
      r = await call(`${node.origin}${DIR}/users/sso`, { method: 'POST', headers: H, body: JSON.stringify({ users: [{ account: 'alice', sso_type: 'utilmeta', sso_user_id: 'platform-user-7' }] }) });
      assert.equal(r.status, 200, r.text);

      const jti = `exch-${server}-${randomBytes(4).toString('hex')}`;
      const jwt = await sim.nodeToken(proxyNode, { sub: 'platform-user-7', jti });
      const exchange = (subject: string) => call(`${node.origin}/api/v1/oauth/token`, {
        method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: subject, subject_token_type: 'urn:ietf:params:oauth:token-type:jwt' }).toString(),
      });
      r = await exchange(jwt);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.issued_token_type, 'urn:ietf:params:oauth:token-type:access_token');
      assert.ok(r.json.expires_in <= 300 + 1, 'capped by the JWT exp');
      const umt = r.json.access_token as string;
      r = await call(`${node.origin}/api/v1/users/current/tokens`, { headers: { authorization: `Bearer ${umt}` } });
      assert.equal(r.status, 200, r.text);

      // an unbound sub, a forged token
      r = await exchange(await sim.nodeToken(proxyNode, { sub: 'nobody-here' }));
      assert.equal(r.status, 400);
      assert.equal(r.json.error, 'invalid_grant');
      r = await exchange(jwt.slice(0, -4) + 'AAAA');
      assert.equal(r.status, 400);
      assert.equal(r.json.error, 'invalid_grant');

      // the service's token with this jti works through the proxy in operations mode
      const svcToken = await sim.nodeToken(serviceNode, { scope: 'api.view', jti });
      const ops = () => call(`${node.origin}/api/proxy/openapi`, {
        headers: { 'x-utilmeta-proxy-type': 'operations', 'x-utilmeta-node-id': serviceNode, authorization: `Bearer ${svcToken}` },
      });
      r = await ops();
      assert.equal(r.status, 200, r.text);

      // revoke it on the node's own OperationsAPI
      const revoker = await sim.nodeToken(proxyNode, { scope: 'token.revoke' });
      r = await call(`${node.origin}/api/ops/token/revoke`, {
        method: 'POST', body: JSON.stringify([jti]),
        headers: { 'x-node-id': proxyNode, authorization: `Bearer ${revoker}`, 'content-type': 'application/json' },
      });
      assert.equal(r.status, 200, r.text);
      const [row] = await node.db.registry<{ jti: string; expires_at: Date }[]>`SELECT jti, expires_at FROM authz_revoked_jti WHERE jti = ${jti}`;
      assert.ok(row, 'recorded for every node');
      const [ev] = await node.db.registry<{ effect: { jtis: string[]; exp: number } }[]>`SELECT effect FROM authz_event WHERE action = 'jti.revoke' ORDER BY seq DESC LIMIT 1`;
      assert.deepEqual(ev!.effect.jtis, [jti]);
      assert.equal(typeof ev!.effect.exp, 'number');

      r = await ops();
      assert.equal(r.status, 401, r.text);
      assert.equal(r.json.state, 'token_revoked');
      r = await call(`${node.origin}/api/v1/users/current/tokens`, { headers: { authorization: `Bearer ${umt}` } });
      assert.equal(r.status, 401, 'the exchanged token died with its parent jti');
      r = await exchange(jwt);
      assert.equal(r.status, 400, 'a revoked jti cannot be exchanged again');
      assert.equal(r.json.error, 'invalid_grant');
    });

    it('a revoke the platform relays to a service (operations type) is recorded at the edge once the service accepts it', async () => {
      const jti = `relayed-${randomBytes(6).toString('hex')}`;
      const svcToken = await sim.nodeToken(serviceNode, { scope: 'api.view', jti });
      const ops = () => call(`${node.origin}/api/proxy/openapi`, {
        headers: { 'x-utilmeta-proxy-type': 'operations', 'x-utilmeta-node-id': serviceNode, authorization: `Bearer ${svcToken}` },
      });
      let r = await ops();
      assert.equal(r.status, 200, r.text);
      // A refused revoke (no token.revoke scope) records nothing.
      const weak = await sim.nodeToken(serviceNode, { scope: 'api.view' });
      r = await call(`${node.origin}/api/proxy/token/revoke`, {
        method: 'POST', body: JSON.stringify([jti]),
        headers: { 'x-utilmeta-proxy-type': 'operations', 'x-utilmeta-node-id': serviceNode, authorization: `Bearer ${weak}`, 'content-type': 'application/json' },
      });
      assert.notEqual(r.status, 200);
      r = await ops();
      assert.equal(r.status, 200, 'a revoke the service refused is not recorded');
      // The accepted one: the body reaches the service unchanged, and the jti dies at the edge.
      const revoker = await sim.nodeToken(serviceNode, { scope: 'token.revoke' });
      r = await call(`${node.origin}/api/proxy/token/revoke`, {
        method: 'POST', body: JSON.stringify([jti]),
        headers: { 'x-utilmeta-proxy-type': 'operations', 'x-utilmeta-node-id': serviceNode, authorization: `Bearer ${revoker}`, 'content-type': 'application/json' },
      });
      assert.equal(r.status, 200, r.text);
      assert.ok(svc.revoked.includes(jti), 'the service got the revoke');
      await until('the relayed jti is refused at the edge', async () => (await ops()).status === 401 || undefined);
      r = await ops();
      assert.equal(r.json.state, 'token_revoked');
      const [ev] = await node.db.registry<{ actor_type: string; effect: { jtis: string[] } }[]>`SELECT actor_type, effect FROM authz_event WHERE action = 'jti.revoke' ORDER BY seq DESC LIMIT 1`;
      assert.deepEqual(ev!.effect.jtis, [jti]);
      assert.equal(ev!.actor_type, 'PLATFORM');
    });
  });
}
