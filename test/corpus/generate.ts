// Writes the bad-input corpus (test/corpus/*.ndjson). The NDJSON files are the
// corpus and are committed; this script only saves typing the cross products
// (every control header × every junk value, every registration field × every
// wrong type). Run it after editing, then review the diff:
//   node --import tsx test/corpus/generate.ts
//
// Case format (one JSON object per line), see test/corpus/cases.ts for the loader:
//   id        unique name
//   surface   what is attacked: listener | proxy-path | proxy-control | registry |
//             deregister | ops | cors | websocket
//   kind      "raw": `raw` is sent as-is; "http": the harness builds the request
//             from method/target/headers/body and adds Host, Content-Length and
//             Connection: close
//   raw, target, header values, body: latin1 text, one character per byte
//             (so "\u00ff" is the byte 0xff); body may set bodyEncoding "utf8"
//   halfClose the client shuts its write side after sending (truncated input)
//   accept    acceptable outcomes: "2xx" "3xx" "4xx" "close" or exact codes ("501")
//   maxResponses  more responses than this means a smuggled request was answered
//   note      why the case exists / what a correct server does
// Placeholders: {{host}} {{svc}} {{id}} {{address}} {{instance_id}} {{base}}
// (the registered upstream's base URL) and {{repeat:N:text}}.
import { writeFileSync } from 'node:fs';

interface Case {
  id: string;
  surface: string;
  kind: 'raw' | 'http';
  raw?: string;
  method?: string;
  target?: string;
  headers?: Array<[string, string]>;
  body?: string;
  bodyEncoding?: 'latin1' | 'utf8';
  halfClose?: boolean;
  accept: string[];
  maxResponses?: number;
  note: string;
}

const REJECT = ['4xx', 'close'];
const files: Record<string, Case[]> = {};
const add = (file: string, c: Case) => (files[file] ??= []).push(c);
const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
const crlf = (s: string) => s.replace(/\n/g, '\r\n');

// --- listener: raw HTTP/1.x framing -------------------------------------------
const L = 'listener.ndjson';
// uWS answers any input it cannot parse with 505 at once: as good as a 400 at the framing level.
const rawCase = (id: string, raw: string, note: string, accept = REJECT, extra: Partial<Case> = {}) =>
  add(L, { id: `raw-${id}`, surface: 'listener', kind: 'raw', raw, accept: accept.includes('4xx') && !accept.includes('505') ? [...accept, '505'] : accept, note, ...extra });

