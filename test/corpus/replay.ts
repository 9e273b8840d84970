// Replays the bad-input corpus against each listener and prints a table of
// failures per invariant, then every failing case.
//   node --import tsx test/corpus/replay.ts [--listener uws|node] [--surface NAME] [--quiet]
import { parseArgs } from 'node:util';
import { uwsAvailable } from '../../src/http/listen.ts';
import type { ListenerKind } from '../../src/http/types.ts';
import { loadCorpus } from './cases.ts';
import { failures, replayCorpus, startCorpusEnv, DEADLINE_MS } from './run.ts';

const { values } = parseArgs({ options: { listener: { type: 'string' }, surface: { type: 'string' }, quiet: { type: 'boolean', default: false } } });
const all = loadCorpus();
const cases = values.surface ? all.filter((c) => c.surface === values.surface) : all;
const listeners: ListenerKind[] = values.listener ? [values.listener as ListenerKind] : uwsAvailable() ? ['uws', 'node'] : ['node'];

const rows: Array<Record<string, string | number>> = [];
const details: string[] = [];
for (const listener of listeners) {
  const env = await startCorpusEnv(listener);
  const t0 = performance.now();
  try {
    const report = await replayCorpus(env, cases);
    const f = failures(report);
    const slowest = report.results.reduce((m, r) => Math.max(m, r.outcome.ms), 0);
    rows.push({
      listener, cases: cases.length, '500s': f.status500.length, leaks: f.leaks.length, hangs: f.hangs.length, unacceptable: f.unacceptable.length,
      'rows changed': f.rowsChanged.length, 'upstream escapes': f.upstreamEscapes.length, alive: report.alive.status, 'error logs': report.errorLogs,
      'slowest ms': slowest, 'replay s': Math.round((performance.now() - t0) / 100) / 10,
    });
    for (const [k, list] of Object.entries(f)) for (const line of list) details.push(`${listener.padEnd(5)} ${k.padEnd(16)} ${line}`);
  } finally {
    await env.close();
  }
}
console.log(`bad-input corpus: ${cases.length} cases, per-case deadline ${DEADLINE_MS} ms`);
console.table(rows);
if (!values.quiet) for (const d of details) console.log(d);
process.exit(0);
