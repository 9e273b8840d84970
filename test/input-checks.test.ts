// Unit tests of the pure checks that keep hostile input out: Origin echo,
// path canonicality, request framing, registration URLs. The bad-input corpus
// (bad-input.test.ts) covers the same rules end to end on both listeners.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_ORIGIN_LENGTH, corsHeaders, wellFormedOrigin } from '../src/api/respond.ts';
import type { IncomingRequest } from '../src/http/types.ts';
import { pathProblem } from '../src/proxy/stages/path.ts';
import { MAX_HEADER_BYTES, MAX_HEADER_COUNT, framingError, framingErrorBody } from '../src/http/listener-util.ts';
import { outboundHeaders } from '../src/proxy/control.ts';
import { normalizeInstanceUrl, nulPath, parseRegistration, urlRoundTrips } from '../src/registry/registration.ts';
import { DomainError } from '../src/core/errors.ts';

const withHeaders = (headers: Array<[string, string]>): IncomingRequest =>
  ({ headers, header: (n: string) => headers.find(([k]) => k === n)?.[1] }) as unknown as IncomingRequest;

describe('wellFormedOrigin / corsHeaders', () => {
  it('echoes serialized origins', () => {
    for (const o of ['null', 'http://127.0.0.1', 'http://127.0.0.1:8080', 'https://console.utilmeta.com', 'http://[::1]:3000', 'chrome-extension://abcdef', 'http://xn--caf-dma.test']) {
      assert.equal(wellFormedOrigin(o), o, o);
    }
  });

  it('treats anything else as absent', () => {
    const bad = [
      '', ' ', 'a\tb', 'ÿþ', 'http://café.test', 'http://æ.test', 'http://a.test http://b.test', 'http://a.test/', 'http://a.test/path',
      'http://user@a.test', 'http://a.test:', 'http://a.test:123456', '//a.test', 'a.test', 'http://', 'http://a.test\r\nx: y', 'NULL',
      'http://[::1', `http://${'o'.repeat(MAX_ORIGIN_LENGTH)}.test`,
    ];
    for (const o of bad) assert.equal(wellFormedOrigin(o), undefined, JSON.stringify(o));
    assert.equal(wellFormedOrigin(undefined), undefined);
  });

  it('answers a malformed Origin with *, no credentials, like no Origin at all', () => {
    const none = corsHeaders(withHeaders([]));
    assert.deepEqual(corsHeaders(withHeaders([['origin', 'http://æ.test']])), none);
    assert.deepEqual(corsHeaders(withHeaders([['origin', `http://${'o'.repeat(8000)}.test`]])), none);
    assert.equal(none.find(([k]) => k === 'access-control-allow-origin')?.[1], '*');
    assert.equal(none.some(([k]) => k === 'access-control-allow-credentials'), false);
    const echoed = corsHeaders(withHeaders([['origin', 'http://127.0.0.1:5173']]));
    assert.equal(echoed.find(([k]) => k === 'access-control-allow-origin')?.[1], 'http://127.0.0.1:5173');
    assert.equal(echoed.find(([k]) => k === 'access-control-allow-credentials')?.[1], 'true');
  });
});

describe('pathProblem (proxy path safety)', () => {
  it('lets ordinary paths and queries through untouched', () => {
    const ok: Array<[string, string]> = [
      ['', ''], ['/', ''], ['/a/b', 'x=1'], ['/a.b/c..d/.e/f.', ''], ['/...', ''], ['/a%2Fb', ''], ['/caf%C3%A9', ''], ['/%ef%bc%8e%ef%bc%8e/x', ''],
      ['/%252e%252e/x', ''], ['//x', ''], ['/@127.0.0.2/x', ''], ['/:1/x', ''], ['/a;b=c', ''], ['/a', 'a=/../../x'], ['/a', 'a=%zz&b=%'],
      ['/a', 'q=%0d%0a%00'], ['/x', 'a'.repeat(16000)],
    ];
    for (const [p, q] of ok) assert.equal(pathProblem(p, q), null, `${p}?${q}`);
  });

  it('refuses dot-segments, plain, percent-encoded in any case, mixed, behind %2F or ;', () => {
    for (const p of ['/..', '/.', '/../x', '/a/../../b', '/./a', '/a/..', '/%2e%2e/x', '/%2E%2E/x', '/.%2e/x', '/%2e./x', '/%2e', '/..%2F..%2Fx',
      '/a%2F..%2Fb', '/a%2f.', '/..;/x', '/.;x=1/y', '/..'.repeat(200) + '/x']) {
      assert.match(pathProblem(p, '') ?? '', /dot-segment/, p);
    }
  });

  it('refuses backslashes, raw or encoded', () => {
    for (const p of ['/..\\..\\x', '/a\\b', '/..%5c..%5cx', '/a%5Cb']) assert.match(pathProblem(p, '') ?? '', /backslash/, p);
  });

  it('refuses raw bytes outside 0x21-0x7E in the path or the query', () => {
    for (const p of ['/a b', '/\u00ff\u00fe', '/\u00e9', '/\ufffd', '/a\u0000b', '/a\tb', '/a\u007fb', '/\u2024\u2024/x']) {
      assert.match(pathProblem(p, '') ?? '', /outside printable ASCII/, JSON.stringify(p));
    }
    for (const q of ['\u00ff=\u00fe', 'a=b c', 'a=\u0001']) assert.match(pathProblem('/a', q) ?? '', /query/, JSON.stringify(q));
  });

  it('refuses encoded control characters and invalid percent-encoding in the path', () => {
    for (const p of ['/a%00b', '/a%0d%0aX-Injected:%201', '/a%09b', '/a%7F', '/a%1f']) assert.match(pathProblem(p, '') ?? '', /control character/, p);
    for (const p of ['/a%zz', '/a%', '/a%4', '/%g0', '/%%30']) assert.match(pathProblem(p, '') ?? '', /invalid percent-encoding/, p);
    for (const p of ['/%ff%fe', '/%c0%ae%c0%ae/x', '/..%c0%afx', '/%e2%82']) assert.match(pathProblem(p, '') ?? '', /not UTF-8/, p);
  });
});

