// Pure logic of the health building blocks: no network, no Redis, explicit clocks.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DomainError } from '../src/core/errors.ts';
import {
  ActiveHealthChecker, IdempotencyStore, InstanceHealth, OutlierDetector, ResponseRecorder, RetryBudget, RetryBudgets,
  SoloLeader, decideRetry, idempotencyError, outcomeOf, parseIdempotencyKey, parseRetryAfter, requestFingerprint,
  requiresIdempotencyCheck,
} from '../src/health/index.ts';

const T0 = 1_800_000_000_000;

describe('outlier detection', () => {
  it('ejects after N consecutive failures, and a success resets the count', () => {
    const d = new OutlierDetector({ consecutiveFailures: 3, baseEjectionMs: 1000, maxEjectionMs: 10_000 });
    assert.equal(d.record('a', 's', 4, 'failure', T0), null);
    assert.equal(d.record('a', 's', 4, 'failure', T0), null);
    assert.equal(d.record('a', 's', 4, 'success', T0), null);
    assert.equal(d.record('a', 's', 4, 'failure', T0), null);
    assert.equal(d.record('a', 's', 4, 'failure', T0), null);
    assert.equal(d.isEjected('a', T0), false);
    const e = d.record('a', 's', 4, 'failure', T0);
    assert.ok(e);
    assert.equal(e.until, T0 + 1000);
    assert.equal(e.count, 1);
    assert.equal(d.isEjected('a', T0 + 999), true);
    assert.equal(d.isEjected('a', T0 + 1000), false);
    assert.equal(d.isEjected('b', T0), false);
  });

  it('ejects on the first unreached attempt by default (nothing listens there)', () => {
    const d = new OutlierDetector();
    const e = d.record('a', 's', 3, 'unreached', T0, 'refused');
    assert.ok(e);
    assert.match(e.reason, /unreached/);
    assert.equal(d.isEjected('a', T0 + 1), true);
  });

  it('grows the ejection time with repeated ejections, capped, and decays after a long healthy spell', () => {
    const d = new OutlierDetector({ consecutiveFailures: 1, baseEjectionMs: 1000, maxEjectionMs: 3500 });
    const lengths: number[] = [];
    let now = T0;
    for (let i = 0; i < 5; i++) {
      const e = d.record('a', 's', 2, 'failure', now);
      assert.ok(e, `ejection ${i + 1}`);
      lengths.push(e.until - e.since);
      now = e.until; // fails again the moment it returns
    }
    assert.deepEqual(lengths, [1000, 2000, 3000, 3500, 3500]);
    // Back in rotation for more than 2 × maxEjectionMs: the multiplier decays by 2.
    const later = now + 2 * 3500 + 1;
    const e = d.record('a', 's', 2, 'failure', later);
    assert.ok(e);
    assert.equal(e.count, 4);
    const wayLater = e.until + 100 * 3500;
    assert.equal(d.record('a', 's', 2, 'failure', wayLater)!.count, 1);
  });

  it('caps the share of a service ejected at once and never ejects the last instance', () => {
    const d = new OutlierDetector({ consecutiveFailures: 1, maxEjectionPercent: 50 });
    assert.equal(d.maxEjected(1), 0);
    assert.equal(d.maxEjected(2), 1);
    assert.equal(d.maxEjected(3), 1);
    assert.equal(d.maxEjected(4), 2);
    assert.equal(d.maxEjected(10), 5);
    assert.ok(d.record('a', 's', 4, 'failure', T0));
    assert.ok(d.record('b', 's', 4, 'failure', T0));
    assert.equal(d.record('c', 's', 4, 'failure', T0), null, 'a third of four is over 50%');
    assert.ok(d.record('x', 'other', 4, 'failure', T0), 'the cap is per service');
    assert.equal(d.ejectedIn('s', T0), 2);
    // Once the first ejections end, c may be ejected.
    assert.equal(d.ejectedIn('s', T0 + 30_000), 0);
    assert.ok(d.record('c', 's', 4, 'failure', T0 + 30_000));
    const solo = new OutlierDetector({ consecutiveFailures: 1 });
    assert.equal(solo.record('only', 's1', 1, 'failure', T0), null);
    assert.equal(solo.isEjected('only', T0), false);
    // A tiny percentage still allows one ejection (envoy's rule); zero disables ejection.
    assert.equal(new OutlierDetector({ maxEjectionPercent: 10 }).maxEjected(3), 1);
    assert.equal(new OutlierDetector({ maxEjectionPercent: 0 }).maxEjected(10), 0);
  });

  it('merges remote ejections (the later end wins) and lifts them early', () => {
    const d = new OutlierDetector();
    assert.equal(d.apply({ instanceId: 'a', serviceId: 's', since: T0, until: T0 + 5000, count: 2, reason: 'remote' }, T0), true);
    assert.equal(d.apply({ instanceId: 'a', serviceId: 's', since: T0, until: T0 + 4000, count: 1, reason: 'older' }, T0), false);
    assert.equal(d.apply({ instanceId: 'z', serviceId: 's', since: T0 - 10, until: T0 - 1, count: 1, reason: 'past' }, T0), false);
    assert.equal(d.isEjected('a', T0 + 4500), true);
    assert.equal(d.ejection('a', T0)!.reason, 'remote');
    // Failures while ejected do not stack another ejection.
    assert.equal(d.record('a', 's', 2, 'unreached', T0 + 1), null);
    assert.equal(d.lift('a', T0 + 100), true);
    assert.equal(d.isEjected('a', T0 + 101), false);
    assert.equal(d.lift('a', T0 + 100), false);
  });

  it('rejects bad options naming the field', () => {
    assert.throws(() => new OutlierDetector({ consecutiveFailures: 0 }), (e: unknown) => e instanceof DomainError && e.kind === 'invalid' && e.field === 'consecutiveFailures');
    assert.throws(() => new OutlierDetector({ maxEjectionPercent: 101 }), (e: unknown) => e instanceof DomainError && e.field === 'maxEjectionPercent');
    assert.throws(() => new OutlierDetector({ baseEjectionMs: 10, maxEjectionMs: 5 }), (e: unknown) => e instanceof DomainError && e.field === 'maxEjectionMs');
  });

  it('maps attempt results to outcomes', () => {
    assert.equal(outcomeOf(200), 'success');
    assert.equal(outcomeOf(404), 'success');
    assert.equal(outcomeOf(503), 'failure');
    assert.equal(outcomeOf(null, { kind: 'refused', unreached: true }), 'unreached');
    assert.equal(outcomeOf(null, { kind: 'timeout', unreached: false }), 'failure');
    assert.equal(outcomeOf(null, { kind: 'client_aborted', unreached: false }), null);
    assert.equal(outcomeOf(null, { kind: 'body_too_large', unreached: false }), null);
  });
});

