// The access-plane variables of the config table: defaults, validation, and the
// generated env example.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';
import { ConfigError, parseConfig, PREFIX, VARIABLES } from '../src/config/index.ts';
import { renderEnvExample, renderReadmeTables } from '../src/config/docs.ts';
import { generateMasterKey } from '../src/access/crypto.ts';

test('access-plane defaults', () => {
  const a = parseConfig({}).authz;
  assert.deepEqual({ ...a, masterKeys: undefined }, {
    masterKeys: undefined,
    redisUrl: null,
    sigv4Region: 'pri',
    sigv4Services: ['utilmeta', 'minibasebe'],
    sigv4MaxSkew: 900,
    sigv4UnsignedPayload: true,
    cancelNotice: 172800,
    maxStaleness: 300,
    resync: 30,
    tokenTtl: 43200,
    keyGrace: 86400,
    clusterId: 'default',
  });
  assert.equal(a.masterKeys, null);
  assert.equal(parseConfig({ UTILMETA_PROXY_SUPERVISOR_CLUSTER_ID: 'c1' }).authz.clusterId, 'c1');
  assert.equal(parseConfig({ UTILMETA_PROXY_SUPERVISOR_CLUSTER_ID: 'c1', UTILMETA_PROXY_AUTHZ_CLUSTER_ID: 'c2' }).authz.clusterId, 'c2');
});

test('master keys are parsed, and never printed', () => {
  const mk = generateMasterKey('a');
  const c = parseConfig({ UTILMETA_PROXY_AUTHZ_MASTER_KEYS: `${mk},${generateMasterKey('b')}` });
  assert.equal(c.authz.masterKeys!.primary.kid, 'a');
  const material = mk.split(':')[1]!;
  assert.ok(!JSON.stringify(c).includes(material));
  assert.ok(!inspect(c, { depth: 10 }).includes(material));
  assert.match(JSON.stringify(c.authz.masterKeys), /"kids":\["a","b"\]/);
});

test('bad values fail with one line naming the variable', () => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ UTILMETA_PROXY_AUTHZ_MASTER_KEYS: 'k1:short' }, /^UTILMETA_PROXY_AUTHZ_MASTER_KEYS: entry 1 \('k1'\)/],
    [{ UTILMETA_PROXY_REDIS_URL: 'http://127.0.0.1:6379' }, /^UTILMETA_PROXY_REDIS_URL: expected a redis: or rediss: URL/],
    [{ UTILMETA_PROXY_SIGV4_REGION: 'PRI!' }, /^UTILMETA_PROXY_SIGV4_REGION:/],
    [{ UTILMETA_PROXY_SIGV4_SERVICES: 'ok,Bad Name' }, /^UTILMETA_PROXY_SIGV4_SERVICES:/],
    [{ UTILMETA_PROXY_SIGV4_MAX_SKEW: '0' }, /^UTILMETA_PROXY_SIGV4_MAX_SKEW:/],
    [{ UTILMETA_PROXY_SIGV4_UNSIGNED_PAYLOAD: 'maybe' }, /^UTILMETA_PROXY_SIGV4_UNSIGNED_PAYLOAD: expected a boolean/],
    [{ UTILMETA_PROXY_AUTHZ_CANCEL_NOTICE: '3600', UTILMETA_PROXY_PRODUCTION: 'true' }, /^UTILMETA_PROXY_AUTHZ_CANCEL_NOTICE: must be at least 172800/],
    [{ UTILMETA_PROXY_AUTHZ_TOKEN_TTL: '10' }, /^UTILMETA_PROXY_AUTHZ_TOKEN_TTL:/],
    [{ UTILMETA_PROXY_AUTHZ_KEY_GRACE: '604801' }, /^UTILMETA_PROXY_AUTHZ_KEY_GRACE:/],
    [{ UTILMETA_PROXY_AUTHZ_MAX_STALENESS: '-1' }, /^UTILMETA_PROXY_AUTHZ_MAX_STALENESS:/],
  ];
  for (const [env, re] of cases) {
    assert.throws(() => parseConfig(env), (e: unknown) => e instanceof ConfigError && re.test(e.message) && !e.message.includes('\n'), JSON.stringify(env));
  }
  assert.equal(parseConfig({ UTILMETA_PROXY_AUTHZ_CANCEL_NOTICE: '3600' }).authz.cancelNotice, 3600, 'short notice is fine outside production');
});

test('the env example is the rendering of the variable table; the README tables render every access-plane variable', () => {
  const root = new URL('..', import.meta.url);
  assert.equal(readFileSync(new URL('utilmeta-proxy.env.example', root), 'utf8'), renderEnvExample());
  const tables = renderReadmeTables();
  for (const v of VARIABLES.filter((x) => x.group === 'Access plane')) assert.ok(tables.includes(`\`${PREFIX}${v.name}\``), v.name);
  assert.equal(VARIABLES.filter((x) => x.group === 'Access plane').length, 12);
});
