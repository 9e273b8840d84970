// The upstream leg: outbound headers, the attempts with failover, and the
// headers the proxy adds to the relayed response.
import { pushCorsFields } from '../../api/respond.ts';
import { fieldPairs, type IncomingRequest } from '../../http/types.ts';
import { outboundHeaders } from '../control.ts';
import type { Exchange } from '../exchange.ts';
import type { Stage } from '../chain.ts';
import type { Candidate, ForwardOutcome, RetryPolicy, Upstream } from '../upstream.ts';

/** The destination headers, appended to a flat [name, value, ...] list. */
export function proxyFields(out: string[], target: Candidate, retries: number, hideId: boolean): void {
  out.push('x-utilmeta-proxy-destination-base-url', target.baseUrl);
  if (retries > 0) out.push('x-utilmeta-proxy-retries', String(retries));
  if (!hideId && target.remoteId) out.push('x-utilmeta-proxy-destination-instance-id', target.remoteId);
}

/**
 * Adds server-timing, the destination headers, the request id and CORS to an
 * upstream response head, flat [name, value, ...].
 */
export function decorate(x: Exchange, req: IncomingRequest, out: string[], target: Candidate, retries: number): void {
  let upstreamTiming: string | undefined;
  let hasCors = false;
  let hasRequestId = false;
  for (let i = out.length - 2; i >= 0; i -= 2) {
    const name = out[i];
    if (name === 'server-timing') {
      upstreamTiming = upstreamTiming ? `${out[i + 1]},${upstreamTiming}` : out[i + 1];
      out.splice(i, 2);
    } else if (name === 'access-control-allow-origin') hasCors = true;
    else if (name === 'x-request-id') hasRequestId = true;
  }
  // Time spent in the proxy up to the upstream's response head.
  const dur = Math.round(performance.now() - x.started);
  out.push('server-timing', upstreamTiming ? `proxy;dur=${dur},${upstreamTiming}` : `proxy;dur=${dur}`);
  proxyFields(out, target, retries, x.hideInstanceId);
  if (!hasRequestId) out.push('x-request-id', x.requestId);
  for (const h of x.clientHeaders) out.push(h[0], h[1]);
  // An upstream that answers CORS itself is left alone.
  if (!hasCors) pushCorsFields(req, out);
}

/** The headers the upstream gets (the same for HTTP and WebSocket exchanges). */
export function upstreamRequestHeaders(x: Exchange): string[] {
  const req = x.req;
  const peerChain = req.header('x-forwarded-for');
  const forwardedFor = x.forwardedFor ?? (peerChain && x.clientIp !== req.remoteAddress ? `${peerChain}, ${req.remoteAddress}` : x.clientIp);
  return outboundHeaders(req, x.streamed, x.upstreamHeaders, forwardedFor, x.stripHeaders);
}

/** The proxy's own JSON error after the upstream attempts failed (nothing went to the client yet). */
export function sendUpstreamError(x: Exchange, o: ForwardOutcome): void {
  if (!o.error || x.res.aborted) return;
  const f = ['content-type', 'application/json'];
  pushCorsFields(x.req, f);
  f.push('x-request-id', x.requestId);
  if (o.target) proxyFields(f, o.target, o.retries, x.hideInstanceId);
  x.res.send(o.error.status, fieldPairs(f), JSON.stringify({ error: o.error.message, state: `upstream_${o.error.kind}` }));
}

export function forward(upstream: Upstream, retryPolicy?: (serviceId: string | undefined) => RetryPolicy | undefined): Stage {
  // Not async: one promise per request, settled from the forwarding's callback.
  return (x) => new Promise<void>((resolve, reject) => {
    const req = x.req;
    const headers = upstreamRequestHeaders(x);
    const c = x.control;
    upstream.forward(
      { method: req.method, path: x.path, query: x.query ?? req.query, headers, body: x.body, idempotent: c.idempotent, timeoutMs: c.timeoutMs, failover: x.failover,
        retry: retryPolicy?.(x.service?.id) },
      x.candidates,
      x.res,
      (_status, out, target, retries) => decorate(x, req, out, target, retries),
      (o) => {
        try {
          forwarded(x, o);
          resolve();
        } catch (err) {
          reject(err);
        }
      },
    );
  });
}

function forwarded(x: Exchange, o: ForwardOutcome): void {
  x.outcome = o;
  if (x.afterForward && o.committed && !o.error) x.afterForward(o.status);
  if (o.error && !o.committed) sendUpstreamError(x, o);
}
