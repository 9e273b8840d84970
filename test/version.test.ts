import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseRange, parseVersion, VersionRangeError, type Version } from '../src/registry/version.ts';
import { rankInstances } from '../src/registry/select.ts';
import type { InstanceView } from '../src/registry/snapshot.ts';

const ok = (range: string, v: Version) => {
  const f = parseRange(range);
  return f === null || f(v);
};

describe('versions', () => {
  it('parses service versions like the original (non-numeric parts are 0)', () => {
    assert.deepEqual(parseVersion('1.2.3-beta'), [1, 2, 3]);
    assert.deepEqual(parseVersion('2.0'), [2, 0, 0]);
    assert.deepEqual(parseVersion('v1.2.3'), [0, 2, 3]);
    assert.deepEqual(parseVersion('1.x.7'), [1, 0, 7]);
    assert.deepEqual(parseVersion(''), [0, 0, 0]);
  });

  it('keeps the original ^ and ~ semantics (spec §6.23)', () => {
    assert.equal(ok('1.2', [1, 2, 9]), true);
    assert.equal(ok('1.2', [1, 3, 0]), false);
    assert.equal(ok('1.2.3', [1, 2, 4]), false);
    assert.equal(ok('^1.2.3', [1, 2, 0]), true, '^ ignores patch even when minor is equal');
    assert.equal(ok('^1.2', [1, 9, 0]), true);
    assert.equal(ok('^1.2', [1, 1, 9]), false);
    assert.equal(ok('^1.2', [2, 2, 0]), false);
    assert.equal(ok('~1.2.3', [1, 2, 3]), true);
    assert.equal(ok('~1.2.3', [1, 2, 2]), false);
    assert.equal(ok('~1.2.3', [1, 3, 5]), false);
    assert.equal(ok('v^1.2', [1, 4, 0]), true);
    assert.equal(ok('1.*.3', [1, 8, 3]), true);
    assert.equal(ok('*', [9, 9, 9]), true);
  });

  it('rejects malformed ranges with an error naming the part', () => {
    for (const r of ['1.a', '1.2.3.4', '^', 'one', '1..2']) {
      assert.throws(() => parseRange(r), VersionRangeError, r);
    }
  });
});

const inst = (id: string, o: Partial<InstanceView> = {}): InstanceView => ({
  id, serviceId: '1', serviceName: 's', host: '127.0.0.1', port: 1, address: `a${id}`, baseUrl: `http://a${id}`, opsApi: '', resourceId: id,
  remoteId: null, version: '1.0.0', semver: [1, 0, 0], weight: 1, connected: true, production: false, avgLoad: 0, avgTime: 0, avgRps: 0, ...o,
});

describe('ranking (bug 6.2 fixed)', () => {
  it('spreads equal instances instead of always picking the last one', () => {
    const list = [inst('1'), inst('2'), inst('3')];
    const firsts = new Map<string, number>();
    for (let i = 0; i < 3000; i++) {
      const id = rankInstances(list)[0].id;
      firsts.set(id, (firsts.get(id) ?? 0) + 1);
    }
    for (const id of ['1', '2', '3']) assert.ok((firsts.get(id) ?? 0) > 500, `instance ${id} chosen ${firsts.get(id)} times of 3000`);
  });

  it('prefers lower load and honours weight', () => {
    const busy = inst('busy', { avgLoad: 0.9, avgTime: 200, avgRps: 50 });
    const idle = inst('idle', { avgLoad: 0.1, avgTime: 20, avgRps: 5 });
    for (let i = 0; i < 50; i++) assert.equal(rankInstances([busy, idle])[0].id, 'idle');
    const heavy = inst('heavy', { weight: 3 });
    for (let i = 0; i < 50; i++) assert.equal(rankInstances([inst('light'), heavy])[0].id, 'heavy');
  });
});
