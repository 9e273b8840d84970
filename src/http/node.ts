// node:http listener: the fallback when uWS cannot load (or server = 'node').
// Same behaviour as the uWS adapter from the handler's point of view.
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Handler, HeaderList, ListenOptions, Listener, ResponseWriter } from './types.ts';
import {
  runSafely,
  withinDeclared,
  BodyQueue,
  ClientAbortedError,
  ListenerRequest,
  byteLength,
  declaredLength,
  framingError,
  framingErrorBody,
  isBodylessStatus,
  isListenerOwnedHeader,
  mayReportLength,
  unwrapMapped,
  InFlight,
} from './listener-util.ts';

const NO_HEADERS: HeaderList = [];

/** Flat [k1, v1, k2, v2...] for writeHead: keeps order and repeats (set-cookie). */
function flatHeaders(headers: HeaderList): string[] {
  const flat: string[] = [];
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i];
    if (!isListenerOwnedHeader(h[0])) flat.push(h[0], h[1]);
  }
  return flat;
}

class NodeResponse implements ResponseWriter {
  private gone = false;
  private ended = false;
  private started = false;
  private total = -1;
  private accepted = 0;
  private waiting = false;
  private abortCbs: Array<() => void> | null = null;
  private drainCb: (() => void) | null = null;

  constructor(
    private readonly res: ServerResponse,
    private readonly isHead: boolean,
    private readonly body: BodyQueue | null,
    private readonly log: Logger | undefined,
    done: () => void,
    private readonly drain: { stopping: boolean },
  ) {
    res.once('close', () => {
      done();
      if (!res.writableFinished) this.handleAborted();
    });
  }

  get aborted(): boolean {
    return this.gone || this.ended;
  }

  onAborted(cb: () => void): void {
    if (this.res.writableFinished) return;
    if (this.gone) queueMicrotask(cb);
    else (this.abortCbs ??= []).push(cb);
  }

  onDrain(cb: () => void): void {
    if (this.waiting && !this.gone) this.drainCb = cb;
    else queueMicrotask(cb);
  }

  send(status: number, headers: HeaderList, body?: Buffer | string): void {
    if (this.gone || this.started) return;
    const bodyless = this.isHead || isBodylessStatus(status);
    const flat = flatHeaders(headers);
    // Answering an over-limit upload (the 413 path): close rather than read the
    // rest, as the uWS adapter does. Other unread bodies are dumped by node.
    if (!bodyless && this.body !== null && this.body.refused) flat.push('connection', 'close');
    if (!bodyless || (body !== undefined && mayReportLength(status))) flat.push('content-length', String(byteLength(body)));
    // Draining: an answer to a request that arrived before the drain closes its connection too.
    if (this.drain.stopping) this.res.shouldKeepAlive = false;
    this.res.writeHead(status, flat); // throws on invalid headers, before anything is sent
    this.started = this.ended = true;
    if (bodyless || body === undefined) this.res.end();
    else this.res.end(body);
    this.finish();
  }

  writeHead(status: number, headers: HeaderList, contentLength?: number): void {
    if (this.gone || this.started) return;
    const flat = flatHeaders(headers);
    const known = contentLength !== undefined && Number.isSafeInteger(contentLength) && contentLength >= 0;
    if (this.drain.stopping) this.res.shouldKeepAlive = false;
    if (this.isHead || isBodylessStatus(status)) {
      if (known && mayReportLength(status)) flat.push('content-length', String(contentLength));
      this.res.writeHead(status, flat);
      this.started = this.ended = true;
      this.res.end();
      this.finish();
      return;
    }
    if (known) {
      this.total = contentLength;
      flat.push('content-length', String(contentLength));
    }
    this.res.writeHead(status, flat); // node sends it with the first chunk, like the uWS adapter
    this.started = true;
  }

  write(chunk: Buffer): boolean {
    if (this.gone || this.ended) return true;
    if (!this.started) this.writeHead(200, NO_HEADERS);
    if (this.ended) return true;
    if (chunk.length === 0) return !this.waiting;
    const fit = withinDeclared(chunk, this.total, this.accepted);
    if (fit === null) return !this.waiting;
    this.accepted += fit.length;
    const ok = this.res.write(fit);
    if (!ok && !this.waiting) {
      this.waiting = true;
      this.res.once('drain', () => this.handleDrain());
    }
    return ok;
  }

  end(): void {
    if (this.gone || this.ended) return;
    if (!this.started) this.writeHead(200, NO_HEADERS);
    if (this.ended) return;
    this.ended = true;
    if (this.total >= 0 && this.accepted < this.total) {
      // Short body: cut the connection so the client does not take it as complete.
      this.res.destroy();
      return;
    }
    this.res.end();
    this.finish();
  }

