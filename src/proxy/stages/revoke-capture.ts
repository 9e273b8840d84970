// Edge revocation of platform tokens: when the platform revokes tokens through a
// service's OperationsAPI (`operations` type, POST …/token/revoke with a JSON
// array of token ids) and the service accepts (2xx), every proxy node refuses
// those ids from then on, even before each service has processed the revoke.
import type { Logger } from 'pino';
import { recordRevokedJtis, type AuthzStore } from '../../access/index.ts';
import type { Stage } from '../chain.ts';

/** Bodies of a revoke are a short list of ids; a larger one is forwarded, not captured. */
const MAX_CAPTURE = 64 * 1024;

export function captureRevoke(store: AuthzStore, log: Logger): Stage {
  return (x) => {
    const req = x.req;
    if (req.method !== 'POST' || !/\/token\/revoke\/?$/.test(x.path) || !req.hasBody) return;
    const declared = Number(req.header('content-length'));
    if (!(declared > 0 && declared <= MAX_CAPTURE)) return;
    return req.readBody(MAX_CAPTURE).then((body) => {
      x.body = body; // forwarded as received
      let jtis: unknown;
      try {
        jtis = JSON.parse(body.toString('utf8'));
      } catch {
        return; // not ours to judge: the service answers it
      }
      if (!Array.isArray(jtis) || jtis.length === 0 || !jtis.every((j) => typeof j === 'string')) return;
      const nodeId = x.platform?.nodeId ?? null;
      x.afterForward = (status) => {
        if (status < 200 || status >= 300) return;
        const jti = x.platform?.claims.jti;
        const actor = { type: 'PLATFORM' as const, id: nodeId, credential: typeof jti === 'string' ? `jwt:${jti}` : null, ip: x.clientIp, requestId: x.requestId };
        recordRevokedJtis(store, jtis as string[], { nodeId, actor }).catch((err) =>
          log.warn({ err, requestId: x.requestId }, 'recording revoked platform token ids failed; the service still revoked them'),
        );
      };
    });
  };
}
