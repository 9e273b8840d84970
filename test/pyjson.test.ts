import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  MAX_DEPTH,
  PyJsonError,
  PyNumber,
  dumps,
  dumpsJs,
  etag,
  fastDigest,
  floatRepr,
  get,
  getBoolean,
  getNumber,
  getString,
  isObject,
  parse,
  toPlain,
  type PyValue,
} from '../src/pyjson/index.ts';

interface EtagCase {
  value_json: string;
  python_json_dumps: string;
  etag: string;
}
const fixture = JSON.parse(
  readFileSync(new URL('../../shared/fixtures/etag-vectors.json', import.meta.url), 'utf8'),
) as { cases: EtagCase[] };

/** dumps(parse(text)) */
const roundTrip = (text: string): string => dumps(parse(text));

function expectError(text: string, msg: string, pos: number): PyJsonError {
  let caught: unknown;
  try {
    parse(text);
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof PyJsonError, `expected PyJsonError for ${JSON.stringify(text)}, got ${caught}`);
  assert.equal(caught.msg, msg, JSON.stringify(text));
  assert.equal(caught.pos, pos, JSON.stringify(text));
  assert.match(caught.message, /^.+: line \d+ column \d+ \(char \d+\)$/);
  return caught;
}

test('fixture has cases', () => {
  assert.ok(fixture.cases.length >= 15);
});

for (const [i, c] of fixture.cases.entries()) {
  test(`etag vector #${i}: ${c.value_json.slice(0, 40)}`, () => {
    const v = parse(c.value_json);
    if (v !== null) assert.equal(dumps(v), c.python_json_dumps);
    assert.equal(etag(v), c.etag);
    assert.equal(fastDigest(c.python_json_dumps), c.etag);
  });
}

test('fastDigest is md5 mod 2^64 in base 62', () => {
  const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  for (const text of ['abc', 'héllo ✓ 😀', '{"a": 1}']) {
    // Independent reference: decode our base-62 output back to a number.
    const n = BigInt('0x' + createHash('md5').update(text, 'utf8').digest('hex')) % 2n ** 64n;
    const back = [...fastDigest(text)].reduce((acc, ch) => acc * 62n + BigInt(alphabet.indexOf(ch)), 0n);
    assert.equal(back, n);
    assert.notEqual(fastDigest(text)[0], '0'); // no padding
  }
  assert.equal(fastDigest(''), 'K2umKt0QcIw');
});

test('key order is kept and a duplicate key keeps its first position with the last value', () => {
  const v = parse('{"b": 1, "a": 2, "b": 3, "10": 4, "2": 5}');
  assert.ok(isObject(v));
  assert.deepEqual([...v.keys()], ['b', 'a', '10', '2']);
  assert.equal(getNumber(v, 'b'), 3);
  assert.equal(dumps(v), '{"b": 3, "a": 2, "10": 4, "2": 5}');
  // "__proto__" is an ordinary key
  assert.equal(roundTrip('{"__proto__": {"x": 1}}'), '{"__proto__": {"x": 1}}');
  assert.deepEqual(Object.keys(toPlain(parse('{"__proto__": 1}')) as object), ['__proto__']);
});

test('big ints survive unchanged', () => {
  for (const s of ['12345678901234567890', '-98765432109876543210987654321', '9007199254740993']) {
    assert.equal(roundTrip(s), s);
    assert.equal(roundTrip(`[${s}]`), `[${s}]`);
  }
  const n = parse('12345678901234567890');
  assert.ok(n instanceof PyNumber && !n.isFloat);
  assert.equal(n.text, '12345678901234567890');
});

test('float repr follows Python repr(float(lexeme))', () => {
  const cases: [string, string][] = [
    ['1.0', '1.0'],
    ['1e16', '1e+16'],
    ['1e15', '1000000000000000.0'],
    ['9999999999999998.0', '9999999999999998.0'],
    ['0.0001', '0.0001'],
    ['0.00001', '1e-05'],
    ['5e-324', '5e-324'],
    ['4.9e-324', '5e-324'],
    ['1.7976931348623157e308', '1.7976931348623157e+308'],
    ['0.30000000000000004', '0.30000000000000004'],
    ['1E5', '100000.0'],
    ['123.4500', '123.45'],
    ['2.5e-05', '2.5e-05'],
    ['1.5e300', '1.5e+300'],
    ['0e0', '0.0'],
    ['1e400', 'Infinity'],
    ['-1e400', '-Infinity'],
    ['1e-400', '0.0'],
    ['-12345678901234567890.5', '-1.2345678901234567e+19'],
    ['123456789.123456789e5', '12345678912345.68'],
  ];
  for (const [lexeme, py] of cases) assert.equal(roundTrip(lexeme), py, lexeme);
  assert.equal(floatRepr(0.1 + 0.2), '0.30000000000000004');
  assert.equal(floatRepr(1 / 3), '0.3333333333333333');
  assert.equal(floatRepr(-1e-7), '-1e-07');
  assert.equal(floatRepr(1e22), '1e+22');
  assert.equal(floatRepr(NaN), 'NaN');
});