describe('instance health (one node)', () => {
  const sizes = new Map([['s', 3]]);
  const make = (clock: { now: number }) => new InstanceHealth({
    serviceSize: (id) => sizes.get(id) ?? 0, clock: () => clock.now, unhealthyAfterMs: 60_000,
    outlier: { consecutiveFailures: 2, baseEjectionMs: 1000, maxEjectionMs: 5000 },
  });
  const insts = [{ id: '1', serviceId: 's' }, { id: '2', serviceId: 's' }, { id: '3', serviceId: 's' }];

  it('filters ejected and draining instances, keeping order, and reports health', async () => {
    const clock = { now: T0 };
    const events: string[] = [];
    const h = new InstanceHealth({
      serviceSize: (id) => sizes.get(id) ?? 0, clock: () => clock.now, unhealthyAfterMs: 60_000,
      outlier: { consecutiveFailures: 2, baseEjectionMs: 1000, maxEjectionMs: 5000 },
      onEvent: (e) => events.push(`${e.type}:${e.source}:${'ejection' in e ? e.ejection.instanceId : e.instanceId}`),
    });
    assert.deepEqual(h.healthOf('2'), { state: 'healthy', since: null, reason: null });
    h.report(insts[1], 'failure');
    assert.deepEqual(h.filter(insts).map((i) => i.id), ['1', '2', '3']);
    assert.ok(h.report(insts[1], 'failure', 'HTTP 502'));
    assert.deepEqual(h.filter(insts).map((i) => i.id), ['1', '3']);
    const r = h.healthOf('2');
    assert.equal(r.state, 'ejected');
    assert.equal(r.since, T0);
    assert.match(r.reason!, /HTTP 502/);
    await h.drain('3');
    assert.equal(h.isDraining('3'), true);
    assert.deepEqual(h.filter(insts).map((i) => i.id), ['1']);
    assert.equal(h.healthOf('3').state, 'draining');
    clock.now = T0 + 1000;
    assert.deepEqual(h.filter(insts).map((i) => i.id), ['1', '2']);
    assert.deepEqual(h.healthOf('2'), { state: 'healthy', since: T0 + 1000, reason: null });
    await h.undrain('3');
    assert.deepEqual(h.filter(insts).map((i) => i.id), ['1', '2', '3']);
    const m = h.metrics();
    assert.deepEqual(m.ejectionsTotal, [{ serviceId: 's', instanceId: '2', source: 'local', count: 1 }]);
    assert.deepEqual(events, ['ejected:local:2', 'drained:local:3', 'undrained:local:3']);
    assert.equal(m.drainingNow, 0);
  });

  it('returns every non-draining instance when all are out of rotation (panic), never a draining one', async () => {
    const clock = { now: T0 };
    const h = make(clock);
    await h.drain('1');
    for (const id of ['2', '3']) await h.probed({ instanceId: id, serviceId: 's', up: false, since: T0, validUntil: T0 + 10_000, reason: 'probe failed', fails: 3, passes: 0 });
    assert.deepEqual(h.filter(insts).map((i) => i.id), ['2', '3']);
    assert.deepEqual(h.filter([insts[0]]), []);
  });

  it('reports probe-down instances as ejected, then unhealthy after the configured time, and readmits', async () => {
    const clock = { now: T0 };
    const h = make(clock);
    const down = { instanceId: '1', serviceId: 's', up: false, since: T0, validUntil: T0 + 90_000, reason: '3 failed probes', fails: 3, passes: 0 };
    await h.probed(down);
    assert.equal(h.isAvailable('1'), false);
    assert.equal(h.healthOf('1').state, 'ejected');
    clock.now = T0 + 60_000;
    assert.deepEqual(h.healthOf('1'), { state: 'unhealthy', since: T0, reason: '3 failed probes' });
    // The verdict lapses when the prober stops renewing it.
    clock.now = T0 + 90_000;
    assert.equal(h.isAvailable('1'), true);
    clock.now = T0 + 60_000;
    await h.probed({ ...down, up: true, since: clock.now, reason: '', fails: 0, passes: 2 });
    assert.equal(h.isAvailable('1'), true);
    assert.equal(h.healthOf('1').state, 'healthy');
  });

  it('a failed probe below the down threshold (still up) does not end a passive ejection', async () => {
    const clock = { now: T0 };
    const h = make(clock);
    h.report(insts[0], 'unreached');
    await h.probed({ instanceId: '1', serviceId: 's', up: true, since: T0, validUntil: T0 + 1000, reason: '', fails: 1, passes: 0 });
    assert.equal(h.isEjected('1'), true, 'one failed probe confirms the ejection rather than lifting it');
    await h.probed({ instanceId: '1', serviceId: 's', up: true, since: T0, validUntil: T0 + 1000, reason: '', fails: 0, passes: 1 });
    assert.equal(h.isEjected('1'), false, 'a passed probe lifts it');
  });

  it('a readmitting probe ends a passive ejection too', async () => {
    const clock = { now: T0 };
    const h = make(clock);
    h.report(insts[0], 'unreached');
    assert.equal(h.isEjected('1'), true);
    await h.probed({ instanceId: '1', serviceId: 's', up: true, since: T0, validUntil: T0 + 1000, reason: '', fails: 0, passes: 2 });
    assert.equal(h.isEjected('1'), false);
  });

  it('forgets instances that left the registry', async () => {
    const h = make({ now: T0 });
    h.report(insts[1], 'unreached');
    await h.drain('3');
    assert.equal(h.isAvailable('2'), false);
    h.retain(new Set(['1']));
    assert.equal(h.isAvailable('2'), true);
    assert.equal(h.isDraining('3'), false);
    assert.equal(h.metrics().ejectedNow.length, 0);
    assert.equal(h.metrics().redisConnected, null);
  });

  it('rejects a bad instance id or drain ttl naming the field', async () => {
    const h = make({ now: T0 });
    await assert.rejects(h.drain(''), (e: unknown) => e instanceof DomainError && e.field === 'instanceId');
    await assert.rejects(h.drain('1', -5), (e: unknown) => e instanceof DomainError && e.field === 'ttlMs');
    assert.equal(h.isDraining('1'), false);
  });
});

