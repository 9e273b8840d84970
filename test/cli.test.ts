// The CLI as users run it: `utilmeta-proxy start` on a fresh machine with no
// database configured (embedded PGlite), then `check`, `migrate` against the
// real PostgreSQL.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { request } from 'undici';
import { CLI_ARGS } from './support/cli.ts';
import { freshDatabases, PG_HOST, PG_PORT, PG_USER, adminSql } from './support/env.ts';

const baseEnv = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp' };

/** Starts the CLI and resolves with the listen address from its JSON log. */
function startCli(env: Record<string, string>, cwd: string) {
  const child = spawn(process.execPath, [...CLI_ARGS, 'start'], { cwd, env: { ...baseEnv, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Array<Record<string, unknown>> = [];
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const ready = new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      try {
        const j = JSON.parse(line) as Record<string, unknown>;
        lines.push(j);
        if (j.msg === 'utilmeta-proxy listening') resolve(String(j.address));
      } catch {
        /* not JSON */
      }
    });
    child.on('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
    setTimeout(() => reject(new Error('no listening line within 60s')), 60_000).unref();
  });
  return { child, lines, ready };
}

async function stop(child: ReturnType<typeof spawn>) {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

describe('utilmeta-proxy CLI', () => {
  it('start with no database configured serves GET /api/ on an embedded database', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'umcli-'));
    const { child, lines, ready } = startCli({ UTILMETA_PROXY_BIND_PORT: '0', UTILMETA_PROXY_LOG_LEVEL: 'info' }, dir);
    try {
      const origin = await ready;
      const r = await request(`${origin}/api/`);
      assert.equal(r.statusCode, 200);
      assert.deepEqual(await r.body.json(), { utilmeta: '0.4.0', type: 'proxy', registry_url: '/registry', proxy_url: '/proxy' });
      const ready2 = await request(`${origin}/api/readyz`);
      assert.equal(ready2.statusCode, 200, await ready2.body.text());
      assert.ok(existsSync(join(dir, 'data')), 'data kept under ./data');
      const text = JSON.stringify(lines);
      assert.match(text, /single-node/i, 'logs that the embedded database is a single-node development default');
      assert.ok(lines.some((l) => l.listener === 'uws' || l.listener === 'node'), 'logs which listener it uses');
      const check = spawnSync(process.execPath, [...CLI_ARGS, 'check'], { cwd: dir, env: { ...baseEnv, UTILMETA_PROXY_BASE_URL: `${origin}/api` }, encoding: 'utf8' });
      assert.equal(check.status, 0, check.stdout + check.stderr);
      assert.match(check.stdout, /live: {2}yes/);
    } finally {
      await stop(child);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('check fails when nothing listens', () => {
    const r = spawnSync(process.execPath, [...CLI_ARGS, 'check'], { env: { ...baseEnv, UTILMETA_PROXY_BASE_URL: 'http://127.0.0.1:9/api' }, encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stdout, /live: {2}no/);
  });

  it('migrate creates both databases on PostgreSQL and is idempotent', async () => {
    const dbs = freshDatabases();
    const env = {
      ...baseEnv,
      UTILMETA_PROXY_DB_HOST: PG_HOST, UTILMETA_PROXY_DB_PORT: String(PG_PORT), UTILMETA_PROXY_DB_USER: PG_USER,
      UTILMETA_PROXY_DB_NAME: dbs.registryName, UTILMETA_PROXY_OPS_DB_NAME: dbs.opsName, UTILMETA_PROXY_LOG_LEVEL: 'warn',
    };
    try {
      const first = spawnSync(process.execPath, [...CLI_ARGS, 'migrate'], { env, encoding: 'utf8' });
      assert.equal(first.status, 0, first.stderr);
      assert.match(first.stdout, /registry created, ops created \(schema 2\.9\)/);
      const second = spawnSync(process.execPath, [...CLI_ARGS, 'migrate'], { env, encoding: 'utf8' });
      assert.equal(second.status, 0, second.stderr);
      assert.match(second.stdout, /registry present, ops present/);
      const sql = adminSql(dbs.opsName);
      const rows = await sql`SELECT name FROM django_migrations WHERE app = 'ops' ORDER BY id`;
      await sql.end();
      assert.equal(rows.length, 6);
    } finally {
      await dbs.drop();
    }
  });

  it('start fails with one clear line when the database cannot be reached', () => {
    const r = spawnSync(process.execPath, [...CLI_ARGS, 'start'], {
      env: { ...baseEnv, UTILMETA_PROXY_DB_HOST: '127.0.0.1', UTILMETA_PROXY_DB_PORT: '9', UTILMETA_PROXY_BIND_PORT: '0', UTILMETA_PROXY_LOG_LEVEL: 'fatal' },
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^utilmeta-proxy: cannot connect: PostgreSQL at 127\.0\.0\.1:9/m);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  });
});
