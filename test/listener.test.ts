// The two listener adapters run the same cases: whatever the handler sees or
// sends must be identical on uWebSockets.js and node:http.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import pino from 'pino';
import { Client, request } from 'undici';
import WebSocket from 'ws';
import { listen, uwsAvailable } from '../src/http/listen.ts';
import { BodyTooLargeError, type Handler, type IncomingRequest, type Listener, type ResponseWriter } from '../src/http/types.ts';

const MB = 1024 * 1024;
const T = { timeout: 30_000 };

/** Deterministic body: chunk k of `size` bytes total, so client and server agree without sharing state. */
function block(k: number, len: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + k * 7) & 0xff;
  return b;
}
const CHUNK = 64 * 1024;
function expectedSha(size: number): string {
  const h = createHash('sha256');
  for (let k = 0, off = 0; off < size; k++, off += CHUNK) h.update(block(k, Math.min(CHUNK, size - off)));
  return h.digest('hex');
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

interface ServerState {
  limitError?: unknown;
  aborted: { promise: Promise<void>; resolve: () => void };
  sawBackpressure: boolean;
}

/** Streams `size` bytes with backpressure; contentLength undefined = chunked. */
function streamBody(res: ResponseWriter, size: number, state: ServerState): void {
  let k = 0;
  let off = 0;
  const pump = () => {
    while (off < size && !res.aborted) {
      const len = Math.min(CHUNK, size - off);
      const ok = res.write(block(k++, len));
      off += len;
      if (!ok) {
        state.sawBackpressure = true;
        res.onDrain(pump);
        return;
      }
    }
    res.end();
  };
  pump();
}

function makeHandler(state: ServerState): Handler {
  return async (req: IncomingRequest, res: ResponseWriter) => {
    const json = (v: unknown, status = 200) => res.send(status, [['content-type', 'application/json']], JSON.stringify(v));
    switch (req.path) {
      case '/hello':
        return res.send(200, [['content-type', 'text/plain']], 'hello');
      case '/throw':
        throw new Error('boom');
      case '/buffered': {
        const body = await req.readBody(16 * MB);
        return json({ size: body.length, sha: createHash('sha256').update(body).digest('hex'), hasBody: req.hasBody });
      }
      case '/upload-slow': {
        // A slow consumer: the listener must pause the socket, not lose or reorder data.
        const h = createHash('sha256');
        let size = 0;
        let n = 0;
        for await (const c of req.body(64 * MB)) {
          h.update(c);
          size += c.length;
          if (++n % 2 === 0) await sleep(2);
        }
        return json({ size, sha: h.digest('hex') });
      }
      case '/limit': {
        try {
          await req.readBody(1024);
          return json({ ok: true });
        } catch (err) {
          state.limitError = err;
          return res.send(413, [['content-type', 'text/plain']], 'too large');
        }
      }
      case '/stream-known':
      case '/stream-chunked': {
        const size = Number(new URLSearchParams(req.query).get('size'));
        res.writeHead(200, [['content-type', 'application/octet-stream'], ['content-length', '1'], ['transfer-encoding', 'x']], req.path === '/stream-known' ? size : undefined);
        return streamBody(res, size, state);
      }
      case '/cookies':
        return res.send(200, [['set-cookie', 'a=1; Path=/'], ['x-one', '1'], ['set-cookie', 'b=2; HttpOnly'], ['set-cookie', 'c=3']], 'ok');
      case '/relayed':
        // As the proxy relays an upstream head: flat, checked fields, a listener-owned date among them.
        res.relayHead(201, ['set-cookie', 'a=1', 'date', 'Thu, 01 Jan 1970 00:00:00 GMT', 'x-cafe', 'caf\u00e9 \u00ff', 'set-cookie', 'b=2'], 5);
        res.write(Buffer.from('relay'));
        return res.end();
      case '/relayed-empty':
        res.relayHead(204, [], 9);
        return res.end();
      case '/status/204':
        res.writeHead(204, [['x-a', '1']], 42);
        return res.end();
      case '/status/304':
        res.writeHead(304, [['etag', '"v1"']], 42);
        res.write(Buffer.from('ignored'));
        return res.end();
      case '/head':
        // What a proxy does for HEAD: report the upstream length, write no body.
        res.writeHead(200, [['content-type', 'text/plain']], 12345);
        return res.end();
      case '/abort': {
        res.onAborted(() => state.aborted.resolve());
        res.writeHead(200, [], 1024 * MB);
        const pump = () => {
          while (!res.aborted) {
            if (!res.write(block(0, CHUNK))) return res.onDrain(pump);
          }
        };
        return pump();
      }
      default:
        return json({
          method: req.method,
          path: req.path,
          query: req.query,
          headers: req.headers,
          host: req.header('host'),
          remoteAddress: req.remoteAddress,
          listener: req.listener,
          hasBody: req.hasBody,
        });
    }
  };
}

interface RawResponse {
  status: number;
  headers: Array<[string, string]>;
  body: Buffer;
}

/** A raw keep-alive connection: send a request, read until `done` matches what arrived since. */
function rawConn(port: number): { exchange(req: string, done: RegExp): Promise<string>; closed: Promise<void> } {
  const sock = net.connect(port, '127.0.0.1');
  sock.on('error', () => {});
  let buf = '';
  let waiter: { done: RegExp; resolve: (s: string) => void } | null = null;
  const check = () => {
    if (waiter && waiter.done.test(buf)) {
      const w = waiter;
      waiter = null;
      const got = buf;
      buf = '';
      w.resolve(got);
    }
  };
  sock.on('data', (d) => {
    buf += d.toString('latin1');
    check();
  });
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
  return {
    closed,
    exchange(req, done) {
      return new Promise<string>((resolve) => {
        waiter = { done, resolve };
        sock.write(req);
        check();
      });
    },
  };
}

/** Minimal HTTP/1.1 response reader for exact-bytes checks (HEAD, close, keep-alive). */
function rawExchange(host: string, port: number, payload: string | Buffer, opts: { count: number; head?: boolean[] }): Promise<{ responses: RawResponse[]; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, host);
    let buf = Buffer.alloc(0);
    const responses: RawResponse[] = [];
    let closed = false;
    const done = () => {
      sock.destroy();
      resolve({ responses, closed });
    };
    const parse = () => {
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
        const status = Number(lines[0].split(' ')[1]);
        const headers = lines.slice(1).map((l) => {
          const i = l.indexOf(':');
          return [l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()] as [string, string];
        });
        const get = (n: string) => headers.find((h) => h[0] === n)?.[1];
        let rest = buf.subarray(end + 4);
        let body: Buffer;
        if (opts.head?.[responses.length] || status === 204 || status === 304) {
          body = Buffer.alloc(0);
        } else if (get('content-length') !== undefined) {
          const n = Number(get('content-length'));
          if (rest.length < n) return;
          body = rest.subarray(0, n);
          rest = rest.subarray(n);
        } else if (get('transfer-encoding') === 'chunked') {
          const parts: Buffer[] = [];
          let p = 0;
          for (;;) {
            const le = rest.indexOf('\r\n', p);
            if (le === -1) return;
            const n = parseInt(rest.subarray(p, le).toString(), 16);
            if (rest.length < le + 2 + n + 2) return;
            parts.push(rest.subarray(le + 2, le + 2 + n));
            p = le + 2 + n + 2;
            if (n === 0) break;
          }
          body = Buffer.concat(parts);
          rest = rest.subarray(p);
        } else {
          return; // body until close
        }
        responses.push({ status, headers, body });
        buf = rest;
        if (responses.length >= opts.count) return done();
      }
    };
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      parse();
    });
    sock.on('error', (e: NodeJS.ErrnoException) => (e.code === 'ECONNRESET' ? undefined : reject(e)));
    sock.on('close', () => {
      closed = true;
      resolve({ responses, closed });
    });
    sock.write(payload);
  });
}