  abort(): void {
    if (this.gone || this.res.writableEnded) return;
    this.ended = true;
    this.res.destroy();
  }

  fail(err: unknown): void {
    this.log?.error({ err }, 'request handler failed');
    if (this.gone || this.res.writableEnded) return;
    if (!this.started) {
      this.send(500, [['content-type', 'text/plain; charset=utf-8']], 'internal server error\n');
    } else {
      this.ended = true;
      this.res.destroy();
    }
  }

  private finish(): void {
    this.abortCbs = null;
    this.body?.discard();
  }

  private handleDrain(): void {
    this.waiting = false;
    const cb = this.drainCb;
    this.drainCb = null;
    cb?.();
  }

  private handleAborted(): void {
    if (this.gone) return;
    this.gone = true;
    this.body?.fail(new ClientAbortedError());
    const cbs = this.abortCbs;
    this.abortCbs = null;
    if (cbs) for (const cb of cbs) runSafely(cb, this.log);
    const d = this.drainCb;
    this.drainCb = null;
    if (d) runSafely(d, this.log);
  }

}

function onRequest(req: IncomingMessage, res: ServerResponse, handler: Handler, log: Logger | undefined, inFlight: InFlight, drain: { stopping: boolean }): void {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  const query = q === -1 ? '' : url.slice(q + 1);
  const raw = req.rawHeaders;
  const headers: Array<readonly [string, string]> = new Array(raw.length >> 1);
  let contentLength: string | undefined;
  let chunked = false;
  for (let i = 0, j = 0; i < raw.length; i += 2, j++) {
    const k = raw[i].toLowerCase();
    headers[j] = [k, raw[i + 1]];
    if (k === 'content-length') contentLength ??= raw[i + 1];
    else if (k === 'transfer-encoding') chunked = true;
  }
  // First, before anything reads the body; the connection is closed after the answer.
  const bad = framingError(headers);
  if (bad) {
    const text = req.method === 'HEAD' ? '' : framingErrorBody(bad);
    res.writeHead(bad.status, ['content-type', 'application/json', 'connection', 'close', 'content-length', String(Buffer.byteLength(text))]);
    res.end(text);
    return;
  }
  const declared = chunked ? -1 : declaredLength(contentLength);
  let body: BodyQueue | null = null;
  if (chunked || declared > 0) {
    body = new BodyQueue(
      {
        pause: () => req.pause(),
        resume: () => req.resume(),
        // Listeners only once someone reads: until then node keeps the data in
        // the socket, and dumps it itself if the body is never read.
        start: (qu) => {
          req.on('data', (c: Buffer) => qu.push(c));
          req.on('end', () => qu.end());
          req.on('error', (e) => qu.fail(e));
          req.on('close', () => {
            if (!req.complete) qu.fail(new ClientAbortedError());
          });
        },
      },
      declared,
    );
  }
  const out = new NodeResponse(res, req.method === 'HEAD', body, log, inFlight.begin(), drain);
  const request = new ListenerRequest('node', req.method ?? 'GET', path, query, headers, unwrapMapped(req.socket.remoteAddress), body);
  try {
    const p = handler(request, out);
    if (p && typeof p.then === 'function') p.then(undefined, (err: unknown) => out.fail(err));
  } catch (err) {
    out.fail(err);
  }
}

export function listenNode(handler: Handler, opts: ListenOptions, log?: Logger): Promise<Listener> {
  const inFlight = new InFlight();
  // While draining, answers end their connection so that clients move on.
  const drain = { stopping: false };
  const server = http.createServer((req, res) => onRequest(req, res, handler, log, inFlight, drain));
  server.keepAliveTimeout = 5000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: opts.host, port: opts.port }, () => {
      server.off('error', reject);
      server.on('error', (err) => log?.error({ err }, 'node:http server error'));
      const port = (server.address() as AddressInfo).port;
      let closing: Promise<void> | null = null;
      resolve({
        kind: 'node',
        host: opts.host,
        port,
        get inFlight() {
          return inFlight.count;
        },
        stopAccepting: async () => {
          if (drain.stopping) return;
          drain.stopping = true;
          // close() stops the listening socket; its callback waits for every
          // connection, which close() below cuts, so it is not awaited here.
          closing ??= new Promise<void>((done) => server.close(() => done()));
          server.closeIdleConnections();
        },
        drained: (timeoutMs: number) => inFlight.drained(timeoutMs),
        close: () => {
          closing ??= new Promise<void>((done) => server.close(() => done()));
          server.closeAllConnections(); // keep-alive sockets would otherwise hold close() open
          return closing;
        },
      });
    });
  });
}
