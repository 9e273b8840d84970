// The production build: `npm run build` compiles the whole src/ tree to dist/ and the launcher
// runs it under plain node (Node 20 cannot load .ts, so any leftover .ts import would fail).
// Everything runs in a temporary copy of the project, so the checkout's dist/ is never touched
// and source edits can be simulated.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { builtinModules } from 'node:module';
import ts from 'typescript';
import { request } from 'undici';
import { freshDatabases, PG_HOST, PG_PORT, PG_USER } from './support/env.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  version: string;
  bin: Record<string, string>;
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};
// Only PATH: the compiled CLI must not depend on anything the test runner set up.
const plainEnv = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp' };

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)).split(sep).join('/'))
    .sort();
}

let work = '';
const build = () => spawnSync(process.execPath, [join(work, 'scripts/build.mjs')], { cwd: work, env: plainEnv, encoding: 'utf8' });
const cli = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, [join(work, 'bin/utilmeta-proxy.js'), ...args], { cwd: work, env: { ...plainEnv, ...env }, encoding: 'utf8', timeout: 60_000 });

describe('production build', () => {
  before(() => {
    work = mkdtempSync(join(tmpdir(), 'umbuild-'));
    for (const p of ['src', 'scripts', 'bin', 'package.json', 'tsconfig.json', 'tsconfig.build.json']) cpSync(join(root, p), join(work, p), { recursive: true });
    symlinkSync(join(root, 'node_modules'), join(work, 'node_modules'), 'dir');
    const r = build();
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stderr, /compiled src\/ to dist\//);
  });
  after(() => rmSync(work, { recursive: true, force: true }));

  it('compiles every source to dist/ and copies every non-TypeScript file beside it', () => {
    const sources = files(join(work, 'src'));
    assert.ok(sources.some((f) => f.endsWith('.sql')), 'the sources include run-time SQL files');
    for (const f of sources) {
      if (f.endsWith('.ts')) {
        const js = join(work, 'dist', f.replace(/\.ts$/, '.js'));
        assert.ok(existsSync(js), `dist/ has ${f.replace(/\.ts$/, '.js')}`);
        const text = readFileSync(js, 'utf8');
        assert.doesNotMatch(text, /\bfrom\s+['"]\.{1,2}\/[^'"]*\.ts['"]|import\(\s*['"]\.{1,2}\/[^'"]*\.ts['"]\s*\)/, `${f}: relative .ts imports are rewritten to .js`);
      } else {
        assert.deepEqual(readFileSync(join(work, 'dist', f)), readFileSync(join(work, 'src', f)), `dist/${f} is a copy of src/${f}`);
      }
    }
  });

  it('the launcher runs the compiled CLI under plain node: version and --help', () => {
    const launcher = readFileSync(join(work, pkg.bin['utilmeta-proxy']), 'utf8');
    assert.doesNotMatch(launcher, /tsx|\.ts['"]/, 'no TypeScript loader in the launcher');
    const version = cli(['version']);
    assert.equal(version.status, 0, version.stderr);
    assert.equal(version.stdout.trim(), pkg.version);
    const help = cli(['--help']);
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /^utilmeta-proxy \S+ — /);
    assert.match(help.stdout, /Usage: utilmeta-proxy <command>/);
    assert.match(help.stdout, /UTILMETA_PROXY_DB_HOST/);
    const startHelp = cli(['start', '--help']);
    assert.equal(startHelp.status, 0, startHelp.stderr);
    assert.match(startHelp.stdout, /Usage: utilmeta-proxy start/);
  });

  it('the launcher names the missing build instead of crashing', () => {
    const bare = mkdtempSync(join(tmpdir(), 'umbare-'));
    try {
      cpSync(join(work, 'bin'), join(bare, 'bin'), { recursive: true });
      cpSync(join(work, 'package.json'), join(bare, 'package.json'));
      const r = spawnSync(process.execPath, [join(bare, 'bin/utilmeta-proxy.js'), 'version'], { env: plainEnv, encoding: 'utf8' });
      assert.equal(r.status, 1);
      assert.match(r.stderr, /npm run build/);
    } finally {
      rmSync(bare, { recursive: true, force: true });
    }
  });

  it('npm start builds first; tsx is a development dependency only', () => {
    assert.match(pkg.scripts.prestart, /scripts\/build\.mjs|npm run build/);
    assert.match(pkg.scripts.start, /bin\/utilmeta-proxy\.js start/);
    assert.ok(pkg.devDependencies.tsx, 'tsx stays for tests and benchmarks');
    assert.equal(pkg.dependencies.tsx, undefined);
    assert.match(pkg.scripts.test, /--import tsx/, 'tests keep running the sources');
  });

  it('npm start rebuilds after a source change before it runs (one command, never stale JavaScript)', () => {
    const main = join(work, 'src/cli/main.ts');
    const text = readFileSync(main, 'utf8');
    assert.match(text, /Runs the proxy node: /);
    writeFileSync(main, text.replace('Runs the proxy node: ', 'Runs the proxy node (edited): '));
    try {
      const r = spawnSync('npm', ['start', '--silent', '--', '--help'], { cwd: work, env: plainEnv, encoding: 'utf8', timeout: 120_000 });
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /Runs the proxy node \(edited\): /);
    } finally {
      writeFileSync(main, text);
    }
    assert.equal(build().status, 0);
    assert.doesNotMatch(cli(['start', '--help']).stdout, /\(edited\)/);
  });

  it('the compiled code imports only production dependencies (the runtime image has no dev dependencies)', () => {
    const builtins = new Set(builtinModules);
    const used = new Set<string>();
    for (const f of files(join(work, 'dist')).filter((f) => f.endsWith('.js'))) {
      for (const ref of ts.preProcessFile(readFileSync(join(work, 'dist', f), 'utf8'), true, true).importedFiles) {
        const spec = ref.fileName;
        if (spec.startsWith('.') || spec.startsWith('node:') || builtins.has(spec)) continue;
        used.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]);
      }
    }
    assert.ok(used.size > 0, 'the scan sees the package imports');
    for (const name of used) assert.ok(pkg.dependencies[name], `dist/ imports ${name}, which must be a production dependency`);
  });

  it('the npm package ships the compiled dist/ (SQL included) and the launcher, not the sources', () => {
    const r = spawnSync('npm', ['pack', '--dry-run', '--json'], { cwd: work, env: plainEnv, encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    const packed = new Set((JSON.parse(r.stdout.slice(r.stdout.indexOf('['))) as Array<{ files: Array<{ path: string }> }>)[0].files.map((f) => f.path));
    for (const f of ['bin/utilmeta-proxy.js', 'dist/cli/main.js', 'package.json']) assert.ok(packed.has(f), `packs ${f}`);
    for (const f of files(join(work, 'src'))) {
      assert.ok(packed.has(`dist/${f.replace(/\.ts$/, '.js')}`), `packs the output of src/${f}`);
      assert.ok(!packed.has(`src/${f}`), `does not pack src/${f}`);
    }
    assert.ok(![...packed].some((f) => f.includes('tsbuildinfo') || f.includes('fingerprint')), 'no build bookkeeping');
  });

  it('a rebuild with nothing changed leaves dist/ as it is', () => {
    const js = join(work, 'dist/cli/main.js');
    const before = statSync(js).mtimeMs;
    const r = build();
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /up to date/);
    assert.equal(statSync(js).mtimeMs, before);
  });

  it('recompiles a changed source even when its mtime is older than the last build', () => {
    const src = join(work, 'src/core/errors.ts');
    const old = statSync(src);
    writeFileSync(src, `${readFileSync(src, 'utf8')}\nexport const BUILD_PROBE = 'changed';\n`);
    utimesSync(src, old.atime, new Date(old.mtimeMs - 3600_000));
    const r = build();
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(readFileSync(join(work, 'dist/core/errors.js'), 'utf8'), /BUILD_PROBE = 'changed'/);
  });

  it('removes the outputs of a deleted source and restores an output deleted by hand', () => {
    writeFileSync(join(work, 'src/core/probe-moved.ts'), 'export const probe = 1;\n');
    assert.equal(build().status, 0);
    assert.ok(existsSync(join(work, 'dist/core/probe-moved.js')));
    unlinkSync(join(work, 'src/core/probe-moved.ts'));
    unlinkSync(join(work, 'dist/config/index.js'));
    const r = build();
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.ok(!existsSync(join(work, 'dist/core/probe-moved.js')), 'orphaned output removed');
    assert.ok(!existsSync(join(work, 'dist/core/probe-moved.js.map')), 'orphaned source map removed');
    assert.ok(existsSync(join(work, 'dist/config/index.js')), 'deleted output re-emitted');
    assert.equal(cli(['version']).stdout.trim(), pkg.version);
  });

  it('a source that does not compile fails the build and is not marked up to date', () => {
    const src = join(work, 'src/core/probe-broken.ts');
    writeFileSync(src, 'export const broken: number = "not a number";\n');
    try {
      const r = build();
      assert.notEqual(r.status, 0);
      assert.match(r.stdout + r.stderr, /probe-broken\.ts/);
      assert.ok(!existsSync(join(work, 'dist/.build-fingerprint')));
    } finally {
      unlinkSync(src);
    }
    assert.equal(build().status, 0);
  });

  it('the compiled node runs on a read-only root filesystem, writing only to DATA_DIR (bubblewrap)', async () => {
    // A missing tool fails the test (.ci/run installs it): a skip would hide the check.
    assert.ok(!spawnSync('bwrap', ['--version']).error, 'bubblewrap is not installed (apt-get install bubblewrap; .ci/run installs it)');
    // Everything read-only except a tmpfs holding DATA_DIR: what the image gets with
    // read_only: true / readOnlyRootFilesystem and a data volume. The embedded database is
    // the node's only writer, so it is the mode that would notice a stray write.
    const child = spawn('bwrap', ['--ro-bind', '/', '/', '--dev', '/dev', '--proc', '/proc', '--tmpfs', '/mnt', '--chdir', work,
      process.execPath, join(work, 'bin/utilmeta-proxy.js'), 'start'], {
      env: { ...plainEnv, UTILMETA_PROXY_DATA_DIR: '/mnt/data', UTILMETA_PROXY_BIND_HOST: '127.0.0.1', UTILMETA_PROXY_BIND_PORT: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      const origin = await new Promise<string>((resolve, reject) => {
        createInterface({ input: child.stdout }).on('line', (line) => {
          try {
            const j = JSON.parse(line) as { msg?: string; address?: string };
            if (j.msg === 'utilmeta-proxy listening') resolve(String(j.address));
          } catch {
            /* not a log line */
          }
        });
        void exited.then((code) => reject(new Error(`exited ${code}: ${stderr}`)));
      });
      const ready = await request(`${origin}/api/readyz`);
      assert.equal(ready.statusCode, 200, await ready.body.text());
    } finally {
      // bwrap does not forward signals: SIGTERM goes to the node, its child.
      if (child.exitCode === null) {
        const children = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
        for (const pid of children) process.kill(Number(pid), 'SIGTERM');
      }
    }
    assert.equal(await exited, 0, stderr);
    assert.doesNotMatch(stderr, /EROFS|read-only/i);
  });

  it('the compiled node migrates PostgreSQL (SQL files found beside the modules), serves /api/healthz and stops on SIGTERM', async () => {
    const dbs = freshDatabases();
    const env = {
      ...plainEnv,
      UTILMETA_PROXY_DB_HOST: PG_HOST, UTILMETA_PROXY_DB_PORT: String(PG_PORT), UTILMETA_PROXY_DB_USER: PG_USER,
      UTILMETA_PROXY_DB_NAME: dbs.registryName, UTILMETA_PROXY_OPS_DB_NAME: dbs.opsName,
      UTILMETA_PROXY_BIND_HOST: '127.0.0.1', UTILMETA_PROXY_BIND_PORT: '0', UTILMETA_PROXY_LOG_LEVEL: 'info',
    };
    try {
      const migrated = cli(['migrate'], env);
      assert.equal(migrated.status, 0, migrated.stderr);
      assert.match(migrated.stdout, /registry created, ops created/);
      const child = spawn(process.execPath, [join(work, 'bin/utilmeta-proxy.js'), 'start'], { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => (stderr += d));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      try {
        const origin = await new Promise<string>((resolve, reject) => {
          createInterface({ input: child.stdout }).on('line', (line) => {
            try {
              const j = JSON.parse(line) as { msg?: string; address?: string };
              if (j.msg === 'utilmeta-proxy listening') resolve(String(j.address));
            } catch {
              /* not a log line */
            }
          });
          void exited.then((code) => reject(new Error(`exited ${code}: ${stderr}`)));
        });
        const health = await request(`${origin}/api/healthz`);
        assert.equal(health.statusCode, 200);
        await health.body.dump();
        const ready = await request(`${origin}/api/readyz`);
        assert.equal(ready.statusCode, 200, await ready.body.text());
      } finally {
        child.kill('SIGTERM');
      }
      assert.equal(await exited, 0, stderr);
    } finally {
      await dbs.drop();
    }
  });
});