const ipv6 = await new Promise<boolean>((resolve) => {
  const s = net.createServer().once('error', () => resolve(false));
  s.listen(0, '::1', () => s.close(() => resolve(true)));
});

for (const kind of ['uws', 'node'] as const) {
  describe(`${kind} listener`, () => {
    const state: ServerState = { aborted: deferred(), sawBackpressure: false };
    let l: Listener;
    let client: Client;
    let base: string;

    before(async () => {
      // '::' is dual-stack: IPv4 clients arrive as ::ffff:127.0.0.1 and must be unwrapped.
      l = await listen(makeHandler(state), { host: ipv6 ? '::' : '0.0.0.0', port: 0, server: kind });
      base = `http://127.0.0.1:${l.port}`;
      client = new Client(base);
    });
    after(async () => {
      await client.close();
      await l.close();
    });

    it('listens on an ephemeral port and reports it', T, async () => {
      assert.equal(l.kind, kind);
      assert.ok(l.port > 0 && l.port < 65536);
      const r = await client.request({ path: '/hello', method: 'GET' });
      assert.equal(r.statusCode, 200);
      assert.equal(await r.body.text(), 'hello');
      assert.equal(r.headers['content-length'], '5');
    });

    it('passes method, raw path and raw query', T, async () => {
      const { responses } = await rawExchange('127.0.0.1', l.port, 'DELETE /a%20b/c%2Fd/?x=1&x=2&y=%41&z HTTP/1.1\r\nHost: h\r\n\r\n', { count: 1 });
      const m = JSON.parse(responses[0].body.toString());
      assert.equal(m.method, 'DELETE');
      assert.equal(m.path, '/a%20b/c%2Fd/');
      assert.equal(m.query, 'x=1&x=2&y=%41&z');
      assert.equal(m.listener, kind);
      assert.equal(m.hasBody, false);
      const r = await client.request({ path: '/plain', method: 'GET' });
      const m2 = (await r.body.json()) as { path: string; query: string };
      assert.deepEqual([m2.path, m2.query], ['/plain', '']);
    });

    it('keeps headers in wire order, lower-cased, with repeats', T, async () => {
      const req = 'GET /h HTTP/1.1\r\nX-Foo: 1\r\nHost: example\r\nx-foo: 2\r\nAccept: */*\r\nCookie: a=1\r\nX-FOO: 3\r\nCookie: b=2\r\n\r\n';
      const { responses } = await rawExchange('127.0.0.1', l.port, req, { count: 1 });
      const m = JSON.parse(responses[0].body.toString());
      assert.deepEqual(m.headers, [
        ['x-foo', '1'], ['host', 'example'], ['x-foo', '2'], ['accept', '*/*'], ['cookie', 'a=1'], ['x-foo', '3'], ['cookie', 'b=2'],
      ]);
      assert.equal(m.host, 'example');
    });

    // Inside a value: this uWS build trims bytes above 0x7F at either end of a value (a parser quirk).
    it('hands out header bytes above 0x7F as one char per byte (latin1), valid UTF-8 or not', T, async () => {
      const req = Buffer.concat([Buffer.from('GET /h HTTP/1.1\r\nHost: h\r\nX-A: caf'), Buffer.from([0xc3, 0xa9]), Buffer.from('s\r\nX-B: a'), Buffer.from([0xe9]), Buffer.from('b\r\n\r\n')]);
      const { responses } = await rawExchange('127.0.0.1', l.port, req, { count: 1 });
      const m = JSON.parse(responses[0].body.toString());
      assert.equal(m.headers.find(([k]: [string]) => k === 'x-a')?.[1], 'caf\u00c3\u00a9s');
      const b: string = m.headers.find(([k]: [string]) => k === 'x-b')?.[1];
      // node:http keeps the lone byte; uWS has already replaced it with U+FFFD (EF BF BD): either way no char above 0xFF.
      assert.ok(b === 'a\u00e9b' || b === 'a\u00ef\u00bf\u00bdb', JSON.stringify(b));
    });

    it('reports the remote address over IPv4 (unwrapped from the dual-stack socket)', T, async () => {
      const r = await client.request({ path: '/addr', method: 'GET' });
      assert.equal(((await r.body.json()) as { remoteAddress: string }).remoteAddress, '127.0.0.1');
    });

    for (const host of ['127.0.0.1', '::1']) {
      it(`listens on ${host} and reports the peer as ${host}`, { ...T, skip: host === '::1' && !ipv6 && 'no IPv6 loopback' }, async () => {
        const l2 = await listen(makeHandler(state), { host, port: 0, server: kind });
        try {
          assert.equal(l2.host, host);
          const r = await request(`http://${host.includes(':') ? `[${host}]` : host}:${l2.port}/addr`);
          assert.equal(((await r.body.json()) as { remoteAddress: string }).remoteAddress, host);
        } finally {
          await l2.close();
        }
      });
    }

    it('buffers a request body (content-length and chunked)', T, async () => {
      const size = 300 * 1024 + 7;
      const r = await client.request({ path: '/buffered', method: 'POST', body: Buffer.concat(chunks(size)) });
      assert.deepEqual(await r.body.json(), { size, sha: expectedSha(size), hasBody: true });
      // No content-length: undici sends an async-iterable body chunked.
      const r2 = await client.request({ path: '/buffered', method: 'PUT', body: Readable.from(chunks(size)) });
      assert.deepEqual(await r2.body.json(), { size, sha: expectedSha(size), hasBody: true });
    });

    it('streams a multi-MB upload to a slow consumer intact', T, async () => {
      const size = 8 * MB + 123;
      const r = await client.request({ path: '/upload-slow', method: 'POST', body: Readable.from(chunks(size)), headers: { 'content-length': String(size) } });
      assert.equal(r.statusCode, 200);
      assert.deepEqual(await r.body.json(), { size, sha: expectedSha(size) });
    });

    it('rejects a body over the limit with BodyTooLargeError; the handler still answers 413', T, async () => {
      // Declared length over the limit: refused before reading.
      state.limitError = undefined;
      const body = 'x'.repeat(4096);
      const a = await rawExchange('127.0.0.1', l.port, `POST /limit HTTP/1.1\r\nHost: h\r\nContent-Length: 4096\r\n\r\n${body}`, { count: 1 });
      assert.equal(a.responses[0].status, 413);
      assert.equal(a.responses[0].body.toString(), 'too large');
      assert.ok(state.limitError instanceof BodyTooLargeError);
      assert.equal((state.limitError as BodyTooLargeError).limit, 1024);
      // The upload was not read: the connection is closed after the answer.
      assert.ok(a.responses[0].headers.some(([k, v]) => k === 'connection' && v.toLowerCase() === 'close'));
      // Chunked: the limit trips while the body streams in.
      state.limitError = undefined;
      const chunk = 'y'.repeat(512);
      const chunked = Array.from({ length: 8 }, () => `200\r\n${chunk}\r\n`).join('') + '0\r\n\r\n';
      const b = await rawExchange('127.0.0.1', l.port, `POST /limit HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n${chunked}`, { count: 1 });
      assert.equal(b.responses[0].status, 413);
      assert.ok(state.limitError instanceof BodyTooLargeError);
      // Under the limit it is read normally.
      const c = await client.request({ path: '/limit', method: 'POST', body: 'small' });
      assert.deepEqual(await c.body.json(), { ok: true });
    });

    for (const mode of ['known', 'chunked'] as const) {
      it(`streams a ${mode}-length response to a slow reader intact`, T, async () => {
        const size = 16 * MB + 5;
        state.sawBackpressure = false;
        const r = await client.request({ path: `/stream-${mode}`, method: 'GET', query: { size } });
        assert.equal(r.statusCode, 200);
        if (mode === 'known') {
          assert.equal(r.headers['content-length'], String(size));
          assert.equal(r.headers['transfer-encoding'], undefined);
        } else {
          assert.equal(r.headers['transfer-encoding'], 'chunked');
          assert.equal(r.headers['content-length'], undefined);
        }
        await sleep(200); // let the socket buffers fill up before reading
        const h = createHash('sha256');
        let got = 0;
        let n = 0;
        for await (const c of r.body) {
          h.update(c as Buffer);
          got += (c as Buffer).length;
          if (++n % 16 === 0) await sleep(1);
        }
        assert.equal(got, size);
        assert.equal(h.digest('hex'), expectedSha(size));
        assert.ok(state.sawBackpressure, 'the writer should have seen write() === false');
        // The connection is still usable afterwards.
        const again = await client.request({ path: '/hello', method: 'GET' });
        assert.equal(await again.body.text(), 'hello');
      });
    }

    it('sends repeated set-cookie headers in order', T, async () => {
      const { responses } = await rawExchange('127.0.0.1', l.port, 'GET /cookies HTTP/1.1\r\nHost: h\r\n\r\n', { count: 1 });
      const hs = responses[0].headers.filter(([k]) => k === 'set-cookie' || k === 'x-one');
      assert.deepEqual(hs, [['set-cookie', 'a=1; Path=/'], ['x-one', '1'], ['set-cookie', 'b=2; HttpOnly'], ['set-cookie', 'c=3']]);
      const r = await client.request({ path: '/cookies', method: 'GET' });
      assert.deepEqual(r.headers['set-cookie'], ['a=1; Path=/', 'b=2; HttpOnly', 'c=3']);
      await r.body.text();
    });

    it('writes a relayed head field by field, in order, with its own date and the given length', T, async () => {
      const req = 'GET /relayed HTTP/1.1\r\nHost: h\r\n\r\nGET /relayed-empty HTTP/1.1\r\nHost: h\r\n\r\nGET /hello HTTP/1.1\r\nHost: h\r\n\r\n';
      const { responses } = await rawExchange('127.0.0.1', l.port, req, { count: 3 });
      const [a, b, c] = responses;
      assert.equal(a.status, 201);
      const own = a.headers.filter(([k]) => k !== 'date' && k !== 'content-length' && k !== 'uwebsockets' && k !== 'connection' && k !== 'keep-alive');
      // The listener encodes values as it does any other (UTF-8 on uWS, latin1 on node:http); read back as one char per byte here.
      const value = kind === 'uws' ? Buffer.from('caf\u00e9 \u00ff', 'utf8').toString('latin1') : 'caf\u00e9 \u00ff';
      assert.deepEqual(own, [['set-cookie', 'a=1'], ['x-cafe', value], ['set-cookie', 'b=2']]);
      const dates = a.headers.filter(([k]) => k === 'date');
      assert.equal(dates.length, 1, 'one date, the listener\'s');
      assert.notEqual(dates[0][1], 'Thu, 01 Jan 1970 00:00:00 GMT');
      assert.equal(a.headers.find(([k]) => k === 'content-length')?.[1], '5');
      assert.equal(a.body.toString(), 'relay');
      assert.equal(b.status, 204);
      assert.equal(b.headers.find(([k]) => k === 'content-length'), undefined, 'no length on a 204');
      assert.equal(c.body.toString(), 'hello', 'the connection is still in step');
    });

    it('answers HEAD with the reported content-length and no body', T, async () => {
      // A GET right behind the HEAD on the same socket: any body byte after the
      // HEAD head, or a HEAD left pending, would break the second response.
      const req = 'HEAD /head HTTP/1.1\r\nHost: h\r\n\r\nGET /hello HTTP/1.1\r\nHost: h\r\n\r\n';
      const { responses } = await rawExchange('127.0.0.1', l.port, req, { count: 2, head: [true, false] });
      assert.equal(responses.length, 2);
      assert.equal(responses[0].status, 200);
      assert.deepEqual(responses[0].headers.filter(([k]) => k === 'content-length'), [['content-length', '12345']]);
      assert.equal(responses[0].headers.find(([k]) => k === 'transfer-encoding'), undefined);
      assert.equal(responses[1].status, 200);
      assert.equal(responses[1].body.toString(), 'hello');
      // HEAD answered with send(): the length of the body that is not sent.
      const r = await client.request({ path: '/hello', method: 'HEAD' });
      assert.equal(r.headers['content-length'], '5');
      assert.equal((await r.body.arrayBuffer()).byteLength, 0);
    });

    it('sends no body for 204 and 304; 304 keeps a reported content-length, 204 none', T, async () => {
      const req = 'GET /status/204 HTTP/1.1\r\nHost: h\r\n\r\nGET /status/304 HTTP/1.1\r\nHost: h\r\n\r\nGET /hello HTTP/1.1\r\nHost: h\r\n\r\n';
      const { responses } = await rawExchange('127.0.0.1', l.port, req, { count: 3 });
      assert.deepEqual(responses.map((r) => r.status), [204, 304, 200]);
      assert.equal(responses[0].headers.find(([k]) => k === 'content-length' || k === 'transfer-encoding'), undefined);
      assert.deepEqual(responses[1].headers.filter(([k]) => k === 'content-length'), [['content-length', '42']]);
      assert.ok(responses[1].headers.some(([k, v]) => k === 'etag' && v === '"v1"'));
      assert.equal(responses[2].body.toString(), 'hello');
    });

    it('fires onAborted when the client goes away mid-response, and keeps serving', T, async () => {
      state.aborted = deferred();
      await new Promise<void>((resolve, reject) => {
        const s = net.connect(l.port, '127.0.0.1', () => s.write('GET /abort HTTP/1.1\r\nHost: h\r\n\r\n'));
        let got = 0;
        s.on('data', (d) => {
          got += d.length;
          if (got > 256 * 1024) {
            s.destroy();
            resolve();
          }
        });
        s.on('error', reject);
      });
      await state.aborted.promise; // the test times out if onAborted never fires
      const r = await client.request({ path: '/hello', method: 'GET' });
      assert.equal(await r.body.text(), 'hello');
    });

    it('answers 500 when the handler throws', T, async () => {
      const r = await client.request({ path: '/throw', method: 'GET' });
      assert.equal(r.statusCode, 500);
      await r.body.text();
    });

    it('refuses ambiguous framing with 400 and closes the connection, before the handler runs', T, async () => {
      const cases = [
        'POST /h HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab',
        'POST /h HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\nabc',
        'POST /h HTTP/1.1\r\nHost: h\r\nContent-Length: 2, 2\r\n\r\nab',
        'GET /h HTTP/1.1\r\nHost: h\r\nHost: other\r\n\r\n',
      ];
      for (const raw of cases) {
        // node:http's own parser refuses some of these before JavaScript (a bare 400, then close): never the handler's 200.
        const { responses, closed } = await rawExchange('127.0.0.1', l.port, raw, { count: 2 });
        assert.ok(responses.length <= 1 && responses.every((r) => r.status === 400), `${raw}: ${responses.map((r) => r.status)}`);
        assert.equal(closed, true, raw);
      }
      // A second Host passes both parsers: the answer is the listener's own JSON 400.
      const { responses, closed } = await rawExchange('127.0.0.1', l.port, cases[3], { count: 2 });
      assert.equal(responses.length, 1);
      assert.equal(responses[0].status, 400);
      assert.equal(responses[0].headers.find(([k]) => k === 'connection')?.[1].toLowerCase(), 'close');
      assert.deepEqual(JSON.parse(responses[0].body.toString()), { error: 'more than one Host header' });
      assert.equal(closed, true);
      const big = await rawExchange('127.0.0.1', l.port, `GET /h HTTP/1.1\r\nHost: h\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, { count: 2 });
      // node:http refuses it in its parser (bare 431, no length); on uWS it reaches framingError.
      assert.ok(big.responses.every((r) => r.status === 431) && big.closed, String(big.responses.map((r) => r.status)));
      if (kind === 'uws') assert.equal(big.responses[0]?.status, 431);
    });

    it('serves several requests over one keep-alive connection', T, async () => {
      const c = new Client(base);
      let connects = 0;
      c.on('connect', () => connects++);
      try {
        for (let i = 0; i < 5; i++) {
          const r = await c.request({ path: `/ka/${i}`, method: i % 2 ? 'POST' : 'GET', body: i % 2 ? `body${i}` : undefined });
          const m = (await r.body.json()) as { path: string; hasBody: boolean };
          assert.equal(m.path, `/ka/${i}`);
          assert.equal(m.hasBody, i % 2 === 1);
        }
        assert.equal(connects, 1);
      } finally {
        await c.close();
      }
    });

    it('stopAccepting (drain): answers close their connection, idle keep-alive connections do not outlive the drain', T, async () => {
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const l2 = await listen(async (req, res) => {
        if (req.path === '/slow') await gate;
        if (req.path === '/stream') {
          res.writeHead(200, [['content-type', 'text/plain']]);
          await gate;
          res.write(Buffer.from('streamed'));
          res.end();
          return;
        }
        res.send(200, [['content-type', 'text/plain']], 'ok');
      }, { host: '127.0.0.1', port: 0, server: kind });
      try {
        const idle = rawConn(l2.port);
        assert.match(await idle.exchange('GET /hello HTTP/1.1\r\nHost: h\r\n\r\n', /\r\n\r\nok$/), /^HTTP\/1\.1 200/);
        const slow = rawConn(l2.port);
        const slowAnswer = slow.exchange('GET /slow HTTP/1.1\r\nHost: h\r\n\r\n', /\r\n\r\nok$/);
        const stream = rawConn(l2.port);
        const streamAnswer = stream.exchange('GET /stream HTTP/1.1\r\nHost: h\r\n\r\n', /\r\n0\r\n\r\n$/);
        while (l2.inFlight < 2) await sleep(5);
        await l2.stopAccepting();
        if (kind === 'node') {
          await idle.closed; // closed at once
        } else {
          // No handle on an idle uWS connection: its next answer closes it.
          const again = await idle.exchange('GET /hello HTTP/1.1\r\nHost: h\r\n\r\n', /\r\n\r\nok$/);
          assert.match(again, /\r\nconnection: close\r\n/i);
          await idle.closed;
        }
        release();
        assert.match(await slowAnswer, /\r\nconnection: close\r\n/i, 'an answer started before the drain closes its connection');
        await slow.closed;
        assert.match(await streamAnswer, /streamed/);
        await stream.closed;
      } finally {
        release();
        await l2.close();
      }
    });

    it('req.connection: one id per connection, park() released by the next request or the close, close(); a handler\'s connection: close closes it', T, async () => {
      const seen: Array<{ id: number; parked: boolean }> = [];
      const released: number[] = [];
      let last: IncomingRequest['connection'] | null = null;
      const l2 = await listen((req, res) => {
        if (req.path === '/close-me') return res.send(200, [['connection', 'close']], 'bye');
        res.send(200, [], 'ok');
        const n = seen.length;
        seen.push({ id: req.connection.id, parked: req.connection.park({ release: () => released.push(n) }) });
        last = req.connection;
      }, { host: '127.0.0.1', port: 0, server: kind });
      const origin = `http://127.0.0.1:${l2.port}`;
      const c1 = new Client(origin, { pipelining: 1 });
      const c2 = new Client(origin, { pipelining: 1 });
      const get = async (c: Client) => (await (await c.request({ path: '/a', method: 'GET' })).body.text());
      const until = async (cond: () => boolean, what: string) => {
        for (let i = 0; i < 500 && !cond(); i++) await sleep(10);
        assert.ok(cond(), what);
      };
      try {
        assert.equal(await get(c1), 'ok');
        assert.equal(await get(c1), 'ok');
        assert.equal(await get(c2), 'ok');
        assert.notEqual(seen[2]!.id, seen[0]!.id, 'another connection, another id');
        if (kind === 'node') {
          assert.equal(seen[1]!.id, seen[0]!.id, 'the same keep-alive connection keeps its id');
          assert.deepEqual(seen.map((x) => x.parked), [true, true, true]);
          assert.deepEqual(released, [0], 'the second request on c1 released what the first parked');
          const gone = new Promise<void>((resolve) => c2.once('disconnect', () => resolve()));
          last!.close();
          await gone;
          await until(() => released.includes(2), 'the closed connection released what it held');
          await c1.close();
          await until(() => released.includes(1), 'a connection closed by the client releases too');
        } else {
          // This uWS build cannot recognise or watch a connection once its response ended.
          assert.notEqual(seen[1]!.id, seen[0]!.id);
          assert.deepEqual(seen.map((x) => x.parked), [false, false, false]);
          assert.deepEqual(released, []);
        }
        // A handler's `connection: close`: the listener closes the connection after the answer.
        const s = net.connect(l2.port, '127.0.0.1');
        let text = '';
        s.on('data', (d) => (text += d.toString('latin1')));
        const ended = new Promise<void>((resolve) => s.once('close', () => resolve()));
        s.write('GET /close-me HTTP/1.1\r\nHost: h\r\n\r\n');
        await ended;
        assert.match(text, /^HTTP\/1\.1 200/);
        assert.equal(text.match(/\r\nconnection: close\r\n/gi)?.length, 1, text);
        assert.ok(text.endsWith('bye'), text);
      } finally {
        await c1.close().catch(() => {});
        await c2.close().catch(() => {});
        await l2.close();
      }
    });

    it('close() stops listening and closes idle keep-alive connections', T, async () => {
      const l2 = await listen(makeHandler(state), { host: '127.0.0.1', port: 0, server: kind });
      const s = net.connect(l2.port, '127.0.0.1');
      const first = new Promise<string>((resolve) => s.once('data', (d) => resolve(d.toString())));
      s.write('GET /hello HTTP/1.1\r\nHost: h\r\n\r\n');
      assert.match(await first, /^HTTP\/1\.1 200/);
      const sockClosed = new Promise<void>((resolve) => s.once('close', () => resolve()));
      s.on('error', () => {});
      await l2.close();
      await sockClosed;
      const refused = await new Promise<string>((resolve) => {
        const t = net.connect(l2.port, '127.0.0.1');
        t.once('connect', () => {
          t.destroy();
          resolve('connected');
        });
        t.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      });
      assert.equal(refused, 'ECONNREFUSED');
    });
  });
}

function chunks(size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let k = 0, off = 0; off < size; k++, off += CHUNK) out.push(block(k, Math.min(CHUNK, size - off)));
  return out;
}

