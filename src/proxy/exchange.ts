// The per-request state of one /api/proxy exchange, allocated once and passed
// through every stage of the chain. Every field exists from the start (a stable
// object shape), and each stage fills only its own.
import type { IncomingRequest, ResponseWriter } from '../http/types.ts';
import type { RegistrySnapshot, InstanceView, ServiceView } from '../registry/snapshot.ts';
import type { PlatformCaller } from '../platform/index.ts';
import type { SessionHandle } from '../access/sessions.ts';
import type { ProxyControl } from './control.ts';
import type { WebSocketSummary } from '../observability/record.ts';
import type { Candidate, ForwardOutcome } from './upstream.ts';

export type Failover = 'idempotent' | 'unreached';

export type { WebSocketSummary };

export class Exchange {
  /** Decoded control headers (the first stage). */
  control: ProxyControl = undefined as unknown as ProxyControl;
  /** The registry as it was when the request arrived: every stage sees the same one. */
  snapshot: RegistrySnapshot;

  /** discovery/forward: the registered instance the call comes from, if any. */
  caller: InstanceView | undefined = undefined;
  /** supervisor/operations: who the platform token says is calling. */
  platform: PlatformCaller | undefined = undefined;

  /** The target service, once resolved. */
  service: ServiceView | undefined = undefined;
  /** For logs and metrics (the service, or the node for forward). */
  serviceName: string | undefined = undefined;
  /** Instances that may serve the request, best first. */
  instances: InstanceView[] = [];
  /** Allowed by the TEST permission alone: only production=false instances may serve it. */
  testOnly = false;
  /** supervisor → base_url, operations → ops_api. */
  targetField: 'base_url' | 'ops_api' = 'base_url';

  /** Where the request may go, in order. */
  candidates: Candidate[] = [];
  /** Headers added upstream (override inbound ones of the same name). */
  upstreamHeaders: Array<[string, string]> = [];
  /** X-Forwarded-For value; defaults to the appended chain. */
  forwardedFor: string | undefined = undefined;
  /** forward mode never exposes instance ids. */
  hideInstanceId = false;
  failover: Failover = 'idempotent';

  /** Request headers consumed here and never forwarded (a verified SigV4 signature). */
  stripHeaders: readonly string[] | null = null;
  /** The query to forward instead of the received one (presigned parameters removed). */
  query: string | undefined = undefined;
  /** Headers added to the response to the client (grant end, Sunset). */
  clientHeaders: Array<[string, string]> = [];
  /** The access decision, for the log line: principal, api, result. */
  authz: { principal?: string; api?: string; result: string; reason?: string; audit?: boolean } | undefined = undefined;
  /** The exchange's registration in the access sessions (authorization ON, allowed). */
  session: SessionHandle | undefined = undefined;
  /** Ends a long-lived exchange whose authorization ended (default: cut the client connection). */
  cut: ((reason: string) => void) | undefined = undefined;
  /** A relayed WebSocket session, once it has ended: for the log line and metrics. */
  websocket: WebSocketSummary | undefined = undefined;

  /** null: no body; Buffer: replayable; AsyncIterable: one attempt only. */
  body: Buffer | AsyncIterable<Buffer> | null = null;
  streamed = false;

  /** Runs once the upstream answered, with its status (e.g. to record an accepted revoke). */
  afterForward: ((status: number) => void) | undefined = undefined;
  outcome: ForwardOutcome | undefined = undefined;
  /** The state of a proxy-made error, for logs and metrics. */
  state: string | undefined = undefined;
  errorMessage: string | undefined = undefined;

  constructor(
    readonly req: IncomingRequest,
    /** The client's writer (a stage may wrap it, e.g. to record the answer). */
    public res: ResponseWriter,
    /** Raw remainder after /api/proxy ('' or '/…'). */
    readonly path: string,
    readonly clientIp: string,
    readonly requestId: string,
    snapshot: RegistrySnapshot,
    readonly started: number,
  ) {
    this.snapshot = snapshot;
  }
}
