// The API layer: response helpers, error mapping and request ids, on top of the
// HTTP edge. Domains never import this.
export { HttpError, RawReply, sendJson, errorBody, corsHeaders, pushCorsFields, sendPreflight, EXPOSED_HEADERS, ALLOWED_HEADERS } from './respond.ts';
export { toHttpError, httpErrorOfDomain, STATUS_OF_KIND } from './errors.ts';
export { requestId } from './request-id.ts';
export { Router, type RouteMatch, type RouteResult } from './router.ts';
export { sendOk, sendError, type Surface, type EnvelopeContext } from './envelopes.ts';
