// Body policy: refuse what is declared too large before reading it, buffer only
// when a failover could need to replay the body, stream otherwise.
import type { Config } from '../../config/index.ts';
import { BodyTooLargeError } from '../../http/types.ts';
import type { Stage } from '../chain.ts';

/** Bodies up to this size are buffered so that a never-sent attempt can go to the next instance. */
const SMALL_BODY = 64 * 1024;

export function bodyPolicy(config: Config): Stage {
  const limit = config.bodyLimit;
  return (x) => {
    const req = x.req;
    if (!req.hasBody || x.body !== null) return; // none, or already read (a signature covered it)
    const declared = Number(req.header('content-length'));
    if (declared > limit) throw new BodyTooLargeError(limit);
    // A non-idempotent request may still fail over when an attempt never reached
    // its upstream, which needs the body again: small declared bodies are kept
    // for that; larger ones stream and get one attempt.
    const small = declared <= SMALL_BODY && req.header('transfer-encoding') === undefined;
    const replay = x.control.idempotent || x.failover === 'unreached' || small;
    // With one candidate only a Retry-After wait can send the body again (idempotent requests).
    if (replay && (x.candidates.length > 1 || (x.control.idempotent && small))) {
      return req.readBody(limit).then((b) => {
        x.body = b;
      });
    }
    x.body = req.body(limit);
    x.streamed = true;
  };
}
