// The floor under the proxy: the smallest relay that can be built on the same stack,
// measured in the same run so the closing numbers can say how much of the proxy's
// cost is the runtime's rather than the request chain's. Not a product: no routing,
// no auth, no header hygiene, no error handling beyond answering 502.
//
//   node bench/floor-proxy.mjs undici <upstream port>  uWS listener + undici Pool.dispatch relay
//   node bench/floor-proxy.mjs raw <upstream port>     uWS listener + a bare keep-alive HTTP/1.1
//                                                      client (content-length responses only)
//   node bench/floor-proxy.mjs h1 <upstream port>      uWS listener + the product's h1 client (dist/)
//   node bench/floor-proxy.mjs protocol <upstream port>  h1, doing the wire work the protocol asks
//                                                      of any implementation (below), and nothing else
// A third argument `node` puts the relay behind node:http instead of uWS.
//
// The protocol floor: every request header is read and forwarded except hop-by-hop,
// Host and the proxy's control headers; X-Forwarded-For carries the peer address
// (uWS reads it with a getpeername per request); every upstream response header is
// relayed except hop-by-hop ones; server-timing, the destination headers and
// x-request-id are added. No registry, access decision, health, metrics or logs.
import { createRequire } from 'node:module';
import net from 'node:net';
import v8 from 'node:v8';
import { Pool } from 'undici';

v8.setFlagsFromString('--no-allocation-site-pretenuring'); // as the product's launcher does
const require = createRequire(import.meta.url);
const uws = require('uWebSockets.js');
const [mode, upstreamPort, listener = 'uws'] = [process.argv[2], Number(process.argv[3]), process.argv[4]];
const ORIGIN = `http://127.0.0.1:${upstreamPort}`;
const BASE_URL = `${ORIGIN}/api`;
const INSTANCE_ID = 'bench-instance-0001';

/** The response side, the same for both listeners: reply(status, flat headers, body) and onAborted. */
function uwsWriter(res) {
  return {
    onAborted: (cb) => res.onAborted(cb),
    reply(status, headers, body) {
      res.cork(() => {
        res.writeStatus(`${status}`);
        for (let i = 0; i < headers.length; i += 2) res.writeHeader(headers[i], headers[i + 1]);
        res.end(body);
      });
    },
  };
}
function nodeWriter(res) {
  return {
    onAborted: (cb) => res.on('close', () => { if (!res.writableFinished) cb(); }),
    reply(status, headers, body) {
      headers.push('content-length', String(body.length));
      res.writeHead(status, headers);
      res.end(body);
    },
  };
}

const DROP_IN = new Set(['host', 'connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-authorization', 'x-forwarded-for', 'content-length']);
// date: the listener writes its own (uWS always does), as the product's listeners do.
const DROP_OUT = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'trailer', 'upgrade', 'date']);
const ridPrefix = `${process.pid.toString(36)}-`;
let rid = 0;
/** A uWS request's headers and peer, read before the callback returns (the request object dies then). */
function uwsHead(res, req) {
  const headers = [];
  req.forEach((k, v) => {
    if (!DROP_IN.has(k) && !k.startsWith('x-utilmeta-')) headers.push(k, v);
  });
  const a = new Uint8Array(res.getRemoteAddress());
  headers.push('x-forwarded-for', a.length === 4 ? `${a[0]}.${a[1]}.${a[2]}.${a[3]}` : `${a[12]}.${a[13]}.${a[14]}.${a[15]}`);
  return headers;
}
function nodeHead(req) {
  const raw = req.rawHeaders;
  const headers = [];
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i].toLowerCase();
    if (!DROP_IN.has(k) && !k.startsWith('x-utilmeta-')) headers.push(k, raw[i + 1]);
  }
  headers.push('x-forwarded-for', req.socket.remoteAddress.replace(/^::ffff:/, ''));
  return headers;
}

