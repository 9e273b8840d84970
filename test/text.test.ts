// leadingWords must split exactly like s.trim().split(/\s+/) (credential headers depend on it); statusOf must read status lines exactly like its regular expression; NameTable must answer exactly like a Map.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isAscii, leadingWords, NameTable, nameSet } from '../src/core/text.ts';
import { statusOf } from '../src/h1/index.ts';

function reference(s: string): { count: number; first: string; second: string } {
  const parts = s.trim().split(/\s+/);
  return { count: Math.min(parts.length, 3), first: parts[0], second: parts[1] ?? '' };
}

test('leadingWords: fixed cases', () => {
  for (const s of ['', ' ', '\t\r\n', 'tok', 'Bearer tok', '  Bearer   tok  ', 'Bearer tok extra', 'a\u00a0b', 'a\u2003b c', '\ufeffBearer\ttok', 'Bearer ', ' x ']) {
    assert.deepEqual(leadingWords(s), reference(s), JSON.stringify(s));
  }
});

test('leadingWords: random strings over letters and every white-space kind agree with trim + split', () => {
  const alphabet = ['a', 'B', '.', '-', '_', ' ', '\t', '\n', '\v', '\f', '\r', '\u00a0', '\u1680', '\u2000', '\u200a', '\u2028', '\u2029', '\u202f', '\u205f', '\u3000', '\ufeff', '\u0085', '\u200b', 'é'];
  let seed = 7;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
  for (let i = 0; i < 20000; i++) {
    let s = '';
    const len = rnd(12);
    for (let j = 0; j < len; j++) s += alphabet[rnd(alphabet.length)];
    assert.deepEqual(leadingWords(s), reference(s), JSON.stringify(s));
  }
});

test('leadingWords: long strings (the native scan of ASCII text) agree with trim + split', () => {
  const word = ['a', 'B', '.', '-', '_', '0'];
  const space = [' ', '\t', '\n', '\v', '\f', '\r', '\u00a0', '\u2003', '\ufeff'];
  let seed = 11;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
  let ascii = 0;
  for (let i = 0; i < 4000; i++) {
    // Mostly long words (a platform token is ~700 characters) with a few spaces between and around them.
    let s = '';
    const parts = 1 + rnd(5);
    for (let p = 0; p < parts; p++) {
      for (let j = rnd(3); j > 0; j--) s += space[rnd(i % 2 === 0 ? 6 : space.length)];
      for (let j = rnd(200); j > 0; j--) s += word[rnd(word.length)];
    }
    assert.equal(isAscii(s), !/[^\x00-\x7f]/.test(s), JSON.stringify(s.slice(0, 80)));
    if (s.length >= 64 && isAscii(s)) ascii++;
    assert.deepEqual(leadingWords(s), reference(s), JSON.stringify(s.slice(0, 80)));
  }
  assert.ok(ascii > 1000, `many cases take the native scan (${ascii})`);
  const token = `Bearer ${'eyJhbGciOiJSUzI1NiJ9'.repeat(35)}`;
  assert.deepEqual(leadingWords(token), reference(token));
  assert.deepEqual(leadingWords(`${token}\v`), reference(`${token}\v`));
  assert.deepEqual(leadingWords(`${token}\fx`), { count: 3, first: 'Bearer', second: token.slice(7) });
});

// statusOf reads the h1 client's status lines by hand; it must accept exactly what this expression accepts.
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?$/;
function statusReference(line: string): number {
  const m = STATUS_LINE.exec(line);
  return m ? Number(m[2]) : -1;
}

test('statusOf: fixed cases', () => {
  for (const s of ['HTTP/1.1 200 OK', 'HTTP/1.0 404 Not Found', 'HTTP/1.1 200', 'HTTP/1.1 200 ', 'HTTP/1.1 099 x', 'HTTP/1.2 200 OK', 'HTTP/1.1  200 OK', 'HTTP/1.1 20 OK', 'HTTP/1.1 2000 OK',
    'HTTP/1.1 200\tOK', 'HTTP/1.1 200 O\tK', 'HTTP/1.1 200 O\x7fK', 'HTTP/1.1 200 caf\u00e9', 'http/1.1 200 OK', 'HTTP/1.1 999 x', 'HTTP/1.1 100 Continue', '', 'HTTP/1.1']) {
    assert.equal(statusOf(s), statusReference(s), JSON.stringify(s));
  }
});

test('statusOf: random lines near the grammar agree with the regular expression', () => {
  // xorshift32: the low bits of a power-of-two LCG repeat too soon for picks this small.
  let seed = 0x2545f491;
  const rnd = (n: number) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const pick = <T>(xs: readonly T[]) => xs[rnd(xs.length)];
  const reasonChars = ['O', 'K', ' ', '\t', 'x', '\u00e9', '\u00ff', '\x00', '\x08', '\x0a', '\x0d', '\x1f', '\x7f', '-'];
  let accepted = 0;
  for (let i = 0; i < 20000; i++) {
    let s = pick(['HTTP/1.', 'HTTP/1.', 'HTTP/1.', 'HTTP/2.', 'http/1.', 'HTTP/1', '']) + pick(['1', '0', '1', '2', '']) + pick([' ', ' ', ' ', '  ', '\t', '']);
    const digits = 2 + rnd(3);
    for (let j = 0; j < digits; j++) s += pick(['0', '1', '2', '4', '5', '9', '9', 'x']);
    if (rnd(3) > 0) {
      s += pick([' ', ' ', ' ', '\t', '']);
      const len = rnd(6);
      for (let j = 0; j < len; j++) s += pick(reasonChars);
    }
    const got = statusOf(s);
    assert.equal(got, statusReference(s), JSON.stringify(s));
    if (got >= 0) accepted++;
  }
  assert.ok(accepted > 100, `the generator should produce valid lines too (${accepted})`);
});

test('NameTable: answers like a Map for its names, near misses and fresh strings', () => {
  const entries: Array<[string, number]> = [['te', 1], ['trailer', 2], ['upgrade', 3], ['connection', 4], ['keep-alive', 5], ['x-proxy-type', 6], ['x-utilmeta-proxy-type', 7]];
  const table = new NameTable(entries);
  const map = new Map(entries);
  const set = nameSet(entries.map(([n]) => n));
  // Same lengths, one character off, other case, prefixes and suffixes, and names built at run time (not the constants' objects).
  const probes = ['', 't', 'tf', 'TE', 'trailers', 'trailex', 'upgrad', 'upgradee', 'Connection', 'connectioN', 'keep_alive', 'x-proxy-typ', 'x-proxy-typE', 'x-utilmeta-proxy-typf'];
  for (const [n] of entries) probes.push(n, [...n].join(''), `${n}x`.slice(0, n.length), n.toUpperCase().toLowerCase());
  let hits = 0;
  for (const p of probes) {
    assert.equal(table.get(p), map.get(p), JSON.stringify(p));
    assert.equal(set.has(p), map.has(p), JSON.stringify(p));
    if (map.has(p)) hits++;
  }
  assert.ok(hits >= entries.length * 3, 'the probes include every name in several spellings of the same text');
});
