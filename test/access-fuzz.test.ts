// Property and corpus fuzzing of the attack surface of the access core: the canonical-path check,
// the router and the list-query parser. Bounded sizes and run counts keep this to a few seconds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DomainError } from '../src/core/errors.ts';
import { canonicalPath } from '../src/access/canonical-path.ts';
import { ApiRouter, routeKeySegments } from '../src/access/router.ts';
import { buildCatalog } from '../src/access/catalog.ts';
import { buildAuthListSql, parseAuthListQuery, FILTER_OPS } from '../src/access/list-query.ts';
import { buildDecisionState } from '../src/access/decision-state.ts';
import { decide, authenticateBearer } from '../src/access/decide.ts';
import { NOW, rows } from './support/access-fixture.ts';

const RUNS = 3000;

/**
 * An independent reading of a path, written differently from the implementation: byte-level
 * percent-decoding with a strict UTF-8 decoder, then the segment rules. Returns the decoded
 * segments, or null when an upstream could read the path in more than one way.
 */
function oracle(raw: string): string[] | null {
  let path = raw.split('?')[0];
  if (path === '') path = '/';
  if (!path.startsWith('/')) return null;
  let parts = path.split('/').slice(1);
  if (parts.length > 0 && parts[parts.length - 1] === '') parts = parts.slice(0, -1);
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  const out: string[] = [];
  for (const part of parts) {
    if (part.length === 0) return null;
    if (part.includes('\\')) return null;
    const bytes: number[] = [];
    for (let i = 0; i < part.length; ) {
      if (part[i] === '%') {
        const hex = part.slice(i + 1, i + 3);
        if (!/^[0-9a-fA-F]{2}$/.test(hex)) return null;
        bytes.push(parseInt(hex, 16));
        i += 3;
      } else {
        const cp = part.codePointAt(i)!;
        if (cp >= 0xd800 && cp <= 0xdfff) return null; // lone surrogate
        bytes.push(...Buffer.from(String.fromCodePoint(cp), 'utf8'));
        i += cp > 0xffff ? 2 : 1;
      }
    }
    let seg: string;
    try {
      seg = utf8.decode(new Uint8Array(bytes));
    } catch {
      return null;
    }
    if (seg.includes('/') || seg.includes('\\') || seg === '.' || seg === '..') return null;
    out.push(seg);
  }
  return out;
}

// Path material biased towards the interesting characters.
const pathChar = fc.constantFrom('/', '/', '/', '.', '%', '2', 'e', 'E', 'f', 'F', 'C', '5', 'c', '0', 'A', 'a', '\\', '?', 'é', '\uD800', '\uDC00', '😀', 'z', '-', '~', '%2e', '%2F', '%5C', '%C3%A9', '%E2%82', '%ED%A0%80', '%C0%AF', '%FF', '%25', '%20', '..', './');
const rawPath = fc.array(pathChar, { maxLength: 40 }).map((a) => a.join(''));

test('the canonical check never throws and agrees with an independent reading', () => {
  fc.assert(
    fc.property(fc.oneof(rawPath, fc.string({ unit: 'binary', maxLength: 60 }), fc.string({ unit: 'grapheme', maxLength: 60 }).map((s) => '/' + s)), (raw) => {
      const c = canonicalPath(raw);
      const o = oracle(raw);
      if (o === null) assert.equal(c.ok, false, `implementation accepted ${JSON.stringify(raw)}`);
      else {
        assert.ok(c.ok, `implementation refused ${JSON.stringify(raw)} (${!c.ok && c.reason})`);
        assert.deepEqual(c.segments, o);
      }
    }),
    { numRuns: RUNS },
  );
});

// Route tables over a small alphabet so that requests collide with templates often.
const LITERALS = ['a', 'b', 'é', 'a b', '{x', 'x.json'];
const segGen = fc.constantFrom(...LITERALS, '{}', '{}');
const apiGen = fc.record({ method: fc.constantFrom('GET', 'POST', 'HEAD'), segs: fc.array(segGen, { maxLength: 4 }) });

/** Percent-encodes some characters of a decoded segment, randomly, the way a client might. */
function encodeSome(seg: string, mask: number): string {
  let out = '';
  let i = 0;
  for (const ch of seg) {
    const forced = ch === ' ' || ch === '%';
    if (forced || (mask >> i++ % 30) & 1) out += [...Buffer.from(ch, 'utf8')].map((b) => '%' + b.toString(16).padStart(2, '0')[i % 2 ? 'toUpperCase' : 'toLowerCase']()).join('');
    else out += ch;
  }
  return out;
}

/** Brute force: every API whose route key matches the decoded segments; the winner has the most literal prefix. */
function bruteForce(apis: { apiId: string; method: string; routeKey: string }[], method: string, segs: string[]): string | null {
  const pick = (m: string) => {
    let best: { id: string; rank: number[] } | null = null;
    for (const a of apis) {
      if (a.method !== m) continue;
      const t = routeKeySegments(a.routeKey);
      if (t.length !== segs.length) continue;
      if (!t.every((x, i) => (x === '{}' ? segs[i] !== '' : x === segs[i]))) continue;
      const rank = t.map((x) => (x === '{}' ? 1 : 0));
      if (!best || rank.join('') < best.rank.join('')) best = { id: a.apiId, rank };
    }
    return best?.id ?? null;
  };
  return pick(method) ?? (method === 'HEAD' ? pick('GET') : null);
}

