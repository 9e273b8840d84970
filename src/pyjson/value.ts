// Value model for Python-compatible JSON.
//
// JSON.parse cannot be used: it loses number lexemes (12345678901234567890,
// 1.0 vs 1, -0.0) and hashes must be computed over Python's re-serialization.
// Objects are Maps: a Map keeps insertion order, and `set` on an existing key
// keeps the key's first position, which is exactly Python dict assignment.

/** A JSON number that keeps its source lexeme (a valid JSON number, or NaN / Infinity / -Infinity). */
export class PyNumber {
  readonly text: string;
  /** Python parses it as float (has `.`, `e`/`E`, or is NaN/Infinity), else as int. */
  readonly isFloat: boolean;

  constructor(text: string) {
    const m = NUMBER_LEXEME.exec(text);
    if (m === null) throw new TypeError(`not a JSON number lexeme: ${JSON.stringify(text)}`);
    this.text = text;
    this.isFloat = m[1] === undefined;
  }

  /** Lossy for ints beyond 2^53 and for floats given with excess digits. */
  toNumber(): number {
    return Number(this.text);
  }

  valueOf(): number {
    return this.toNumber();
  }

  toString(): string {
    return this.text;
  }
}

// Group 1 matches only for ints.
const NUMBER_LEXEME = /^(?:(-?(?:0|[1-9]\d*))|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|NaN|-?Infinity)$/;

export type PyObject = Map<string, PyValue>;
export type PyValue = null | boolean | string | PyNumber | PyValue[] | PyObject;

export function isObject(v: PyValue | undefined): v is PyObject {
  return v instanceof Map;
}

/** Walk object keys / array indexes; `undefined` when any step is missing or of the wrong kind. */
export function get(v: PyValue | undefined, ...path: (string | number)[]): PyValue | undefined {
  let cur = v;
  for (const step of path) {
    if (typeof step === 'number' ? !Array.isArray(cur) : !(cur instanceof Map)) return undefined;
    cur = typeof step === 'number' ? (cur as PyValue[])[step] : (cur as PyObject).get(step);
  }
  return cur;
}

export function getString(v: PyValue | undefined, ...path: (string | number)[]): string | undefined {
  const r = get(v, ...path);
  return typeof r === 'string' ? r : undefined;
}

export function getNumber(v: PyValue | undefined, ...path: (string | number)[]): number | undefined {
  const r = get(v, ...path);
  return r instanceof PyNumber ? r.toNumber() : undefined;
}

export function getBoolean(v: PyValue | undefined, ...path: (string | number)[]): boolean | undefined {
  const r = get(v, ...path);
  return typeof r === 'boolean' ? r : undefined;
}

/**
 * Convert to ordinary JS values for code that only reads fields: numbers via
 * Number() (lossy), objects as plain objects (JS moves integer-like keys first,
 * so never re-serialize the result when bytes matter; use `dumps` on the PyValue).
 */
export function toPlain(v: PyValue): unknown {
  if (v instanceof PyNumber) return v.toNumber();
  if (Array.isArray(v)) return v.map(toPlain);
  // fromEntries defines own properties, so a "__proto__" key stays a plain key.
  if (v instanceof Map) return Object.fromEntries(Array.from(v, ([k, x]) => [k, toPlain(x)]));
  return v;
}