describe('retry budget', () => {
  it('allows the minimum per second on a quiet service, then 20% of requests', () => {
    const b = new RetryBudget({ ratio: 0.2, windowMs: 10_000, minPerSecond: 3 });
    // Quiet: 30 retries over the window (3/s × 10 s), whatever the requests.
    let granted = 0;
    for (let i = 0; i < 50; i++) if (b.tryRetry(T0)) granted++;
    assert.equal(granted, 30);
    assert.equal(b.refused, 20);
    // Busy: 1000 requests allow 200 retries in the same window.
    const busy = new RetryBudget();
    for (let i = 0; i < 1000; i++) busy.onRequest(T0 + i);
    granted = 0;
    for (let i = 0; i < 300; i++) if (busy.tryRetry(T0 + 1000)) granted++;
    assert.equal(granted, 200);
    assert.deepEqual(busy.window(T0 + 1000), { requests: 1000, retries: 200 });
  });

  it('slides: old buckets leave the window', () => {
    const b = new RetryBudget({ ratio: 0.5, windowMs: 1000, minPerSecond: 0, buckets: 10 });
    for (let i = 0; i < 10; i++) b.onRequest(T0);
    assert.equal(b.available(T0), 5);
    assert.equal(b.tryRetry(T0), true);
    assert.equal(b.available(T0 + 500), 4);
    for (let i = 0; i < 10; i++) b.onRequest(T0 + 500);
    assert.equal(b.available(T0 + 900), 9);
    // The first ten requests and the retry fall out at T0 + 1000.
    assert.deepEqual(b.window(T0 + 1000), { requests: 10, retries: 0 });
    assert.equal(b.available(T0 + 1000), 5);
    assert.deepEqual(b.window(T0 + 5000), { requests: 0, retries: 0 });
    assert.equal(b.tryRetry(T0 + 5000), false);
  });

  it('keeps one budget per service and validates options', () => {
    const all = new RetryBudgets({ minPerSecond: 0.1, windowMs: 10_000 });
    assert.equal(all.of('a').tryRetry(T0), true);
    assert.equal(all.of('a').tryRetry(T0), false);
    assert.equal(all.of('b').tryRetry(T0), true);
    assert.deepEqual(all.counters().sort((x, y) => x.serviceId.localeCompare(y.serviceId)), [
      { serviceId: 'a', granted: 1, refused: 1 }, { serviceId: 'b', granted: 1, refused: 0 },
    ]);
    assert.throws(() => new RetryBudget({ ratio: 2 }), (e: unknown) => e instanceof DomainError && e.field === 'ratio');
    assert.throws(() => new RetryBudgets({ windowMs: 0 }), (e: unknown) => e instanceof DomainError && e.field === 'windowMs');
  });
});

