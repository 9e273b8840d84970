// Two nodes on one PostgreSQL and Redis: an access key disabled through node 1's
// API is refused on node 2 — over both channels, over PostgreSQL NOTIFY alone
// (node 2 without Redis), and over Redis alone (node 2 not LISTENing). The
// refusal is asserted within a generous bound; the latency itself is measured
// by `npm run bench:authz`, not here.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { freshDatabases, startTestNode, LISTENERS, type TestDatabases, type TestNode } from './support/env.ts';
import { call, until } from './support/http.ts';
import { sendSigned } from './support/sigv4-clients.ts';
import { authzBootstrap, type BootstrapResult } from '../src/access/cli.ts';
import { effectiveMasterKeys } from '../src/access/index.ts';

const DIR = '/minibase/portal/openapi/v1';
const MASTER = `k1:${randomBytes(32).toString('base64')}`;
const REDIS = 'redis://127.0.0.1:6379';

const VARIANTS = [
  { name: 'both channels', env2: { UTILMETA_PROXY_REDIS_URL: REDIS }, listen2: true },
  { name: 'PostgreSQL NOTIFY only', env2: {}, listen2: true },
  { name: 'Redis only', env2: { UTILMETA_PROXY_REDIS_URL: REDIS }, listen2: false },
] as const;

for (const server of LISTENERS) {
  describe(`propagation between two nodes (${server} listener)`, () => {
    let dbs: TestDatabases;
    let n1: TestNode;
    const others: TestNode[] = [];
    let boot: BootstrapResult;

    before(async () => {
      dbs = freshDatabases();
      // A long resync so only the channels can carry the change in time.
      n1 = await startTestNode(server, dbs, { UTILMETA_PROXY_AUTHZ_MASTER_KEYS: MASTER, UTILMETA_PROXY_REDIS_URL: REDIS, UTILMETA_PROXY_AUTHZ_RESYNC: '3600' });
      boot = await authzBootstrap(n1.access.store, effectiveMasterKeys(n1.config), { account: 'admin' });
    });
    after(async () => {
      for (const n of others) await n.close();
      await n1?.close();
      await dbs?.drop();
    });

    for (const v of VARIANTS) {
      it(`a key disabled on node 1 is refused on node 2 (${v.name})`, async () => {
        const subscribers = async () => Number(((await n1.access.redis!.pubsub('NUMSUB', n1.access.channel)) as [string, number])[1]);
        const before = await subscribers();
        const n2 = await startTestNode(server, dbs, { UTILMETA_PROXY_AUTHZ_MASTER_KEYS: MASTER, UTILMETA_PROXY_AUTHZ_RESYNC: '3600', ...v.env2 }, { authzListen: v.listen2 });
        others.push(n2);
        if ('UTILMETA_PROXY_REDIS_URL' in v.env2) await until('node 2 subscribed to Redis', async () => (await subscribers()) > before);
        const H = { authorization: `Bearer ${boot.token}`, 'content-type': 'application/json' };
        let r = await call(`${n1.origin}/api/v1/access-keys`, { method: 'POST', headers: H, body: JSON.stringify({ ownerType: 'USER', ownerId: boot.userId }) });
        assert.equal(r.status, 200, r.text);
        const k = { id: r.json.data.accessKeyId as string, secret: r.json.data.secretAccessKey as string };
        const probe = () => sendSigned('aws4', {
          baseUrl: n2.origin, method: 'GET', path: `${DIR}/orgs`, accessKeyId: k.id, secretAccessKey: k.secret, service: 'minibasebe', region: 'pri',
        });
        // A new key is a loosening change: node 2 re-reads it.
        await until('node 2 knows the new key', async () => (await probe()).status === 200, 5000);

        r = await call(`${n1.origin}/api/v1/access-keys/${k.id}`, { method: 'PATCH', headers: H, body: JSON.stringify({ status: 'Inactive' }) });
        assert.equal(r.status, 200, r.text);
        const refused = await until('node 2 refuses the disabled key', async () => {
          const p = await probe();
          return p.status === 403 ? p : null;
        }, 1000);
        assert.equal(JSON.parse(refused.body).state, 'key_disabled', refused.body);

        // delete it too, so the owner stays under the two-key limit
        r = await call(`${n1.origin}/api/v1/access-keys/${k.id}`, { method: 'DELETE', headers: H });
        assert.equal(r.status, 200, r.text);
      });
    }
  });
}
