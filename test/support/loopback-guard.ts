// Preloaded into every test process (package.json `test`): a TCP connection to anything
// but loopback fails at once, as if the name did not resolve, and is reported on stderr.
// Tests register example hosts (api.utilmeta.com, 10.0.0.5, …) as data; a code path
// that would actually dial one must fail here, never leave the machine.
import { lookup as dnsLookup, type LookupOneOptions } from 'node:dns';
import net from 'node:net';

const LOOPBACK_NAMES = new Set(['localhost', 'localhost.']);

export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (LOOPBACK_NAMES.has(h)) return true;
  if (net.isIPv4(h)) return h.startsWith('127.');
  if (net.isIPv6(h)) return h === '::1' || /^::ffff:127\./.test(h) || h === '0:0:0:0:0:0:0:1';
  return false;
}

function refused(host: string): NodeJS.ErrnoException {
  process.stderr.write(`loopback guard: refused a connection to ${host} (tests talk to loopback only)\n`);
  const err: NodeJS.ErrnoException = new Error(`getaddrinfo ENOTFOUND ${host} (loopback guard)`);
  err.code = 'ENOTFOUND';
  err.syscall = 'getaddrinfo';
  return err;
}

/** Resolves only loopback names, and only to loopback addresses. */
function guardedLookup(hostname: string, options: LookupOneOptions, cb: (err: NodeJS.ErrnoException | null, address: string | Array<{ address: string; family: number }>, family?: number) => void): void {
  if (!isLoopback(hostname)) {
    process.nextTick(cb, refused(hostname), '', 4);
    return;
  }
  dnsLookup(hostname, options as never, ((err: NodeJS.ErrnoException | null, address: string | Array<{ address: string; family: number }>, family?: number) => {
    if (err) return cb(err, address, family);
    const list = Array.isArray(address) ? address.map((a) => a.address) : [address];
    const bad = list.find((a) => !isLoopback(a));
    if (bad) return cb(refused(`${hostname} (${bad})`), '', 4);
    cb(null, address, family);
  }) as never);
}

const connect = net.Socket.prototype.connect as (...args: unknown[]) => net.Socket;
net.Socket.prototype.connect = function guardedConnect(this: net.Socket, ...args: unknown[]): net.Socket {
  // Normalise connect(port, host?, cb?) / connect(options, cb?) / connect([options, cb]) (net internals).
  let a: unknown[] = args;
  if (Array.isArray(a[0]) && a.length === 1) a = a[0] as unknown[];
  const first = a[0];
  if (first !== null && typeof first === 'object') {
    const o = first as { path?: string; host?: string; lookup?: unknown };
    if (o.path === undefined) {
      const host = o.host ?? 'localhost';
      if (net.isIP(host.replace(/^\[|\]$/g, '')) && !isLoopback(host)) {
        const err = refused(host);
        process.nextTick(() => this.destroy(err));
        return this;
      }
      if (!net.isIP(host)) a = [{ ...o, lookup: guardedLookup }, ...a.slice(1)];
    }
  } else if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    const host = typeof a[1] === 'string' ? a[1] : 'localhost';
    const cb = a.find((x) => typeof x === 'function');
    return guardedConnect.call(this, { port: Number(first), host }, ...(cb ? [cb] : []));
  }
  return connect.apply(this, a);
};