test('the router agrees with a brute-force reading of every canonical path', () => {
  fc.assert(
    fc.property(
      fc.array(apiGen, { maxLength: 12 }),
      fc.array(fc.constantFrom(...LITERALS, 'zz', 'b'), { maxLength: 5 }),
      fc.integer({ min: 0, max: 2 ** 30 }),
      fc.boolean(),
      fc.constantFrom('GET', 'POST', 'HEAD', 'PUT'),
      (table, reqSegs, mask, trailing, method) => {
        // Dedupe (method, route key) like the catalog does; ids name the route.
        const seen = new Set<string>();
        const apis = table
          .map((a) => ({ apiId: `${a.method} /${a.segs.join('/')}`, method: a.method, routeKey: '/' + a.segs.join('/') }))
          .filter((a) => !seen.has(a.apiId) && !!seen.add(a.apiId));
        const router = new ApiRouter(apis);
        const raw = '/' + reqSegs.map((s) => encodeSome(s, mask)).join('/') + (trailing && reqSegs.length ? '/' : '');
        const res = router.match(method, raw);
        const o = oracle(raw);
        assert.ok(o !== null && res.ok, `generated paths are canonical: ${raw}`);
        assert.equal(res.api?.apiId ?? null, bruteForce(apis, method, o), raw);
      },
    ),
    { numRuns: RUNS },
  );
});

test('the router never throws and never matches a refused path, whatever the input', () => {
  const router = new ApiRouter([{ apiId: 'p', method: 'GET', routeKey: '/{}/{}' }, { apiId: 'q', method: 'GET', routeKey: '/{}.{}.{}' }, { apiId: 'r', method: 'GET', routeKey: '/' }]);
  fc.assert(
    fc.property(fc.oneof(rawPath, fc.string({ unit: 'binary', maxLength: 80 })), fc.string({ maxLength: 8 }), (raw, method) => {
      const res = router.match(method, raw);
      assert.equal(res.ok, oracle(raw) !== null);
    }),
    { numRuns: RUNS },
  );
  // A long segment against a many-parameter pattern stays linear (no regex backtracking).
  const long = '/' + '.'.repeat(50_000) + 'x';
  assert.equal(router.match('GET', long).ok, true);
});

test('decide() never throws for any path, method or token', () => {
  const s = buildDecisionState(rows());
  fc.assert(
    fc.property(rawPath, fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'TRACE', 'x'), fc.constantFrom('12', '13', '14', '999'), fc.string({ maxLength: 60 }), (raw, method, svc, tok) => {
      const p = authenticateBearer(s, tok, NOW);
      const d = decide(s, { serviceId: svc, serviceName: 'svc', method, rawPath: raw }, p, NOW);
      assert.ok(d.result === 'ALLOW' || d.result === 'DENY');
      if (d.result === 'DENY') assert.ok(d.status >= 400 && d.status < 600 && d.state.length > 0);
    }),
    { numRuns: RUNS },
  );
});

test('the catalog never throws on junk documents', () => {
  fc.assert(
    fc.property(fc.anything({ maxDepth: 4 }), fc.option(fc.string({ maxLength: 30 })), (doc, base) => {
      const wrapped = [{ baseUrl: base, openapi: doc }, { baseUrl: base, openapi: { paths: doc } }, { baseUrl: base, openapi: { servers: doc, paths: { '/a/{b}': doc } } }];
      const r = buildCatalog(1, wrapped);
      for (const a of r.apis) assert.match(a.apiId, /^[0-9a-f]{32}$/);
    }),
    { numRuns: 1000 },
  );
});

const NAMES = ['serviceId', 'authObjectType', 'authObjectId', 'createdDate', 'pageNo', 'pageSize', 'orderBy', 'orderSort', 'infoScope', 'other'];
const filterName = fc.tuple(fc.oneof(fc.integer({ min: 0, max: 25 }).map(String), fc.constantFrom('01', '-1', 'x', '')), fc.constantFrom('key', 'op', 'value', 'val')).map(([i, k]) => `filters[${i}].${k}`);
const values = fc.oneof(
  fc.constantFrom('1', '12', 'USER', 'GROUP', 'DESC', 'id', 'createdDate', 'authObjectName', 'permissions', 'VIEW,EXPORT', ...FILTER_OPS, '2021-01-01T00:00:00Z', '2021-01-01', '1,2,3', '', "o'x", '%_\\'),
  fc.string({ maxLength: 30 }),
  fc.string({ unit: 'binary', maxLength: 30 }),
);

test('the list-query parser only ever throws PARAM_INVALID naming a field, and its SQL is fully parameterised', () => {
  fc.assert(
    fc.property(fc.dictionary(fc.oneof(fc.constantFrom(...NAMES), filterName), fc.oneof(values, fc.array(values, { maxLength: 2 })), { maxKeys: 14 }), fc.boolean(), (query, valid) => {
      const input: Record<string, string | string[]> = valid ? { serviceId: '12', authObjectType: 'USER', ...query } : query;
      let parsed;
      try {
        parsed = parseAuthListQuery(input);
      } catch (e) {
        assert.ok(e instanceof DomainError, `not a DomainError: ${e}`);
        assert.equal(e.kind, 'invalid');
        assert.equal(e.code, 'PARAM_INVALID');
        assert.ok(typeof e.field === 'string' && e.field.length > 0);
        return;
      }
      const { list, count } = buildAuthListSql(parsed);
      for (const q of [list, count]) {
        const used = [...q.text.matchAll(/\$(\d+)/g)].map((m) => Number(m[1]));
        assert.equal(Math.max(0, ...used), q.values.length, 'every value has a placeholder and vice versa');
        for (const f of parsed.filters) for (const v of f.values) if (v.length > 3 && !/^[A-Z_]+$/.test(v)) assert.ok(!q.text.includes(v), `value ${v} leaked into SQL`);
      }
    }),
    { numRuns: RUNS },
  );
});