describe('Retry-After', () => {
  const now = Date.parse('2026-11-27T12:00:00Z');
  it('parses delay-seconds and the three HTTP-date forms', () => {
    assert.equal(parseRetryAfter('120', now), 120_000);
    assert.equal(parseRetryAfter(' 0 ', now), 0);
    assert.equal(parseRetryAfter('Fri, 27 Nov 2026 12:00:05 GMT', now), 5000);
    assert.equal(parseRetryAfter('Friday, 27-Nov-26 12:00:07 GMT', now), 7000);
    assert.equal(parseRetryAfter('Fri Nov 27 12:00:09 2026', now), 9000);
    assert.equal(parseRetryAfter('Fri, 27 Nov 2026 11:00:00 GMT', now), 0, 'a past date means now');
    assert.equal(parseRetryAfter('99999999999999999999', now), 9_999_999_999_000);
  });

  it('ignores malformed values', () => {
    for (const bad of [undefined, null, '', '-1', '1.5', '5s', 'soon', 'Fri, 27 Nov 2026 12:00:05', '27 Nov 2026 12:00:05 GMT', 'Fri, 32 Nov 2026 12:00:05 GMT']) {
      assert.equal(parseRetryAfter(bad, now), null, String(bad));
    }
  });

  it('decides: next candidate, wait for the same instance, or relay when the wait does not fit', () => {
    const base = { now, deadline: now + 5000, attemptMs: 500, otherCandidates: false };
    const ra = (v: string) => parseRetryAfter(v, now);
    assert.deepEqual(decideRetry({ ...base, status: 502, retryAfterMs: ra('3'), otherCandidates: true }), { action: 'next' }, 'only 429/503 wait');
    assert.deepEqual(decideRetry({ ...base, status: 502, retryAfterMs: ra('3') }), { action: 'relay', reason: 'no_candidate' });
    assert.deepEqual(decideRetry({ ...base, status: 503, retryAfterMs: ra('2') }), { action: 'wait', delayMs: 2000 });
    assert.deepEqual(decideRetry({ ...base, status: 503, retryAfterMs: ra('4'), otherCandidates: true }), { action: 'next' }, '503 speaks for its instance');
    assert.deepEqual(decideRetry({ ...base, status: 429, retryAfterMs: ra('3'), otherCandidates: true }), { action: 'wait', delayMs: 3000 }, '429 speaks for the caller: no hop');
    assert.deepEqual(decideRetry({ ...base, status: 429, retryAfterMs: ra('junk'), otherCandidates: true }), { action: 'next' });
    assert.deepEqual(decideRetry({ ...base, status: 429, retryAfterMs: ra('0') }), { action: 'relay', reason: 'no_candidate' });
    assert.deepEqual(decideRetry({ ...base, status: 429, retryAfterMs: ra('5') }), { action: 'relay', reason: 'beyond_deadline' });
    assert.deepEqual(decideRetry({ ...base, status: 503, retryAfterMs: ra('4.5') ?? 4600 }), { action: 'relay', reason: 'beyond_deadline' }, 'the wait plus the reserve must fit');
    assert.deepEqual(decideRetry({ ...base, deadline: now + 60_000, status: 503, retryAfterMs: ra('30') }), { action: 'relay', reason: 'too_long' });
  });
});

