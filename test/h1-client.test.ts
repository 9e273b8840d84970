// Conformance suite of the built-in HTTP/1.1 client (src/h1): raw TCP servers on
// loopback send exact bytes (split at every possible point where it matters), and
// the client must report exactly what undici would, or a clear error.
import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import { H1Agent, ResponseParser, type H1Controller, type H1Handler, type H1Request } from '../src/h1/index.ts';
import { classify } from '../src/proxy/upstream.ts';

interface Result {
  status?: number;
  headers?: Record<string, string | string[]>;
  body: Buffer;
  trailers?: Record<string, string | string[]>;
  error?: Error & { code?: string };
  events: string[];
}

/** Collects one exchange, recording the callback order. */
function collect(agent: H1Agent, req: Partial<H1Request> & { port: number }, hooks: { onStart?: (c: H1Controller) => void; onData?: (c: H1Controller, chunk: Buffer) => void } = {}): Promise<Result> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const r: Result = { body: Buffer.alloc(0), events: [] };
    const handler: H1Handler = {
      onRequestStart(c) {
        r.events.push('start');
        hooks.onStart?.(c);
      },
      onResponseStart(_c, status, flat) {
        r.events.push('head');
        r.status = status;
        // Flat pairs in wire order; folded into an object here only for the assertions.
        const headers: Record<string, string | string[]> = {};
        for (let i = 0; i < flat.length; i += 2) {
          const had = headers[flat[i]];
          headers[flat[i]] = had === undefined ? flat[i + 1] : [...(Array.isArray(had) ? had : [had]), flat[i + 1]];
        }
        r.headers = headers;
      },
      onResponseData(c, chunk) {
        r.events.push('data');
        chunks.push(Buffer.from(chunk));
        hooks.onData?.(c, chunk);
      },
      onResponseEnd(_c, trailers) {
        r.events.push('end');
        r.trailers = trailers;
        r.body = Buffer.concat(chunks);
        resolve(r);
      },
      onResponseError(_c, err) {
        r.events.push('error');
        r.error = err;
        r.body = Buffer.concat(chunks);
        resolve(r);
      },
    };
    agent.dispatch({ host: '127.0.0.1', hostHeader: `127.0.0.1:${req.port}`, method: 'GET', path: '/x', headers: [], body: null, timeoutMs: 5000, ...req }, handler);
  });
}

interface RawServer {
  port: number;
  /** Requests as received, one string per request head (+ body). */
  requests: string[];
  connections: number;
  close(): Promise<void>;
}

/**
 * A server that answers each request (recognised by its blank line and declared
 * length) with `reply(n)`: a list of byte pieces written with a pause between them,
 * and `end: true` to close the connection afterwards.
 */
async function rawServer(reply: (n: number, head: string) => { pieces: Array<string | Buffer>; end?: boolean; destroy?: boolean } | null): Promise<RawServer> {
  const sockets = new Set<net.Socket>();
  const s: RawServer = { port: 0, requests: [], connections: 0, close: async () => {} };
  const server = net.createServer((sock) => {
    s.connections++;
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let buf = Buffer.alloc(0);
    sock.on('data', async (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString('latin1');
        const len = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + len) return;
        const req = buf.subarray(0, end + 4 + len).toString('latin1');
        buf = buf.subarray(end + 4 + len);
        s.requests.push(req);
        const r = reply(s.requests.length, req);
        if (!r) continue;
        for (const p of r.pieces) {
          if (sock.destroyed) return;
          sock.write(p);
          if (r.pieces.length > 1) await new Promise((res) => setTimeout(res, 2));
        }
        if (r.destroy) sock.destroy();
        else if (r.end) sock.end();
      }
    });
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  s.port = (server.address() as AddressInfo).port;
  s.close = () => new Promise((res) => {
    for (const k of sockets) k.destroy();
    server.close(() => res());
  });
  return s;
}

