// The HTTP edge: the listener contract and its uWebSockets.js and node:http
// adapters. Imports nothing of the proxy above it.
export type {
  IncomingRequest, ResponseWriter, HeaderList, Handler, ListenOptions, Listener, ListenerKind,
  WebSocketHandshake, AcceptWebSocket, WebSocketHandlers, ServerWebSocket, WebSocketOptions,
} from './types.ts';
export { BodyTooLargeError, DEFAULT_WEBSOCKET_OPTIONS, fieldPairs } from './types.ts';
export { listen, uwsAvailable } from './listen.ts';
