// Stages run in order over one Exchange. A stage that returns nothing is
// synchronous and the next one runs at once; only a stage that returns a
// promise is waited for (no await, and no promise, per synchronous stage).
import type { Exchange } from './exchange.ts';

export type Stage = (x: Exchange) => void | Promise<void>;

export type Chain = (x: Exchange) => void | Promise<void>;

export function compose(stages: readonly Stage[]): Chain {
  const last = stages.length - 1;
  const run = (x: Exchange, from: number): void | Promise<void> => {
    for (let i = from; i < stages.length; i++) {
      const r = stages[i](x);
      // The last stage's promise is the chain's: no promise wrapped around it.
      if (r !== undefined) return i === last ? r : r.then(() => run(x, i + 1));
    }
  };
  return (x) => run(x, 0);
}