describe('listener selection', () => {
  function capture() {
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line));
        cb();
      },
    });
    return { log: pino({ level: 'info' }, sink), lines };
  }

  it('auto picks uWebSockets.js here and logs the choice', T, async () => {
    assert.equal(uwsAvailable(), true);
    const { log, lines } = capture();
    const l = await listen(() => {}, { host: '127.0.0.1', port: 0, server: 'auto' }, log);
    try {
      assert.equal(l.kind, 'uws');
      const entry = lines.find((e) => e.listener === 'uws');
      assert.ok(entry, 'a log line names the uws listener');
      assert.equal(entry.port, l.port);
      assert.match(String(entry.reason), /auto/);
    } finally {
      await l.close();
    }
  });

  it("server: 'node' forces node:http and logs it", T, async () => {
    const { log, lines } = capture();
    const l = await listen(() => {}, { host: '127.0.0.1', port: 0, server: 'node' }, log);
    try {
      assert.equal(l.kind, 'node');
      assert.ok(lines.some((e) => e.listener === 'node' && e.reason === 'server=node'));
    } finally {
      await l.close();
    }
  });

  it('rejects when the port is taken', T, async () => {
    const a = await listen(() => {}, { host: '127.0.0.1', port: 0, server: 'uws' });
    try {
      await assert.rejects(listen(() => {}, { host: '127.0.0.1', port: a.port, server: 'uws' }), /cannot listen/);
      await assert.rejects(listen(() => {}, { host: '127.0.0.1', port: a.port, server: 'node' }), /EADDRINUSE/);
    } finally {
      await a.close();
    }
  });
});