describe('framingError (request framing at the listener edge)', () => {
  const h = (...pairs: Array<[string, string]>) => [['host', '127.0.0.1:1'], ...pairs] as Array<[string, string]>;
  const status = (headers: Array<[string, string]>) => framingError(headers)?.status ?? null;

  it('accepts one clear length, or one chunked', () => {
    assert.equal(status(h()), null);
    assert.equal(status(h(['content-length', '0'])), null);
    assert.equal(status(h(['content-length', '1234'])), null);
    assert.equal(status(h(['transfer-encoding', 'chunked'])), null);
    assert.equal(status(h(['transfer-encoding', 'Chunked'])), null);
    assert.equal(status(h(['x-a', 'tab\tinside'], ['x-b', 'ÿþ'])), null, 'HTAB and high bytes are allowed in values');
    assert.equal(status(Array.from({ length: MAX_HEADER_COUNT }, (_, i) => [i === 0 ? 'host' : 'x-h', 'v'] as [string, string])), null);
  });

  it('refuses ambiguous lengths with 400', () => {
    for (const [cl, why] of [['', 'empty'], ['abc', 'alpha'], ['-1', 'negative'], ['+2', 'plus'], ['0x2', 'hex'], ['2.0', 'float'], ['1 2', 'space'], ['2, 2', 'list']]) {
      assert.equal(status(h(['content-length', cl])), 400, why);
    }
    assert.equal(status(h(['content-length', '2'], ['content-length', '2'])), 400, 'two equal lengths');
    assert.equal(status(h(['content-length', '1'], ['content-length', '2'])), 400);
    assert.equal(status(h(['transfer-encoding', 'gzip'])), 400);
    assert.equal(status(h(['transfer-encoding', 'chunked, gzip'])), 400);
    assert.equal(status(h(['transfer-encoding', 'xchunked'])), 400);
    assert.equal(status(h(['transfer-encoding', 'chunked'], ['transfer-encoding', 'chunked'])), 400);
    assert.equal(status(h(['transfer-encoding', 'chunked'], ['content-length', '3'])), 400);
    assert.equal(status(h(['content-length', '3'], ['transfer-encoding', 'chunked'])), 400);
  });

  it('refuses a second Host, an empty name and DEL in a value with 400 (what the parsers let through)', () => {
    assert.equal(status(h(['host', '127.0.0.2'])), 400);
    assert.equal(status(h(['', '1'])), 400);
    assert.equal(status(h(['x-foo', 'a\u007fb'])), 400);
    assert.equal(framingError(h(['x-foo', 'a\u007fb']))?.message, 'control character in the x-foo header');
  });

  it('refuses too many or too large headers with 431', () => {
    assert.equal(status(Array.from({ length: MAX_HEADER_COUNT + 1 }, () => ['x-h', 'v'] as [string, string])), 431);
    assert.equal(status(h(['x-big', 'a'.repeat(MAX_HEADER_BYTES)])), 431);
    assert.equal(status(h(['x-big', 'a'.repeat(8000)])), null);
  });

  it('names the problem in a JSON body', () => {
    const e = framingError(h(['content-length', '1'], ['content-length', '2']))!;
    assert.deepEqual(JSON.parse(framingErrorBody(e)), { error: 'more than one Content-Length header' });
  });
});

