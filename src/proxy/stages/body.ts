// Body policy: refuse what is declared too large before reading it, buffer only
// when a failover could need to replay the body, stream otherwise.
import type { Config } from '../../config/index.ts';
import { BodyTooLargeError } from '../../http/types.ts';
import type { Stage } from '../chain.ts';

export function bodyPolicy(config: Config): Stage {
  const limit = config.bodyLimit;
  return (x) => {
    const req = x.req;
    if (!req.hasBody || x.body !== null) return; // none, or already read (a signature covered it)
    const declared = Number(req.header('content-length'));
    if (declared > limit) throw new BodyTooLargeError(limit);
    if ((x.control.idempotent || x.failover === 'unreached') && x.candidates.length > 1) {
      return req.readBody(limit).then((b) => {
        x.body = b;
      });
    }
    x.body = req.body(limit);
    x.streamed = true;
  };
}