describe('idempotency (node-local)', () => {
  it('validates keys and knows which methods need them', () => {
    assert.equal(parseIdempotencyKey(undefined), null);
    assert.equal(parseIdempotencyKey('abc-123'), 'abc-123');
    assert.equal(parseIdempotencyKey('"8e03978e-40d5-43e8-bc93-6894a57f9324"'), '8e03978e-40d5-43e8-bc93-6894a57f9324');
    for (const bad of ['', '""', 'has space', 'x'.repeat(256), 'tab\there', 'é']) {
      assert.throws(() => parseIdempotencyKey(bad), (e: unknown) => e instanceof DomainError && e.kind === 'invalid' && e.field === 'Idempotency-Key', JSON.stringify(bad));
    }
    assert.equal(requiresIdempotencyCheck('POST'), true);
    assert.equal(requiresIdempotencyCheck('patch'), true);
    assert.equal(requiresIdempotencyCheck('GET'), false);
    assert.notEqual(requestFingerprint('POST', '/a', Buffer.from('x')), requestFingerprint('POST', '/a', Buffer.from('y')));
  });

  it('runs once, reports in-progress, replays, rejects a reused key, and releases', async () => {
    const s = new IdempotencyStore({ maxBodyBytes: 8 });
    const fp = requestFingerprint('POST', '/orders', Buffer.from('{}'));
    const first = await s.begin('svc|client', 'k1', fp);
    assert.equal(first.state, 'acquired');
    const dup = await s.begin('svc|client', 'k1', fp);
    assert.equal(dup.state, 'in_progress');
    const err = idempotencyError(dup);
    assert.ok(err && err.kind === 'conflict' && err.code === 'IDEMPOTENCY_KEY_IN_PROGRESS' && err.retryAfter! >= 1);
    assert.equal((await s.begin('other|client', 'k1', fp)).state, 'acquired', 'scopes are separate');
    if (first.state !== 'acquired') return;
    assert.equal(await s.complete(first.lease, { status: 201, headers: [['content-type', 'application/json']], body: Buffer.from('{"id":1}') }), true);
    const later = await s.begin('svc|client', 'k1', fp);
    assert.equal(later.state, 'completed');
    if (later.state === 'completed') {
      assert.equal(later.response.status, 201);
      assert.deepEqual(later.response.headers, [['content-type', 'application/json']]);
      assert.equal(later.response.body!.toString(), '{"id":1}');
      assert.equal(later.response.bodyOmitted, false);
    }
    const other = await s.begin('svc|client', 'k1', requestFingerprint('POST', '/orders', Buffer.from('{"x":1}')));
    assert.equal(other.state, 'mismatch');
    assert.equal(idempotencyError(other)!.code, 'IDEMPOTENCY_KEY_REUSED');
    // A body over the limit is flagged, not stored.
    const big = await s.begin('svc|client', 'k2', fp);
    assert.equal(big.state, 'acquired');
    if (big.state === 'acquired') await s.complete(big.lease, { status: 200, headers: [], body: Buffer.alloc(9) });
    const bigReplay = await s.begin('svc|client', 'k2', fp);
    assert.ok(bigReplay.state === 'completed' && bigReplay.response.body === null && bigReplay.response.bodyOmitted);
    // Released: the next attempt may run.
    const r = await s.begin('svc|client', 'k3', fp);
    assert.equal(r.state, 'acquired');
    if (r.state === 'acquired') assert.equal(await s.release(r.lease), true);
    assert.equal((await s.begin('svc|client', 'k3', fp)).state, 'acquired');
    await assert.rejects(s.complete(first.lease, { status: 42, headers: [], body: null }), (e: unknown) => e instanceof DomainError && e.field === 'status');
  });

  it('records a response up to the limit', () => {
    const rec = new ResponseRecorder(5);
    rec.head(200, [['a', 'b']]);
    rec.chunk(Buffer.from('abc'));
    rec.chunk(Buffer.from('de'));
    assert.equal(rec.result().body!.toString(), 'abcde');
    rec.chunk(Buffer.from('f'));
    assert.deepEqual(rec.result(), { status: 200, headers: [['a', 'b']], body: null, bodyOmitted: true });
  });
});

