// `npm run faults [-- --soak SECONDS | --soak-minutes N] [--soak-only] [--listener uws|node] [--outage SECONDS] [--load SECONDS] [--clients N]`:
// every fault scenario against real processes on loopback, one line each.
// `--soak-minutes 10 --soak-only` runs the 10-minute soak alone.
import { parseArgs } from 'node:util';
import { flapping, killOneOfThree, killedMidResponse, line, neverAnswers, postgresOutage, redisOutage, shutdownInFlight, soak, type FaultResult } from './faults-lib.ts';
import type { ListenerKind } from '../src/http/types.ts';

const { values } = parseArgs({
  options: {
    soak: { type: 'string', default: '30' }, 'soak-minutes': { type: 'string' }, listener: { type: 'string' }, outage: { type: 'string', default: '10' },
    load: { type: 'string', default: '6' }, clients: { type: 'string', default: '32' }, 'soak-only': { type: 'boolean', default: false },
  },
});
const soakSeconds = values['soak-minutes'] !== undefined ? Number(values['soak-minutes']) * 60 : Number(values.soak);
const clients = Number(values.clients);
for (const [name, v] of [['soak', soakSeconds], ['clients', clients], ['outage', Number(values.outage)], ['load', Number(values.load)]] as const) {
  if (!(Number.isFinite(v) && v > 0)) {
    console.error(`faults: --${name} must be a positive number`);
    process.exit(2);
  }
}
const listeners: ListenerKind[] = values.listener ? [values.listener as ListenerKind] : ['uws', 'node'];
let failed = 0;
for (const server of listeners) {
  console.log(`# ${server} listener`);
  const run = async (p: Promise<FaultResult>) => {
    try {
      const r = await p;
      if (!r.ok) failed++;
      console.log(line(r));
      return r;
    } catch (err) {
      failed++;
      console.log(`FAIL  ${String((err as Error).stack ?? err)}`);
      return null;
    }
  };
  if (values['soak-only']) {
    const s = await run(soak(server, soakSeconds));
    if (s && 'samples' in s) for (const x of (s as Awaited<ReturnType<typeof soak>>).samples) console.log(`      t=${x.t}s rss=${x.rssMb}MB heap=${x.heapMb}MB eld_p99=${x.eldP99Ms}ms rps=${x.rps}`);
    continue;
  }
  await run(killedMidResponse(server));
  await run(neverAnswers(server));
  await run(flapping(server, Number(values.load)));
  await run(killOneOfThree(server, Number(values.load), undefined, clients));
  await run(postgresOutage(server, Number(values.outage)));
  await run(redisOutage(server));
  await run(shutdownInFlight(server, 100));
  const s = await run(soak(server, soakSeconds));
  if (s && 'samples' in s) for (const x of (s as Awaited<ReturnType<typeof soak>>).samples) console.log(`      t=${x.t}s rss=${x.rssMb}MB heap=${x.heapMb}MB eld_p99=${x.eldP99Ms}ms rps=${x.rps}`);
}
process.exit(failed ? 1 : 0);
