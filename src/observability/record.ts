// What one proxied exchange leaves behind: one log line and its metrics.
export interface ProxyLogRecord {
  requestId: string;
  method: string;
  path: string;
  /** The proxy type, or 'invalid' when the control headers did not decode. */
  type: string;
  service?: string;
  target?: string;
  status: number;
  retries: number;
  durationMs: number;
  /** Time to the upstream's final answer (ms), when one was attempted. */
  upstreamMs?: number;
  /** Platform instance id of the final target, when known. */
  instance?: string;
  error?: string;
  /** Upstream failure kind (timeout, refused, …) or the state of a proxy-made error. */
  errorKind?: string;
  state?: string;
  /** The access decision: `type:id` of the caller, the API id, and `[audit:]allow|deny:reason`. */
  principal?: string;
  api?: string;
  authz?: string;
  /** A relayed WebSocket session (the record is written when it ends; `status` is 101). */
  websocket?: WebSocketSummary;
}

export interface WebSocketSummary {
  /** Who ended the session: client, upstream, revoked, shutdown, overload, idle, error. */
  closedBy: string;
  /** The close code each side sent or received (1005: none, 1006: dropped). */
  clientCode: number;
  upstreamCode: number;
  messagesIn: number;
  messagesOut: number;
  bytesIn: number;
  bytesOut: number;
}
