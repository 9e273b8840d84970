// Python-compatible JSON: parse keeping key order and number lexemes, dump
// byte-for-byte like Python's json.dumps(ensure_ascii=False), and UtilMeta etags.

export { PyNumber, get, getBoolean, getNumber, getString, isObject, toPlain } from './value.ts';
export type { PyObject, PyValue } from './value.ts';
export { MAX_DEPTH, PyJsonError, parse } from './parse.ts';
export { dumps, dumpsJs, dumpString, floatRepr } from './dumps.ts';
export { etag, fastDigest } from './digest.ts';
