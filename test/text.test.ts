// leadingWords must split exactly like s.trim().split(/\s+/) (credential headers depend on it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { leadingWords } from '../src/core/text.ts';

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
