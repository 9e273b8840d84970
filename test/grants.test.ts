// App grants through the seed-002 surface, on both listeners: every transition,
// every refusal, bad input that changes nothing, races with one outcome, and
// the audit trail in order.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { freshDatabases, startTestNode, LISTENERS, type TestDatabases, type TestNode } from './support/env.ts';
import { seedWorld, settle, seq, v1, inMs, DAY, type World, type Answer } from './support/grants-fixture.ts';
import postgres from 'postgres';
import { Sweeper, sweepOnce } from '../src/access/sweeper.ts';
import { AuthzStore } from '../src/access/store.ts';
import { migratedAuthzDb } from './support/authz.ts';
import { PG_HOST, PG_PORT, PG_USER, testLogger } from './support/env.ts';
import { parseActionBody, maxEnd, checkWindow, GRANT_DB_ERRORS } from '../src/access/grants.ts';
import { DomainError } from '../src/core/errors.ts';

const NOTICE = 3; // seconds: short enough to watch a scheduled cancellation take effect

function code(r: Answer, status: number, errorCode: string, what = ''): void {
  assert.equal(r.status, status, `${what} ${JSON.stringify(r.json)}`);
  assert.equal(r.json?.error_code, errorCode, `${what} ${JSON.stringify(r.json)}`);
  assert.equal(typeof r.json?.error_msg, 'string');
}

describe('grant input rules (pure)', () => {
  const thrown = (fn: () => unknown): string | undefined => {
    try {
      fn();
    } catch (e) {
      assert.ok(e instanceof DomainError);
      return e.code;
    }
    return undefined;
  };
  it('parses the seed example and rejects each field wrong', () => {
    const ok = { api_id: 'a'.repeat(32), instance_id: 'c1', app_id: 'b'.repeat(32), apply_type: 'APPLY_TYPE_AUTHORIZE', time: '2030-01-01T10:00:00.000Z' };
    assert.deepEqual(parseActionBody(ok, 'c1'), { apiId: ok.api_id, appId: ok.app_id, applyType: 'APPLY_TYPE_AUTHORIZE', time: Date.parse(ok.time) });
    assert.equal(thrown(() => parseActionBody([], 'c1')), 'AUTHZ.4000');
    assert.equal(thrown(() => parseActionBody({ ...ok, time: 5 }, 'c1')), 'AUTHZ.4000');
    assert.equal(thrown(() => parseActionBody({ ...ok, time: '2030-01-01T10:00:00' }, 'c1')), 'AUTHZ.4003');
    assert.equal(thrown(() => parseActionBody({ ...ok, time: '2030-02-30T10:00:00Z' }, 'c1')), 'AUTHZ.4003');
    assert.equal(thrown(() => parseActionBody({ ...ok, instance_id: 'other' }, 'c1')), 'AUTHZ.4007');
    assert.equal(thrown(() => parseActionBody({ ...ok, apply_type: 'GRANT' }, 'c1')), 'AUTHZ.4002');
    assert.equal(parseActionBody({ ...ok, apply_type: 'APPLY_TYPE_APP_CANCEL_AUTHORIZE', time: 'whatever' }, 'c1').time, null, 'time is ignored for APP_CANCEL');
    assert.equal(parseActionBody({ ...ok, apply_type: 'APPLY_TYPE_API_CANCEL_AUTHORIZE', time: undefined }, 'c1').time, null);
  });
  it('bounds the window at 5 calendar years', () => {
    const now = Date.parse('2026-02-28T12:00:00Z');
    assert.equal(new Date(maxEnd(now)).toISOString(), '2031-02-28T12:00:00.000Z');
    assert.equal(thrown(() => checkWindow(maxEnd(now), now)), undefined);
    assert.equal(thrown(() => checkWindow(maxEnd(now) + 1, now)), 'AUTHZ.4004');
    assert.equal(thrown(() => checkWindow(now, now)), 'AUTHZ.4003');
  });
});

describe('sweeper election', () => {
  it('one leader among nodes; when it stops, another takes over', async () => {
    const adb = await migratedAuthzDb();
    const clients = [0, 1].map(() => postgres({ host: PG_HOST, port: PG_PORT, user: PG_USER, database: adb.dbs.registryName, max: 1, onnotice: () => {} }));
    const store = new AuthzStore(adb.sql);
    const log = testLogger(undefined, 'error');
    const [a, b] = clients.map((c) => new Sweeper({ store, leaderSql: c, log, leaderRoundMs: 50 }));
    try {
      await a!.start();
      await b!.start();
      assert.deepEqual([a!.isLeader, b!.isLeader], [true, false]);
      await a!.stop();
      const deadline = Date.now() + 5000;
      while (!(b!.isLeader && b!.sweeps >= 1) && Date.now() < deadline) await sleep(20);
      assert.equal(b!.isLeader, true, 'the follower took over');
      assert.ok(b!.sweeps >= 1, 'and swept');
    } finally {
      await a!.stop();
      await b!.stop();
      for (const c of clients) await c.end();
      await adb.close();
    }
  });
});

