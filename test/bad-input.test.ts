// The bad-input corpus (test/corpus/*.ndjson) replayed against a real node on
// each listener, plus unit tests of the harness's own pure logic.
//
// Invariants per listener: no 500 from the proxy (the upstream never answers
// 500), no stack trace or path in any body, no case left unanswered past the
// deadline, every case ends in one of its acceptable outcomes, the upstream never
// receives a path with dot-segments or outside the service's base path, no row
// changed by a rejected request, and the node still answers afterwards.
//
// Assertions that fail on today's code are marked `todo` (they run and print
// every failing case, but do not fail the suite) in KNOWN below; remove an entry
// once its cause is fixed. BAD_INPUT_STRICT=1 ignores the marks.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { LISTENERS } from './support/env.ts';
import { uwsAvailable } from '../src/http/listen.ts';
import type { ListenerKind } from '../src/http/types.ts';
import {
  SURFACES, buildRequest, escapesBase, exchange, expand, isAccepted, judge, leaks, loadCorpus, outcomeLabel, parseResponses,
  type CorpusCase, type Outcome, type Vars,
} from './corpus/cases.ts';
import { DEADLINE_MS, failures, replayCorpus, startCorpusEnv, type CorpusEnv, type ReplayReport } from './corpus/run.ts';

const corpus = loadCorpus();

type Invariant = 'status500' | 'leaks' | 'hangs' | 'unacceptable' | 'upstreamEscapes' | 'rowsChanged';

/** What fails today, per listener, and why (see the branch report for the fixes). */
const KNOWN: Record<ListenerKind, Partial<Record<Invariant, string>>> = {
  // What the uWS parser of this build never hands to JavaScript (see the comment
  // at the top of src/http/uws.ts): held until its idle timeout, about 10 s.
  uws: {
    hangs: 'uWS parser: malformed request lines, HTTP/1.0 and absolute-form targets, no Host, `_`/space/NUL/CTL/high bytes in names, CTL in values, obs-fold, more than 48 header lines, a space before the colon of Transfer-Encoding, junk chunk extensions',
    unacceptable: 'the hangs above, plus uWS parser leniencies JavaScript never sees: an empty header name dropped, chunks without CRLF and junk trailers accepted, junk chunk extensions stall the body',
  },
  node: {},
};
const strict = process.env.BAD_INPUT_STRICT === '1';
const todo = (l: ListenerKind, k: Invariant) => (strict ? undefined : KNOWN[l][k]);

const show = (list: string[]) => `${list.length} case(s):\n  ${list.join('\n  ')}`;

describe('bad-input corpus: data', () => {
  it('holds at least 300 cases, each naming its surface, acceptable outcomes and purpose', () => {
    assert.ok(corpus.length >= 300, `only ${corpus.length} cases`);
    for (const c of corpus) {
      assert.ok(SURFACES.includes(c.surface as (typeof SURFACES)[number]), c.id);
      assert.ok(c.accept.length > 0 && c.note.length > 0, c.id);
      // A 500 is never acceptable, whatever a case says.
      assert.ok(!c.accept.includes('500') && !c.accept.includes('5xx'), `${c.id} accepts a 500`);
    }
  });

  it('covers every surface, every proxy control header and every registration field', () => {
    const surfaces = new Set(corpus.map((c) => c.surface));
    for (const s of SURFACES) assert.ok(surfaces.has(s), `no case for ${s}`);
    const headerNames = new Set(corpus.flatMap((c) => (c.headers ?? []).map(([k]) => k.toLowerCase())));
    for (const h of ['x-utilmeta-proxy-type', 'x-utilmeta-service-name', 'x-utilmeta-accept-version', 'x-utilmeta-instance-id', 'x-utilmeta-request-timeout',
      'x-utilmeta-operation-idempotent', 'x-utilmeta-node-id', 'x-utilmeta-cluster-id', 'proxy-authorization', 'x-proxy-type', 'x-service-name', 'x-proxy-token', 'origin', 'sec-websocket-key', 'sec-websocket-version']) {
      assert.ok(headerNames.has(h), `no case sends ${h}`);
    }
    const ids = new Set(corpus.map((c) => c.id));
    for (const f of ['name', 'address', 'base-url', 'ops-api', 'instance-id', 'version', 'asynchronous', 'production', 'language', 'utilmeta-version', 'resources']) {
      assert.ok(ids.has(`register-${f}-array`), `no wrong-type case for ${f}`);
    }
  });
});

