// Real SigV4 clients nobody on the team wrote (botocore, @smithy/signature-v4,
// @aws-sdk/signature-v4, aws4) sign real HTTP requests sent over loopback to a node:http server
// that runs the verifier on the request exactly as received (req.url, req.rawHeaders, the body).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  DEFAULT_SIGV4_OPTIONS,
  SigningKeyCache,
  authenticateSigV4,
  headerPairsFromRaw,
  sha256Hex,
  sigv4ErrorResponse,
  splitTarget,
  type SigV4KeyInfo,
} from '../src/access/sigv4.ts';
import {
  SIGV4_CLIENTS,
  botocoreVersion,
  jsonOf,
  sendBotocoreBatch,
  sendSigned,
  type ClientResponse,
  type SigV4ClientName,
  type SignedCall,
} from './support/sigv4-clients.ts';

const USER_KEY = 'UMAKUSERAAAAAAAAAAAA';
const APP_KEY = 'UMAKAPPBBBBBBBBBBBBB';
const SECRET = 'Zq3k9LmN2pR7sT4vW8xY1bC5dF6gH0jKaBcDeFgH';
const keys: Record<string, SigV4KeyInfo> = {
  [USER_KEY]: { secret: SECRET, status: 'Active', owner: { type: 'USER', id: 1 }, ownerDisabled: false },
  [APP_KEY]: { secret: SECRET, status: 'Active', owner: { type: 'APP', id: 'f'.repeat(32) }, ownerDisabled: false },
};

let server: http.Server;
let baseUrl: string;
const cache = new SigningKeyCache();

