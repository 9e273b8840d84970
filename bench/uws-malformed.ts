// node --import tsx bench/uws-malformed.ts [<uWS module path> | node]
//
// How a bare uWebSockets.js build (or node:http) answers malformed or unusual
// HTTP: per case, the first response line (or "closed") and the time to it.
// Used to choose the uWS build; it asserts nothing. Loopback only.
import { createRequire } from 'node:module';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';

const which = process.argv[2] ?? 'uWebSockets.js';
const crlf = (s: string) => s.replace(/\n/g, '\r\n');
const many = Array.from({ length: 120 }, (_, i) => `X-H${i}: v`).join('\n');
const clientHello = Buffer.from('16030100a5010000a10303' + '00'.repeat(32) + '000020c02bc02fc02cc030cca9cca8c013c014009c009d002f0035000a01000058', 'hex');
const cases: Record<string, string | Buffer> = {
  'baseline GET': crlf('GET / HTTP/1.1\nHost: a\n\n'),
  'HTTP/1.0 no Host': crlf('GET / HTTP/1.0\n\n'),
  'HTTP/1.0 with Host': crlf('GET / HTTP/1.0\nHost: a\n\n'),
  'HTTP/1.1 no Host': crlf('GET / HTTP/1.1\n\n'),
  'absolute-form': crlf('GET http://127.0.0.1/x HTTP/1.1\nHost: a\n\n'),
  '120 headers': crlf(`GET / HTTP/1.1\nHost: a\n${many}\n\n`),
  'header name with _': crlf('GET / HTTP/1.1\nHost: a\nX_Foo: 1\n\n'),
  'control char in value': crlf('GET / HTTP/1.1\nHost: a\nX-A: a\x01b\n\n'),
  'NUL in value': crlf('GET / HTTP/1.1\nHost: a\nX-A: a\x00b\n\n'),
  'obs-fold': crlf('GET / HTTP/1.1\nHost: a\nX-A: a\n  b\n\n'),
  'HTTP/2 preface': 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n',
  'TLS ClientHello': clientHello,
  'garbage line': 'HELLO\r\n\r\n',
  'bare LF': 'GET / HTTP/1.1\nHost: a\n\n',
  'two Content-Length': crlf('POST / HTTP/1.1\nHost: a\nContent-Length: 1\nContent-Length: 2\n\nab'),
  'CL + TE': crlf('POST / HTTP/1.1\nHost: a\nContent-Length: 3\nTransfer-Encoding: chunked\n\n0\n\n'),
  'bad chunk size': crlf('POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\nzz\nab\n0\n\n'),
  'CL non-numeric': crlf('POST / HTTP/1.1\nHost: a\nContent-Length: abc\n\n'),
  'HTTP/9.9': crlf('GET / HTTP/9.9\nHost: a\n\n'),
  'space in target': crlf('GET /a b HTTP/1.1\nHost: a\n\n'),
  'header 20 KB': crlf(`GET / HTTP/1.1\nHost: a\nX-Big: ${'a'.repeat(20000)}\n\n`),
  'TE gzip only': crlf('POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip\n\n'),
};
const DEADLINE = 15_000;

function probe(port: number, payload: string | Buffer): Promise<{ what: string; ms: number }> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    let done = false;
    const fin = (what: string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ what, ms: Math.round(performance.now() - t0) });
    };
    const timer = setTimeout(() => fin('no answer'), DEADLINE);
    s.on('connect', () => s.write(payload));
    s.on('data', (d) => {
      buf += d.toString('latin1');
      const i = buf.indexOf('\r\n');
      if (i >= 0) fin(buf.slice(0, i));
    });
    s.on('end', () => fin(buf ? buf.split('\r\n')[0] : 'closed'));
    s.on('error', (e: NodeJS.ErrnoException) => fin(`error ${e.code}`));
  });
}

let port = 0;
let stop: () => void;
if (which === 'node') {
  const srv = http.createServer((_req, res) => res.end('ok'));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  port = (srv.address() as AddressInfo).port;
  stop = () => {
    srv.closeAllConnections();
    srv.close();
  };
} else {
  const uws = createRequire(import.meta.url)(which) as typeof import('uWebSockets.js');
  const app = uws.App();
  app.any('/*', (res) => {
    res.onAborted(() => {});
    res.end('ok');
  });
  await new Promise<void>((r) =>
    app.listen('127.0.0.1', 0, (ls) => {
      port = uws.us_socket_local_port(ls);
      stop = () => uws.us_listen_socket_close(ls);
      r();
    }),
  );
}
const results = await Promise.all(Object.entries(cases).map(async ([k, v]) => [k, await probe(port, v)] as const));
console.log(`${which}: first response line per case (all cases in parallel, deadline ${DEADLINE} ms)`);
for (const [k, r] of results) console.log(`${k.padEnd(24)} | ${r.what.slice(0, 44).padEnd(44)} | ${r.ms} ms`);
stop!();
process.exit(0);