describe('bad-input harness: pure logic', () => {
  const vars: Vars = { host: '127.0.0.1:9', svc: 'svc', address: '127.0.0.1:8', instanceId: '42', base: 'http://127.0.0.1:8/api' };
  const base: CorpusCase = { id: 'c1', surface: 'listener', kind: 'raw', raw: '', accept: ['4xx', 'close'], note: 'n' };

  it('expands placeholders and repeats', () => {
    assert.equal(expand('{{host}}|{{svc}}|{{address}}|{{instance_id}}|{{base}}|{{id}}', vars, 'x'), '127.0.0.1:9|svc|127.0.0.1:8|42|http://127.0.0.1:8/api|x');
    assert.equal(expand('a{{repeat:3:xy}}b', vars, 'x'), 'axyxyxyb');
    assert.equal(expand('{{repeat:2:}}}}', vars, 'x'), '}}}', 'a repeated "}" followed by one more');
    assert.equal(expand('{{repeat:2:\r\n}}', vars, 'x'), '\r\n\r\n');
  });

  it('sends raw cases byte for byte (latin1) and frames http cases', () => {
    assert.deepEqual([...buildRequest({ ...base, raw: 'G\u00ff\u0000' }, vars)], [0x47, 0xff, 0x00]);
    const http = buildRequest({ ...base, kind: 'http', method: 'POST', target: '/t', headers: [['Origin', '\u00e9']], body: '{"a":"é"}', bodyEncoding: 'utf8' }, vars);
    const text = http.toString('latin1');
    assert.match(text, /^POST \/t HTTP\/1\.1\r\nHost: 127\.0\.0\.1:9\r\nOrigin: \u00e9\r\nX-Corpus-Case: c1\r\nContent-Length: 10\r\nConnection: close\r\n\r\n/);
    assert.equal(http.subarray(http.length - 10).toString('utf8'), '{"a":"é"}');
    const upgrade = buildRequest({ ...base, kind: 'http', method: 'GET', target: '/', headers: [['Connection', 'Upgrade']] }, vars).toString('latin1');
    assert.ok(!upgrade.includes('Connection: close'), 'a case with its own Connection header keeps it alone');
  });

  it('parses length, chunked, HEAD, close-delimited and pipelined responses', () => {
    const b = (s: string) => Buffer.from(s, 'latin1');
    let r = parseResponses(b('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n'), false, false);
    assert.equal(r.partial, false);
    assert.deepEqual(r.responses.map((x) => [x.status, x.body.toString()]), [[200, 'ok'], [404, 'abc']]);
    r = parseResponses(b('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab'), false, false);
    assert.equal(r.partial, true);
    assert.equal(r.responses.length, 0);
    r = parseResponses(b('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n'), true, false);
    assert.deepEqual(r.responses.map((x) => x.status), [200]);
    r = parseResponses(b('HTTP/1.0 400 Bad Request\r\n\r\nbye'), false, true);
    assert.equal(r.responses[0].body.toString(), 'bye');
    r = parseResponses(b('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n'), false, false);
    assert.deepEqual(r.responses.map((x) => x.status), [100, 204]);
  });

  it('judges outcomes by class, exact code, close, timeout and response count', () => {
    const o = (statuses: number[], extra: Partial<Outcome> = {}): Outcome => ({ responses: statuses.map((status) => ({ status, headers: [], body: Buffer.alloc(0) })), closed: true, timedOut: false, ms: 1, garbage: false, ...extra });
    assert.equal(isAccepted(base, o([400])), true);
    assert.equal(isAccepted(base, o([200])), false);
    assert.equal(isAccepted(base, o([])), true, 'closed without an answer');
    assert.equal(isAccepted(base, o([], { timedOut: true, closed: false })), false);
    assert.equal(isAccepted({ ...base, accept: ['505'] }, o([505])), true);
    assert.equal(isAccepted({ ...base, accept: ['505'] }, o([504])), false);
    assert.equal(isAccepted({ ...base, accept: ['4xx'], maxResponses: 1 }, o([400, 200])), false);
    assert.equal(outcomeLabel(o([], { timedOut: true })), 'timeout');
    const j = judge(base, o([500]));
    assert.equal(j.status500, true);
    assert.equal(j.accepted, false);
  });

  it('finds stack frames and internal paths, not prose', () => {
    assert.deepEqual(leaks('Error: x\n    at handle (/work/main/src/app.ts:10:5)'), ['stack frame', '/work path', '.ts: location']);
    assert.deepEqual(leaks('at Object.<anonymous> (node:internal/x:1:2)'), ['stack frame']);
    assert.deepEqual(leaks('file:///srv/x/node_modules/y/index.js'), ['node_modules', 'file URL']);
    assert.deepEqual(leaks('{"error":"no registered instance at this address, look at the list"}'), []);
  });

  it('flags upstream paths outside the base path or with dot-segments, decoded or not', () => {
    assert.equal(escapesBase('/api/a/b?x=/../', '/api'), null);
    assert.equal(escapesBase('/api', '/api'), null);
    assert.equal(escapesBase('/api/../x', '/api'), 'dot-segment');
    assert.equal(escapesBase('/api/%2e%2E/x', '/api'), 'dot-segment');
    assert.equal(escapesBase('/api/%zz/..%5cx', '/api'), 'dot-segment', 'undecodable, and a backslash separates segments for many upstreams');
    assert.equal(escapesBase('/api/..%5c', '/api'), 'dot-segment');
    assert.equal(escapesBase('/apix/y', '/api'), 'outside /api');
    assert.equal(escapesBase('/a%20b/ws', '/api'), 'outside /api');
  });

  it('exchange tells an answer, a close and silence apart', async () => {
    const server = net.createServer((s) => {
      s.once('data', (d) => {
        const what = d.toString('latin1');
        if (what.startsWith('ANSWER')) s.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad');
        else if (what.startsWith('CLOSE')) s.destroy();
        // SILENT: never answer
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const answer = await exchange(port, Buffer.from('ANSWER'), { deadlineMs: 5000 });
      assert.deepEqual(answer.responses.map((r) => [r.status, r.body.toString()]), [[400, 'bad']]);
      const closed = await exchange(port, Buffer.from('CLOSE'), { deadlineMs: 5000 });
      assert.equal(outcomeLabel(closed), 'close');
      const silent = await exchange(port, Buffer.from('SILENT'), { deadlineMs: 300 });
      assert.equal(outcomeLabel(silent), 'timeout');
    } finally {
      server.close();
    }
  });
});

for (const listener of LISTENERS) {
  const skip = listener === 'uws' && !uwsAvailable() ? 'the uWS addon does not load here' : false;
  describe(`bad-input corpus replayed (${listener} listener)`, { skip }, () => {
    let env: CorpusEnv | undefined;
    let report: ReplayReport;
    let f: Record<string, string[]>;

    before(async () => {
      env = await startCorpusEnv(listener);
      report = await replayCorpus(env, corpus);
      f = failures(report);
    }, { timeout: 600_000 });
    after(async () => {
      await env?.close();
    });

    it('replays every case', () => {
      assert.equal(report.results.length, corpus.length);
    });

    it('no response with status 500 from the proxy', { todo: todo(listener, 'status500') }, () => {
      assert.deepEqual(f.status500, [], show(f.status500));
    });

    it('no stack trace or file path in any response body', { todo: todo(listener, 'leaks') }, () => {
      assert.deepEqual(f.leaks, [], show(f.leaks));
    });

    it(`every case is answered or closed within ${DEADLINE_MS} ms (the upstream timeout plus a margin)`, { todo: todo(listener, 'hangs') }, () => {
      assert.deepEqual(f.hangs, [], show(f.hangs));
    });

    it('every case ends in one of its acceptable outcomes', { todo: todo(listener, 'unacceptable') }, () => {
      assert.deepEqual(f.unacceptable, [], show(f.unacceptable));
    });

    it('the upstream never receives dot-segments or a path outside the base path', { todo: todo(listener, 'upstreamEscapes') }, () => {
      assert.deepEqual(f.upstreamEscapes, [], show(f.upstreamEscapes));
    });

    it('no row changed by a rejected request', { todo: todo(listener, 'rowsChanged') }, () => {
      assert.deepEqual(f.rowsChanged, [], show(f.rowsChanged));
    });

    it('the node is alive afterwards: GET /api/ answers 200', () => {
      assert.equal(report.alive.status, '200');
    });
  });
}