for (const server of LISTENERS) {
  describe(`app grants over HTTP (${server} listener)`, () => {
    let dbs: TestDatabases;
    let node: TestNode;
    let w: World;
    let app: string; // alice's app in p1
    let otherApp: string; // alice's app in p2
    let bobApp: string; // an app owned by the reviewer bob
    const P = () => `/${w.projectId}/service`;
    const action = (token: string, body: Record<string, unknown>, project = w.projectId, headers: Record<string, string> = {}) =>
      v1(node, 'POST', `/${project}/service/apis/authorize/action`, { token, body, headers: { workspace: 'ws-1', 'dlm-type': 'SHARED', ...headers } });
    const body = (apiId: string, applyType: string, time?: string, appId = app) => ({ api_id: apiId, instance_id: 'cluster-1', app_id: appId, apply_type: applyType, ...(time === undefined ? {} : { time }) });
    const grantOf = async (appId: string, apiId: string) => {
      const [g] = await node.db.registry<any[]>`SELECT g.* FROM authz_grant g JOIN authz_app a ON a.id = g.app_id WHERE a.app_id = ${appId} AND g.api_id = ${apiId} ORDER BY g.id DESC LIMIT 1`;
      return g;
    };
    const pendingApply = async (grantId: string) => {
      const [r] = await node.db.registry<{ id: string }[]>`SELECT id FROM authz_grant_request WHERE grant_id = ${grantId} AND status = 'PENDING'`;
      return r?.id;
    };

    before(async () => {
      dbs = freshDatabases();
      node = await startTestNode(server, dbs, { UTILMETA_PROXY_AUTHZ_CLUSTER_ID: 'cluster-1', UTILMETA_PROXY_AUTHZ_CANCEL_NOTICE: String(NOTICE) });
      w = await seedWorld(node);
      await settle([node]);
      const mk = async (token: string, project: string, name: string) => {
        const r = await v1(node, 'POST', `/${project}/service/apps`, { token, body: { name, description: 'd' } });
        assert.equal(r.status, 201, JSON.stringify(r.json));
        return r.json.id as string;
      };
      app = await mk(w.alice.token, w.projectId, 'reporter');
      otherApp = await mk(w.alice.token, w.project2Id, 'elsewhere');
      const r = await v1(node, 'POST', `/${w.projectId}/service/apps`, { token: w.admin.token, body: { name: 'bobs', owner_user_id: Number(w.bob.id) } });
      assert.equal(r.status, 201, JSON.stringify(r.json));
      assert.deepEqual(r.json.owner, { id: Number(w.bob.id), account: 'bob' });
      bobApp = r.json.id;
      await settle([node]);
    });
    after(async () => {
      await node?.close();
      await dbs?.drop();
    });

    it('apps: create, read, list, update, refuse a duplicate name and a non-owner', async () => {
      const got = await v1(node, 'GET', `${P()}/apps/${app}`, { token: w.alice.token });
      assert.equal(got.status, 200);
      assert.equal(got.json.name, 'reporter');
      assert.equal(got.json.project_id, Number(w.projectId));
      assert.equal(got.json.status, 'ACTIVE');
      assert.match(got.json.id, /^[0-9a-f]{32}$/);
      code(await v1(node, 'POST', `${P()}/apps`, { token: w.alice.token, body: { name: 'reporter' } }), 409, 'AUTHZ.4097');
      code(await v1(node, 'POST', `${P()}/apps`, { token: w.dave.token, body: { name: 'x' } }), 403, 'AUTHZ.4031', 'no project access');
      code(await v1(node, 'POST', `${P()}/apps`, { token: w.alice.token, body: { name: 'x', owner_user_id: 1 } }), 403, 'AUTHZ.4030', 'owner only for admins');
      code(await v1(node, 'PUT', `${P()}/apps/${app}`, { token: w.dave.token, body: { description: 'no' } }), 403, 'AUTHZ.4031');
      const list = await v1(node, 'GET', `${P()}/apps?limit=1`, { token: w.alice.token });
      assert.equal(list.status, 200);
      assert.equal(list.json.total, 2, 'the project creator sees every app of the project');
      assert.equal(list.json.records.length, 1);
      assert.equal((await v1(node, 'GET', `${P()}/apps`, { token: w.dave.token })).json.total, 0, 'dave owns none and has no project access');
      assert.equal((await v1(node, 'GET', `${P()}/apps`, { token: w.bob.token })).json.total, 1, 'bob sees the app he owns');
      const upd = await v1(node, 'PUT', `${P()}/apps/${app}`, { token: w.alice.token, body: { description: 'reports' } });
      assert.equal(upd.status, 200);
      assert.equal(upd.json.description, 'reports');
      code(await v1(node, 'GET', `/${w.project2Id}/service/apps/${app}`, { token: w.alice.token }), 404, 'AUTHZ.4042', 'app of another project');
      code(await v1(node, 'GET', `${P()}/apps`, {}), 401, 'AUTHZ.4010');
      code(await v1(node, 'GET', `${P()}/apps`, { token: 'umt_' + 'x'.repeat(43) }), 401, 'AUTHZ.4010');
    });

    it('every field of the action body wrong in every way: its code, and nothing written', async () => {
      const api = w.apis['GET /items']!;
      const before = await seq(node);
      const cases: Array<[string, () => Promise<Answer>, number, string]> = [
        ['not JSON', () => v1(node, 'POST', `${P()}/apis/authorize/action`, { token: w.bob.token, raw: '{"api_id":' }), 400, 'AUTHZ.4000'],
        ['an array', () => v1(node, 'POST', `${P()}/apis/authorize/action`, { token: w.bob.token, raw: '[]' }), 400, 'AUTHZ.4000'],
        ['a string', () => v1(node, 'POST', `${P()}/apis/authorize/action`, { token: w.bob.token, raw: '"x"' }), 400, 'AUTHZ.4000'],
        ['no body', () => v1(node, 'POST', `${P()}/apis/authorize/action`, { token: w.bob.token }), 400, 'AUTHZ.4000'],
        ['api_id a number', () => action(w.bob.token, { ...body(api, 'APPLY_TYPE_AUTHORIZE', inMs(DAY)), api_id: 5 }), 400, 'AUTHZ.4000'],
        ['app_id an object', () => action(w.bob.token, { ...body(api, 'APPLY_TYPE_AUTHORIZE', inMs(DAY)), app_id: {} }), 400, 'AUTHZ.4000'],
        ['apply_type a bool', () => action(w.bob.token, { ...body(api, 'APPLY_TYPE_AUTHORIZE', inMs(DAY)), apply_type: true }), 400, 'AUTHZ.4000'],
        ['instance_id a number', () => action(w.bob.token, { ...body(api, 'APPLY_TYPE_AUTHORIZE', inMs(DAY)), instance_id: 1 }), 400, 'AUTHZ.4000'],
        ['time a number', () => action(w.bob.token, { ...body(api, 'APPLY_TYPE_AUTHORIZE'), time: Date.now() + DAY }), 400, 'AUTHZ.4000'],
        ['api_id missing', () => action(w.bob.token, { app_id: app, apply_type: 'APPLY_TYPE_AUTHORIZE', time: inMs(DAY) }), 400, 'AUTHZ.4001'],
        ['app_id missing', () => action(w.bob.token, { api_id: api, apply_type: 'APPLY_TYPE_AUTHORIZE', time: inMs(DAY) }), 400, 'AUTHZ.4001'],
        ['apply_type missing', () => action(w.bob.token, { api_id: api, app_id: app, time: inMs(DAY) }), 400, 'AUTHZ.4001'],
        ['time missing (AUTHORIZE)', () => action(w.bob.token, body(api, 'APPLY_TYPE_AUTHORIZE')), 400, 'AUTHZ.4001'],
        ['time missing (APPLY)', () => action(w.alice.token, body(api, 'APPLY_TYPE_APPLY')), 400, 'AUTHZ.4001'],
        ['time missing (RENEW)', () => action(w.alice.token, body(api, 'APPLY_TYPE_RENEW')), 400, 'AUTHZ.4001'],
        ['apply_type unknown', () => action(w.bob.token, body(api, 'APPLY_TYPE_GRANT', inMs(DAY))), 400, 'AUTHZ.4002'],
        ['apply_type lower case', () => action(w.bob.token, body(api, 'apply_type_authorize', inMs(DAY))), 400, 'AUTHZ.4002'],
        ['time without zone', () => action(w.bob.token, body(api, 'APPLY_TYPE_AUTHORIZE', '2030-01-01T10:00:00.000')), 400, 'AUTHZ.4003'],
        ['time a date only', () => action(w.bob.token, body(api, 'APPLY_TYPE_AUTHORIZE', '2030-01-01')), 400, 'AUTHZ.4003'],
        ['time not a time', () => action(w.bob.token, body(api, 'APPLY_TYPE_AUTHORIZE', 'tomorrow')), 400, 'AUTHZ.4003'],
        ['time in the past', () => action(w.bob.token, body(api, 'APPLY_TYPE_AUTHORIZE', '2020-01-01T00:00:00.000Z')), 400, 'AUTHZ.4003'],
        ['time in the past (APPLY)', () => action(w.alice.token, body(api, 'APPLY_TYPE_APPLY', inMs(-1000))), 400, 'AUTHZ.4003'],
        ['time > 5 years', () => action(w.bob.token, body(api, 'APPLY_TYPE_AUTHORIZE', inMs(5 * 366 * DAY))), 400, 'AUTHZ.4004'],
        ['cancel notice short', () => action(w.bob.token, body(api, 'APPLY_TYPE_API_CANCEL_AUTHORIZE', inMs(1000))), 400, 'AUTHZ.4006'],
        ['wrong cluster id', () => action(w.bob.token, { ...body(api, 'APPLY_TYPE_AUTHORIZE', inMs(DAY)), instance_id: '21398ikjdsjd9087122d4e' }), 400, 'AUTHZ.4007'],
        ['unknown project', () => action(w.bob.token, body(api, 'APPLY_TYPE_AUTHORIZE', inMs(DAY)), '999999'), 404, 'AUTHZ.4040'],
        ['project not a number', () => action(w.bob.token, body(api, 'APPLY_TYPE_AUTHORIZE', inMs(DAY)), '0833a5737480d53b2f250010d01a7b88'), 404, 'AUTHZ.4040'],
        ['unknown api', () => action(w.bob.token, body('f'.repeat(32), 'APPLY_TYPE_AUTHORIZE', inMs(DAY))), 404, 'AUTHZ.4041'],
        ['malformed api', () => action(w.bob.token, body('nope', 'APPLY_TYPE_AUTHORIZE', inMs(DAY))), 404, 'AUTHZ.4041'],
        ['unknown app', () => action(w.bob.token, body(api, 'APPLY_TYPE_AUTHORIZE', inMs(DAY), 'e'.repeat(32))), 404, 'AUTHZ.4042'],
        ["other project's app", () => action(w.bob.token, body(api, 'APPLY_TYPE_AUTHORIZE', inMs(DAY), otherApp)), 404, 'AUTHZ.4042'],
        ['no credential', () => v1(node, 'POST', `${P()}/apis/authorize/action`, { body: body(api, 'APPLY_TYPE_AUTHORIZE', inMs(DAY)) }), 401, 'AUTHZ.4010'],
        ['not a reviewer', () => action(w.alice.token, body(api, 'APPLY_TYPE_AUTHORIZE', inMs(DAY))), 403, 'AUTHZ.4030'],
        ['not the owner', () => action(w.bob.token, body(api, 'APPLY_TYPE_APPLY', inMs(DAY))), 403, 'AUTHZ.4031'],
        ['not the owner (cancel)', () => action(w.dave.token, body(api, 'APPLY_TYPE_APP_CANCEL_AUTHORIZE')), 403, 'AUTHZ.4031'],
        ['renew without a grant', () => action(w.alice.token, body(api, 'APPLY_TYPE_RENEW', inMs(DAY))), 409, 'AUTHZ.4092'],
        ['api cancel without a grant', () => action(w.bob.token, body(api, 'APPLY_TYPE_API_CANCEL_AUTHORIZE')), 409, 'AUTHZ.4092'],
        ['app cancel without a grant', () => action(w.alice.token, body(api, 'APPLY_TYPE_APP_CANCEL_AUTHORIZE')), 409, 'AUTHZ.4092'],
        ['deprecated api', () => action(w.bob.token, body(w.apis.deprecated!, 'APPLY_TYPE_AUTHORIZE', inMs(DAY))), 409, 'AUTHZ.4095'],
        ['public api', () => action(w.alice.token, body(w.apis.public!, 'APPLY_TYPE_APPLY', inMs(DAY))), 409, 'AUTHZ.4095'],
      ];
      for (const [what, run, status, c] of cases) code(await run(), status, c, what);
      assert.equal(await seq(node), before, 'no refused action wrote anything');
      const [{ n }] = await node.db.registry<{ n: number }[]>`SELECT count(*)::int AS n FROM authz_grant`;
      assert.equal(n, 0);
    });

    it('T1 apply, T3 approve (four-eyes, order of checks), T7 renew request, T8 reject, T6 approve renew, T6 authorize, T9 cancel, T10 reauthorize, T11 app cancel', async () => {
      const api = w.apis['GET /items/{id}']!;
      const end1 = inMs(10 * DAY);
      assert.equal((await action(w.alice.token, body(api, 'APPLY_TYPE_APPLY', end1))).status, 204, 'T1');
      let g = await grantOf(app, api);
      assert.equal(g.state, 'PENDING');
      code(await action(w.alice.token, body(api, 'APPLY_TYPE_APPLY', end1)), 409, 'AUTHZ.4090', 'apply twice');
      code(await action(w.alice.token, body(api, 'APPLY_TYPE_RENEW', inMs(20 * DAY))), 409, 'AUTHZ.4091', 'renew while the application is pending');
      const applyId = await pendingApply(g.id);
      assert.ok(applyId);
      // The queue: bob sees it in his review queue, alice (the applicant) does not.
      const queue = await v1(node, 'GET', `${P()}/applys?mine=true&apply_status=PENDING`, { token: w.bob.token });
      assert.equal(queue.status, 200);
      assert.equal(queue.json.total, 1);
      const rec = queue.json.records[0];
      assert.equal(rec.apply_id, Number(applyId));
      assert.equal(rec.apply_type, 'APPLY_TYPE_APPLY');
      assert.equal(rec.api_name, 'GET /items/{id}');
      assert.equal(rec.service, w.serviceName);
      assert.equal(rec.app_id, app);
      assert.equal(rec.applicant, 'alice');
      assert.equal(rec.time, new Date(end1).toISOString());
      assert.equal((await v1(node, 'GET', `${P()}/applys?mine=true`, { token: w.alice.token })).json.total, 0);
      assert.equal((await v1(node, 'GET', `${P()}/applys/${applyId}`, { token: w.alice.token })).json.apply_status, 'PENDING');
      code(await v1(node, 'GET', `${P()}/applys/${applyId}`, { token: w.dave.token }), 404, 'AUTHZ.4043', 'not visible to dave');
      code(await v1(node, 'POST', `${P()}/applys/${applyId}/action`, { token: w.alice.token, body: { action: 'APPROVE' } }), 403, 'AUTHZ.4030', 'the applicant is no reviewer');
      code(await v1(node, 'POST', `${P()}/applys/${applyId}/action`, { token: w.bob.token, body: { action: 'MAYBE' } }), 400, 'AUTHZ.4002');
      code(await v1(node, 'POST', `${P()}/applys/${applyId}/action`, { token: w.bob.token, body: {} }), 400, 'AUTHZ.4001');
      code(await v1(node, 'POST', `${P()}/applys/999999/action`, { token: w.bob.token, body: { action: 'APPROVE' } }), 404, 'AUTHZ.4043');
      assert.equal((await v1(node, 'POST', `${P()}/applys/${applyId}/action`, { token: w.bob.token, body: { action: 'APPROVE', comment: 'ok' } })).status, 204, 'T3');
      g = await grantOf(app, api);
      assert.equal(g.state, 'ACTIVE');
      assert.equal(g.end_at.toISOString(), new Date(end1).toISOString());
      code(await v1(node, 'POST', `${P()}/applys/${applyId}/action`, { token: w.carol.token, body: { action: 'REJECT' } }), 409, 'AUTHZ.4094', 'decided already');

      // T7 renew request, T8 reject.
      code(await action(w.alice.token, body(api, 'APPLY_TYPE_RENEW', end1)), 400, 'AUTHZ.4005', 'renewal must extend');
      assert.equal((await action(w.alice.token, body(api, 'APPLY_TYPE_RENEW', inMs(20 * DAY)))).status, 204, 'T7');
      code(await action(w.alice.token, body(api, 'APPLY_TYPE_RENEW', inMs(21 * DAY))), 409, 'AUTHZ.4091', 'a second renewal');
      let renewId = await pendingApply(g.id);
      assert.equal((await v1(node, 'POST', `${P()}/applys/${renewId}/action`, { token: w.carol.token, body: { action: 'REJECT', comment: 'no' } })).status, 204, 'T8');
      assert.equal((await grantOf(app, api)).end_at.toISOString(), new Date(end1).toISOString(), 'T8 leaves the grant');
      // T7 again, T6 by approval with an override end; an override that does not extend is refused and the request stays.
      const end2 = inMs(30 * DAY);
      assert.equal((await action(w.alice.token, body(api, 'APPLY_TYPE_RENEW', inMs(20 * DAY)))).status, 204, 'T7 again');
      renewId = await pendingApply(g.id);
      code(await v1(node, 'POST', `${P()}/applys/${renewId}/action`, { token: w.bob.token, body: { action: 'APPROVE', time: inMs(DAY) } }), 400, 'AUTHZ.4005');
      assert.equal(await pendingApply(g.id), renewId, 'still pending');
      assert.equal((await v1(node, 'POST', `${P()}/applys/${renewId}/action`, { token: w.bob.token, body: { action: 'APPROVE', time: end2 } })).status, 204, 'T6 (renew approved)');
      assert.equal((await grantOf(app, api)).end_at.toISOString(), new Date(end2).toISOString());
      // T6 by the reviewer's AUTHORIZE; never shorter.
      code(await action(w.bob.token, body(api, 'APPLY_TYPE_AUTHORIZE', inMs(DAY))), 400, 'AUTHZ.4005');
      const end3 = inMs(40 * DAY);
      assert.equal((await action(w.bob.token, body(api, 'APPLY_TYPE_AUTHORIZE', end3))).status, 204, 'T6 (authorize)');
      assert.equal((await grantOf(app, api)).end_at.toISOString(), new Date(end3).toISOString());
      // T9 with the default notice; a RENEW is then refused.
      assert.equal((await action(w.alice.token, body(api, 'APPLY_TYPE_RENEW', inMs(50 * DAY)))).status, 204, 'T7 before the cancellation');
      const t0 = Date.now();
      assert.equal((await action(w.bob.token, body(api, 'APPLY_TYPE_API_CANCEL_AUTHORIZE'))).status, 204, 'T9');
      g = await grantOf(app, api);
      assert.equal(g.state, 'CANCEL_SCHEDULED');
      assert.ok(g.cancel_at.getTime() >= t0 + NOTICE * 1000 - 1000 && g.cancel_at.getTime() <= Date.now() + NOTICE * 1000 + 1000, 'now + notice');
      const [sup] = await node.db.registry`SELECT status FROM authz_grant_request WHERE grant_id = ${g.id} ORDER BY id DESC LIMIT 1`;
      assert.equal(sup!.status, 'SUPERSEDED');
      code(await action(w.alice.token, body(api, 'APPLY_TYPE_RENEW', inMs(60 * DAY))), 409, 'AUTHZ.4093');
      code(await action(w.bob.token, body(api, 'APPLY_TYPE_API_CANCEL_AUTHORIZE')), 409, 'AUTHZ.4093', 'already scheduled');
      const info = await v1(node, 'GET', `${P()}/apis/${api}/authorize-info`, { token: w.bob.token });
      assert.equal(info.status, 200);
      assert.equal(info.json.records[0].state, 'CANCEL_SCHEDULED');
      assert.equal(info.json.records[0].expiring, true);
      // T10: undo the cancellation, end not earlier.
      code(await action(w.bob.token, body(api, 'APPLY_TYPE_AUTHORIZE', inMs(DAY))), 400, 'AUTHZ.4005');
      assert.equal((await action(w.bob.token, body(api, 'APPLY_TYPE_AUTHORIZE', end3))).status, 204, 'T10');
      g = await grantOf(app, api);
      assert.equal(g.state, 'ACTIVE');
      assert.equal(g.cancel_at, null);
      // T11: the owner cancels at once; a pending RENEW is withdrawn.
      assert.equal((await action(w.alice.token, body(api, 'APPLY_TYPE_RENEW', inMs(50 * DAY)))).status, 204);
      assert.equal((await action(w.alice.token, body(api, 'APPLY_TYPE_APP_CANCEL_AUTHORIZE'))).status, 204, 'T11');
      g = await grantOf(app, api);
      assert.equal(g.state, 'CANCELLED');
      assert.equal(g.closed_by, 'APP');
      const [wd] = await node.db.registry`SELECT status FROM authz_grant_request WHERE grant_id = ${g.id} ORDER BY id DESC LIMIT 1`;
      assert.equal(wd!.status, 'WITHDRAWN');
      const appApis = await v1(node, 'GET', `${P()}/apps/${app}/apis?state=CANCELLED`, { token: w.alice.token });
      assert.equal(appApis.json.records.find((r: any) => r.grant_id === Number(g.id))?.closed_by, 'APP');
    });

    it('T2 authorize, T5 withdraw, T4 reject, self-approval refused, disabled app and expired project refused', async () => {
      const api = w.apis['POST /items']!;
      assert.equal((await action(w.bob.token, body(api, 'APPLY_TYPE_AUTHORIZE', inMs(5 * DAY)))).status, 204, 'T2');
      assert.equal((await grantOf(app, api)).state, 'ACTIVE');
      code(await action(w.alice.token, body(api, 'APPLY_TYPE_APPLY', inMs(5 * DAY))), 409, 'AUTHZ.4090');
      const api2 = w.apis['DELETE /items/{id}']!;
      assert.equal((await action(w.alice.token, body(api2, 'APPLY_TYPE_APPLY', inMs(5 * DAY)))).status, 204);
      assert.equal((await action(w.alice.token, body(api2, 'APPLY_TYPE_APP_CANCEL_AUTHORIZE'))).status, 204, 'T5');
      const wd = await grantOf(app, api2);
      assert.equal(wd.state, 'WITHDRAWN');
      assert.equal((await action(w.alice.token, body(api2, 'APPLY_TYPE_APPLY', inMs(5 * DAY)))).status, 204, 'applying again makes a new row');
      const g2 = await grantOf(app, api2);
      assert.notEqual(g2.id, wd.id);
      const id2 = await pendingApply(g2.id);
      assert.equal((await v1(node, 'POST', `${P()}/applys/${id2}/action`, { token: w.carol.token, body: { action: 'REJECT', comment: 'no' } })).status, 204, 'T4');
      assert.equal((await grantOf(app, api2)).state, 'REJECTED');
      // Four-eyes: bob applies for his own app, then cannot approve it, through either door.
      const api3 = w.apis['PUT /items/{id}']!;
      assert.equal((await action(w.bob.token, body(api3, 'APPLY_TYPE_APPLY', inMs(5 * DAY), bobApp))).status, 204, 'a reviewer applying stays pending');
      const g3 = await grantOf(bobApp, api3);
      const id3 = await pendingApply(g3.id);
      code(await v1(node, 'POST', `${P()}/applys/${id3}/action`, { token: w.bob.token, body: { action: 'APPROVE' } }), 403, 'AUTHZ.4032');
      code(await action(w.bob.token, body(api3, 'APPLY_TYPE_AUTHORIZE', inMs(5 * DAY), bobApp)), 403, 'AUTHZ.4032');
      assert.equal((await v1(node, 'POST', `${P()}/applys/${id3}/action`, { token: w.carol.token, body: { action: 'APPROVE' } })).status, 204, 'another reviewer approves');
      // A disabled app cannot receive grants; an app of an expired project neither.
      const api4 = w.apis['PATCH /items/{id}']!;
      assert.equal((await v1(node, 'PUT', `${P()}/apps/${bobApp}`, { token: w.bob.token, body: { status: 'DISABLED' } })).json.status, 'DISABLED');
      code(await action(w.bob.token, body(api4, 'APPLY_TYPE_APPLY', inMs(5 * DAY), bobApp)), 409, 'AUTHZ.4096');
      code(await v1(node, 'PUT', `${P()}/apps/${bobApp}`, { token: w.bob.token, body: { status: 'PAUSED' } }), 400, 'AUTHZ.4002');
      const old = await v1(node, 'POST', `/${w.expiredProjectId}/service/apps`, { token: w.alice.token, body: { name: 'late' } });
      assert.equal(old.status, 201);
      code(await action(w.alice.token, body(api4, 'APPLY_TYPE_APPLY', inMs(5 * DAY), old.json.id), w.expiredProjectId), 409, 'AUTHZ.4096');
    });

    it('T12, T13 and lapses by the sweeper, with the list views computing state from time first', async () => {
      const apiE = w.apis['GET /items']!;
      const apiC = w.apis['PATCH /items/{id}']!;
      assert.equal((await action(w.bob.token, body(apiE, 'APPLY_TYPE_AUTHORIZE', inMs(1500)))).status, 204, 'a short grant');
      assert.equal((await action(w.bob.token, body(apiC, 'APPLY_TYPE_AUTHORIZE', inMs(30 * DAY)))).status, 204);
      assert.equal((await action(w.bob.token, body(apiC, 'APPLY_TYPE_API_CANCEL_AUTHORIZE', inMs(NOTICE * 1000 + 300)))).status, 204, 'T9 at the notice');
      // A lapse: an application nobody reviews before its requested end.
      const apiL = w.apis['POST /items']!;
      const lapseApp = await v1(node, 'POST', `${P()}/apps`, { token: w.alice.token, body: { name: 'lapser' } });
      assert.equal((await action(w.alice.token, body(apiL, 'APPLY_TYPE_APPLY', inMs(1500), lapseApp.json.id))).status, 204);
      await sleep(NOTICE * 1000 + 500);
      const listed = await v1(node, 'GET', `${P()}/apps/${app}/apis?state=EXPIRED,CANCELLED`, { token: w.alice.token });
      const states = new Map(listed.json.records.map((r: any) => [r.api_id, r.state]));
      assert.equal(states.get(apiE), 'EXPIRED');
      assert.equal(states.get(apiC), 'CANCELLED');
      await sweepOnce(node.access.store);
      const e = await grantOf(app, apiE);
      assert.equal(e.state, 'EXPIRED');
      assert.equal(e.closed_by, 'SYSTEM');
      const c = await grantOf(app, apiC);
      assert.equal(c.state, 'CANCELLED');
      assert.equal(c.closed_by, 'SYSTEM');
      assert.ok(c.closed_at.getTime() >= c.cancel_at.getTime());
      const l = await grantOf(lapseApp.json.id, apiL);
      assert.equal(l.state, 'REJECTED');
      const [lr] = await node.db.registry`SELECT status FROM authz_grant_request WHERE grant_id = ${l.id}`;
      assert.equal(lr!.status, 'LAPSED');
      const again = await sweepOnce(node.access.store);
      assert.deepEqual([again.expired, again.cancelled, again.lapsed], [0, 0, 0], 'nothing twice');
    });

    it("the node's own sweeper wakes at a grant's end and closes it", async () => {
      const api = w.apis['PUT /items/{id}']!;
      const sa = await v1(node, 'POST', `${P()}/apps`, { token: w.alice.token, body: { name: 'swept' } });
      assert.equal((await action(w.bob.token, body(api, 'APPLY_TYPE_AUTHORIZE', inMs(1000), sa.json.id))).status, 204);
      const deadline = Date.now() + 10_000;
      let g = await grantOf(sa.json.id, api);
      while (g.state === 'ACTIVE' && Date.now() < deadline) {
        await sleep(50);
        g = await grantOf(sa.json.id, api);
      }
      assert.equal(g.state, 'EXPIRED');
      assert.equal(g.closed_by, 'SYSTEM');
    });

    it('races: two approvals, approve + cancel, renew + cancel each end in one consistent outcome', async () => {
      const raceApp = await v1(node, 'POST', `${P()}/apps`, { token: w.alice.token, body: { name: 'racer' } });
      const ra = raceApp.json.id as string;
      const statuses = (rs: Answer[]) => rs.map((r) => r.status).sort();
      // Two reviewers approve the same application at once.
      const a1 = w.apis['GET /items']!;
      assert.equal((await action(w.alice.token, body(a1, 'APPLY_TYPE_APPLY', inMs(9 * DAY), ra))).status, 204);
      const id1 = await pendingApply((await grantOf(ra, a1)).id);
      const two = await Promise.all([w.bob, w.carol].map((u) => v1(node, 'POST', `${P()}/applys/${id1}/action`, { token: u.token, body: { action: 'APPROVE' } })));
      assert.deepEqual(statuses(two), [204, 409]);
      assert.equal(two.find((r) => r.status === 409)!.json.error_code, 'AUTHZ.4094');
      const [ap] = await node.db.registry<any[]>`SELECT status, reviewer_account FROM authz_grant_request WHERE id = ${id1}`;
      assert.equal(ap.status, 'APPROVED');
      assert.equal((await grantOf(ra, a1)).state, 'ACTIVE');
      // Approve and the owner's cancel at once.
      const a2 = w.apis['GET /items/{id}']!;
      assert.equal((await action(w.alice.token, body(a2, 'APPLY_TYPE_APPLY', inMs(9 * DAY), ra))).status, 204);
      const id2 = await pendingApply((await grantOf(ra, a2)).id);
      const [appr, canc] = await Promise.all([
        v1(node, 'POST', `${P()}/applys/${id2}/action`, { token: w.bob.token, body: { action: 'APPROVE' } }),
        action(w.alice.token, body(a2, 'APPLY_TYPE_APP_CANCEL_AUTHORIZE', undefined, ra)),
      ]);
      const g2 = await grantOf(ra, a2);
      assert.equal(canc.status, 204, 'the owner can always cancel');
      if (appr.status === 204) assert.equal(g2.state, 'CANCELLED', 'approved, then cancelled');
      else {
        assert.equal(appr.json.error_code, 'AUTHZ.4094');
        assert.equal(g2.state, 'WITHDRAWN', 'withdrawn before the approval');
      }
      // The owner's renewal and the reviewer's cancellation at once.
      const [renew, sched] = await Promise.all([
        action(w.alice.token, body(a1, 'APPLY_TYPE_RENEW', inMs(20 * DAY), ra)),
        action(w.bob.token, body(a1, 'APPLY_TYPE_API_CANCEL_AUTHORIZE', undefined, ra)),
      ]);
      assert.equal(sched.status, 204);
      const g1 = await grantOf(ra, a1);
      assert.equal(g1.state, 'CANCEL_SCHEDULED');
      const reqs = await node.db.registry<any[]>`SELECT status FROM authz_grant_request WHERE grant_id = ${g1.id} AND kind = 'RENEW'`;
      if (renew.status === 204) assert.deepEqual(reqs.map((r) => r.status), ['SUPERSEDED'], 'renewal first, superseded by the cancellation');
      else {
        assert.equal(renew.json.error_code, 'AUTHZ.4093');
        assert.equal(reqs.length, 0);
      }
    });

    it('the audit trail shows T1…T13 in commit order, one event per transition, in the same transactions', async () => {
      const rows = await node.db.registry<{ seq: string; action: string }[]>`SELECT seq, action FROM authz_event WHERE action LIKE 'grant.%' ORDER BY seq`;
      const actions = rows.map((r) => r.action);
      const seqs = rows.map((r) => Number(r.seq));
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
      for (const a of ['grant.apply', 'grant.authorize', 'grant.approve', 'grant.reject', 'grant.lapse', 'grant.withdraw', 'grant.renew', 'grant.renew.request', 'grant.renew.reject', 'grant.cancel.schedule', 'grant.reauthorize', 'grant.cancel.app', 'grant.cancel.effective', 'grant.expire']) {
        assert.ok(actions.includes(a), `${a} recorded`);
      }
      // The first grant's own history, T1 → T11, in order.
      const first = await grantOf(app, w.apis['GET /items/{id}']!);
      const mine = await node.db.registry<{ action: string }[]>`SELECT action FROM authz_event WHERE target_type = 'grant' AND target_id = ${String(first.id)} ORDER BY seq`;
      assert.deepEqual(mine.map((r) => r.action), [
        'grant.apply', 'grant.approve', 'grant.renew.request', 'grant.renew.reject', 'grant.renew.request', 'grant.renew', 'grant.renew',
        'grant.renew.request', 'grant.cancel.schedule', 'grant.reauthorize', 'grant.renew.request', 'grant.cancel.app',
      ]);
      const [ev] = await node.db.registry<any[]>`SELECT actor_type, actor_name, credential, request_id, after FROM authz_event WHERE target_id = ${String(first.id)} AND action = 'grant.apply'`;
      assert.equal(ev.actor_type, 'USER');
      assert.equal(ev.actor_name, 'alice');
      assert.match(ev.credential, /^token:\d+$/);
      assert.ok(ev.request_id);
      assert.equal(ev.after.workspace, 'ws-1', 'the workspace header is recorded');
    });

    it('reads: apis catalog, paging, filters, 404 for unknown routes, the database refusing a direct shortening', async () => {
      const apis = await v1(node, 'GET', `${P()}/apis?service=${w.serviceName}&limit=2&offset=0`, { token: w.dave.token });
      assert.equal(apis.status, 200);
      assert.equal(apis.json.records.length, 2);
      assert.equal(apis.json.total, 7, 'six APIs and the public one; not the deprecated');
      const page2 = await v1(node, 'GET', `${P()}/apis?limit=100&offset=100`, { token: w.dave.token });
      assert.equal(page2.json.records.length, 0);
      assert.equal(page2.json.total, 7);
      assert.equal((await v1(node, 'GET', `${P()}/apis?deprecated=true`, { token: w.dave.token })).json.records[0].api_id, w.apis.deprecated);
      assert.equal((await v1(node, 'GET', `${P()}/apis?name=health`, { token: w.dave.token })).json.records[0].auth_enabled, false);
      code(await v1(node, 'GET', `${P()}/apis?limit=0`, { token: w.dave.token }), 400, 'AUTHZ.4000');
      code(await v1(node, 'GET', `${P()}/apis?limit=101`, { token: w.dave.token }), 400, 'AUTHZ.4000');
      code(await v1(node, 'GET', `${P()}/applys?apply_status=DONE`, { token: w.bob.token }), 400, 'AUTHZ.4002');
      code(await v1(node, 'GET', `${P()}/apps/${app}/apis?state=GONE`, { token: w.alice.token }), 400, 'AUTHZ.4002');
      assert.equal((await v1(node, 'GET', `${P()}/nothing`, { token: w.dave.token })).status, 404);
      // Even a direct UPDATE cannot shorten a grant.
      const g = await grantOf(app, w.apis['POST /items']!);
      await assert.rejects(node.db.registry`UPDATE authz_grant SET end_at = end_at - interval '1 day' WHERE id = ${g.id}`, /never decreases/);
    });

    it("the database's own refusals come out as the surface's codes, never as a 500", async () => {
      const g = await grantOf(app, w.apis['POST /items']!);
      assert.equal(g.state, 'ACTIVE');
      const refusal = async (fn: (sql: any) => Promise<unknown>) => {
        try {
          await node.access.store.write({ type: 'CLI' }, async (tx) => {
            await fn(tx.sql);
            tx.event({ action: 'test', targetType: 'grant', targetId: g.id });
          }, { errors: GRANT_DB_ERRORS });
        } catch (e) {
          assert.ok(e instanceof DomainError, String(e));
          return e.code;
        }
        return 'no error';
      };
      const before = await seq(node);
      assert.equal(await refusal((sql) => sql`INSERT INTO authz_grant (app_id, api_id, state) VALUES (${g.app_id}, ${g.api_id}, 'PENDING')`), 'AUTHZ.4090');
      assert.equal(await refusal((sql) => sql`UPDATE authz_grant SET end_at = end_at - interval '1 second' WHERE id = ${g.id}`), 'AUTHZ.4005');
      assert.equal(await refusal((sql) => sql`UPDATE authz_grant SET state = 'CANCEL_SCHEDULED', cancel_requested_at = now(), cancel_notice = interval '2 days', cancel_at = now() + interval '1 day' WHERE id = ${g.id}`), 'AUTHZ.4006');
      assert.equal(await refusal((sql) => sql`INSERT INTO authz_grant_request (grant_id, kind, requested_end_at, applicant_account) VALUES (${g.id}, 'RENEW', ${g.end_at}, 'alice')`), 'AUTHZ.4005');
      assert.equal(await refusal((sql) => sql`UPDATE authz_grant SET state = 'EXPIRED', closed_by = 'SYSTEM' WHERE id = ${g.id}`), 'AUTHZ.4092');
      const eyes = await v1(node, 'POST', `${P()}/apps`, { token: w.alice.token, body: { name: 'eyes' } });
      assert.equal((await action(w.alice.token, body(w.apis['GET /items']!, 'APPLY_TYPE_APPLY', inMs(DAY), eyes.json.id))).status, 204);
      const before2 = await seq(node);
      const rq = { id: (await pendingApply((await grantOf(eyes.json.id, w.apis['GET /items']!)).id))! };
      assert.equal(await refusal((sql) => sql`UPDATE authz_grant_request SET status = 'APPROVED', decided_at = now(), reviewer_account = 'ALICE', approved_end_at = now() + interval '1 day' WHERE id = ${rq.id}`), 'AUTHZ.4032');
      assert.equal(await seq(node), before2, 'nothing committed');
      assert.ok(before2 === before + 2, 'only the app and its application');
    });

    it('deleting an app cascades to its grants and requests, with an app.delete event', async () => {
      const d = await v1(node, 'POST', `${P()}/apps`, { token: w.alice.token, body: { name: 'doomed' } });
      const id = d.json.id as string;
      assert.equal((await action(w.bob.token, body(w.apis['GET /items']!, 'APPLY_TYPE_AUTHORIZE', inMs(DAY), id))).status, 204);
      code(await v1(node, 'DELETE', `${P()}/apps/${id}`, { token: w.dave.token }), 403, 'AUTHZ.4031');
      assert.equal((await v1(node, 'DELETE', `${P()}/apps/${id}`, { token: w.alice.token })).status, 204);
      const [{ n }] = await node.db.registry<{ n: number }[]>`SELECT count(*)::int AS n FROM authz_grant g JOIN authz_app a ON a.id = g.app_id WHERE a.app_id = ${id}`;
      assert.equal(n, 0);
      const [ev] = await node.db.registry<any[]>`SELECT effect FROM authz_event WHERE action = 'app.delete' ORDER BY seq DESC LIMIT 1`;
      assert.deepEqual(ev.effect, { app_id: id });
      code(await v1(node, 'GET', `${P()}/apps/${id}`, { token: w.alice.token }), 404, 'AUTHZ.4042');
    });
  });
}
