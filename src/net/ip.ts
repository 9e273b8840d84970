// Client IP derivation with a trusted-proxy model: taking the leftmost
// X-Forwarded-For entry from anyone would make every IP check spoofable.
import { BlockList, isIP } from 'node:net';

const PRIVATE = new BlockList();
for (const [net, bits] of [['10.0.0.0', 8], ['172.16.0.0', 12], ['192.168.0.0', 16], ['127.0.0.0', 8], ['169.254.0.0', 16], ['100.64.0.0', 10]] as const) {
  PRIVATE.addSubnet(net, bits, 'ipv4');
}
for (const [net, bits] of [['fc00::', 7], ['fe80::', 10], ['::1', 128]] as const) PRIVATE.addSubnet(net, bits, 'ipv6');

export function normalizeIp(ip: string): string {
  let s = ip.trim();
  if (s.startsWith('[')) s = s.slice(1, s.indexOf(']'));
  if (s.toLowerCase().startsWith('::ffff:') && isIP(s.slice(7)) === 4) s = s.slice(7);
  return s;
}

export function isPrivateIp(ip: string): boolean {
  const family = isIP(ip);
  if (family === 0) return false;
  return PRIVATE.check(ip, family === 6 ? 'ipv6' : 'ipv4');
}

function trusted(list: BlockList, ip: string): boolean {
  const family = isIP(ip);
  return family !== 0 && list.check(ip, family === 6 ? 'ipv6' : 'ipv4');
}

/**
 * The socket peer, unless the peer is a trusted proxy: then walk X-Forwarded-For
 * from the right, skipping trusted hops, and take the first untrusted address
 * (X-Real-IP when there is no X-Forwarded-For).
 */
export function clientIp(peer: string, xff: string | undefined, xRealIp: string | undefined, trustedProxies: BlockList | null): string {
  // The usual case: no trusted proxies, the peer is the client (and BlockList.check
  // would build a SocketAddress per request for nothing).
  if (trustedProxies === null) return peer.startsWith('::ffff:') ? normalizeIp(peer) : peer;
  const p = normalizeIp(peer);
  if (!trusted(trustedProxies, p)) return p;
  if (xff) {
    const hops = xff.split(',').map((h) => normalizeIp(h)).filter((h) => isIP(h) !== 0);
    for (let i = hops.length - 1; i >= 0; i--) {
      if (!trusted(trustedProxies, hops[i])) return hops[i];
    }
    if (hops.length) return hops[0];
  }
  if (xRealIp && isIP(normalizeIp(xRealIp))) return normalizeIp(xRealIp);
  return p;
}

/** What requestClientIp reads of a request (structural, so this module stays below the HTTP edge). */
export interface PeerSource {
  readonly remoteAddress: string;
  header(name: string): string | undefined;
}

/** The client IP of a request under the trusted-proxy model. */
export function requestClientIp(req: PeerSource, trustedProxies: BlockList | null): string {
  return clientIp(req.remoteAddress, req.header('x-forwarded-for'), req.header('x-real-ip'), trustedProxies);
}

/** Compares two textual IPs by value, so '::1' equals '0:0:0:0:0:0:0:1' (spec §6.19). */
export function sameIp(a: string, b: string): boolean {
  const fa = isIP(a);
  const fb = isIP(b);
  if (fa === 0 || fb === 0 || fa !== fb) return false;
  const type = fa === 6 ? 'ipv6' : 'ipv4';
  const bl = new BlockList();
  bl.addAddress(b, type);
  return bl.check(a, type);
}
