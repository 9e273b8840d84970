// Real HTTP upstreams for the proxy tests (node:http on loopback).
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Seen {
  method: string;
  url: string;
  headers: Array<[string, string]>;
  body: Buffer;
}

export interface TestUpstream {
  port: number;
  address: string; // 127.0.0.1:port
  url: string; // http://127.0.0.1:port
  seen: Seen[];
  close(): Promise<void>;
}

export type UpstreamHandler = (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer) => void;

/** Default behaviour: echo what arrived as JSON. */
export const echo: UpstreamHandler = (req, res, body) => {
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2) pairs.push([req.rawHeaders[i].toLowerCase(), req.rawHeaders[i + 1]]);
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ method: req.method, url: req.url, headers: pairs, body: body.toString('utf8') }));
};

/** `record: false` keeps `seen` empty (long runs: the soak would otherwise hold every request). */
export async function startUpstream(handler: UpstreamHandler = echo, host = '127.0.0.1', opts: { record?: boolean } = {}): Promise<TestUpstream> {
  const record = opts.record !== false;
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const headers: Array<[string, string]> = [];
      for (let i = 0; i < req.rawHeaders.length; i += 2) headers.push([req.rawHeaders[i].toLowerCase(), req.rawHeaders[i + 1]]);
      if (record) seen.push({ method: req.method ?? '', url: req.url ?? '', headers, body });
      handler(req, res, body);
    });
  });
  server.keepAliveTimeout = 10_000;
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as AddressInfo).port;
  const h = host.includes(':') ? `[${host}]` : host;
  return {
    port,
    address: `${h}:${port}`,
    url: `http://${h}:${port}`,
    seen,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** A port with nothing listening (bound, then released). */
export async function deadPort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
