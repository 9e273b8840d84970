#!/usr/bin/env node
// @ts-check
// npm run build: compile the whole src/ tree to dist/ with tsc (tsconfig.build.json), copy
// the non-TypeScript files the code reads at run time (SQL, JSON, …) beside their modules,
// and remove outputs whose source is gone (files move between folders).
//
// It runs before every `npm start`, so it must be quick when nothing changed and must never
// leave stale JavaScript. `tsc -b` decides "up to date" from timestamps, which misses a change
// restored with an older mtime (tar, rsync -t, cp -p); plain incremental `tsc -p` compares
// contents but costs ~3 s even with nothing to do. So a content hash of every input decides
// whether tsc runs at all; when it does, incremental `tsc -p` re-emits what changed.
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const SRC = join(root, 'src');
const OUT = join(root, 'dist');
const STAMP = join(OUT, '.build-fingerprint');
const BUILD_INFO = join(OUT, '.tsbuildinfo');
const quiet = process.argv.includes('--quiet');
const say = (/** @type {string} */ msg) => quiet || process.stderr.write(`build: ${msg}\n`);

/** Every file under dir, as paths relative to dir with '/' separators, sorted. */
function walk(/** @type {string} */ dir) {
  /** @type {string[]} */
  const files = [];
  if (!existsSync(dir)) return files;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) files.push(relative(dir, join(entry.parentPath, entry.name)).split(sep).join('/'));
  }
  return files.sort();
}

const isTs = (/** @type {string} */ f) => f.endsWith('.ts') && !f.endsWith('.d.ts');
const sources = walk(SRC);
const require = createRequire(join(root, 'package.json'));
const tscPath = require.resolve('typescript/bin/tsc');

/** What tsc writes for one source, relative to dist/. */
function outputsOf(/** @type {string} */ file) {
  if (!isTs(file)) return [file];
  const js = file.replace(/\.ts$/, '.js');
  return [js, `${js}.map`];
}

function fingerprint() {
  const h = createHash('sha256');
  const add = (/** @type {string} */ name, /** @type {Buffer | string} */ data) => h.update(`${name}\0${data.length}\0`).update(data);
  for (const f of sources) add(`src/${f}`, readFileSync(join(SRC, f)));
  for (const f of ['tsconfig.json', 'tsconfig.build.json', 'scripts/build.mjs']) add(f, readFileSync(join(root, f)));
  add('typescript', JSON.parse(readFileSync(join(dirname(tscPath), '..', 'package.json'), 'utf8')).version);
  return h.digest('hex');
}

/** Deletes dist files that no source produces any more, then empty folders. */
function prune() {
  const expected = new Set(sources.flatMap(outputsOf));
  let removed = 0;
  for (const f of walk(OUT)) {
    if (f.startsWith('.') || expected.has(f)) continue; // .tsbuildinfo, .build-fingerprint
    rmSync(join(OUT, f));
    removed++;
  }
  const dirs = existsSync(OUT) ? readdirSync(OUT, { withFileTypes: true, recursive: true }).filter((e) => e.isDirectory()) : [];
  for (const d of dirs.map((e) => join(e.parentPath, e.name)).sort((a, b) => b.length - a.length)) {
    if (readdirSync(d).length === 0) rmdirSync(d);
  }
  return removed;
}

const started = performance.now();
const print = fingerprint();
const removed = prune();
const missing = sources.filter(isTs).some((f) => !existsSync(join(OUT, f.replace(/\.ts$/, '.js'))));
const stamp = existsSync(STAMP) ? readFileSync(STAMP, 'utf8').trim() : '';

if (stamp === print && !missing) {
  say(`dist/ is up to date (${removed ? `${removed} orphaned files removed, ` : ''}${Math.round(performance.now() - started)} ms)`);
  process.exit(0);
}

rmSync(STAMP, { force: true });
// An output deleted by hand is not re-emitted by an incremental build that believes it wrote
// it, so start from scratch in that case.
if (missing) rmSync(BUILD_INFO, { force: true });
const tsc = spawnSync(process.execPath, [tscPath, '-p', join(root, 'tsconfig.build.json')], { cwd: root, stdio: 'inherit' });
if (tsc.status !== 0) {
  process.stderr.write(`build: tsc failed (exit ${tsc.status ?? tsc.signal}); dist/ was not marked up to date\n`);
  process.exit(1);
}
mkdirSync(OUT, { recursive: true });
cpSync(SRC, OUT, { recursive: true, filter: (from) => !isTs(from) });
writeFileSync(STAMP, `${print}\n`);
say(`compiled src/ to dist/ in ${((performance.now() - started) / 1000).toFixed(1)} s`);