/** @type {(path: string, res: any) => void} */
let relay;
/** @type {(path: string, w: ReturnType<typeof uwsWriter>, headers: string[]) => void} */
let relayFull;
if (mode === 'protocol') {
  const pool = await h1Pool();
  class Relay {
    constructor(w, headers) {
      this.w = w;
      this.started = performance.now();
      this.requestId = headers.requestId;
      this.aborted = false;
      this.status = 0;
      this.headers = [];
      this.chunks = [];
      w.onAborted(() => (this.aborted = true));
    }
    onRequestStart() {}
    onResponseStart(_c, status, h) {
      this.status = status;
      const out = this.headers;
      let timing = '';
      for (let i = 0; i < h.length; i += 2) {
        const k = h[i];
        if (k === 'server-timing') timing = `,${h[i + 1]}`;
        else if (!DROP_OUT.has(k)) out.push(k, h[i + 1]);
      }
      out.push('server-timing', `proxy;dur=${Math.round(performance.now() - this.started)}${timing}`,
        'x-utilmeta-proxy-destination-base-url', BASE_URL, 'x-utilmeta-proxy-destination-instance-id', INSTANCE_ID, 'x-request-id', this.requestId);
    }
    onResponseData(_c, chunk) {
      this.chunks.push(chunk);
    }
    onResponseEnd() {
      if (!this.aborted) this.w.reply(this.status, this.headers, this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks));
    }
    onResponseError() {
      if (!this.aborted) this.w.reply(502, [], Buffer.from('bad gateway'));
    }
  }
  relayFull = (path, w, headers) => {
    headers.requestId = `${ridPrefix}${(++rid).toString(36)}`;
    pool.dispatch({ path, method: 'GET', headers }, new Relay(w, headers));
  };
} else if (mode === 'undici' || mode === 'h1') {
  const pool = mode === 'undici'
    ? new Pool(ORIGIN, { connections: 64, pipelining: 1, keepAliveTimeout: 4000 })
    : await h1Pool();
  const headers = mode === 'undici' ? ['host', `127.0.0.1:${upstreamPort}`] : [];
  // A class with its fields set up front: adding properties per response would cost
  // the relay shape transitions a real handler would not pay.
  class Relay {
    constructor(res) {
      this.res = res;
      this.aborted = false;
      this.status = 0;
      this.type = '';
      this.chunks = [];
      res.onAborted(() => (this.aborted = true));
    }
    onRequestStart() {}
    onResponseStart(_c, status, h) {
      this.status = status;
      if (Array.isArray(h)) {
        for (let i = 0; i < h.length; i += 2) if (h[i] === 'content-type') this.type = h[i + 1];
      } else this.type = h['content-type'] ?? '';
    }
    onResponseData(_c, chunk) {
      this.chunks.push(chunk);
    }
    onResponseEnd() {
      if (this.aborted) return;
      const res = this.res;
      res.cork(() => {
        res.writeStatus(`${this.status}`);
        if (this.type) res.writeHeader('content-type', this.type);
        res.end(this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks));
      });
    }
    onResponseError() {
      if (!this.aborted) this.res.cork(() => this.res.writeStatus('502').end('bad gateway'));
    }
  }
  relay = (path, res) => pool.dispatch({ path, method: 'GET', headers }, new Relay(res));
} else if (mode === 'raw') {

  /** @type {net.Socket[]} */
  const idle = [];
  relay = (path, res) => {
    let aborted = false;
    res.onAborted(() => (aborted = true));
    const sock = idle.pop() ?? connect();
    sock.waiter = (status, type, body, closed) => {
      if (!closed) idle.push(sock);
      if (!aborted) res.cork(() => { res.writeStatus(`${status}`); if (type) res.writeHeader('content-type', type); res.end(body); });
    };
    sock.write(`GET ${path} HTTP/1.1\r\nhost: 127.0.0.1:${upstreamPort}\r\n\r\n`);
  };
  function connect() {
    const sock = net.connect(upstreamPort, '127.0.0.1');
    sock.setNoDelay(true);
    // The upstream closes connections idle past its keep-alive timeout (between
    // cells): such a socket leaves the idle list, and a request on it gets a 502
    // rather than waiting forever (which once made this relay serve nothing).
    sock.on('error', () => {});
    sock.on('close', () => {
      const i = idle.indexOf(sock);
      if (i >= 0) idle.splice(i, 1);
      const w = sock.waiter;
      sock.waiter = null;
      w?.(502, 'text/plain', Buffer.from('upstream closed'), true);
    });
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.toString('latin1', 0, end);
      const len = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (buf.length < end + 4 + len) return;
      const type = /\r\ncontent-type: *([^\r]*)/i.exec(head)?.[1];
      const body = buf.subarray(end + 4, end + 4 + len);
      buf = buf.subarray(end + 4 + len);
      const w = sock.waiter;
      sock.waiter = null;
      w?.(Number(head.slice(9, 12)), type, body);
    });
    return sock;
  }
} else {
  throw new Error('mode: undici | h1 | raw | protocol');
}
if (listener === 'node' && mode !== 'protocol' && mode !== 'h1') throw new Error('node listener: h1 or protocol only');

/** The product's h1 client behind the same dispatch call as undici's Pool. */
async function h1Pool() {
  const { H1Agent } = await import('../dist/h1/index.js');
  const agent = new H1Agent({ connections: 64, keepAliveMs: 4000, connectTimeoutMs: 2000 });
  const target = { host: '127.0.0.1', port: upstreamPort, hostHeader: `127.0.0.1:${upstreamPort}` };
  return { dispatch: (o, h) => agent.dispatch({ host: target.host, port: target.port, hostHeader: target.hostHeader, method: o.method, path: o.path, headers: o.headers, body: null, timeoutMs: 15000 }, h) };
}

/** The plain h1 relay behind node:http (uWS-shaped calls on a node response). */
function nodeAsUws(res) {
  let status = '200';
  const headers = [];
  return {
    onAborted: (cb) => res.on('close', () => { if (!res.writableFinished) cb(); }),
    cork: (f) => f(),
    writeStatus(s) { status = s; return this; },
    writeHeader(k, v) { headers.push(k, v); return this; },
    end(body) { headers.push('content-length', String(Buffer.byteLength(body))); res.writeHead(Number(status), headers); res.end(body); },
  };
}

if (listener === 'node') {
  const http = await import('node:http');
  const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    if (mode === 'protocol') relayFull(req.url, nodeWriter(res), nodeHead(req));
    else relay(req.url, nodeAsUws(res));
  });
  server.listen(0, '127.0.0.1', () => process.send?.({ type: 'ready', port: server.address().port }));
} else {
  const app = uws.App();
  app.any('/*', (res, req) => {
    const url = req.getUrl() + (req.getQuery() ? `?${req.getQuery()}` : '');
    if (mode === 'protocol') relayFull(url, uwsWriter(res), uwsHead(res, req));
    else relay(url, res);
  });
  app.listen('127.0.0.1', 0, (sock) => {
    process.send?.({ type: 'ready', port: uws.us_socket_local_port(sock) });
  });
}
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0)); // exit normally (a --cpu-prof is written then)