describe('outboundHeaders', () => {
  it('forwards at most one content-length', () => {
    const req = withHeaders([['content-length', '2'], ['content-length', '3'], ['x-a', '1']]);
    const out = outboundHeaders(req, true, [], '127.0.0.1');
    const lengths = out.filter((_, i) => i % 2 === 0 && out[i] === 'content-length').length;
    assert.equal(lengths, 1);
    assert.equal(out[out.indexOf('content-length') + 1], '2');
    assert.equal(outboundHeaders(req, false, [], '127.0.0.1').includes('content-length'), false, 'none while the body changes');
  });
});

describe('registration: URLs and string fields', () => {
  const address = '127.0.0.1:8001';
  const doc = (extra: Record<string, unknown>) => JSON.stringify({
    name: 'svc', address, base_url: `http://${address}/api`, ops_api: `http://${address}/api/ops`, instance_id: '1',
    version: '1.0.0', language: 'python', utilmeta_version: '2.7.0', ...extra,
  });
  const refusal = async (extra: Record<string, unknown>): Promise<string> => {
    try {
      await parseRegistration(doc(extra));
    } catch (err) {
      assert.ok(err instanceof DomainError && err.kind === 'invalid', String(err));
      return err.message;
    }
    return 'accepted';
  };

  it('keeps canonical URLs as given, joins paths onto the address', () => {
    assert.equal(normalizeInstanceUrl('base_url', `http://${address}/api`, address), `http://${address}/api`);
    assert.equal(normalizeInstanceUrl('base_url', `http://${address}`, address), `http://${address}`);
    assert.equal(normalizeInstanceUrl('base_url', `http://${address}/api/`, address), `http://${address}/api/`);
    assert.equal(normalizeInstanceUrl('base_url', '/api/v1/', address), `http://${address}/api/v1`);
    assert.equal(normalizeInstanceUrl('base_url', 'api', address), `http://${address}/api`);
    assert.equal(normalizeInstanceUrl('ops_api', `http://${address}/a%20b/ops`, address), `http://${address}/a%20b/ops`);
  });

  it('refuses scheme-relative, whitespace, control characters, backslashes and dot-segments, naming the field', () => {
    const cases: Array<[string, RegExp]> = [
      ['//127.0.0.2/api', /scheme-relative/],
      [`http://${address}/a b`, /whitespace/],
      [`http://${address}/api\r\nX: 1`, /whitespace or control/],
      [`http://${address}/api\u0000`, /control/],
      ['http:\\\\127.0.0.2\\api', /backslash/],
      [`http://${address}/api/../../x`, /not a canonical URL/],
      [`http://${address}/api/./x`, /not a canonical URL/],
      [`http://${address}/api/%2e%2e/x`, /not a canonical URL/],
      ['/api/../x', /not a canonical URL/],
      [`http://${address}/a"b`, /not a canonical URL/],
    ];
    for (const [url, why] of cases) {
      assert.throws(() => normalizeInstanceUrl('base_url', url, address), (e: Error) => why.test(e.message) && e.message.includes("'base_url'"), url);
    }
    assert.equal(urlRoundTrips('http://[::1/api'), false);
  });

  it('refuses C0 controls in every string field, with the field named; description may span lines', async () => {
    for (const f of ['name', 'title', 'address', 'cwd', 'version', 'language', 'language_version', 'utilmeta_version', 'backend', 'backend_version', 'base_url', 'ops_api']) {
      const msg = await refusal({ [f]: 'a\u0000b' });
      assert.match(msg, new RegExp(`'${f}'`), `${f}: ${msg}`);
    }
    assert.match(await refusal({ description: 'a\u0000b' }), /'description' contains control characters/);
    assert.match(await refusal({ title: 'a\nb' }), /'title' contains control characters/);
    assert.equal(await refusal({ description: 'line one\nline two\tend' }), 'accepted');
    assert.match(await refusal({ resources: { openapi: { paths: { '/x': { get: { summary: 'a\u0000' } } } } } }), /'resources\.openapi\.paths\./);
    assert.equal(await refusal({ resources: { openapi: { info: { description: 'multi\nline' } } } }), 'accepted');
  });

  it('nulPath finds U+0000 in nested strings and keys', () => {
    assert.equal(nulPath(new Map([['a', ['x', 'y\u0000']]]) as never, 'r'), 'r.a[1]');
    assert.equal(nulPath(new Map([['a\u0000', 1]]) as never, 'r'), 'r (a key)');
    assert.equal(nulPath(new Map([['a', 'b']]) as never, 'r'), null);
  });
});
