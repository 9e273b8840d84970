// Unit tests of the pure checks that keep hostile input out: Origin echo,
// path canonicality, request framing, registration URLs. The bad-input corpus
// (bad-input.test.ts) covers the same rules end to end on both listeners.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_ORIGIN_LENGTH, corsHeaders, wellFormedOrigin } from '../src/api/respond.ts';
import type { IncomingRequest } from '../src/http/types.ts';

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
