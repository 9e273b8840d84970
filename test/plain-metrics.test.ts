// The plain counters and histograms must render exactly what prom-client's own
// metrics render for the same observations (prom-client is the oracle).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import client from 'prom-client';
import { PlainCounter, PlainHistogram } from '../src/observability/plain.ts';

const BUCKETS = [0.001, 0.01, 0.1, 1];

describe('plain metrics', () => {
  it('a histogram renders the same text as prom-client for the same observations', async () => {
    const ours = new client.Registry();
    const theirs = new client.Registry();
    const plain = new PlainHistogram('x_seconds', 'help', ['type'], BUCKETS).register(ours);
    const reference = new client.Histogram({ name: 'x_seconds', help: 'help', labelNames: ['type'], buckets: BUCKETS, registers: [theirs] });
    const samples: Array<[string, number]> = [['a', 0.0005], ['a', 0.001], ['a', 0.5], ['b', 3], ['a', 0.02], ['b', 0.0001], ['a', 1]];
    for (const [t, v] of samples) {
      plain.observe(t, v);
      reference.observe({ type: t }, v);
    }
    assert.equal(await ours.metrics(), await theirs.metrics());
  });

  it('a counter renders the same text as prom-client and keeps label values apart', async () => {
    const ours = new client.Registry();
    const theirs = new client.Registry();
    const plain = new PlainCounter('y_total', 'help', ['type', 'status']).register(ours);
    const reference = new client.Counter({ name: 'y_total', help: 'help', labelNames: ['type', 'status'], registers: [theirs] });
    plain.inc('discovery\u0000200');
    plain.inc('discovery\u0000200', 2);
    plain.inc('forward\u0000502');
    reference.inc({ type: 'discovery', status: '200' }, 3);
    reference.inc({ type: 'forward', status: '502' });
    assert.equal(await ours.metrics(), await theirs.metrics());
    assert.equal(plain.value('discovery\u0000200'), 3);
  });

  it('registries of several workers aggregate by summing', async () => {
    const a = new client.Registry();
    const b = new client.Registry();
    new PlainCounter('z_total', 'help', ['k']).register(a).inc('x', 2);
    new PlainCounter('z_total', 'help', ['k']).register(b).inc('x', 5);
    const merged = client.AggregatorRegistry.aggregate([await a.getMetricsAsJSON(), await b.getMetricsAsJSON()]);
    assert.match(await merged.metrics(), /z_total\{k="x"\} 7/);
  });
});
