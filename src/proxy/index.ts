// /api/proxy[/<path>]: one direction only —
//   control headers → mode (authenticate + resolve candidates) → forward → respond.
// Each proxy type is a small function returning the candidates and the headers
// it adds; nothing here touches the database (the registry is in memory).
import type { Logger } from 'pino';
import type { IncomingRequest, ResponseWriter, HeaderList } from '../http/types.ts';
import { BodyTooLargeError } from '../http/types.ts';
import { HttpError, corsHeaders, errorBody } from '../api/respond.ts';
import type { Config } from '../config/index.ts';
import type { RegistrySnapshot } from '../registry/snapshot.ts';
import { isPrivateIp } from '../net/ip.ts';
import { parseControl, outboundHeaders, type ProxyControl, type ProxyType } from './control.ts';
import { candidates, resolveService } from '../registry/select.ts';
import { Upstream, type Candidate, type ForwardOutcome } from './upstream.ts';

export interface ProxyContext {
  req: IncomingRequest;
  control: ProxyControl;
  clientIp: string;
  snapshot: RegistrySnapshot;
}

export interface ModeResult {
  candidates: Candidate[];
  /** Headers added to the upstream request (override inbound ones of the same name). */
  headers: Array<[string, string]>;
  /** X-Forwarded-For value; defaults to the appended chain. */
  forwardedFor?: string;
  /** For logs and metrics. */
  service?: string;
  /** forward mode never exposes instance ids (spec §1.5.5). */
  hideInstanceId?: boolean;
  /** Failover policy (default 'idempotent'; forward mode: 'unreached'). */
  failover?: 'idempotent' | 'unreached';
}

export type Mode = (ctx: ProxyContext) => ModeResult | Promise<ModeResult>;

export interface ProxyDeps {
  config: Config;
  log: Logger;
  upstream: Upstream;
  snapshot: () => RegistrySnapshot;
  /** Modes beyond discovery are plugged in by the platform link. */
  modes?: Partial<Record<ProxyType, Mode>>;
  onResult?: (r: ProxyLogRecord) => void;
}

export interface ProxyLogRecord {
  requestId: string;
  method: string;
  path: string;
  type: ProxyType | 'invalid';
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
}

/** spec §1.5.4(a), with bug §6.1 fixed: the caller is matched by instance host. */
export function discoveryMode(config: Config): Mode {
  return ({ control, clientIp, snapshot }) => {
    if (!control.serviceName) throw new HttpError(400, 'discovery requires the X-UtilMeta-Service-Name header');
    if (config.private && !isPrivateIp(clientIp)) {
      throw new HttpError(403, `discovery is only open to private network clients (PRIVATE is set); your address is ${clientIp}`);
    }
    const headers: Array<[string, string]> = [];
    const caller = snapshot.instancesAt(clientIp)[0];
    if (caller) {
      if (caller.remoteId) headers.push(['x-utilmeta-source-instance-id', caller.remoteId]);
      // The original sends the proxy-local service PK here (§6.6); kept for compatibility,
      // with the name alongside so services need not know proxy ids.
      headers.push(['x-utilmeta-source-service', caller.serviceId], ['x-utilmeta-source-service-name', caller.serviceName]);
    } else if (config.validateForwardIps) {
      throw new HttpError(403, `caller ${clientIp} is not a registered instance (VALIDATE_FORWARD_IPS is set)`);
    }
    const r = resolveService(snapshot, control.serviceName, { instanceId: control.instanceId, acceptVersion: control.acceptVersion });
    return { candidates: candidates(r.instances, 'base_url'), headers, service: r.serviceName };
  };
}

export class ProxyHandler {
  private modes: Partial<Record<ProxyType, Mode>>;

  constructor(private deps: ProxyDeps) {
    this.modes = { discovery: discoveryMode(deps.config), ...deps.modes };
  }

  setMode(type: ProxyType, mode: Mode): void {
    this.modes[type] = mode;
  }

