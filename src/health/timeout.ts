// A bound on Redis round trips made outside the request path's own timeouts:
// ioredis queues commands while disconnected, so an unbounded await could hang
// an election round or an operator call for the whole outage. Hand-written
// because it is a few lines around setTimeout and no dependency is needed.
export class RedisTimeout extends Error {
  constructor(ms: number) {
    super(`Redis did not answer within ${ms} ms`);
  }
}

export function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new RedisTimeout(ms)), ms);
    p.then(
      (v) => { clearTimeout(timer); resolve(v); },
      (e) => { clearTimeout(timer); reject(e); },
    );
  });
}
