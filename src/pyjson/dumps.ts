// Serializer matching Python's json.dumps(value, ensure_ascii=False) with the
// default separators ", " and ": ". Needed because UtilMeta hashes those exact
// bytes, and JSON.stringify differs (separators, float repr, NaN, -0.0).

import { PyNumber, type PyValue } from './value.ts';

/** Python `json.dumps(value, ensure_ascii=False)` of a parsed value. */
export function dumps(value: PyValue): string {
  return dumpsJs(value);
}

/**
 * Same output rules for plain JS values (may embed PyValues): objects and Maps
 * in insertion order, integral numbers as ints, other numbers with Python's
 * float repr, bigint as int. Like JSON.stringify, `toJSON()` is honoured and
 * `undefined` properties are skipped (`null` inside arrays).
 */
export function dumpsJs(value: unknown): string {
  // String concatenation (V8 ropes) is much cheaper here than pushing parts and joining.
  let out = '';
  const stack = new Set<object>(); // for cycle detection
  const write = (v: unknown): void => {
    if (v === null) {
      out += 'null';
      return;
    }
    switch (typeof v) {
      case 'string':
        out += dumpString(v);
        return;
      case 'boolean':
        out += v ? 'true' : 'false';
        return;
      case 'number':
        out += Number.isInteger(v) ? intRepr(v) : floatRepr(v);
        return;
      case 'bigint':
        out += v.toString();
        return;
      case 'object':
        break;
      default:
        throw new TypeError(`Object of type ${typeof v} is not JSON serializable`);
    }
    const o = v as object;
    if (o instanceof PyNumber) {
      out += numberRepr(o);
      return;
    }
    if (typeof (o as { toJSON?: unknown }).toJSON === 'function') return write((o as { toJSON(): unknown }).toJSON());
    if (stack.has(o)) throw new TypeError('Circular reference detected');
    stack.add(o);
    if (Array.isArray(o)) {
      out += '[';
      for (let i = 0; i < o.length; i++) {
        if (i > 0) out += ', ';
        write(o[i] === undefined ? null : o[i]);
      }
      out += ']';
    } else {
      out += '{';
      let first = true;
      const member = (x: unknown, k: unknown): void => {
        if (typeof k !== 'string') throw new TypeError(`keys must be str, not ${typeof k}`);
        if (x === undefined) return;
        out += (first ? '' : ', ') + dumpString(k) + ': ';
        first = false;
        write(x);
      };
      if (o instanceof Map) o.forEach(member);
      else for (const k of Object.keys(o)) member((o as Record<string, unknown>)[k], k);
      out += '}';
    }
    stack.delete(o);
  };
  write(value);
  return out;
}

const SHORT_ESCAPES: Record<number, string> = {
  0x22: '\\"',
  0x5c: '\\\\',
  0x0a: '\\n',
  0x0d: '\\r',
  0x09: '\\t',
  0x08: '\\b',
  0x0c: '\\f',
};

/**
 * Python's string encoder with ensure_ascii=False: escapes `"`, `\\` and
 * characters < 0x20; everything else raw. Deviation: a lone surrogate is
 * written as a `\\udxxx` escape. Python would emit it raw and then fail to
 * UTF-8 encode (so it can never hash such a value); escaping keeps our output
 * valid UTF-8 and lossless.
 */
export function dumpString(s: string): string {
  // A char-code scan: several times faster than a (unicode) regex on short strings.
  let out = '"';
  let chunk = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c !== 0x22 && c !== 0x5c && (c < 0xd800 || c > 0xdfff)) continue;
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = s.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        i++; // a proper pair is emitted raw
        continue;
      }
    }
    // paired low halves were skipped above, so a low surrogate here is lone
    out += s.slice(chunk, i) + (SHORT_ESCAPES[c] ?? '\\u' + c.toString(16).padStart(4, '0'));
    chunk = i + 1;
  }
  return out + s.slice(chunk) + '"';
}

function numberRepr(n: PyNumber): string {
  if (n.isFloat) return floatRepr(n.toNumber());
  // Int lexemes are already canonical (no '+', no leading zeros); only -0 changes.
  return n.text === '-0' ? '0' : n.text;
}

function intRepr(x: number): string {
  // String() is exact only up to 2^53 and switches to exponent form at 1e21.
  return Number.isSafeInteger(x) ? String(x) : BigInt(x).toString();
}

/**
 * Python's repr(float): shortest round-trip digits (JS gives the same digits),
 * scientific when the decimal exponent is < -4 or >= 16 (`1e-05`, `1e+16`),
 * otherwise fixed with at least one fractional digit (`1.0`). json.dumps
 * writes non-finite values as NaN / Infinity / -Infinity.
 */
export function floatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  const abs = Math.abs(x);
  // Fast path: in this range JS also writes fixed notation with the same digits.
  if (abs >= 1e-4 && abs < 1e16) {
    const s = String(x);
    return s.includes('.') ? s : s + '.0';
  }
  const sign = x < 0 || Object.is(x, -0) ? '-' : '';
  // Extract digits and exponent from JS's shortest form ("123.45", "1e-7", "1.5e+21").
  const [mant, expPart] = String(abs).split('e');
  const [intPart, fracPart = ''] = mant.split('.');
  let digits = intPart + fracPart;
  let point = intPart.length + (expPart === undefined ? 0 : Number(expPart)); // value = 0.digits * 10^point
  const lead = digits.length - digits.replace(/^0+/, '').length;
  digits = digits.slice(lead).replace(/0+$/, '') || '0';
  point = digits === '0' ? 1 : point - lead;
  const exp = point - 1; // value = d.ddd * 10^exp
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? digits[0] + '.' + digits.slice(1) : digits;
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  if (point <= 0) return `${sign}0.${'0'.repeat(-point)}${digits}`;
  if (digits.length <= point) return `${sign}${digits}${'0'.repeat(point - digits.length)}.0`;
  return `${sign}${digits.slice(0, point)}.${digits.slice(point)}`;
}
