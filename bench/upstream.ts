// The fast upstream every configuration talks to: a minimal node:http server in
// its own process, answering a small JSON body with keep-alive. It listens on
// several ports so the benchmark service can have three instances with distinct
// addresses (the registry keeps addresses unique) that all land in this process.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

const BODY = Buffer.from('{"ok":true,"service":"bench"}');
const HEADERS = { 'content-type': 'application/json', 'content-length': String(BODY.length) };

function handle(req: http.IncomingMessage, res: http.ServerResponse): void {
  if (req.method === 'POST' || req.method === 'PUT') {
    // Read the whole body (the 16 KiB POST) before answering, like a real handler.
    req.on('data', () => {});
    req.on('end', () => res.writeHead(200, HEADERS).end(BODY));
    return;
  }
  res.writeHead(200, HEADERS).end(BODY);
}

const ports: number[] = [];
for (let i = 0; i < Number(process.argv[2] ?? 3); i++) {
  const server = http.createServer(handle);
  // Idle connections must outlive the pools of the proxy (UPSTREAM_KEEPALIVE 4 s) and nginx.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  ports.push((server.address() as AddressInfo).port);
}
process.send?.({ type: 'ready', ports });
// Exit with the parent: the IPC channel closes when run.ts goes away, even on SIGKILL.
process.on('disconnect', () => process.exit(0));
