// The HTTP edge: the listener contract and its uWebSockets.js and node:http
// adapters. Imports nothing of the proxy above it.
export type { IncomingRequest, ResponseWriter, HeaderList, Handler, ListenOptions, Listener, ListenerKind } from './types.ts';
export { BodyTooLargeError } from './types.ts';
export { listen, uwsAvailable } from './listen.ts';
