#!/usr/bin/env node
// Runs the compiled JavaScript in dist/ (`npm run build`; `npm start` builds first), so no
// TypeScript loader is needed at run time.
import { existsSync } from 'node:fs';

const main = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  console.error('utilmeta-proxy: dist/cli/main.js is missing; run `npm run build` first (`npm start` does it for you)');
  process.exit(1);
}
await import(main.href);
