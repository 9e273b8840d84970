// The CLI run from its TypeScript sources through tsx, the way the tests run everything
// (bin/utilmeta-proxy.js runs the compiled dist/, which build.test.ts covers). Absolute
// paths, because the tests start the CLI from other working directories.
import { fileURLToPath } from 'node:url';

export const CLI_ARGS: readonly string[] = ['--import', import.meta.resolve('tsx'), fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url))];