// Request lines
const lines: Array<[string, string, string[]?]> = [
  ['empty-line-only', '\r\n\r\n', ['4xx', 'close']],
  ['garbage', 'HELLO\r\n\r\n'],
  ['no-version', 'GET /api/\r\n\r\n'],
  ['no-target', 'GET HTTP/1.1\r\nHost: {{host}}\r\n\r\n'],
  ['two-spaces', 'GET  /api/ HTTP/1.1\r\nHost: {{host}}\r\n\r\n'],
  ['tab-separator', 'GET\t/api/\tHTTP/1.1\r\nHost: {{host}}\r\n\r\n'],
  ['space-in-target', 'GET /api/a b HTTP/1.1\r\nHost: {{host}}\r\n\r\n'],
  ['trailing-space-version', 'GET /api/ HTTP/1.1 \r\nHost: {{host}}\r\n\r\n'],
  ['lowercase-version', 'GET /api/ http/1.1\r\nHost: {{host}}\r\n\r\n'],
  ['http-0.9', 'GET /api/\r\n'],
  ['http-1.2', 'GET /api/ HTTP/1.2\r\nHost: {{host}}\r\n\r\n', ['4xx', '505', 'close', '2xx']],
  ['http-2.0-line', 'GET /api/ HTTP/2.0\r\nHost: {{host}}\r\n\r\n', ['4xx', '505', 'close']],
  ['http-9.9', 'GET /api/ HTTP/9.9\r\nHost: {{host}}\r\n\r\n', ['4xx', '505', 'close']],
  ['version-garbage', 'GET /api/ HTTP/x.y\r\nHost: {{host}}\r\n\r\n'],
  ['version-huge', 'GET /api/ HTTP/1111111111.1\r\nHost: {{host}}\r\n\r\n', ['4xx', '505', 'close']],
  ['bare-lf', 'GET /api/ HTTP/1.1\nHost: {{host}}\n\n', ['4xx', 'close', '2xx']],
  ['bare-cr', 'GET /api/ HTTP/1.1\rHost: {{host}}\r\r'],
  ['leading-crlf', '\r\n\r\nGET /api/ HTTP/1.1\r\nHost: {{host}}\r\n\r\n', ['2xx', '4xx', 'close']],
  ['target-nul', 'GET /api/\u0000 HTTP/1.1\r\nHost: {{host}}\r\n\r\n'],
  ['target-del', 'GET /api/\u007f HTTP/1.1\r\nHost: {{host}}\r\n\r\n'],
  ['target-ctl', 'GET /api/\u0001 HTTP/1.1\r\nHost: {{host}}\r\n\r\n'],
  ['target-fragment', 'GET /api/#frag HTTP/1.1\r\nHost: {{host}}\r\n\r\n', ['2xx', '4xx', 'close']],
  ['target-star-get', 'GET * HTTP/1.1\r\nHost: {{host}}\r\n\r\n'],
  ['target-no-slash', 'GET api HTTP/1.1\r\nHost: {{host}}\r\n\r\n'],
  ['absolute-form', 'GET http://{{host}}/api/ HTTP/1.1\r\nHost: {{host}}\r\n\r\n', ['2xx', '4xx', '505', 'close']],
  ['absolute-form-other-host', 'GET http://127.0.0.2/api/ HTTP/1.1\r\nHost: {{host}}\r\n\r\n', ['2xx', '4xx', '505', 'close']],
  ['absolute-form-https', 'GET https://{{host}}/api/ HTTP/1.1\r\nHost: {{host}}\r\n\r\n', ['2xx', '4xx', '505', 'close']],
  ['authority-form-get', 'GET {{host}} HTTP/1.1\r\nHost: {{host}}\r\n\r\n'],
  ['target-4k', 'GET /api/{{repeat:4000:a}} HTTP/1.1\r\nHost: {{host}}\r\n\r\n', ['4xx', 'close']],
  ['target-64k', 'GET /api/{{repeat:65536:a}} HTTP/1.1\r\nHost: {{host}}\r\n\r\n', ['4xx', 'close']],
  ['http10-no-host', 'GET /api/ HTTP/1.0\r\n\r\n', ['2xx', '4xx', '505', 'close']],
  ['http10-host', 'GET /api/ HTTP/1.0\r\nHost: {{host}}\r\n\r\n', ['2xx', '4xx', '505', 'close']],
  ['http11-no-host', 'GET /api/ HTTP/1.1\r\n\r\n'],
  ['http2-preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
  ['tls-client-hello', '\u0016\u0003\u0001\u0000\u00a5\u0001\u0000\u0000\u00a1\u0003\u0003{{repeat:32:\u0000}}\u0000\u0000\u0020\u00c0\u002b\u00c0\u002f\u0000\u009c\u0000\u002f\u0001\u0000\u0000\u0058'],
  ['ssl2-hello', '\u0080\u002e\u0001\u0000\u0002\u0000\u0015\u0000\u0000\u0000\u0010'],
  ['binary-noise', '\u00ff\u00fe\u00fd\u0000\u0001\u0002\u0003\r\n\r\n'],
  ['proxy-protocol-v1', 'PROXY TCP4 127.0.0.9 127.0.0.1 1234 80\r\nGET /api/ HTTP/1.1\r\nHost: {{host}}\r\n\r\n'],
  ['utf8-bom-before-method', '\u00ef\u00bb\u00bfGET /api/ HTTP/1.1\r\nHost: {{host}}\r\n\r\n'],
];
// Input that is not a complete request head is followed by EOF, so the server is judged on what it does with it, not on its idle timer.
const incomplete = new Set(['empty-line-only', 'http-0.9']);
// A lenient parse of these is harmless at the edge (the upstream request is rebuilt, never passed through).
const lenient = new Set(['no-version', 'two-spaces', 'http-2.0-line']);
for (const [id, raw, accept] of lines) {
  const acc = accept ?? REJECT;
  rawCase(`line-${id}`, raw, 'malformed or unusual request line: a prompt 4xx (400/505) or an immediate close', lenient.has(id) ? [...acc, '2xx'] : acc, incomplete.has(id) ? { halfClose: true } : {});
}

// Methods
const methods: Array<[string, string[]]> = [
  ['get', ['4xx', 'close', '2xx']], ['GeT', ['4xx', 'close', '2xx']], ['PROPFIND', ['4xx', 'close']], ['TRACE', ['4xx', 'close', '2xx']],
  ['M-SEARCH', ['4xx', 'close']], ['BREW', ['4xx', 'close']], ['PRI', ['4xx', 'close']], ['{{repeat:300:A}}', ['4xx', 'close']],
  ['G\u0000T', ['4xx', 'close']], ['GET\u00ff', ['4xx', 'close']], ['G(T', ['4xx', 'close']], ['QUERY', ['4xx', 'close', '2xx']], ['SEARCH', ['4xx', 'close', '2xx']],
];
for (const [m, accept] of methods) rawCase(`method-${slug(m) || 'bytes'}-${methods.findIndex((x) => x[0] === m)}`, `${m} /api/ HTTP/1.1\r\nHost: {{host}}\r\n\r\n`, 'odd method on the API root: 405/501/400 or close, never a 500', accept);
rawCase('method-connect-authority', 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n', 'CONNECT: the proxy is not a tunnel', REJECT);
rawCase('method-connect-proxy', 'CONNECT {{host}} HTTP/1.1\r\nHost: {{host}}\r\nX-UtilMeta-Proxy-Type: discovery\r\nX-UtilMeta-Service-Name: {{svc}}\r\n\r\n', 'CONNECT with control headers: never tunnelled', REJECT);

// Headers
const H = (h: string, method = 'GET', target = '/api/', extraBody = '') => `${method} ${target} HTTP/1.1\r\nHost: {{host}}\r\n${h}\r\n${extraBody}`;
const headerCases: Array<[string, string, string, string[]?]> = [
  ['name-underscore', 'X_Foo: 1\r\n', 'underscore in a header name (smuggling through CGI-style maps)', ['2xx', '4xx', 'close']],
  ['name-space-before-colon', 'X-Foo : 1\r\n', 'whitespace before the colon must be rejected (RFC 9112 5.1)'],
  ['name-empty', ': 1\r\n', 'empty header name'],
  ['name-nul', 'X-F\u0000o: 1\r\n', 'NUL in a header name'],
  ['name-high-byte', 'X-F\u00e9o: 1\r\n', 'non-token byte in a header name'],
  ['name-slash', 'X/Foo: 1\r\n', 'non-token character in a header name'],
  ['no-colon', 'XFoo 1\r\n', 'header line without a colon'],
  ['value-nul', 'X-Foo: a\u0000b\r\n', 'NUL in a header value'],
  ['value-ctl-01', 'X-Foo: a\u0001b\r\n', 'control character in a header value'],
  ['value-ctl-1f', 'X-Foo: a\u001fb\r\n', 'control character in a header value'],
  ['value-del', 'X-Foo: a\u007fb\r\n', 'DEL in a header value'],
  ['value-bare-cr', 'X-Foo: a\rb\r\n', 'bare CR inside a header value'],
  ['value-high-bytes', 'X-Foo: \u00ff\u00fe\u00c0\u00af\r\n', 'obs-text in a value: allowed by RFC 9110 but must not crash', ['2xx', '4xx', 'close']],
  ['obs-fold', 'X-Foo: a\r\n  b\r\n', 'obs-fold: RFC 9112 says reject with 400 (or replace with SP)'],
  ['obs-fold-tab', 'X-Foo: a\r\n\tb\r\n', 'obs-fold with a tab'],
  ['first-header-folded', ' X-Foo: a\r\n', 'a header line starting with whitespace right after the request line'],
  ['host-twice', 'Host: 127.0.0.2\r\n', 'two Host headers: RFC 9112 3.2 says 400'],
  ['baseline-valid', 'X-A: 1\r\n', 'control case: a valid request must still get 200', ['2xx']],
  ['value-8k', 'X-Big: {{repeat:8000:a}}\r\n', 'one 8 KB header: within common limits', ['2xx', '4xx', 'close']],
  ['value-20k', 'X-Big: {{repeat:20000:a}}\r\n', 'one 20 KB header: over nginx-like 8/16 KB limits, 431 or close expected', ['2xx', '4xx', 'close']],
  ['value-100k', 'X-Big: {{repeat:100000:a}}\r\n', '100 KB of header: 431 or close', ['4xx', 'close']],
  ['value-1m', 'X-Big: {{repeat:1048576:a}}\r\n', '1 MB of header: 431 or close, memory stays bounded', ['4xx', 'close']],
  ['count-101', '{{repeat:101:X-H: v\r\n}}', '101 headers (uWS limit is 100): 431 or 400 at once', ['2xx', '4xx', 'close']],
  ['count-200', '{{repeat:200:X-H: v\r\n}}', '200 headers: 431 or 400 at once', ['2xx', '4xx', 'close']],
  ['count-2000', '{{repeat:2000:X-H: v\r\n}}', '2000 headers: 431 or 400 at once', ['4xx', 'close']],
  ['expect-100', 'Expect: 100-continue\r\n', 'Expect on a bodyless GET', ['2xx', '4xx', 'close', '1xx']],
  ['expect-junk', 'Expect: teapot\r\n', 'unknown expectation: 417 or ignored', ['2xx', '4xx', 'close']],
  ['connection-junk', 'Connection: \u00ff, close, , ,\r\n', 'junk Connection tokens', ['2xx', '4xx', 'close']],
  ['upgrade-h2c', 'Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n', 'h2c upgrade: never 101', ['2xx', '4xx', 'close']],
];
for (const [id, h, note, accept] of headerCases) rawCase(`header-${id}`, H(h), note, accept ?? REJECT);

// Body framing (on POST /api/registry, which reads bodies, and on the proxy, which streams them)
const PX = 'X-UtilMeta-Proxy-Type: discovery\r\nX-UtilMeta-Service-Name: {{svc}}\r\nX-Corpus-Case: {{id}}\r\n';
const framing: Array<[string, string, string, string[]?, Partial<Case>?]> = [
  ['cl-duplicate-differ', 'Content-Length: 1\r\nContent-Length: 2\r\n\r\nab', 'two different Content-Length values: RFC 9112 6.3 says 400'],
  ['cl-duplicate-same', 'Content-Length: 2\r\nContent-Length: 2\r\n\r\nab', 'repeated identical Content-Length: may be accepted or refused', ['2xx', '4xx', 'close']],
  ['cl-list', 'Content-Length: 2, 2\r\n\r\nab', 'Content-Length as a list', ['2xx', '4xx', 'close']],
  ['cl-list-differ', 'Content-Length: 1, 2\r\n\r\nab', 'Content-Length list with different values'],
  ['cl-negative', 'Content-Length: -1\r\n\r\n', 'negative Content-Length'],
  ['cl-plus', 'Content-Length: +2\r\n\r\nab', 'signed Content-Length'],
  ['cl-hex', 'Content-Length: 0x2\r\n\r\nab', 'hex Content-Length'],
  ['cl-float', 'Content-Length: 2.0\r\n\r\nab', 'fractional Content-Length'],
  ['cl-space-inside', 'Content-Length: 1 2\r\n\r\nab', 'space inside Content-Length'],
  ['cl-alpha', 'Content-Length: abc\r\n\r\n', 'non-numeric Content-Length'],
  ['cl-empty', 'Content-Length:\r\n\r\n', 'empty Content-Length'],
  ['cl-huge', 'Content-Length: 99999999999999999999999\r\n\r\nab', 'Content-Length beyond 2^64', ['4xx', 'close']],
  ['cl-over-limit', 'Content-Length: 1073741824\r\n\r\nab', '1 GiB declared: 413 at once (or close)', ['4xx', 'close'], { halfClose: true }],
  ['cl-short-body', 'Content-Length: 10\r\n\r\nabc', 'body shorter than declared, then EOF', REJECT, { halfClose: true }],
  ['cl-te-chunked', 'Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 'Content-Length with Transfer-Encoding: reject (or drop CL and close after)', ['4xx', 'close'], { maxResponses: 1 }],
  ['te-cl-chunked', 'Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n', 'Transfer-Encoding before Content-Length', ['4xx', 'close'], { maxResponses: 1 }],
  ['te-gzip', 'Transfer-Encoding: gzip\r\n\r\nabc', 'final transfer coding is not chunked: 400 (RFC 9112 6.3)', ['4xx', 'close', '501']],
  ['te-chunked-gzip', 'Transfer-Encoding: chunked, gzip\r\n\r\nabc', 'chunked not last', ['4xx', 'close', '501']],
  ['te-double-chunked', 'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 'chunked applied twice', ['4xx', 'close']],
  ['te-chunked-upper', 'Transfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n', 'case-insensitive coding name', ['2xx', '4xx', 'close']],
  ['te-xchunked', 'Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n', 'unknown coding', ['4xx', 'close', '501']],
  ['te-space-name', 'Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n', 'space before colon on Transfer-Encoding', ['4xx', 'close']],
  ['te-http10', 'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 'chunked body', ['2xx', '4xx', 'close']],
  ['chunk-size-alpha', 'Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n', 'bad chunk size'],
  ['chunk-size-negative', 'Transfer-Encoding: chunked\r\n\r\n-2\r\nab\r\n0\r\n\r\n', 'negative chunk size'],
  ['chunk-size-huge', 'Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nab\r\n0\r\n\r\n', 'chunk size overflow', ['4xx', 'close'], { halfClose: true }],
  ['chunk-size-0x', 'Transfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n', '0x prefix on a chunk size'],
  ['chunk-size-space', 'Transfer-Encoding: chunked\r\n\r\n2 \r\nab\r\n0\r\n\r\n', 'whitespace after chunk size', ['2xx', '4xx', 'close']],
  ['chunk-ext-junk', 'Transfer-Encoding: chunked\r\n\r\n2;\u0000=\u0001\r\nab\r\n0\r\n\r\n', 'control bytes in a chunk extension'],
  ['chunk-ext-long', 'Transfer-Encoding: chunked\r\n\r\n2;{{repeat:100000:x}}\r\nab\r\n0\r\n\r\n', 'huge chunk extension', ['4xx', 'close']],
  ['chunk-missing-crlf', 'Transfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n', 'chunk data longer than its size'],
  ['chunk-lf-only', 'Transfer-Encoding: chunked\r\n\r\n2\nab\n0\n\n', 'bare LF in chunk framing', ['2xx', '4xx', 'close']],
  ['chunk-no-terminator', 'Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n', 'chunked body cut before the last chunk, then EOF', REJECT, { halfClose: true }],
  ['chunk-trailer-junk', 'Transfer-Encoding: chunked\r\n\r\n0\r\nX\u0000: y\r\n\r\n', 'NUL in a trailer name'],
  ['chunk-trailer-huge', 'Transfer-Encoding: chunked\r\n\r\n0\r\n{{repeat:2000:X-T: v\r\n}}\r\n', 'thousands of trailer lines', ['2xx', '4xx', 'close']],
  ['smuggle-cl-te-get', 'Content-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/healthz HTTP/1.1\r\nHost: {{host}}\r\n\r\n', 'CL.TE desync: the inner request must never be answered separately', ['4xx', 'close'], { maxResponses: 1 }],
  ['smuggle-te-space', 'Transfer-Encoding:\tchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n', 'TE with a tab plus CL', ['4xx', 'close'], { maxResponses: 1 }],
  ['smuggle-te-vertical-tab', 'Transfer-Encoding:\u000bchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n', 'TE with a vertical tab plus CL', ['4xx', 'close'], { maxResponses: 1 }],
  ['body-on-get', 'Content-Length: 5\r\n\r\nhello', 'GET with a body (allowed, read and dropped)', ['2xx', '4xx', 'close']],
];
for (const [id, h, note, accept, extra] of framing) {
  rawCase(`body-registry-${id}`, H(h.split('\r\n\r\n')[0] + '\r\n', 'POST', '/api/registry', h.slice(h.indexOf('\r\n\r\n') + 4)), `POST /api/registry: ${note}`, accept ?? REJECT, extra);
  rawCase(`body-proxy-${id}`, H(PX + h.split('\r\n\r\n')[0] + '\r\n', 'POST', '/api/proxy/echo', h.slice(h.indexOf('\r\n\r\n') + 4)), `POST through the proxy: ${note} (the upstream must never see ambiguous framing)`, accept ?? REJECT, extra);
}
// Pipelining and slow/partial input
rawCase('pipeline-two-gets', 'GET /api/ HTTP/1.1\r\nHost: {{host}}\r\n\r\nGET /api/healthz HTTP/1.1\r\nHost: {{host}}\r\n\r\n', 'two pipelined requests: both answered in order', ['2xx'], { maxResponses: 2 });
rawCase('pipeline-then-garbage', 'GET /api/ HTTP/1.1\r\nHost: {{host}}\r\n\r\n\u0000\u0001garbage\r\n\r\n', 'valid request then garbage: first answered, then 400 or close', ['2xx', '4xx', 'close'], { maxResponses: 2 });
rawCase('truncated-headers', 'GET /api/ HTTP/1.1\r\nHost: {{host}}\r\nX-A: 1', 'EOF in the middle of the headers', REJECT, { halfClose: true });
rawCase('truncated-request-line', 'GET /api/ HT', 'EOF in the middle of the request line', REJECT, { halfClose: true });

// --- proxy: path tricks ------------------------------------------------------------
const P = 'proxy-path.ndjson';
const tricks: Array<[string, string, string[]?]> = [
  ['dotdot', '/../../etc/passwd'], ['dotdot-mid', '/a/../../b'], ['dot', '/./a/./b'], ['dotdot-trailing', '/a/..'],
  ['pct-dotdot-lower', '/%2e%2e/%2e%2e/b'], ['pct-dotdot-upper', '/%2E%2E/x'], ['pct-dot-mixed', '/.%2e/x'], ['pct-dot-mixed2', '/%2e./x'],
  ['pct-slash', '/a%2Fb'], ['pct-slash-dotdot', '/..%2F..%2Fx'], ['pct-backslash', '/..%5c..%5cx'], ['backslash', '/..\\..\\x'],
  ['double-slash', '//x'], ['triple-slash', '///127.0.0.2/x'], ['scheme-relative', '//127.0.0.2:1/x'], ['double-pct', '/%252e%252e/x'],
  ['overlong-dot', '/%c0%ae%c0%ae/x'], ['overlong-slash', '/..%c0%afx'], ['pct-nul', '/a%00b'], ['pct-bad', '/a%zz'],
  ['pct-truncated', '/a%'], ['pct-truncated2', '/a%4'], ['pct-high', '/%ff%fe'], ['pct-crlf', '/a%0d%0aX-Injected:%201'],
  ['raw-high-bytes', '/\u00ff\u00fe'], ['raw-utf8', '/\u00c3\u00a9'], ['raw-overlong', '/\u00c0\u00ae\u00c0\u00ae/x'], ['semicolon', '/..;/x'],
  ['query-dotdot', '?a=/../../x'], ['query-bad-pct', '?a=%zz&b=%'], ['query-high', '?\u00ff=\u00fe'], ['query-huge', '?{{repeat:16000:q}}', ['2xx', '4xx', 'close']],
  ['at-sign', '/@127.0.0.2/x'], ['colon', '/:1/x'], ['many-dotdot', '{{repeat:200:/..}}/x'], ['long-path', '/{{repeat:8000:a}}', ['2xx', '4xx', 'close']],
  ['unicode-dot', '/\u00e2\u0080\u00a4\u00e2\u0080\u00a4/x'], ['fullwidth-dot', '/%ef%bc%8e%ef%bc%8e/x'], ['tab-pct', '/a%09b'], ['dotdot-no-slash', '..'],
  ['proxy-prefix-confusion', 'x/../../registry'], ['proxy-dotdot-registry', '/../registry'],
];
// A correct proxy forwards a normalized path below the service's base URL, or refuses it; never a 5xx.
for (const [id, p, accept] of tricks) {
  add(P, {
    id: `path-${id}`, surface: 'proxy-path', kind: 'raw',
    raw: `GET /api/proxy${p} HTTP/1.1\r\nHost: {{host}}\r\n${PX}\r\n`,
    accept: accept ?? ['2xx', '4xx', 'close'],
    note: 'path trick through discovery: forwarded only inside the base path with dot-segments resolved, or refused; never a 5xx',
  });
}
for (const [id, p] of [['dotdot', '/../api/registry'], ['pct-dotdot', '/api/%2e%2e/registry'], ['dot', '/api/./healthz'], ['double-slash', '//api/'], ['backslash', '/api\\registry'], ['high', '/api/\u00ff'], ['pct-bad', '/api/%'], ['nul', '/api/%00']]) {
  add(P, { id: `api-path-${id}`, surface: 'listener', kind: 'raw', raw: `GET ${p} HTTP/1.1\r\nHost: {{host}}\r\n\r\n`, accept: ['2xx', '4xx', 'close'], note: 'path trick on the local API: never a 5xx' });
}

// --- proxy: control headers with junk -------------------------------------------
const C = 'proxy-control.ndjson';
const controlHeaders = [
  'X-UtilMeta-Proxy-Type', 'X-Proxy-Type', 'X-UtilMeta-Service-Name', 'X-Service-Name', 'X-UtilMeta-Accept-Version', 'X-Accept-Version',
  'X-UtilMeta-Instance-Id', 'X-Instance-Id', 'X-UtilMeta-Request-Timeout', 'X-Request-Timeout', 'X-UtilMeta-Operation-Idempotent',
  'X-Operation-Idempotent', 'X-UtilMeta-Node-Id', 'X-Node-Id', 'X-UtilMeta-Cluster-Id', 'X-Cluster-Id', 'Proxy-Authorization',
  'X-UtilMeta-Proxy-Token', 'X-Proxy-Token', 'X-Forwarded-For', 'X-Request-Id',
];
const junk: Array<[string, string]> = [
  ['empty', ''], ['spaces', '   '], ['high-bytes', '\u00ff\u00fe\u00c0'], ['utf8', '\u00e6\u009c\u008d\u00e5\u008a\u00a1'], ['long-8k', '{{repeat:8000:z}}'],
  ['negative', '-1'], ['nan', 'NaN'], ['infinity', 'Infinity'], ['exp-overflow', '1e309'], ['list', 'a, b, ,c'],
  ['json', '{"a":1}'], ['dotdot', '../../x'], ['semver-junk', '>=1.0.0 <0.0.0 || ^x'], ['tab-inside', 'a\tb'],
];
for (const h of controlHeaders) {
  for (const [jid, v] of junk) {
    // Swap the junk in for the header; the other control headers stay valid so the junk is what gets judged.
    const base: Array<[string, string]> = [['X-UtilMeta-Proxy-Type', 'discovery'], ['X-UtilMeta-Service-Name', '{{svc}}']];
    const headers = base.filter(([n]) => n.toLowerCase() !== h.toLowerCase());
    headers.push([h, v]);
    add(C, {
      id: `control-${slug(h)}-${jid}`, surface: 'proxy-control', kind: 'http', method: 'GET', target: '/api/proxy/echo', headers,
      // 501: a mode not enabled on this node; 503: no instance matches (version/instance junk).
      accept: ['2xx', '4xx', '501', '503'],
      note: `junk ${h}: a 4xx naming the header, or ignored when the header is optional; never a 500/502`,
    });
  }
}
// Duplicate / conflicting control headers
for (const [id, hs] of [
  ['type-twice', [['X-UtilMeta-Proxy-Type', 'discovery'], ['X-UtilMeta-Proxy-Type', 'forward'], ['X-UtilMeta-Service-Name', '{{svc}}']]],
  ['type-and-alias-conflict', [['X-UtilMeta-Proxy-Type', 'discovery'], ['X-Proxy-Type', 'operations'], ['X-UtilMeta-Service-Name', '{{svc}}']]],
  ['service-twice', [['X-UtilMeta-Proxy-Type', 'discovery'], ['X-UtilMeta-Service-Name', '{{svc}}'], ['X-UtilMeta-Service-Name', 'other']]],
  ['timeout-twice', [['X-UtilMeta-Proxy-Type', 'discovery'], ['X-UtilMeta-Service-Name', '{{svc}}'], ['X-UtilMeta-Request-Timeout', '1'], ['X-UtilMeta-Request-Timeout', '1000000']]],
  ['no-headers', []],
  ['types-forward', [['X-UtilMeta-Proxy-Type', 'forward']]],
  ['types-supervisor', [['X-UtilMeta-Proxy-Type', 'supervisor'], ['X-UtilMeta-Node-Id', '\u00ff']]],
  ['types-operations', [['X-UtilMeta-Proxy-Type', 'operations'], ['X-UtilMeta-Node-Id', '../x'], ['Proxy-Authorization', 'Bearer \u00ff.\u00fe.\u00fd']]],
  ['proxy-auth-bearer-junk-jwt', [['X-UtilMeta-Proxy-Type', 'supervisor'], ['Proxy-Authorization', 'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.']]],
  ['proxy-auth-many-parts', [['X-UtilMeta-Proxy-Type', 'supervisor'], ['Proxy-Authorization', 'a b c d e f']]],
  ['xff-huge-chain', [['X-UtilMeta-Proxy-Type', 'discovery'], ['X-UtilMeta-Service-Name', '{{svc}}'], ['X-Forwarded-For', '{{repeat:2000:127.0.0.1, }}127.0.0.1']]],
  ['xff-junk-ip', [['X-UtilMeta-Proxy-Type', 'discovery'], ['X-UtilMeta-Service-Name', '{{svc}}'], ['X-Forwarded-For', '999.1.1.1, ::::, [::1]']]],
  ['instance-id-unknown', [['X-UtilMeta-Proxy-Type', 'discovery'], ['X-UtilMeta-Service-Name', '{{svc}}'], ['X-UtilMeta-Instance-Id', '99999999999999999999']]],
] as Array<[string, Array<[string, string]>]>) {
  add(C, { id: `control-combo-${id}`, surface: 'proxy-control', kind: 'http', method: 'GET', target: '/api/proxy/echo', headers: hs, accept: ['2xx', '4xx', '501', '503'], note: 'conflicting or repeated control headers: one is chosen deterministically or 4xx' });
}

// --- registry: registration bodies -------------------------------------------------
const R = 'registry.ndjson';
const valid: Record<string, unknown> = {
  name: '{{svc}}', title: null, description: '', address: '{{address}}', base_url: '{{base}}', ops_api: '{{base}}/ops',
  instance_id: '{{instance_id}}', cwd: '/srv/app', version: '1.2.3', asynchronous: true, production: false, language: 'python',
  language_version: '3.11.2', utilmeta_version: '2.9.0', backend: 'starlette', backend_version: '0.26.1', resources: null,
};
const stringFields = ['name', 'title', 'description', 'address', 'base_url', 'ops_api', 'cwd', 'version', 'language', 'language_version', 'utilmeta_version', 'backend', 'backend_version'];
const required = new Set(['name', 'address', 'base_url', 'ops_api', 'instance_id', 'version', 'language', 'utilmeta_version']);
const wrong: Array<[string, string]> = [['int', '7'], ['float', '1.5'], ['true', 'true'], ['array', '["x"]'], ['object', '{"a":"b"}'], ['huge-int', '1e400'], ['nested', '[[[[[[{}]]]]]]']];
const regBody = (field: string, rawValue: string | null) => {
  // Built as text so number lexemes (1e400, 1.5) reach the parser exactly as written.
  const parts = Object.entries(valid).map(([k, v]) => (k === field ? (rawValue === null ? null : `"${k}": ${rawValue}`) : `"${k}": ${JSON.stringify(v)}`)).filter((x) => x !== null);
  return `{${parts.join(', ')}}`;
};
const regCase = (id: string, body: string, note: string, extra: Partial<Case> = {}) =>
  add(R, { id: `register-${id}`, surface: 'registry', kind: 'http', method: 'POST', target: '/api/registry', headers: [['Content-Type', 'application/json']], body, bodyEncoding: 'utf8', accept: ['4xx'], note, ...extra });
for (const f of [...stringFields, 'instance_id', 'asynchronous', 'production', 'resources']) {
  for (const [wid, v] of wrong) {
    if (f === 'instance_id' && wid === 'int') continue; // an integer id is valid
    if ((f === 'asynchronous' || f === 'production') && wid === 'true') continue;
    if (f === 'resources' && (wid === 'object' || wid === 'nested')) continue;
    regCase(`${slug(f)}-${wid}`, regBody(f, v), `registration field '${f}' as ${wid}: 400 naming the field, no row written`);
  }
  if (stringFields.includes(f)) {
    regCase(`${slug(f)}-nul`, regBody(f, '"a\\u0000b"'), `NUL inside '${f}': PostgreSQL text cannot hold it, so 400 (not a 500 from the INSERT)`);
    regCase(`${slug(f)}-lone-surrogate`, regBody(f, '"a\\ud800b"'), `lone surrogate in '${f}': 400 or stored safely, never a 500`, { accept: ['2xx', '4xx'] });
    regCase(`${slug(f)}-long`, regBody(f, '"{{repeat:5000:x}}"'), `5000-character '${f}': 400 naming the limit (or truncated for cwd), never a 500`, ['cwd', 'description', 'title', 'base_url', 'ops_api'].includes(f) ? { accept: ['2xx', '4xx'] } : {});
  }
  if (required.has(f)) {
    regCase(`${slug(f)}-missing`, regBody(f, null), `required '${f}' missing: 400`);
    regCase(`${slug(f)}-null`, regBody(f, 'null'), `required '${f}' null: 400`);
  }
  if (f === 'asynchronous' || f === 'production') regCase(`${slug(f)}-string`, regBody(f, '"true"'), `'${f}' as the string "true": 400`);
}
for (const [id, v] of [
  ['scheme-relative', '"//127.0.0.2/api"'], ['javascript', '"javascript:alert(1)"'], ['ftp', '"ftp://{{address}}/api"'], ['userinfo', '"http://x@{{address}}/api"'],
  ['other-host', '"http://127.0.0.2:1/api"'], ['dotdot', '"http://{{address}}/api/../../x"'], ['crlf', '"http://{{address}}/api\\r\\nX: 1"'], ['spaces', '"http://{{address}}/a b"'],
  ['backslash', '"http:\\\\\\\\127.0.0.2\\\\api"'], ['empty', '""'], ['only-scheme', '"http://"'], ['ipv6-junk', '"http://[::1/api"'],
]) regCase(`base-url-${id}`, regBody('base_url', v), 'base_url must be an http(s) URL on the instance address (scheme-relative and dot-segments included): 400');
for (const [id, v] of [
  ['port-99999', '"127.0.0.1:99999"'], ['port-negative', '"127.0.0.1:-1"'], ['port-alpha', '"127.0.0.1:http"'], ['ipv6-unclosed', '"[::1:80"'],
  ['path', '"127.0.0.1:80/x"'], ['userinfo', '"a@127.0.0.1:80"'], ['space', '"127.0.0 .1:80"'], ['empty', '""'], ['only-colon', '":"'], ['nul-inside-ip', '"127.0.0.1\\u0000:80"'],
]) regCase(`address-${id}`, regBody('address', v), 'malformed address: 400 naming address (no DNS lookup of junk)');
for (const [id, body, enc] of [
  ['empty-body', '', 'utf8'], ['not-json', 'hello', 'utf8'], ['json-array', '[]', 'utf8'], ['json-string', '"x"', 'utf8'], ['json-number', '1', 'utf8'],
  ['json-null', 'null', 'utf8'], ['truncated', '{"name": "x"', 'utf8'], ['trailing-garbage', `${regBody('', null)} x`, 'utf8'],
  ['deep-nesting', '{"resources": {{repeat:100000:[}}{{repeat:100000:]}}}', 'utf8'], ['deep-object', '{"resources": {{repeat:50000:{"a":}}1{{repeat:50000:}}}}', 'utf8'],
  ['invalid-utf8', '{"name": "\u00ff\u00fe", "address": "{{address}}"}', 'latin1'], ['bom', `\u00ef\u00bb\u00bf${regBody('', null)}`, 'latin1'],
  ['duplicate-keys', `{"name": "a", "name": 7, ${regBody('name', null).slice(1)}`, 'utf8'], ['nan-literal', regBody('version', 'NaN'), 'utf8'],
  ['utf16', '\u00ff\u00fe{\u0000}\u0000', 'latin1'],
] as Array<[string, string, 'utf8' | 'latin1']>) regCase(`doc-${id}`, body, 'not a registration document: 400, no row written', { bodyEncoding: enc });
regCase('content-type-form', regBody('version', '7'), 'wrong content-type and wrong type: 400 or 415', { headers: [['Content-Type', 'application/x-www-form-urlencoded']] });
regCase('huge-body', `{"resources": {"x": "{{repeat:3000000:a}}"}}`, 'over the body limit: 413 before parsing', { accept: ['4xx', 'close'] });

// --- deregister -----------------------------------------------------------------
const D = 'deregister.ndjson';
for (const [id, key] of [
  ['pct-alone', '%'], ['pct-zz', '%zz'], ['pct-truncated', 'a%4'], ['pct-ff', '%ff'], ['pct-overlong', '%c0%af'], ['pct-surrogate', '%ed%a0%80'],
  ['pct-nul', '%00'], ['pct-crlf', '%0d%0a'], ['pct-slash', '..%2f..%2f'], ['dotdot', '../../registry'], ['raw-high', '\u00ff'], ['pct-utf8-cut', '%e0%a4%a'],
  ['long', '{{repeat:5000:9}}'], ['bigint-overflow', '99999999999999999999999'], ['negative', '-1'], ['float', '1.5'], ['empty', ''],
  ['pct-space', '%20'], ['ipv6-junk', '[::1'], ['sql-ish', "1'%20OR%20'1'='1"],
]) {
  add(D, { id: `deregister-${id}`, surface: 'deregister', kind: 'http', method: 'DELETE', target: `/api/registry/${key}`, headers: [], accept: ['4xx'], note: 'unknown or undecodable instance key: 400/404 naming the key, nothing deleted' });
}
for (const m of ['PUT', 'PATCH', 'POST']) add(D, { id: `deregister-method-${m.toLowerCase()}`, surface: 'deregister', kind: 'http', method: m, target: '/api/registry/1', headers: [], accept: ['4xx'], note: 'wrong method on an instance: 405' });

// --- ops: the node's own OperationsAPI ----------------------------------------------
const O = 'ops.ndjson';
const sup = (initKey: string, extra = '') => `{"node_id": "n-1", "ops_api": "http://127.0.0.1:1/ops", "init_key": ${initKey}${extra}}`;
for (const [id, v] of [['int', '7'], ['float', '1.5'], ['true', 'true'], ['array', '["k"]'], ['object', '{"k":1}'], ['huge-int', '1e400'], ['nul-string', '"a\\u0000b"'], ['long', '"{{repeat:10000:k}}"'], ['unknown', '"no-such-key"']]) {
  add(O, { id: `ops-init-key-${id}`, surface: 'ops', kind: 'http', method: 'POST', target: '/api/ops/', headers: [['Content-Type', 'application/json']], body: sup(v), bodyEncoding: 'utf8', accept: ['4xx'], note: 'wrong-typed or unknown init_key: 400/404 before any SQL, no row written' });
}
for (const [id, body] of [['node-id-int', '{"node_id": 1, "ops_api": "x", "init_key": "k"}'], ['ops-api-array', '{"node_id": "n", "ops_api": [], "init_key": "k"}'], ['array-body', '[]'], ['null-body', 'null'], ['not-json', '{'], ['empty', ''], ['public-key-int', sup('"k"', ', "public_key": 5')], ['url-object', sup('"k"', ', "url": {}')]]) {
  add(O, { id: `ops-body-${id}`, surface: 'ops', kind: 'http', method: 'POST', target: '/api/ops/', headers: [['Content-Type', 'application/json']], body, bodyEncoding: 'utf8', accept: ['4xx'], note: 'not SupervisorData: 400' });
}
for (const [id, hs, target] of [
  ['no-node', [['Authorization', 'Bearer x']], '/api/ops/token'], ['junk-bearer', [['X-Node-Id', 'n'], ['Authorization', 'Bearer \u00ff\u00fe']], '/api/ops/token'],
  ['alg-none', [['X-Node-Id', 'n'], ['Authorization', 'Bearer eyJhbGciOiJub25lIn0.eyJqdGkiOiJ4In0.']], '/api/ops/openapi'],
  ['huge-token', [['X-Node-Id', 'n'], ['Authorization', 'Bearer {{repeat:20000:a}}']], '/api/ops/token/scope'],
  ['node-query-junk', [['Authorization', 'Bearer a.b.c']], '/api/ops/token?node=%ff%zz'], ['basic-auth', [['X-Node-Id', 'n'], ['Authorization', 'Basic \u00ff']], '/api/ops/token'],
  ['node-id-high', [['X-UtilMeta-Node-Id', '\u00ff'], ['Authorization', 'Bearer a.b.c']], '/api/ops/token'],
] as Array<[string, Array<[string, string]>, string]>) {
  add(O, { id: `ops-auth-${id}`, surface: 'ops', kind: 'http', method: 'GET', target, headers: hs, accept: ['4xx'], note: 'bad credentials on the OperationsAPI: 400/401/403' });
}
add(O, { id: 'ops-revoke-wrong-body', surface: 'ops', kind: 'http', method: 'POST', target: '/api/ops/token/revoke', headers: [['X-Node-Id', 'n'], ['Authorization', 'Bearer a.b.c']], body: '{"ids": 1}', bodyEncoding: 'utf8', accept: ['4xx'], note: 'unauthenticated revoke: 4xx' });

// --- CORS / Origin ------------------------------------------------------------------
const O2 = 'cors.ndjson';
for (const [id, origin] of [['high-bytes', '\u00ff\u00fe'], ['latin1-e-acute', 'http://caf\u00e9.test'], ['utf8', 'http://\u00e6\u009c\u008d.test'], ['null', 'null'], ['long', 'http://{{repeat:8000:o}}.test'], ['spaces', ' '], ['tab', 'a\tb'], ['list', 'http://a.test http://b.test']]) {
  for (const [tid, method, target, extra] of [
    ['api', 'GET', '/api/', []], ['preflight', 'OPTIONS', '/api/proxy/echo', [['Access-Control-Request-Method', 'POST'], ['Access-Control-Request-Headers', '\u00ff, x-a']]],
    ['proxy', 'GET', '/api/proxy/echo', [['X-UtilMeta-Proxy-Type', 'discovery'], ['X-UtilMeta-Service-Name', '{{svc}}']]],
  ] as Array<[string, string, string, Array<[string, string]>]>) {
    add(O2, { id: `origin-${id}-${tid}`, surface: 'cors', kind: 'http', method, target, headers: [['Origin', origin], ...extra], accept: ['2xx', '4xx'], note: 'Origin that is not plain ASCII: echoed safely or not at all; never a 500' });
  }
}
add(O2, { id: 'origin-twice', surface: 'cors', kind: 'http', method: 'GET', target: '/api/', headers: [['Origin', 'http://a.test'], ['Origin', 'http://b.test']], accept: ['2xx', '4xx'], note: 'two Origin headers' });

// --- WebSocket handshakes --------------------------------------------------------------
const W = 'websocket.ndjson';
const ws = (key: string | null, version: string | null, extra: Array<[string, string]> = []) => {
  const h: Array<[string, string]> = [['Upgrade', 'websocket'], ['Connection', 'Upgrade']];
  if (key !== null) h.push(['Sec-WebSocket-Key', key]);
  if (version !== null) h.push(['Sec-WebSocket-Version', version]);
  return [...h, ...extra];
};
const PXH: Array<[string, string]> = [['X-UtilMeta-Proxy-Type', 'discovery'], ['X-UtilMeta-Service-Name', '{{svc}}']];
// Every listener checks the handshake before the proxy sees it: a bad key or a
// repeated one is a 400, a missing or other version a 426 (with
// Sec-WebSocket-Version: 13), never a 101 or a 5xx.
const K = 'dGhlIHNhbXBsZSBub25jZQ==';
for (const [id, key, version, status, extra] of [
  ['no-key', null, '13', '400'], ['short-key', 'abc', '13', '400'], ['non-base64-key', '!!!!!!!!!!!!!!!!!!!!!!!!', '13', '400'], ['long-key', 'A'.repeat(200), '13', '400'],
  ['key-high-bytes', '\u00ff\u00fe\u00fd\u00fc', '13', '400'], ['two-keys', K, '13', '400', [['Sec-WebSocket-Key', 'AQIDBAUGBwgJCgsMDQ4PEA==']]],
  ['key-24-not-16-bytes', 'AAAAAAAAAAAAAAAAAAAAAAA=', '13', '400'], ['key-padding-bits', 'dGhlIHNhbXBsZSBub25jZR==', '13', '400'],
  ['version-0', K, '0', '426'], ['version-8', K, '8', '426'], ['version-14', K, '14', '426'],
  ['version-junk', K, 'abc', '426'], ['version-missing', K, null, '426'], ['version-list', K, '13, 8', '426'], ['two-versions', K, '13', '426', [['Sec-WebSocket-Version', '13']]],
  ['protocol-junk', K, '13', '400', [['Sec-WebSocket-Protocol', '\u00ff,,,']]], ['protocol-empty-token', K, '13', '400', [['Sec-WebSocket-Protocol', 'chat, ,x']]],
  ['protocol-twice', K, '13', '400', [['Sec-WebSocket-Protocol', 'chat, chat']]], ['protocol-space', K, '13', '400', [['Sec-WebSocket-Protocol', 'a b']]],
  ['with-body', K, '13', '400', [['Content-Length', '5']]],
] as Array<[string, string | null, string | null, string, Array<[string, string]>?]>) {
  add(W, { id: `ws-proxy-${id}`, surface: 'websocket', kind: 'http', method: 'GET', target: '/api/proxy/ws', headers: [...PXH, ...ws(key, version, extra ?? [])], ...(id === 'with-body' ? { body: 'hello', bodyEncoding: 'utf8' } : {}), accept: [status], note: `bad WebSocket handshake through the proxy: ${status} from the listener, never 101, never a 5xx` });
}
// The same check on the platform types and outside /api/proxy: before any token or route.
for (const [id, target, extra] of [
  ['supervisor-bad-key', '/api/proxy/ws', [['X-UtilMeta-Proxy-Type', 'supervisor'], ['X-UtilMeta-Node-Id', 'n1'], ['Authorization', 'Bearer a.b.c']]],
  ['operations-bad-key', '/api/proxy/ws', [['X-UtilMeta-Proxy-Type', 'operations'], ['X-UtilMeta-Node-Id', 'n1']]],
  ['registry-bad-key', '/api/registry', []], ['console-bad-key', '/console/', []],
] as Array<[string, string, Array<[string, string]>]>) {
  add(W, { id: `ws-${id}`, surface: 'websocket', kind: 'http', method: 'GET', target, headers: [...extra, ...ws('abc', '13')], accept: ['400'], note: 'bad key: 400 from the listener whatever the route or proxy type' });
}
// Valid handshakes whose odd parts the proxy may ignore: proxied (the corpus upstream is plain HTTP, so its answer is relayed).
for (const [id, extra] of [
  ['no-connection-upgrade', [['Connection', 'keep-alive']]], ['extensions-junk', [['Sec-WebSocket-Extensions', 'permessage-deflate; client_max_window_bits=99']]],
] as Array<[string, Array<[string, string]>]>) {
  add(W, { id: `ws-proxy-${id}`, surface: 'websocket', kind: 'http', method: 'GET', target: '/api/proxy/ws', headers: [...PXH, ...ws(K, '13', extra)], accept: ['2xx', '4xx', '502'], note: 'a valid handshake: the upstream\'s own answer (or a 502 naming it), never a 500' });
}
add(W, { id: 'ws-proxy-no-connection-header', surface: 'websocket', kind: 'http', method: 'GET', target: '/api/proxy/ws', headers: [...PXH, ['Upgrade', 'websocket'], ['Sec-WebSocket-Key', K], ['Sec-WebSocket-Version', '13']], accept: ['400'], note: 'Upgrade without Connection: Upgrade is refused by both listeners' });
for (const [id, method, target] of [['post-upgrade', 'POST', '/api/proxy/ws'], ['api-root', 'GET', '/api/'], ['registry', 'GET', '/api/registry']]) {
  add(W, { id: `ws-${id}`, surface: 'websocket', kind: 'http', method, target, headers: [...(target.startsWith('/api/proxy') ? PXH : []), ...ws('dGhlIHNhbXBsZSBub25jZQ==', '13')], accept: ['2xx', '4xx', 'close'], note: 'upgrade where none is offered: a plain answer or 4xx, never 101' });
}
add(W, { id: 'ws-raw-http10-upgrade', surface: 'websocket', kind: 'raw', raw: `GET /api/proxy/ws HTTP/1.0\r\nHost: {{host}}\r\n${PX}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`, accept: ['2xx', '4xx', '505', 'close'], note: 'WebSocket needs HTTP/1.1: never 101 on 1.0' });

let total = 0;
const ids = new Set<string>();
for (const [file, cases] of Object.entries(files)) {
  for (const c of cases) {
    if (ids.has(c.id)) throw new Error(`duplicate case id ${c.id}`);
    ids.add(c.id);
  }
  writeFileSync(new URL(file, import.meta.url), cases.map((c) => JSON.stringify(c)).join('\n') + '\n');
  total += cases.length;
  console.log(`${file.padEnd(22)} ${cases.length}`);
}
console.log(`${'total'.padEnd(22)} ${total}`);