// The WebSocket half of the contract: req.upgrade, acceptWebSocket, the
// ServerWebSocket and closeWebSockets, identical on both adapters.
for (const kind of ['uws', 'node'] as const) {
  describe(`${kind} listener: WebSockets`, () => {
    let l: Listener;
    let calls = 0;
    const seen: Array<{ path: string; upgrade: IncomingRequest['upgrade'] }> = [];
    const closes: Array<[number, string]> = [];
    let drains = 0;
    let sawFalse = false;
    const HIGH = 64 * 1024;

    before(async () => {
      if (kind === 'uws' && !uwsAvailable()) return;
      l = await listen((req, res) => {
        calls++;
        seen.push({ path: req.path, upgrade: req.upgrade });
        if (!req.upgrade || req.path === '/refuse') return res.send(403, [['content-type', 'application/json']], '{"error":"no"}');
        const sock = res.acceptWebSocket({ protocol: req.upgrade.protocols.at(-1), headers: [['x-accepted', 'yes']] }, {
          message: (data, binary) => {
            if (!binary && data.toString().startsWith('flood:')) {
              // 4 MiB towards a client that may not read: send() must report backpressure.
              for (let i = 0; i < 64; i++) if (!sock!.send(Buffer.alloc(64 * 1024, i), true)) sawFalse = true;
              return;
            }
            sock!.send(data, binary);
          },
          drain: () => void drains++,
          close: (code, reason) => void closes.push([code, reason]),
        });
      }, { host: '127.0.0.1', port: 0, server: kind, websocket: { idleTimeoutSeconds: 0, maxPayloadLength: 1 * MB, highWaterMark: HIGH } });
    });
    after(async () => {
      await l?.close();
    });

    const connect = (path: string, protocols: string[] = []) => new Promise<{ ws: WebSocket; headers: Record<string, unknown> }>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${l.port}${path}`, protocols, { perMessageDeflate: false });
      let headers: Record<string, unknown> = {};
      ws.once('upgrade', (r) => (headers = r.headers));
      ws.once('open', () => resolve({ ws, headers }));
      ws.once('unexpected-response', (_q, r) => reject(Object.assign(new Error(String(r.statusCode)), { status: r.statusCode })));
      ws.once('error', reject);
    });
    const nextMessage = (ws: WebSocket) => new Promise<[Buffer, boolean]>((r) => ws.once('message', (d, b) => r([d as Buffer, b])));
    const closed = (ws: WebSocket) => new Promise<[number, string]>((r) => ws.once('close', (c, reason) => r([c, reason.toString()])));

    it('hands the handshake to the handler and accepts it with the chosen protocol and extra headers', T, async (t) => {
      if (!l) return t.skip('uWebSockets.js not available');
      const { ws, headers } = await connect('/chat', ['a', 'b']);
      assert.equal(ws.protocol, 'b');
      assert.equal(headers['x-accepted'], 'yes');
      const hs = seen.at(-1)!.upgrade!;
      assert.equal(hs.version, '13');
      assert.deepEqual(hs.protocols, ['a', 'b']);
      assert.match(hs.key, /^[A-Za-z0-9+/]{22}==$/);
      assert.equal(l.webSockets, 1);
      assert.equal(l.inFlight, 1, 'an open WebSocket counts in flight once');
      ws.send('text');
      assert.deepEqual(await nextMessage(ws), [Buffer.from('text'), false]);
      ws.send(Buffer.from([0, 255]));
      assert.deepEqual(await nextMessage(ws), [Buffer.from([0, 255]), true]);
      const done = closed(ws);
      ws.close(4005, 'bye now');
      await done;
      await until(() => closes.length > 0);
      assert.deepEqual(closes.at(-1), [4005, 'bye now']);
      await until(() => l.webSockets === 0 && l.inFlight === 0);
    });

    it('a plain answer refuses the handshake; a bad handshake never reaches the handler', T, async (t) => {
      if (!l) return t.skip('uWebSockets.js not available');
      await assert.rejects(connect('/refuse'), (e: { status?: number }) => e.status === 403);
      const before = calls;
      const r = await rawRequest(l.port, 'GET /x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n');
      assert.match(r, /^HTTP\/1\.1 400 /);
      const v = await rawRequest(l.port, 'GET /x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 7\r\n\r\n');
      assert.match(v, /^HTTP\/1\.1 426 /);
      assert.match(v, /sec-websocket-version: 13/i);
      assert.equal(calls, before, 'the handler never saw them');
      // An ordinary request has no handshake.
      const plain = await request(`http://127.0.0.1:${l.port}/plain`);
      await plain.body.text();
      assert.equal(seen.at(-1)!.upgrade, null);
    });

    it('send() reports backpressure past the high-water mark and drain follows once the client reads', T, async (t) => {
      if (!l) return t.skip('uWebSockets.js not available');
      const { ws } = await connect('/flood');
      ws.pause();
      drains = 0;
      sawFalse = false;
      ws.send('flood:');
      await until(() => sawFalse);
      let got = 0;
      ws.on('message', (d: Buffer) => void (got += d.length));
      ws.resume();
      await until(() => got === 64 * 64 * 1024);
      await until(() => drains > 0);
      ws.close();
      await closed(ws);
    });

    it('closeWebSockets() closes every open socket with its code', T, async (t) => {
      if (!l) return t.skip('uWebSockets.js not available');
      const a = await connect('/a');
      const b = await connect('/b');
      assert.equal(l.webSockets, 2);
      const ca = closed(a.ws);
      const cb = closed(b.ws);
      l.closeWebSockets(1001, 'going away');
      assert.deepEqual(await ca, [1001, 'going away']);
      assert.deepEqual(await cb, [1001, 'going away']);
      await until(() => l.webSockets === 0 && l.inFlight === 0);
    });
  });
}

async function until(fn: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(20);
  }
}

function rawRequest(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(text));
    let out = '';
    s.on('data', (d) => (out += d.toString('latin1')));
    s.on('close', () => resolve(out));
    s.on('error', reject);
    s.setTimeout(5000, () => s.destroy());
  });
}