describe('active checker options', () => {
  it('rejects bad options naming the field', () => {
    const health = new InstanceHealth({ serviceSize: () => 1 });
    const mk = (o: object) => new ActiveHealthChecker({ health, leader: new SoloLeader(), targets: () => [], ...o });
    assert.throws(() => mk({ path: 'health' }), (e: unknown) => e instanceof DomainError && e.field === 'path');
    assert.throws(() => mk({ path: '//evil/x' }), (e: unknown) => e instanceof DomainError && e.field === 'path');
    assert.throws(() => mk({ intervalMs: 0 }), (e: unknown) => e instanceof DomainError && e.field === 'intervalMs');
    assert.throws(() => mk({ jitter: 1 }), (e: unknown) => e instanceof DomainError && e.field === 'jitter');
    const c = mk({ path: '/health' });
    assert.equal(c.probeUrl({ id: '1', serviceId: 's', baseUrl: 'http://127.0.0.1:9/api/', opsApi: 'http://127.0.0.1:9/ops' }), 'http://127.0.0.1:9/api/health');
    assert.equal(mk({}).probeUrl({ id: '1', serviceId: 's', baseUrl: 'http://127.0.0.1:9/api', opsApi: 'http://127.0.0.1:9/ops' }), 'http://127.0.0.1:9/ops');
  });
});
