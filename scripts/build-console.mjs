#!/usr/bin/env node
// @ts-check
// npm run build:console: bundle the web console (console/) with Vite into console/dist,
// which the node serves at /console/. It runs before every `npm start`, so a content hash
// of every input decides whether Vite runs at all (a no-op start costs milliseconds).
// Without Vite installed (a production-only install), an existing build is kept and a
// missing one is reported; the node then answers /console/ with 503 and this hint.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const SRC = join(root, 'console');
const OUT = join(SRC, 'dist');
const STAMP = join(OUT, '.build-fingerprint');
const quiet = process.argv.includes('--quiet');
const say = (/** @type {string} */ msg) => quiet || process.stderr.write(`build:console: ${msg}\n`);

if (!existsSync(join(SRC, 'index.html'))) {
  say('no console/ sources in this tree; nothing to build');
  process.exit(0);
}

function inputs() {
  /** @type {string[]} */
  const files = [];
  for (const entry of readdirSync(SRC, { withFileTypes: true, recursive: true })) {
    const rel = relative(SRC, join(entry.parentPath, entry.name)).split(sep).join('/');
    if (entry.isFile() && !rel.startsWith('dist/') && !rel.startsWith('node_modules/')) files.push(rel);
  }
  return files.sort();
}

const require = createRequire(join(root, 'package.json'));
/** @type {string | null} */
let viteVersion = null;
try {
  viteVersion = JSON.parse(readFileSync(require.resolve('vite/package.json'), 'utf8')).version;
} catch {
  viteVersion = null;
}

const h = createHash('sha256');
for (const f of inputs()) {
  const data = readFileSync(join(SRC, f));
  h.update(`${f}\0${data.length}\0`).update(data);
}
h.update(`vite\0${viteVersion}\0scripts\0`).update(readFileSync(fileURLToPath(import.meta.url)));
const print = h.digest('hex');
const built = existsSync(join(OUT, 'index.html'));
if (built && existsSync(STAMP) && readFileSync(STAMP, 'utf8').trim() === print) {
  say('console/dist is up to date');
  process.exit(0);
}
if (!viteVersion) {
  say(built ? 'vite is not installed; keeping the existing console/dist' : 'vite is not installed (dev dependency); /console/ will answer 503 until the console is built');
  process.exit(0);
}
const started = performance.now();
const { build } = await import('vite');
await build({ configFile: join(SRC, 'vite.config.ts'), root: SRC, logLevel: quiet ? 'error' : 'warn' });
writeFileSync(STAMP, `${print}\n`);
say(`built console/dist in ${((performance.now() - started) / 1000).toFixed(1)} s`);
