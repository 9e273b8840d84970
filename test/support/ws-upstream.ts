// A real WebSocket upstream for the proxy tests: node:http plus the `ws` server,
// on loopback. Every path upgrades and echoes, except:
//   /api/refuse       answers 403 with a JSON body instead of upgrading
//   /api/flood?mb=N   sends N MiB in 64 KiB binary messages as fast as its socket takes them
//   /api/greet        sends "hello" at once after the upgrade
//   /api/deaf         never reads (its socket is paused): a slow upstream
// An echoed text "close:CODE:REASON" makes it close with that code; "bye" ends
// the socket without a close frame. It records each handshake and each close.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';

export interface WsUpstream {
  port: number;
  address: string;
  /** Headers of each upgrade request, in order (names lower-cased). */
  handshakes: Array<{ url: string; headers: http.IncomingHttpHeaders; protocol: string }>;
  /** Close code and reason the upstream received, per socket, in order. */
  closes: Array<{ code: number; reason: string }>;
  /** Bytes the /flood socket has handed to its socket so far. */
  flooded: number;
  /** Open server-side sockets. */
  readonly open: number;
  /** Sockets of /api/deaf: paused, they never notice the proxy going away (a test ends them). */
  deaf: Set<WebSocket>;
  /** Sends one binary message on every open socket. */
  sendAll(data: Buffer): void;
  /** Closes every socket with this code (upstream-initiated close). */
  closeAll(code: number, reason: string): void;
  close(): Promise<void>;
}

export async function startWsUpstream(opts: { pickProtocol?: (offered: Set<string>) => string | false } = {}): Promise<WsUpstream> {
  const sockets = new Set<WebSocket>();
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false,
    maxPayload: 64 * 1024 * 1024,
    // By default the last protocol offered: the client must get the upstream's choice, not its own first.
    handleProtocols: (offered) => (opts.pickProtocol ? opts.pickProtocol(offered) : [...offered].at(-1) ?? false),
  });
  const server = http.createServer((_req, res) => {
    res.writeHead(426, { 'content-type': 'text/plain' });
    res.end('websocket only\n');
  });
  const up: WsUpstream = {
    port: 0,
    address: '',
    handshakes: [],
    closes: [],
    flooded: 0,
    deaf: new Set(),
    get open() {
      return sockets.size;
    },
    sendAll(data) {
      for (const s of sockets) s.send(data, { binary: true });
    },
    closeAll(code, reason) {
      for (const s of sockets) s.close(code, reason);
    },
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.terminate();
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
  server.on('upgrade', (req, socket, head) => {
    const url = req.url ?? '/';
    if (url.startsWith('/api/refuse')) {
      const body = JSON.stringify({ error: 'refused by the upstream' });
      socket.end(`HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\nx-upstream: yes\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.add(ws);
      up.handshakes.push({ url, headers: req.headers, protocol: ws.protocol });
      ws.on('close', (code, reason) => {
        sockets.delete(ws);
        up.closes.push({ code, reason: reason.toString() });
      });
      ws.on('error', () => {});
      if (url.startsWith('/api/greet')) ws.send('hello');
      if (url.startsWith('/api/deaf')) {
        up.deaf.add(ws);
        ws.on('close', () => up.deaf.delete(ws));
        return void ws.pause();
      }
      if (url.startsWith('/api/flood')) {
        const total = Number(new URL(url, 'http://x').searchParams.get('mb') ?? '64') * 1024 * 1024;
        const chunk = Buffer.alloc(64 * 1024, 7);
        const pump = () => {
          // The upstream respects its own socket's backpressure, as a well-behaved server does.
          while (up.flooded < total && ws.readyState === ws.OPEN) {
            if (ws.bufferedAmount > 256 * 1024) return void setTimeout(pump, 5);
            up.flooded += chunk.length;
            ws.send(chunk, { binary: true });
          }
        };
        pump();
        return;
      }
      ws.on('message', (data, isBinary) => {
        if (!isBinary) {
          const text = data.toString();
          const m = /^close:(\d+):(.*)$/.exec(text);
          if (m) return ws.close(Number(m[1]), m[2]);
          if (text === 'bye') return ws.terminate();
        }
        ws.send(data, { binary: isBinary });
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  up.port = (server.address() as AddressInfo).port;
  up.address = `127.0.0.1:${up.port}`;
  return up;
}