before(async () => {
  server = http.createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const { rawPath, rawQuery } = splitTarget(req.url ?? '/');
    const surface = rawPath.startsWith('/api/proxy') ? 'proxy' : 'management';
    const result = authenticateSigV4(
      { method: req.method ?? 'GET', rawPath, rawQuery, headers: headerPairsFromRaw(req.rawHeaders), host: req.headers.host, bodySha256: sha256Hex(body) },
      { now: Date.now(), surface, options: DEFAULT_SIGV4_OPTIONS, resolveKey: (id) => keys[id], cache },
    );
    if (result === null) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"state":"authn_required"}');
    } else if (result.ok) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ...result, surface, rawPath, rawQuery, body: body.toString('utf8') }));
    } else {
      const e = sigv4ErrorResponse(result, 'interop-req');
      res.writeHead(e.status, e.headers).end(e.body);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(() => {
  server.closeAllConnections();
  server.close();
});

interface Scenario {
  name: string;
  call: (service: string) => Omit<SignedCall, 'baseUrl' | 'accessKeyId' | 'secretAccessKey' | 'region' | 'service'> & { accessKeyId?: string };
  check: (r: ClientResponse, client: SigV4ClientName, service: string) => void;
}

function ok(r: ClientResponse, where: string): any {
  const j = jsonOf(r);
  assert.equal(r.status, 200, `${where}: ${r.status} ${j?.state ?? ''} ${j?.message ?? r.body}\n${j?.canonicalRequest ?? ''}`);
  return j;
}

function failed(r: ClientResponse, where: string, status: number, type: string, state: string): any {
  const j = jsonOf(r);
  assert.equal(r.status, status, `${where}: ${r.status} ${r.body}`);
  assert.equal(j?.__type, type, where);
  assert.equal(j?.state, state, where);
  assert.equal(r.headers['x-amzn-errortype'], type, where);
  assert.equal(r.headers['x-amzn-requestid'], 'interop-req', where);
  return j;
}

const JSON_BODY = JSON.stringify({ body: 'test', n: 1 });
const UNICODE_PATH = "/api/proxy/caf%C3%A9/%E2%82%AC/(x)!*'/a%2Fb/100%25/~-_.";
const UNICODE_QUERY: Array<[string, string]> = [
  ['q', 'a b+c/\u00e9&=?#'],
  ['emoji', '\u{1F600}'],
  ['\u00e9', '\u00fc'],
  ['reserved', "!'()*:@$,;"],
];
const REPEATED_QUERY: Array<[string, string]> = [
  ['k', '2'],
  ['k', '1'],
  ['k', '10'],
  ['empty', ''],
  ['z', 'last'],
];

const scenarios: Scenario[] = [
  {
    name: 'GET with a query',
    call: () => ({ method: 'GET', path: '/api/proxy/items', query: [['limit', '10'], ['offset', '0']], headers: { 'x-utilmeta-service-name': 'orders' } }),
    check: (r, client, service) => {
      const j = ok(r, `${client}/${service}`);
      assert.equal(j.form, 'header');
      assert.equal(j.service, service);
      assert.equal(j.accessKeyId, USER_KEY);
      assert.ok(j.signedHeaders.includes('x-utilmeta-service-name'));
      assert.match(j.rawQuery, /limit=10/);
      assert.equal(j.stripQuery, j.rawQuery, 'the header form leaves the query alone');
    },
  },
  {
    name: 'POST with a JSON body (the seed-004 example, management surface)',
    call: () => ({
      method: 'POST',
      path: '/minibase/portal/openapi/v1/test',
      query: [['test_query', 'test']],
      headers: { 'Content-Type': 'application/json', 'X-Custom-Header': 'somevalue' },
      body: JSON_BODY,
    }),
    check: (r, client, service) => {
      const j = ok(r, `${client}/${service}`);
      assert.equal(j.surface, 'management');
      assert.equal(j.body, JSON_BODY);
      assert.equal(j.payloadSigned, true);
    },
  },
  {
    name: 'POST with a declared x-amz-content-sha256, app key on the proxy',
    call: () => ({
      method: 'POST',
      path: '/api/proxy/add',
      headers: { 'Content-Type': 'application/json' },
      body: JSON_BODY,
      declarePayloadHash: true,
      accessKeyId: APP_KEY,
    }),
    check: (r, client, service) => {
      const j = ok(r, `${client}/${service}`);
      assert.equal(j.declaredPayloadHash, sha256Hex(JSON_BODY));
      assert.deepEqual(j.owner, { type: 'APP', id: 'f'.repeat(32) });
      assert.ok(j.stripHeaders.includes('x-amz-content-sha256'));
    },
  },
  {
    name: 'presigned URL with control parameters',
    call: () => ({ method: 'GET', path: '/api/proxy/items', query: [['x-utilmeta-service-name', 'orders'], ['limit', '5']], presignExpires: 300 }),
    check: (r, client, service) => {
      const j = ok(r, `${client}/${service}`);
      assert.equal(j.form, 'presigned');
      assert.equal(j.stripQuery, 'limit=5');
      assert.deepEqual(j.queryControl, { 'x-utilmeta-service-name': 'orders' });
      const left = Date.parse(new Date(j.presignExpiresAt).toISOString()) - Date.now();
      assert.ok(left > 0 && left <= 300_000, `presignExpiresAt within 300 s: ${left}`);
    },
  },
  {
    name: 'presigned URL on the management surface',
    call: () => ({ method: 'GET', path: '/minibase/portal/openapi/v1/orgs', query: [['page', '1']], presignExpires: 60 }),
    check: (r, client, service) => assert.equal(ok(r, `${client}/${service}`).surface, 'management'),
  },
  {
    name: 'unicode and reserved characters in path and query (header form)',
    call: () => ({ method: 'GET', path: UNICODE_PATH, query: UNICODE_QUERY }),
    check: (r, client, service) => {
      const j = ok(r, `${client}/${service}`);
      assert.equal(j.rawPath, UNICODE_PATH, 'the path went on the wire unchanged');
      assert.equal(new URLSearchParams(j.rawQuery).get('q'), 'a b+c/\u00e9&=?#');
      assert.equal(new URLSearchParams(j.rawQuery).get('\u00e9'), '\u00fc');
    },
  },
  {
    name: 'unicode and reserved characters in path and query (presigned)',
    call: () => ({ method: 'GET', path: UNICODE_PATH, query: UNICODE_QUERY, presignExpires: 120 }),
    check: (r, client, service) => {
      const j = ok(r, `${client}/${service}`);
      assert.equal(j.form, 'presigned');
      assert.equal(new URLSearchParams(j.stripQuery).get('emoji'), '\u{1F600}');
    },
  },
  {
    name: 'repeated query keys and an empty value (header form)',
    call: () => ({ method: 'GET', path: '/api/proxy/search', query: REPEATED_QUERY }),
    check: (r, client, service) => {
      const j = ok(r, `${client}/${service}`);
      assert.deepEqual(new URLSearchParams(j.rawQuery).getAll('k').sort(), ['1', '10', '2']);
    },
  },
  {
    name: 'repeated query keys and an empty value (presigned)',
    call: () => ({ method: 'GET', path: '/api/proxy/search', query: REPEATED_QUERY, presignExpires: 120 }),
    check: (r, client, service) => {
      const j = ok(r, `${client}/${service}`);
      assert.deepEqual(new URLSearchParams(j.stripQuery).getAll('k').sort(), ['1', '10', '2']);
    },
  },
  {
    name: 'tampered body with a declared hash → payload_hash_mismatch',
    call: () => ({
      method: 'POST',
      path: '/api/proxy/add',
      headers: { 'Content-Type': 'application/json' },
      body: '{"amount":100}',
      declarePayloadHash: true,
      tamper: { body: '{"amount":999}' },
    }),
    check: (r, client, service) => failed(r, `${client}/${service}`, 400, 'XAmzContentSHA256Mismatch', 'payload_hash_mismatch'),
  },
  {
    name: 'tampered body without a declared hash → signature_mismatch',
    call: () => ({
      method: 'POST',
      path: '/api/proxy/add',
      headers: { 'Content-Type': 'application/json' },
      body: '{"amount":100}',
      declarePayloadHash: false,
      tamper: { body: '{"amount":999}' },
    }),
    check: (r, client, service) => {
      const j = failed(r, `${client}/${service}`, 403, 'SignatureDoesNotMatch', 'signature_mismatch');
      assert.match(j.canonicalRequest, /^POST\n\/api\/proxy\/add\n/);
      assert.match(j.stringToSign, new RegExp(`^AWS4-HMAC-SHA256\\n\\d{8}T\\d{6}Z\\n\\d{8}/pri/${service}/aws4_request\\n[0-9a-f]{64}$`));
    },
  },
  {
    name: 'tampered query → signature_mismatch',
    call: () => ({ method: 'GET', path: '/api/proxy/items', query: [['limit', '10'], ['user', 'alice']], tamper: { query: ['user', 'mallory'] } }),
    check: (r, client, service) => failed(r, `${client}/${service}`, 403, 'SignatureDoesNotMatch', 'signature_mismatch'),
  },
  {
    name: 'tampered presigned query → signature_mismatch',
    call: () => ({ method: 'GET', path: '/api/proxy/items', query: [['user', 'alice']], presignExpires: 60, tamper: { query: ['user', 'mallory'] } }),
    check: (r, client, service) => failed(r, `${client}/${service}`, 403, 'SignatureDoesNotMatch', 'signature_mismatch'),
  },
];

const SERVICES = ['minibasebe', 'utilmeta'];

function fullCall(s: Scenario, service: string): SignedCall {
  const c = s.call(service);
  return { baseUrl, accessKeyId: USER_KEY, secretAccessKey: SECRET, region: 'pri', service, ...c };
}

test('botocore from /usr/bin/python3 is installed (python3-botocore)', async () => {
  const v = await botocoreVersion();
  assert.ok(v, 'botocore is missing: apt-get install -y python3-botocore (the CI script does this)');
  assert.match(v, /^1\.\d+\.\d+/);
});

for (const client of SIGV4_CLIENTS) {
  test(`${client}: every scenario, services ${SERVICES.join(' and ')}, region pri`, async (t) => {
    const plan = scenarios.flatMap((s) => SERVICES.map((service) => ({ s, service, call: fullCall(s, service) })));
    let responses: ClientResponse[];
    if (client === 'botocore') {
      responses = await sendBotocoreBatch(plan.map((p) => p.call));
    } else {
      responses = [];
      for (const p of plan) responses.push(await sendSigned(client, p.call));
    }
    for (let i = 0; i < plan.length; i++) {
      await t.test(`${plan[i].s.name} [${plan[i].service}]`, () => plan[i].s.check(responses[i], client, plan[i].service));
    }
  });
}

test('a region other than pri, a service outside the list and a wrong secret are refused for every client', async () => {
  const base = { baseUrl, accessKeyId: USER_KEY, secretAccessKey: SECRET, method: 'GET', path: '/api/proxy/items', service: 'utilmeta', region: 'pri' };
  const calls: Array<[SignedCall, string]> = [
    [{ ...base, region: 'us-east-1' }, 'sigv4_region'],
    [{ ...base, service: 'execute-api' }, 'sigv4_service'],
    [{ ...base, secretAccessKey: SECRET.toLowerCase() }, 'signature_mismatch'],
  ];
  for (const client of SIGV4_CLIENTS) {
    const responses =
      client === 'botocore' ? await sendBotocoreBatch(calls.map(([c]) => c)) : await Promise.all(calls.map(([c]) => sendSigned(client, c)));
    calls.forEach(([, state], i) => failed(responses[i], `${client} ${state}`, 403, 'SignatureDoesNotMatch', state));
  }
});