test('-0 is the int 0, -0.0 stays a negative float', () => {
  assert.equal(roundTrip('-0'), '0');
  assert.equal(roundTrip('-0.0'), '-0.0');
  assert.equal(roundTrip('-0e3'), '-0.0');
  assert.equal(dumpsJs(-0), '0');
  assert.equal(floatRepr(-0), '-0.0');
});

test('NaN, Infinity and -Infinity are accepted and round-trip', () => {
  assert.equal(roundTrip('[NaN, Infinity, -Infinity]'), '[NaN, Infinity, -Infinity]');
  assert.ok(Number.isNaN(getNumber(parse('[NaN]'), 0)));
  assert.equal(getNumber(parse('{"x": -Infinity}'), 'x'), -Infinity);
});

test('escaped surrogate pairs decode to one code point and are emitted raw', () => {
  const v = parse('"\\ud83d\\ude00!"');
  assert.equal(v, '😀!');
  assert.equal([...(v as string)].length, 2);
  assert.equal(dumps(v), '"😀!"');
  assert.equal(roundTrip('"\\uD83D\\uDE00"'), '"😀"');
  // A lone surrogate stays lone (as in Python) and is written escaped (Python could not UTF-8 encode it).
  assert.equal((parse('"\\ud83dx"') as string).length, 2);
  assert.equal(roundTrip('"\\ud83dx"'), '"\\ud83dx"');
  assert.equal(roundTrip('"\\ude00\\ud83d"'), '"\\ude00\\ud83d"');
  assert.equal(roundTrip('"\\ud83d\\u0041"'), '"\\ud83dA"');
});

test('string escaping matches ensure_ascii=False', () => {
  assert.equal(roundTrip('"\\"\\\\\\/\\b\\f\\n\\r\\t"'), '"\\"\\\\/\\b\\f\\n\\r\\t"');
  assert.equal(dumps('\u0000\u0001\u001f\u007f\u2028\u2029é中'), '"\\u0000\\u0001\\u001f\u007f\u2028\u2029é中"');
  assert.equal(dumps('\u001b'), '"\\u001b"');
  assert.equal(roundTrip('"\\u00e9\\u4E2D"'), '"é中"');
});

test('invalid inputs throw PyJsonError naming the position and the expectation', () => {
  const cases: [string, string, number][] = [
    ['', 'Expecting value', 0],
    ['[1,]', 'Illegal trailing comma before end of array', 2],
    ['{"a": 1,}', 'Illegal trailing comma before end of object', 7],
    ['{"a" 1}', "Expecting ':' delimiter", 5],
    ['{a: 1}', 'Expecting property name enclosed in double quotes', 1],
    ['[1 2]', "Expecting ',' delimiter", 3],
    ['01', 'Extra data', 1],
    ['1.', 'Extra data', 1],
    ['.5', 'Expecting value', 0],
    ['+1', 'Expecting value', 0],
    ['-', 'Expecting value', 0],
    ['// c\n1', 'Expecting value', 0],
    ['/* c */ 1', 'Expecting value', 0],
    ['-NaN', 'Expecting value', 0],
    ['infinity', 'Expecting value', 0],
    ["'a'", 'Expecting value', 0],
    ['nul', 'Expecting value', 0],
    ['"abc', 'Unterminated string starting at', 0],
    ['"a\\x"', 'Invalid \\escape', 2],
    ['"\\u12G4"', 'Invalid \\uXXXX escape', 2],
    ['"a\nb"', 'Invalid control character at', 2],
    ['[1]x', 'Extra data', 3],
    ['\ufeff1', 'Unexpected UTF-8 BOM (decode using utf-8-sig)', 0],
    ['\u00a01', 'Expecting value', 0],
  ];
  for (const [text, msg, pos] of cases) expectError(text, msg, pos);
});

test('error positions count lines, columns and code points like Python', () => {
  const e = expectError('[1,\n  2\n  x]', "Expecting ',' delimiter", 10);
  assert.equal(e.lineno, 3);
  assert.equal(e.colno, 3);
  assert.equal(e.message, "Expecting ',' delimiter: line 3 column 3 (char 10)");
  // the astral character counts once
  const a = expectError('"😀" x', 'Extra data', 4);
  assert.equal(a.colno, 5);
});

