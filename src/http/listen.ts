// Picks the listener: uWebSockets.js when its native addon loads, node:http otherwise
// (or when forced with server = 'node').
import type { Logger } from 'pino';
import type { Handler, ListenOptions, Listener } from './types.ts';
import { listenNode } from './node.ts';
import { listenUws, loadUws, uwsAvailable } from './uws.ts';

export { uwsAvailable };

export async function listen(handler: Handler, opts: ListenOptions, log?: Logger): Promise<Listener> {
  let why: string;
  if (opts.server === 'node') {
    why = 'server=node';
  } else {
    const { mod, reason } = loadUws();
    if (mod) {
      const l = await listenUws(mod, handler, opts, log);
      log?.info({ listener: 'uws', host: l.host, port: l.port, reason: opts.server === 'auto' ? `auto: ${reason}` : 'server=uws' }, 'listener: uWebSockets.js');
      return l;
    }
    if (opts.server === 'uws') {
      throw new Error(`server=uws but uWebSockets.js is not usable (${reason}); use server=auto or server=node`);
    }
    why = `auto: ${reason}, falling back to node:http`;
    log?.warn({ reason }, 'uWebSockets.js unavailable, falling back to node:http');
  }
  const l = await listenNode(handler, opts, log);
  log?.info({ listener: 'node', host: l.host, port: l.port, reason: why }, 'listener: node:http');
  return l;
}
