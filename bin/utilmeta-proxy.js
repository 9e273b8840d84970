#!/usr/bin/env node
// Runs the compiled JavaScript in dist/ (`npm run build`; `npm start` builds first), so no
// TypeScript loader is needed at run time.
import { existsSync } from 'node:fs';
import v8 from 'node:v8';

// Per-request objects of a proxy die young. V8's allocation-site pretenuring
// learns during warm-up to allocate some of them in the old generation, which
// then fills with garbage and pays full mark-compacts under load. Switched off
// before anything else allocates (the flag is read at each GC, so setting it here
// works like the command-line flag).
v8.setFlagsFromString('--no-allocation-site-pretenuring');

const main = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  console.error('utilmeta-proxy: dist/cli/main.js is missing; run `npm run build` first (`npm start` does it for you)');
  process.exit(1);
}
await import(main.href);
