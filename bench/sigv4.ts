// npm run bench:sigv4 [-- --iterations 50000 --rounds 7]
//
// SigV4 verification cost per request, in-process (no sockets): the request is signed once by
// aws4, then verified in a loop from its raw form (rawHeaders → pairs, canonicalisation, SHA-256,
// HMAC, timing-safe compare). Prints the median over rounds; asserts nothing.
import { createHash, createHmac } from 'node:crypto';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import aws4 from 'aws4';
import {
  DEFAULT_SIGV4_OPTIONS,
  SigningKeyCache,
  authenticateSigV4,
  headerPairsFromRaw,
  sha256Hex,
  splitTarget,
  type SigV4Context,
  type SigV4KeyInfo,
} from '../src/access/sigv4.ts';

const { values: args } = parseArgs({ options: { iterations: { type: 'string' }, rounds: { type: 'string' } } });
const ITERATIONS = Number(args.iterations ?? 50_000);
const ROUNDS = Number(args.rounds ?? 7);

const AKID = 'UMAKBENCHBENCHBENCHB';
const SECRET = 'Zq3k9LmN2pR7sT4vW8xY1bC5dF6gH0jKaBcDeFgH';
const AMZ = '20261127T120000Z';
const NOW = Date.UTC(2026, 10, 27, 12, 0, 30);
const HOST = '127.0.0.1:8888';
const key: SigV4KeyInfo = { secret: SECRET, status: 'Active', owner: { type: 'USER', id: 1 }, ownerDisabled: false };

interface Wire {
  method: string;
  url: string;
  rawHeaders: string[];
  body: Buffer;
}

/** Signs with aws4 and returns what node's http server would hand over (url, rawHeaders, body). */
function wire(method: string, target: string, signedHeaders: Record<string, string>, body?: string): Wire {
  const headers: Record<string, string> = { Host: HOST, 'X-Amz-Date': AMZ, ...signedHeaders };
  const out = aws4.sign({ host: '127.0.0.1', method, path: target, headers, body, service: 'utilmeta', region: 'pri' } as never, {
    accessKeyId: AKID,
    secretAccessKey: SECRET,
  }) as { headers: Record<string, string> };
  const rawHeaders = Object.entries(out.headers).flatMap(([k, v]) => [k, String(v)]);
  // Unsigned headers a real client also sends.
  rawHeaders.push('User-Agent', 'botocore/1.29.27 Python/3.11.2', 'Accept', '*/*', 'Connection', 'keep-alive', 'Accept-Encoding', 'gzip, deflate');
  return { method, url: target, rawHeaders, body: Buffer.from(body ?? '') };
}

const EMPTY = createHash('sha256').update('').digest('hex');
const getReq = wire('GET', '/api/proxy/items?limit=10&offset=20', {
  'X-Amz-Content-Sha256': EMPTY,
  'X-UtilMeta-Proxy-Type': 'discovery',
  'X-UtilMeta-Service-Name': 'orders',
});
const kib = JSON.stringify({ data: 'x'.repeat(1024 - 12) });
const postReq = wire('POST', '/api/proxy/orders', { 'Content-Type': 'application/json', 'X-Amz-Content-Sha256': sha256Hex(kib) }, kib);

function verifyOnce(w: Wire, ctx: SigV4Context): void {
  const headers = headerPairsFromRaw(w.rawHeaders);
  const r = authenticateSigV4(
    { method: w.method, ...splitTarget(w.url), headers, host: HOST, bodySha256: w.body.length ? sha256Hex(w.body) : EMPTY },
    ctx,
  );
  if (!r || !r.ok) throw new Error(`bench request did not verify: ${r ? r.state : 'no credential'}`);
}

/** Median, min and max µs per call of `fn` over the rounds. */
function time(fn: () => void): { median: number; min: number; max: number } {
  for (let i = 0; i < Math.min(ITERATIONS, 5000); i++) fn(); // warm-up (JIT)
  const perRound: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < ITERATIONS; i++) fn();
    perRound.push(Number(process.hrtime.bigint() - t0) / 1000 / ITERATIONS);
  }
  perRound.sort((a, b) => a - b);
  return { median: perRound[Math.floor(perRound.length / 2)], min: perRound[0], max: perRound[perRound.length - 1] };
}

function line(label: string, t: { median: number; min: number; max: number }, note = ''): void {
  console.log(`${label.padEnd(48)} ${t.median.toFixed(2).padStart(7)} µs   (min ${t.min.toFixed(2)}, max ${t.max.toFixed(2)})${note}`);
}

function measure(label: string, w: Wire, fresh: boolean): void {
  const cache = new SigningKeyCache();
  const ctx: SigV4Context = { now: NOW, surface: 'proxy', options: DEFAULT_SIGV4_OPTIONS, resolveKey: () => key, cache };
  const t = time(() => {
    if (fresh) cache.clear();
    verifyOnce(w, ctx);
  });
  const signed = w.rawHeaders[w.rawHeaders.findIndex((h) => h === 'Authorization') + 1].match(/SignedHeaders=([^,]+)/)![1];
  line(label, t, `; ${signed.split(';').length} signed headers`);
}

console.log(`SigV4 verification, in-process, ${ITERATIONS} requests × ${ROUNDS} rounds (median); Node ${process.version}, ${cpus()[0]?.model ?? 'cpu'}`);
// A yardstick for a loaded machine: the verifier does two of these (SHA-256 of the canonical
// request, HMAC of the string to sign) plus string work, so the ratio travels between machines.
const KEY = Buffer.alloc(32, 1);
const STS = 'AWS4-HMAC-SHA256\n20261127T120000Z\n20261127/pri/utilmeta/aws4_request\n' + EMPTY;
line('reference: one createHmac(sha256) + digest', time(() => void createHmac('sha256', KEY).update(STS).digest('hex')));
measure('GET, cached signing key', getReq, false);
measure('POST 1 KiB JSON incl. body SHA-256, cached key', postReq, false);
measure('GET, signing key derived every time', getReq, true);
