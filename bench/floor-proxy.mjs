// The floor under the proxy: the smallest relay that can be built on the same stack,
// measured in the same run so the closing numbers can say how much of the proxy's
// cost is the runtime's rather than the request chain's. Not a product: no routing,
// no auth, no header hygiene, no error handling beyond answering 502.
//
//   node bench/floor-proxy.mjs undici <upstream port>  uWS listener + undici Pool.dispatch relay
//   node bench/floor-proxy.mjs raw <upstream port>     uWS listener + a bare keep-alive HTTP/1.1
//                                                      client (content-length responses only)
//   node bench/floor-proxy.mjs h1 <upstream port>      uWS listener + the product's h1 client (dist/)
import { createRequire } from 'node:module';
import net from 'node:net';
import v8 from 'node:v8';
import { Pool } from 'undici';

v8.setFlagsFromString('--no-allocation-site-pretenuring'); // as the product's launcher does
const require = createRequire(import.meta.url);
const uws = require('uWebSockets.js');
const [mode, upstreamPort] = [process.argv[2], Number(process.argv[3])];
const ORIGIN = `http://127.0.0.1:${upstreamPort}`;

/** @type {(path: string, res: any) => void} */
let relay;
if (mode === 'undici' || mode === 'h1') {
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
    sock.waiter = (status, type, body) => {
      idle.push(sock);
      if (!aborted) res.cork(() => { res.writeStatus(`${status}`); if (type) res.writeHeader('content-type', type); res.end(body); });
    };
    sock.write(`GET ${path} HTTP/1.1\r\nhost: 127.0.0.1:${upstreamPort}\r\n\r\n`);
  };
  function connect() {
    const sock = net.connect(upstreamPort, '127.0.0.1');
    sock.setNoDelay(true);
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
  throw new Error('mode: undici | h1 | raw');
}

/** The product's h1 client behind the same dispatch call as undici's Pool. */
async function h1Pool() {
  const { H1Agent } = await import('../dist/h1/index.js');
  const agent = new H1Agent({ connections: 64, keepAliveMs: 4000, connectTimeoutMs: 2000 });
  const target = { host: '127.0.0.1', port: upstreamPort, hostHeader: `127.0.0.1:${upstreamPort}` };
  return { dispatch: (o, h) => agent.dispatch({ host: target.host, port: target.port, hostHeader: target.hostHeader, method: o.method, path: o.path, headers: o.headers, body: null, timeoutMs: 15000 }, h) };
}

const app = uws.App();
app.any('/*', (res, req) => relay(req.getUrl() + (req.getQuery() ? `?${req.getQuery()}` : ''), res));
app.listen('127.0.0.1', 0, (sock) => {
  process.send?.({ type: 'ready', port: uws.us_socket_local_port(sock) });
});
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0)); // exit normally (a --cpu-prof is written then)