  /** `path` is the remainder after /api/proxy ('' or '/...'). */
  async handle(req: IncomingRequest, res: ResponseWriter, path: string, clientIp: string, requestId: string): Promise<void> {
    const started = performance.now();
    const { config } = this.deps;
    let control: ProxyControl | undefined;
    let mode: ModeResult | undefined;
    let outcome: ForwardOutcome | undefined;
    let state: string | undefined;
    let errorMessage: string | undefined;
    try {
      control = parseControl(req, config.defaultTimeout, config.maxTimeout);
      const fn = this.modes[control.type];
      if (!fn) throw new HttpError(501, `proxy type '${control.type}' is not enabled on this node (the platform link is not configured)`);
      mode = await fn({ req, control, clientIp, snapshot: this.deps.snapshot() });
      if (mode.candidates.length === 0) throw new HttpError(503, 'no upstream available for this request');

      const declared = Number(req.header('content-length'));
      if (declared > config.bodyLimit) throw new BodyTooLargeError(config.bodyLimit);
      let body: Buffer | AsyncIterable<Buffer> | null = null;
      let streamed = false;
      if (req.hasBody) {
        // Buffer only when a failover could need to replay the body.
        if ((control.idempotent || mode.failover === 'unreached') && mode.candidates.length > 1) body = await req.readBody(config.bodyLimit);
        else {
          body = req.body(config.bodyLimit);
          streamed = true;
        }
      }
      const peerChain = req.header('x-forwarded-for');
      const forwardedFor = mode.forwardedFor ?? (peerChain && clientIp !== req.remoteAddress ? `${peerChain}, ${req.remoteAddress}` : clientIp);
      const headers = outboundHeaders(req, streamed, mode.headers, forwardedFor);
      const hideId = mode.hideInstanceId === true;
      outcome = await this.deps.upstream.forward(
        { method: req.method, path, query: req.query, headers, body, idempotent: control.idempotent, timeoutMs: control.timeoutMs, failover: mode.failover },
        mode.candidates,
        res,
        (_status, out, target, retries) => this.decorate(req, out, target, retries, started, requestId, hideId),
      );
      if (outcome.error && !outcome.committed && !res.aborted) {
        const err = outcome.error;
        const headers: HeaderList = [...corsHeaders(req), ['x-request-id', requestId]];
        if (outcome.target) this.proxyHeaders(headers, outcome.target, outcome.retries, hideId);
        res.send(err.status, [['content-type', 'application/json'], ...headers], JSON.stringify({ error: err.message, state: `upstream_${err.kind}` }));
      }
    } catch (err) {
      const e = toHttpError(err, config.bodyLimit);
      if (!e) {
        this.deps.log.error({ err, requestId }, 'proxy request failed');
      }
      const he = e ?? new HttpError(500, 'internal proxy error');
      if (!res.aborted) {
        res.send(he.status, [['content-type', 'application/json'], ...corsHeaders(req), ['x-request-id', requestId], ...he.headers], JSON.stringify(errorBody(he)));
      }
      outcome = { status: he.status, committed: true, retries: 0, upstreamMs: 0, error: undefined };
      state = he.state;
      errorMessage = he.message;
    }
    const record: ProxyLogRecord = {
      requestId,
      method: req.method,
      path,
      type: control?.type ?? 'invalid',
      service: mode?.service,
      target: outcome?.target?.baseUrl,
      status: outcome?.status ?? 0,
      retries: outcome?.retries ?? 0,
      durationMs: Math.round((performance.now() - started) * 100) / 100,
      upstreamMs: outcome?.target ? Math.round(outcome.upstreamMs * 100) / 100 : undefined,
      instance: outcome?.target?.remoteId ?? undefined,
      error: outcome?.error?.message ?? errorMessage,
      errorKind: outcome?.error?.kind,
      state,
    };
    this.deps.onResult?.(record);
  }

  private proxyHeaders(out: HeaderList, target: Candidate, retries: number, hideId: boolean): void {
    out.push(['x-utilmeta-proxy-destination-base-url', target.baseUrl]);
    if (retries > 0) out.push(['x-utilmeta-proxy-retries', String(retries)]);
    if (!hideId && target.remoteId) out.push(['x-utilmeta-proxy-destination-instance-id', target.remoteId]);
  }

  private decorate(req: IncomingRequest, out: HeaderList, target: Candidate, retries: number, started: number, requestId: string, hideId: boolean): void {
    let upstreamTiming: string | undefined;
    let hasCors = false;
    for (let i = out.length - 1; i >= 0; i--) {
      const name = out[i][0];
      if (name === 'server-timing') {
        upstreamTiming = upstreamTiming ? `${out[i][1]},${upstreamTiming}` : out[i][1];
        out.splice(i, 1);
      } else if (name === 'access-control-allow-origin') hasCors = true;
    }
    // Total time spent in the proxy up to the upstream's response head (§6.24).
    const dur = Math.round(performance.now() - started);
    out.push(['server-timing', upstreamTiming ? `proxy;dur=${dur},${upstreamTiming}` : `proxy;dur=${dur}`]);
    this.proxyHeaders(out, target, retries, hideId);
    if (!out.some(([n]) => n === 'x-request-id')) out.push(['x-request-id', requestId]);
    // An upstream that answers CORS itself is left alone (spec §1.2).
    if (!hasCors) out.push(...corsHeaders(req));
  }
}

export function toHttpError(err: unknown, limit: number): HttpError | null {
  if (err instanceof HttpError) return err;
  if (err instanceof BodyTooLargeError) return new HttpError(413, `request body exceeds the limit of ${limit} bytes`);
  return null;
}
