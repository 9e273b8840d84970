// Cost of the per-request input checks added at the edge, in nanoseconds per
// call on typical inputs (prints numbers, asserts nothing):
//   node --import tsx bench/input-checks.ts
import { framingError } from '../src/http/listener-util.ts';
import { pathProblem } from '../src/proxy/stages/path.ts';
import { wellFormedOrigin } from '../src/api/respond.ts';

const browserHeaders: Array<[string, string]> = [
  ['host', '127.0.0.1:8080'], ['connection', 'keep-alive'], ['content-length', '512'], ['content-type', 'application/json'],
  ['accept', 'application/json, text/plain, */*'], ['accept-encoding', 'gzip, deflate, br'], ['accept-language', 'en-US,en;q=0.9'],
  ['user-agent', 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36'],
  ['origin', 'http://127.0.0.1:5173'], ['referer', 'http://127.0.0.1:5173/app/'], ['x-utilmeta-proxy-type', 'discovery'],
  ['x-utilmeta-service-name', 'orders'], ['authorization', `Bearer ${'a'.repeat(600)}`], ['cookie', 'session=abc; theme=dark'],
];

function time(label: string, n: number, fn: () => unknown): void {
  for (let i = 0; i < 10_000; i++) fn(); // warm-up
  let sink = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) if (fn() !== null) sink++;
  const ns = Number(process.hrtime.bigint() - t0) / n;
  // `sink` keeps the calls from being optimized away.
  console.log(`${label.padEnd(52)} ${ns.toFixed(1).padStart(8)} ns/call  (${sink} non-null)`);
}

const N = 1_000_000;
time(`framingError, ${browserHeaders.length} browser-like headers`, N, () => framingError(browserHeaders));
time(`framingError, 3 headers`, N, () => framingError(browserHeaders.slice(0, 3)));
time('pathProblem, /orders/42/items?limit=10&offset=20', N, () => pathProblem('/orders/42/items', 'limit=10&offset=20'));
time('pathProblem, /files/report.v2.pdf (dots: slow path)', N, () => pathProblem('/files/report.v2.pdf', ''));
time('pathProblem, 20 segments with %-encoding', N, () => pathProblem('/a%20b'.repeat(20), 'q=%E2%82%AC'));
time('wellFormedOrigin, http://127.0.0.1:5173', N, () => wellFormedOrigin('http://127.0.0.1:5173'));