const agents: H1Agent[] = [];
const servers: RawServer[] = [];
function agent(opts: Partial<ConstructorParameters<typeof H1Agent>[0]> = {}): H1Agent {
  const a = new H1Agent({ connections: 8, keepAliveMs: 4000, connectTimeoutMs: 2000, ...opts });
  agents.push(a);
  return a;
}
async function server(reply: Parameters<typeof rawServer>[0]): Promise<RawServer> {
  const s = await rawServer(reply);
  servers.push(s);
  return s;
}
after(async () => {
  await Promise.all(agents.map((a) => a.close()));
  await Promise.all(servers.map((s) => s.close()));
});

const ok = (body: string, extra = '') => `HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;

describe('h1 client: requests on the wire', () => {
  test('head, Host, headers in order, content-length for a body; content-length: 0 for a bodyless POST', async () => {
    const s = await server(() => ({ pieces: [ok('x')] }));
    const a = agent();
    await collect(a, { port: s.port, method: 'PUT', path: '/a/b?c=1&c=2', headers: ['x-one', '1', 'x-two', 'ä'], body: Buffer.from('hello') });
    await collect(a, { port: s.port, method: 'POST', path: '/p' });
    await collect(a, { port: s.port, method: 'GET', path: '/g' });
    assert.equal(s.requests[0], `PUT /a/b?c=1&c=2 HTTP/1.1\r\nhost: 127.0.0.1:${s.port}\r\nx-one: 1\r\nx-two: \xe4\r\ncontent-length: 5\r\n\r\nhello`);
    assert.equal(s.requests[1], `POST /p HTTP/1.1\r\nhost: 127.0.0.1:${s.port}\r\ncontent-length: 0\r\n\r\n`);
    assert.equal(s.requests[2], `GET /g HTTP/1.1\r\nhost: 127.0.0.1:${s.port}\r\n\r\n`);
  });

  test('a content-length in the header list is replaced by the length of the body in hand', async () => {
    const s = await server(() => ({ pieces: [ok('x')] }));
    await collect(agent(), { port: s.port, method: 'POST', headers: ['content-length', '99', 'x-a', '1'], body: Buffer.from('abc') });
    assert.equal(s.requests[0], `POST /x HTTP/1.1\r\nhost: 127.0.0.1:${s.port}\r\nx-a: 1\r\ncontent-length: 3\r\n\r\nabc`);
  });

  test('a header value with CR, LF or NUL is refused before anything is sent', async () => {
    const s = await server(() => ({ pieces: [ok('x')] }));
    for (const value of ['a\r\nx-injected: 1', 'a\rb', 'a\nb', 'a\u0000b', `${'t'.repeat(700)}\n`]) {
      const r = await collect(agent(), { port: s.port, headers: ['x-ok', '1', 'x-evil', value] });
      assert.equal(r.error?.code, 'UND_ERR_INVALID_ARG', JSON.stringify(value.slice(-8)));
    }
    assert.equal(s.requests.length, 0);
  });
});

describe('h1 client: framing', () => {
  test('body chunks kept by the handler stay intact after later reads on any connection (reads share one buffer)', async () => {
    // Small and large pieces, each read separately (the server pauses between
    // them), on three connections at once so their reads interleave.
    const sizes = [100, 20_000, 3_000, 40_000, 9_000, 500, 64 * 1024, 7];
    const body = Buffer.concat(sizes.map((n, i) => Buffer.alloc(n, 65 + i)));
    const head = `HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\n`;
    const pieces: Buffer[] = [Buffer.from(head)];
    let at = 0;
    for (const n of sizes) {
      pieces.push(body.subarray(at, at + n));
      at += n;
    }
    const s = await server(() => ({ pieces }));
    const a = agent();
    const one = () => {
      const kept: Buffer[] = [];
      return new Promise<Buffer[]>((resolve, reject) => {
        a.dispatch({ host: '127.0.0.1', port: s.port, hostHeader: `127.0.0.1:${s.port}`, method: 'GET', path: '/x', headers: [], body: null, timeoutMs: 5000 }, {
          onResponseData: (_c, chunk) => kept.push(chunk), // kept as handed out, not copied
          onResponseEnd: () => resolve(kept),
          onResponseError: (_c, err) => reject(err),
        });
      });
    };
    for (let round = 0; round < 2; round++) {
      for (const kept of await Promise.all([one(), one(), one()])) {
        const got = Buffer.concat(kept);
        assert.ok(kept.length >= 4, `several reads (${kept.length})`);
        let bad = 0;
        while (bad < got.length && got[bad] === body[bad]) bad++;
        assert.ok(got.equals(body), `every kept chunk still holds its bytes (first difference at ${bad}, chunks ${kept.map((k) => k.length).join(',')})`);
      }
    }
  });

  test('content-length body split byte by byte', async () => {
    const resp = ok('hello world');
    const s = await server(() => ({ pieces: [...resp].map((c) => Buffer.from(c, 'latin1')) }));
    const r = await collect(agent(), { port: s.port });
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), 'hello world');
    assert.equal(r.headers!['content-type'], 'text/plain');
    assert.deepEqual([r.events[0], r.events[1], r.events.at(-1)], ['start', 'head', 'end']);
  });

  test('chunked body with extensions and trailers; repeated headers become arrays', async () => {
    const s = await server(() => ({
      pieces: ['HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nset-cookie: b=2\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n', '5;ext=1\r\nhello\r\n', '6\r\n world\r\n0\r\nx-sum: 42\r\n\r\n'],
    }));
    const r = await collect(agent(), { port: s.port });
    assert.equal(r.body.toString(), 'hello world');
    assert.deepEqual(r.headers!['set-cookie'], ['a=1', 'b=2']);
    assert.deepEqual(r.trailers, { 'x-sum': '42' });
  });

  test('fuzzed chunk sizes and TCP segmentation deliver the exact body, and the connection is reused', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 8 }),
        fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 10 }),
        fc.boolean(),
        async (chunks, cuts, upper) => {
          let wire = 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n';
          const bytes: Buffer[] = [Buffer.from(wire, 'latin1')];
          for (const c of chunks) {
            const hex = c.length.toString(16);
            bytes.push(Buffer.from(`${upper ? hex.toUpperCase() : hex}\r\n`), Buffer.from(c), Buffer.from('\r\n'));
          }
          bytes.push(Buffer.from('0\r\n\r\n'));
          const all = Buffer.concat(bytes);
          const pieces: Buffer[] = [];
          let at = 0;
          for (let i = 0; at < all.length; i++) {
            const n = cuts[i % cuts.length];
            pieces.push(all.subarray(at, at + n));
            at += n;
          }
          wire = '';
          const s = await server(() => ({ pieces }));
          const a = agent();
          const r1 = await collect(a, { port: s.port });
          const r2 = await collect(a, { port: s.port });
          await s.close();
          const expected = Buffer.concat(chunks.map((c) => Buffer.from(c)));
          assert.deepEqual(r1.body, expected);
          assert.deepEqual(r2.body, expected);
          assert.equal(s.connections, 1);
        },
      ),
      { numRuns: 25 },
    );
  });

  test('1xx interim responses are skipped; the final response is reported', async () => {
    const s = await server(() => ({ pieces: ['HTTP/1.1 100 Continue\r\n\r\n', 'HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n', ok('done')] }));
    const r = await collect(agent(), { port: s.port });
    assert.equal(r.status, 200);
    assert.equal(r.body.toString(), 'done');
    assert.equal(r.headers!.link, undefined);
  });

  test('HEAD reads no body whatever content-length says, and the connection stays usable', async () => {
    const s = await server((n) => ({ pieces: [n === 1 ? 'HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n' : ok('second')] }));
    const a = agent();
    const r = await collect(a, { port: s.port, method: 'HEAD' });
    assert.equal(r.status, 200);
    assert.equal(r.headers!['content-length'], '1000');
    assert.equal(r.body.length, 0);
    const r2 = await collect(a, { port: s.port });
    assert.equal(r2.body.toString(), 'second');
    assert.equal(s.connections, 1);
  });

  test('204 and 304 carry no body', async () => {
    const s = await server((n) => ({ pieces: [n === 1 ? 'HTTP/1.1 204 No Content\r\n\r\n' : n === 2 ? 'HTTP/1.1 304 Not Modified\r\ncontent-length: 50\r\netag: "x"\r\n\r\n' : ok('third')] }));
    const a = agent();
    assert.equal((await collect(a, { port: s.port })).status, 204);
    const r = await collect(a, { port: s.port });
    assert.equal(r.status, 304);
    assert.equal(r.body.length, 0);
    assert.equal((await collect(a, { port: s.port })).body.toString(), 'third');
    assert.equal(s.connections, 1);
  });

  test('a body delimited by connection close completes at close, and the connection is not reused', async () => {
    const s = await server(() => ({ pieces: ['HTTP/1.1 200 OK\r\n\r\n', 'until ', 'close'], end: true }));
    const a = agent();
    const r = await collect(a, { port: s.port });
    assert.equal(r.error, undefined);
    assert.equal(r.body.toString(), 'until close');
    await collect(a, { port: s.port });
    assert.equal(s.connections, 2);
  });

  test('HTTP/1.0 and connection: close are not reused', async () => {
    const s = await server((n) => ({ pieces: [n === 1 ? 'HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok' : ok('ok', 'connection: close\r\n')] }));
    const a = agent();
    await collect(a, { port: s.port });
    await collect(a, { port: s.port });
    await collect(a, { port: s.port });
    assert.equal(s.connections, 3);
  });
});

describe('h1 client: broken responses are errors, never a wrong body', () => {
  const cases: Array<[string, string[], string]> = [
    ['early close in a content-length body', ['HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc'], 'UND_ERR_SOCKET'],
    ['early close in a chunked body', ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab'], 'UND_ERR_SOCKET'],
    ['close before any byte', [], 'UND_ERR_SOCKET'],
    ['conflicting content-lengths', ['HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc'], 'HPE_UNEXPECTED_CONTENT_LENGTH'],
    ['non-numeric content-length', ['HTTP/1.1 200 OK\r\ncontent-length: 2x\r\n\r\nab'], 'HPE_UNEXPECTED_CONTENT_LENGTH'],
    ['bad chunk size', ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n'], 'HPE_INVALID_CHUNK_SIZE'],
    ['oversized chunk size', ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffffff\r\n'], 'HPE_INVALID_CHUNK_SIZE'],
    ['chunk data without CRLF', ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXY0\r\n\r\n'], 'HPE_STRICT'],
    ['garbage status line', ['HTTP/1.1 OK 200\r\n\r\n'], 'HPE_INVALID_STATUS'],
    ['not HTTP at all', ['SSH-2.0-OpenSSH\r\n\r\n'], 'HPE_INVALID_STATUS'],
    ['obs-fold', ['HTTP/1.1 200 OK\r\nx-a: 1\r\n  folded\r\ncontent-length: 0\r\n\r\n'], 'HPE_INVALID_HEADER_TOKEN'],
    ['space in a header name', ['HTTP/1.1 200 OK\r\nx a: 1\r\ncontent-length: 0\r\n\r\n'], 'HPE_INVALID_HEADER_TOKEN'],
    ['NUL in a header value', ['HTTP/1.1 200 OK\r\nx-a: 1\x002\r\ncontent-length: 0\r\n\r\n'], 'HPE_INVALID_HEADER_TOKEN'],
    ['unexpected 101', ['HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n'], 'HPE_INVALID_STATUS'],
    ['chunked twice', ['HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n0\r\n\r\n'], 'HPE_INVALID_TRANSFER_ENCODING'],
    ['oversized head', [`HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(20_000)}\r\ncontent-length: 0\r\n\r\n`], 'HPE_HEADER_OVERFLOW'],
  ];
  for (const [name, pieces, code] of cases) {
    test(name, async () => {
      const s = await server(() => ({ pieces, end: true }));
      const r = await collect(agent(), { port: s.port });
      assert.equal(r.error?.code, code, `got ${r.error?.code} (${r.error?.message}) status ${r.status}`);
      assert.equal(r.events.filter((e) => e === 'end').length, 0);
      assert.equal(r.events.at(-1), 'error');
      // Mapped like undici's errors: never an unclassified failure.
      const kind = classify(r.error, 'http://u', 1000).kind;
      assert.ok(['protocol', 'reset'].includes(kind), kind);
    });
  }

  test('Transfer-Encoding with Content-Length: chunked wins and the connection is not reused', async () => {
    const s = await server(() => ({ pieces: ['HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n'] }));
    const a = agent();
    const r = await collect(a, { port: s.port });
    assert.equal(r.body.toString(), 'ok');
    await collect(a, { port: s.port });
    assert.equal(s.connections, 2);
  });

  test('bytes after the response: the connection is dropped, not reused with them', async () => {
    const s = await server(() => ({ pieces: [ok('one') + 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nsmugg'] }));
    const a = agent();
    const r1 = await collect(a, { port: s.port });
    assert.equal(r1.body.toString(), 'one');
    const r2 = await collect(a, { port: s.port });
    assert.equal(r2.body.toString().includes('smugg'), false);
    assert.equal(s.connections, 2);
  });
});

describe('h1 client: connections, timeouts, control', () => {
  test('keep-alive reuse; requests beyond the pool size wait for a connection', async () => {
    const s = await server(() => ({ pieces: [ok('x')] }));
    const a = agent({ connections: 2 });
    const all = await Promise.all(Array.from({ length: 10 }, () => collect(a, { port: s.port })));
    assert.ok(all.every((r) => r.status === 200));
    assert.ok(s.connections <= 2, `connections ${s.connections}`);
    assert.equal(s.requests.length, 10);
  });

  test('connection refused is reported with its code (unreached, so failover is safe)', async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    const r = await collect(agent(), { port });
    assert.equal(r.error?.code, 'ECONNREFUSED');
    const e = classify(r.error, 'http://u', 1000);
    assert.equal(e.kind, 'refused');
    assert.equal(e.unreached, true);
  });

  test('a custom connector opens the connections; its errors reach the handler as they are', async () => {
    const s = await server(() => ({ pieces: [ok('via connector')] }));
    const targets: string[] = [];
    const a = agent({
      connect: (t, cb) => {
        targets.push(t.origin);
        if (t.port !== s.port) return process.nextTick(cb, Object.assign(new Error('held'), { code: 'UTM_TEST_HELD' }), null);
        const sock = net.connect(t.port, t.host);
        sock.once('connect', () => cb(null, sock));
      },
    });
    assert.equal((await collect(a, { port: s.port })).body.toString(), 'via connector');
    const held = await collect(a, { port: 1 });
    assert.equal(held.error?.code, 'UTM_TEST_HELD');
    assert.deepEqual(targets, [`http://127.0.0.1:${s.port}`, 'http://127.0.0.1:1']);
  });

  test('abort while connecting: the late socket is closed, nothing is sent', async () => {
    const s = await server(() => ({ pieces: [ok('x')] }));
    let late: net.Socket | null = null;
    const a = agent({
      connect: (t, cb) => setTimeout(() => {
        late = net.connect(t.port, t.host);
        late.once('connect', () => cb(null, late));
      }, 30),
    });
    const r = await collect(a, { port: s.port }, { onStart: (c) => setTimeout(() => c.abort(new Error('gone')), 5) });
    assert.equal(r.error?.message, 'gone');
    await new Promise((res) => setTimeout(res, 80));
    assert.equal((late as unknown as net.Socket).destroyed, true);
    assert.equal(s.requests.length, 0);
  });

  test('a server that never answers: the silence limit ends the exchange', async () => {
    const s = await server(() => null);
    const r = await collect(agent(), { port: s.port, timeoutMs: 150 });
    assert.equal(r.error?.code, 'UND_ERR_HEADERS_TIMEOUT');
    assert.equal(classify(r.error, 'http://u', 150).kind, 'timeout');
  });

  test('a body that stalls: the silence limit ends it as a body timeout', async () => {
    const s = await server(() => ({ pieces: ['HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc'] }));
    const r = await collect(agent(), { port: s.port, timeoutMs: 150 });
    assert.equal(r.error?.code, 'UND_ERR_BODY_TIMEOUT');
    assert.deepEqual(r.events.slice(0, 3), ['start', 'head', 'data']);
  });

  test('an idle connection closes after the idle period, though the exchange before it allowed a longer silence', async () => {
    let closed = 0;
    const s = await server(() => ({ pieces: [ok('x')] }));
    const a = agent({ keepAliveMs: 80 });
    const r = await collect(a, { port: s.port, timeoutMs: 5000 });
    assert.equal(r.status, 200);
    assert.equal(a.connections, 1);
    const t0 = performance.now();
    while (a.connections > 0 && performance.now() - t0 < 2000) await new Promise((res) => setTimeout(res, 10));
    closed = performance.now() - t0;
    assert.equal(a.connections, 0, 'the idle connection is closed');
    assert.ok(closed >= 60 && closed < 1000, `closed after ${closed.toFixed(0)} ms`);
  });

  test('a silence limit longer than the idle period before it still holds in full', async () => {
    // The reused connection's idle timer is due first: it must re-arm, not end the exchange.
    const s = await server((n) => (n === 1 ? { pieces: [ok('x')] } : null));
    const a = agent({ keepAliveMs: 60 });
    assert.equal((await collect(a, { port: s.port })).status, 200);
    const t0 = performance.now();
    const r = await collect(a, { port: s.port, timeoutMs: 250 });
    const took = performance.now() - t0;
    assert.equal(s.connections, 1, 'the second request reused the connection');
    assert.equal(r.error?.code, 'UND_ERR_HEADERS_TIMEOUT');
    assert.ok(took >= 240 && took < 1500, `timed out after ${took.toFixed(0)} ms`);
  });

  test('every byte received restarts the silence limit', async () => {
    // Four body bytes 80 ms apart: 320 ms in all, never 150 ms of silence.
    const srv = net.createServer((sock) => {
      sock.on('error', () => {});
      sock.once('data', async () => {
        sock.write('HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n');
        for (const c of 'abcd') {
          await new Promise((res) => setTimeout(res, 80));
          if (!sock.destroyed) sock.write(c);
        }
      });
    });
    await new Promise<void>((res) => srv.listen(0, '127.0.0.1', res));
    try {
      const r = await collect(agent(), { port: (srv.address() as AddressInfo).port, timeoutMs: 150 });
      assert.equal(r.error, undefined);
      assert.equal(r.status, 200);
      assert.equal(r.body.toString(), 'abcd');
    } finally {
      srv.close();
    }
  });

  test('an idle connection the server closed is replaced without an error', async () => {
    const s = await server(() => ({ pieces: [ok('x')], end: true }));
    const a = agent();
    await collect(a, { port: s.port });
    await new Promise((r) => setTimeout(r, 30));
    const r = await collect(a, { port: s.port });
    assert.equal(r.status, 200);
    assert.equal(s.connections, 2);
  });

  test('a reused connection reset before any response byte: a GET is sent once more on a fresh one', async () => {
    // The server answers the first request, then resets the connection on the second.
    const s = await server((n) => (n === 2 ? { pieces: [], destroy: true } : { pieces: [ok(`r${n}`)] }));
    const a = agent();
    assert.equal((await collect(a, { port: s.port })).body.toString(), 'r1');
    const r = await collect(a, { port: s.port });
    assert.equal(r.body.toString(), 'r3');
    assert.equal(s.connections, 2);
  });

  test('the same reset on a POST is an error, never a second send', async () => {
    const s = await server((n) => (n === 2 ? { pieces: [], destroy: true } : { pieces: [ok(`r${n}`)] }));
    const a = agent();
    await collect(a, { port: s.port, method: 'POST', body: Buffer.from('1') });
    const r = await collect(a, { port: s.port, method: 'POST', body: Buffer.from('2') });
    assert.ok(r.error);
    assert.equal(s.requests.length, 2);
  });

  test('abort mid-body: onResponseError once with the reason, the connection is closed', async () => {
    const s = await server(() => ({ pieces: ['HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst', 'second'] }));
    const a = agent();
    const reason = new Error('client aborted');
    const r = await collect(a, { port: s.port }, { onData: (c) => c.abort(reason) });
    assert.equal(r.error, reason);
    assert.equal(r.events.filter((e) => e === 'error').length, 1);
    await new Promise((res) => setTimeout(res, 20));
    assert.equal(a.connections, 0);
  });

  test('abort in onRequestStart: nothing is sent', async () => {
    const s = await server(() => ({ pieces: [ok('x')] }));
    const r = await collect(agent(), { port: s.port }, { onStart: (c) => c.abort(new Error('stop')) });
    assert.equal(r.error?.message, 'stop');
    await new Promise((res) => setTimeout(res, 30));
    assert.equal(s.requests.length, 0);
  });

  test('pause stops reading the socket until resume (backpressure)', async () => {
    const big = Buffer.alloc(4 * 1024 * 1024, 0x61);
    const s = await server(() => ({ pieces: [Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${big.length}\r\n\r\n`), big])] }));
    let received = 0;
    let paused: H1Controller | null = null;
    const done = collect(agent(), { port: s.port }, {
      onData: (c, chunk) => {
        received += chunk.length;
        if (!paused) {
          paused = c;
          c.pause();
        }
      },
    });
    await new Promise((res) => setTimeout(res, 150));
    const whilePaused = received;
    assert.ok(whilePaused < big.length / 2, `read ${whilePaused} bytes while paused`);
    (paused as unknown as H1Controller).resume();
    const r = await done;
    assert.equal(r.body.length, big.length);
  });

  test('close() waits for a busy connection and refuses new requests', async () => {
    const s = await server(() => ({ pieces: ['HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab', 'cd'] }));
    const a = new H1Agent({ connections: 2, keepAliveMs: 4000, connectTimeoutMs: 2000 });
    const inflight = collect(a, { port: s.port });
    await new Promise((res) => setTimeout(res, 5));
    const closed = a.close();
    const late = await collect(a, { port: s.port });
    assert.equal(late.error?.code, 'UND_ERR_CLOSED');
    assert.equal((await inflight).body.toString(), 'abcd');
    await closed;
    assert.equal(a.connections, 0);
  });
});

describe('h1 response parser (pure)', () => {
  test('any split of a valid response gives the same head, body and trailers', () => {
    const wire = Buffer.from('HTTP/1.1 201 Created\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n1;e\r\nd\r\n0\r\nx-t: 9\r\n\r\n', 'latin1');
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: wire.length - 1 }), { maxLength: 6 }), (cutsRaw) => {
        const cuts = [...new Set(cutsRaw)].sort((a, b) => a - b);
        const body: Buffer[] = [];
        let status = 0;
        let trailers: unknown = undefined;
        const p = new ResponseParser({ onHead: (h) => (status = h.status), onBody: (c) => body.push(Buffer.from(c)), onComplete: (t) => (trailers = t) }, { maxHeaderSize: 1024 });
        p.reset(false);
        let at = 0;
        for (const c of [...cuts, wire.length]) {
          assert.equal(p.execute(wire.subarray(at, c)), c - at);
          at = c;
        }
        assert.equal(status, 201);
        assert.equal(Buffer.concat(body).toString(), 'abcd');
        assert.deepEqual(trailers, { 'x-t': '9' });
        assert.ok(p.done);
      }),
    );
  });
});
