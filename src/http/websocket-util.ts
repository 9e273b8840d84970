// WebSocket pieces shared by both adapters: the handshake check (so that both
// listeners refuse the same handshakes with the same answers), close codes, and
// the set of open sockets a graceful shutdown closes.
import { isHttpToken } from '../core/text.ts';
import type { WebSocketHandshake, WebSocketOptions } from './types.ts';
import { DEFAULT_WEBSOCKET_OPTIONS } from './types.ts';

export interface HandshakeError {
  status: 400 | 426;
  message: string;
}

/** RFC 6455 §4.1: the key is the base64 of 16 random bytes (24 characters ending in ==). */
const KEY = /^[+/0-9A-Za-z]{21}[AQgw]==$/;

function tokens(value: string): string[] {
  return value.split(',').map((s) => s.trim().toLowerCase());
}

/**
 * null: not a WebSocket handshake (no `Upgrade: websocket`). Otherwise the
 * handshake, or why it is refused: 426 (with `Sec-WebSocket-Version: 13`) for a
 * missing or other version, 400 for anything else that is wrong.
 */
export function checkHandshake(method: string, headers: ReadonlyArray<readonly [string, string]>, hasBody: boolean): { handshake: WebSocketHandshake } | { error: HandshakeError } | null {
  let websocket = false;
  let connectionUpgrade = false;
  const keys: string[] = [];
  const versions: string[] = [];
  const protocolValues: string[] = [];
  const extensions: string[] = [];
  for (let i = 0; i < headers.length; i++) {
    const [name, value] = headers[i];
    if (name.length < 7 || (name.charCodeAt(0) !== 117 /* u */ && name.charCodeAt(0) !== 99 /* c */ && name.charCodeAt(0) !== 115 /* s */)) continue;
    if (name === 'upgrade') {
      if (tokens(value).includes('websocket')) websocket = true;
    } else if (name === 'connection') {
      if (tokens(value).includes('upgrade')) connectionUpgrade = true;
    } else if (name === 'sec-websocket-key') keys.push(value.trim());
    else if (name === 'sec-websocket-version') versions.push(value.trim());
    else if (name === 'sec-websocket-protocol') protocolValues.push(value);
    else if (name === 'sec-websocket-extensions') extensions.push(value);
  }
  if (!websocket) return null;
  const refuse = (message: string, status: 400 | 426 = 400) => ({ error: { status, message } });
  if (method !== 'GET') return refuse('a WebSocket handshake must be a GET request');
  if (!connectionUpgrade) return refuse('a WebSocket handshake needs Connection: Upgrade');
  if (versions.length !== 1 || versions[0] !== '13') {
    return refuse(versions.length === 0 ? 'missing Sec-WebSocket-Version: this node speaks version 13' : 'unsupported Sec-WebSocket-Version: this node speaks version 13', 426);
  }
  if (keys.length === 0) return refuse('missing Sec-WebSocket-Key');
  if (keys.length > 1) return refuse('more than one Sec-WebSocket-Key header');
  if (!KEY.test(keys[0])) return refuse('Sec-WebSocket-Key must be the base64 of 16 bytes');
  if (hasBody) return refuse('a WebSocket handshake carries no body');
  const protocols: string[] = [];
  for (const v of protocolValues) {
    for (const raw of v.split(',')) {
      const p = raw.trim();
      if (!isHttpToken(p)) return refuse(`invalid Sec-WebSocket-Protocol ${JSON.stringify(v)}: expected comma-separated tokens`);
      if (protocols.includes(p)) return refuse(`Sec-WebSocket-Protocol offers ${JSON.stringify(p)} twice`);
      protocols.push(p);
    }
  }
  return { handshake: { key: keys[0], version: '13', protocols, extensions: extensions.join(', ') } };
}

/** JSON body of a refused handshake, the same shape as every other error. */
export function handshakeErrorBody(e: HandshakeError): string {
  return JSON.stringify({ error: e.message, state: 'websocket_handshake_invalid' });
}

/** Headers of a refused handshake (besides content type and length). */
export function handshakeErrorHeaders(e: HandshakeError): Array<[string, string]> {
  return e.status === 426 ? [['sec-websocket-version', '13'], ['upgrade', 'websocket']] : [];
}

/** Close codes a peer may send in a close frame (RFC 6455 §7.4, IANA registry). */
export function isSendableCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

/** A close reason must fit a control frame (125 bytes, 2 of them the code). */
export function clipReason(reason: string): string {
  if (Buffer.byteLength(reason) <= 123) return reason;
  let r = reason.slice(0, 123);
  while (Buffer.byteLength(r) > 123) r = r.slice(0, -1);
  return r;
}

export function websocketOptions(o: Partial<WebSocketOptions> | undefined): WebSocketOptions {
  return { ...DEFAULT_WEBSOCKET_OPTIONS, ...o };
}

/** The open WebSockets of one listener (for the count and a shutdown's close). */
export class OpenSockets<T extends { close(code?: number, reason?: string): void }> {
  readonly set = new Set<T>();
  add(s: T): void {
    this.set.add(s);
  }
  delete(s: T): void {
    this.set.delete(s);
  }
  get size(): number {
    return this.set.size;
  }
  closeAll(code: number, reason: string): void {
    for (const s of [...this.set]) s.close(code, reason);
  }
}