test('nesting deeper than MAX_DEPTH is rejected, not a stack overflow', () => {
  const ok = '['.repeat(MAX_DEPTH) + ']'.repeat(MAX_DEPTH);
  assert.equal(roundTrip(ok), ok);
  expectError('['.repeat(MAX_DEPTH + 1) + ']'.repeat(MAX_DEPTH + 1), 'Maximum nesting depth exceeded', MAX_DEPTH);
  assert.throws(() => parse('{"a":'.repeat(100_000)), PyJsonError);
});

test('toPlain and field helpers', () => {
  const v = parse('{"n": 1.5, "big": 12345678901234567890, "s": "x", "b": false, "a": [1, {"k": null}]}');
  assert.deepEqual(toPlain(v), { n: 1.5, big: 12345678901234567890, s: 'x', b: false, a: [1, { k: null }] });
  assert.equal(getString(v, 's'), 'x');
  assert.equal(getString(v, 'n'), undefined);
  assert.equal(getBoolean(v, 'b'), false);
  assert.equal(getNumber(v, 'a', 0), 1);
  assert.equal(get(v, 'a', 1, 'k'), null);
  assert.equal(get(v, 'a', 'k'), undefined);
  assert.equal(get(v, 'missing', 'x'), undefined);
  assert.equal(get('str' as PyValue, 'x'), undefined);
});

test('PyNumber only accepts number lexemes', () => {
  assert.equal(new PyNumber('1e5').isFloat, true);
  assert.equal(new PyNumber('-0').isFloat, false);
  assert.equal(new PyNumber('NaN').isFloat, true);
  for (const bad of ['01', '1.', '+1', ' 1', 'nan', '1e', '']) assert.throws(() => new PyNumber(bad), TypeError, bad);
});

test('dumpsJs serializes plain JS values the Python way', () => {
  assert.equal(
    dumpsJs({ b: 1, a: [1.5, 2, -0, 1e21, 2 ** 60, 0.1], n: null, t: true, u: undefined, s: 'é\n' }),
    '{"b": 1, "a": [1.5, 2, 0, 1000000000000000000000, 1152921504606846976, 0.1], "n": null, "t": true, "s": "é\\n"}',
  );
  assert.equal(dumpsJs([undefined, NaN, Infinity, 10n ** 30n]), '[null, NaN, Infinity, 1000000000000000000000000000000]');
  assert.equal(dumpsJs(new Map([['z', 1], ['a', 2]])), '{"z": 1, "a": 2}');
  assert.equal(dumpsJs({ when: new Date(0) }), '{"when": "1970-01-01T00:00:00.000Z"}');
  // embedding a parsed value keeps its exact bytes
  assert.equal(dumpsJs({ resources: parse('{"v": 1.0, "i": 12345678901234567890}') }), '{"resources": {"v": 1.0, "i": 12345678901234567890}}');
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.throws(() => dumpsJs(cyclic), TypeError);
  assert.throws(() => dumpsJs(() => 1), TypeError);
  assert.throws(() => dumpsJs(new Map([[1, 2]])), TypeError);
  // same bytes as dumps for a fixture without floats or integer-like keys
  const meta = fixture.cases.find((c) => c.value_json.startsWith('{"metadata"'));
  assert.ok(meta);
  assert.equal(dumpsJs(JSON.parse(meta.value_json)), meta.python_json_dumps);
});

test('a ~1 MB document parses and dumps', () => {
  const items = [];
  for (let i = 0; i < 6000; i++) {
    items.push({
      id: i,
      name: `item ${i} — ✓ "quoted" \\ 😀`,
      price: i + 0.25,
      ratio: i / 7,
      tiny: i * 1e-9,
      flags: [true, false, null],
      nested: { k: 'v'.repeat(40), n: -i },
    });
  }
  const text = JSON.stringify({ items });
  assert.ok(text.length > 1_000_000, `size ${text.length}`);
  const t0 = performance.now();
  const v = parse(text);
  const t1 = performance.now();
  const out = dumps(v);
  const t2 = performance.now();
  console.log(`1 MB: ${text.length} chars, parse ${(t1 - t0).toFixed(1)} ms, dumps ${(t2 - t1).toFixed(1)} ms`);
  assert.equal(getString(v, 'items', 5999, 'name'), 'item 5999 — ✓ "quoted" \\ 😀');
  // dumps output is valid JSON with the same content and re-dumps to itself
  assert.deepEqual(JSON.parse(out), JSON.parse(text));
  assert.equal(roundTrip(out), out);
});
