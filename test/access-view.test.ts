// The access plane's live view across nodes: a change committed on one node is
// applied on another from PostgreSQL NOTIFY, from Redis alone, and on the writer
// itself at once; events are applied once, tightening ones straight from the
// payload, and a reload keeps what was applied meanwhile.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { freshDatabases, startTestNode, testLogger, type TestDatabases, type TestNode } from './support/env.ts';
import { AccessView, authenticateBearer, effectiveMasterKeys } from '../src/access/index.ts';
import { authzBootstrap, type BootstrapResult } from '../src/access/cli.ts';
import { redisFeed } from '../src/redis/index.ts';

const REDIS = 'redis://127.0.0.1:6379';

async function until(what: string, ok: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) assert.fail(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const accepts = (view: AccessView, token: string) => {
  const p = authenticateBearer(view.current.state, token, view.now());
  return p.kind === 'user';
};

describe('access live view across nodes', () => {
  let dbs: TestDatabases;
  let a: TestNode; // writer, publishes to Redis
  let b: TestNode; // PostgreSQL NOTIFY only
  let c: AccessView; // Redis only (no LISTEN)
  let boot: BootstrapResult;

  before(async () => {
    dbs = freshDatabases();
    a = await startTestNode('node', dbs, { UTILMETA_PROXY_REDIS_URL: REDIS });
    b = await startTestNode('node', dbs);
    c = new AccessView({
      sql: b.db.registry, log: testLogger(), masterKeys: effectiveMasterKeys(b.config), resyncSeconds: 3600, listen: false,
      feeds: [redisFeed(REDIS, a.access.channel, testLogger())],
    });
    await c.start();
    boot = await authzBootstrap(a.access.store, effectiveMasterKeys(a.config), { account: 'root' });
  });

  after(async () => {
    await c?.stop();
    await a?.close();
    await b?.close();
    await dbs?.drop();
  });

  it('the writer applies its own commit at once; other nodes load it from either channel', async () => {
    assert.ok(accepts(a.access.view, boot.token), 'the writer knows the new token without waiting for a channel');
    await until('node B (NOTIFY) accepts the new token', () => accepts(b.access.view, boot.token));
    await until('view C (Redis only) accepts the new token', () => accepts(c, boot.token));
  });

  it('a revocation reaches a NOTIFY-only node and a Redis-only view from the payload, each seq once', async () => {
    const seqBefore = b.access.view.current.seq;
    await a.access.credentials.revokeToken(boot.token);
    assert.equal(accepts(a.access.view, boot.token), false, 'revoked on the writer at once');
    await until('node B refuses the revoked token', () => !accepts(b.access.view, boot.token));
    await until('view C refuses the revoked token', () => !accepts(c, boot.token));
    await until('node B has applied the event seq', () => b.access.view.current.seq > seqBefore);
    const metrics = await b.metrics.text();
    assert.match(metrics, /utilmeta_proxy_authz_propagation_seconds_count\{channel="pg"\} [1-9]/);
    const seqs = a.access.view.current.seq;
    assert.equal(b.access.view.current.seq, seqs, 'B applied exactly up to the writer');
  });

  it('an event arriving again over another channel is not applied twice; a gap triggers a reload that keeps the tightening', async () => {
    const before = b.access.view.current;
    // The same event again (as Redis would deliver it after NOTIFY): nothing changes.
    const last = { seq: before.seq, action: 'token.revoke', at_ms: Date.now(), effect: { token_ids: ['999999'] } };
    b.access.view.view.push(JSON.stringify(last), 'redis');
    assert.equal(b.access.view.current, before, 'a seq already applied is ignored');
    // A tightening from the future (seq + 2): applied now, out of order, and kept by the reload it triggers.
    const tok = await a.access.credentials.createPersonalToken(
      { userId: String(boot.userId), admin: true, actor: { type: 'USER', id: String(boot.userId), name: 'root' } }, 'current', { name: 'gap', expiresInDays: 1 },
    );
    await until('node B accepts the new personal token', () => accepts(b.access.view, tok.token));
    const cur = b.access.view.current.seq;
    b.access.view.view.push(JSON.stringify({ seq: cur + 2, action: 'token.revoke', at_ms: Date.now(), effect: { token_ids: [String(tok.id)] } }), 'redis');
    assert.equal(accepts(b.access.view, tok.token), false, 'applied at once, out of order');
    await b.access.view.view.refresh();
    assert.equal(accepts(b.access.view, tok.token), false, 'a reload that has not reached that seq keeps the tightening');
  });
});
