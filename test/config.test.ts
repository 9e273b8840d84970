import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { parseConfig, loadConfig, ConfigError, VARIABLES, PREFIX } from '../src/config/index.ts';
import { CLI_ARGS } from './support/cli.ts';
import { clientIp, isPrivateIp, sameIp } from '../src/net/ip.ts';

const root = new URL('..', import.meta.url).pathname;
const cli = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, [...CLI_ARGS, ...args], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '', ...env }, cwd: tmpdir() });

describe('configuration', () => {
  it('has sensible defaults with nothing set (embedded database, derived BASE_URL)', () => {
    const c = parseConfig({});
    assert.equal(c.db.host, null);
    assert.equal(c.bindPort, 8888);
    assert.equal(c.baseUrl, 'http://127.0.0.1:8888/api');
    assert.equal(c.baseUrlDerived, true);
    assert.equal(c.defaultTimeout, 15);
    assert.equal(c.corsMaxAge, 86400);
    assert.equal(c.db.opsName, 'utilmeta_proxy_ops');
    assert.equal(c.server, 'auto');
  });

  it('reads the WebSocket settings (0 turns the idle timeout off)', () => {
    assert.deepEqual(parseConfig({}).websocket, { idleTimeout: 60, maxMessage: 1048576, maxBuffer: 8388608 });
    assert.equal(parseConfig({ UTILMETA_PROXY_WS_IDLE_TIMEOUT: '0' }).websocket.idleTimeout, 0);
    assert.equal(parseConfig({ UTILMETA_PROXY_WS_IDLE_TIMEOUT: '8' }).websocket.idleTimeout, 8);
  });

  it('takes the port from BASE_URL unless BIND_PORT is set', () => {
    assert.equal(parseConfig({ UTILMETA_PROXY_BASE_URL: 'http://10.0.0.2:9001/api' }).bindPort, 9001);
    assert.equal(parseConfig({ UTILMETA_PROXY_BASE_URL: 'http://10.0.0.2:9001/api', UTILMETA_PROXY_BIND_PORT: '7000' }).bindPort, 7000);
    assert.equal(parseConfig({ UTILMETA_PROXY_BASE_URL: 'https://proxy.example.com/api' }).baseUrl, 'https://proxy.example.com/api');
  });

  it('fails with one line naming the variable and the problem', () => {
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ UTILMETA_PROXY_BIND_PORT: 'abc' }, /^UTILMETA_PROXY_BIND_PORT: expected an integer from 0 to 65535, got 'abc'$/],
      [{ UTILMETA_PROXY_PRIVATE: 'perhaps' }, /^UTILMETA_PROXY_PRIVATE: expected a boolean/],
      [{ UTILMETA_PROXY_BASE_URL: 'proxy.example.com' }, /^UTILMETA_PROXY_BASE_URL: expected an absolute URL/],
      [{ UTILMETA_PROXY_BASE_URL: 'ftp://x/api' }, /^UTILMETA_PROXY_BASE_URL: expected a http: or https: URL/],
      [{ UTILMETA_PROXY_DB_ENGINE: 'mysql' }, /^UTILMETA_PROXY_DB_ENGINE: only postgresql/],
      [{ UTILMETA_PROXY_SERVER: 'apache' }, /^UTILMETA_PROXY_SERVER: expected one of auto, uws, node/],
      [{ UTILMETA_PROXY_TRUSTED_PROXIES: '10.0.0.0/40' }, /^UTILMETA_PROXY_TRUSTED_PROXIES: '10.0.0.0\/40' has an invalid prefix length/],
      [{ UTILMETA_PROXY_DEFAULT_TIMEOUT: '30', UTILMETA_PROXY_MAX_TIMEOUT: '10' }, /^UTILMETA_PROXY_MAX_TIMEOUT: must be >= DEFAULT_TIMEOUT/],
      [{ UTILMETA_PROXY_OPS_SCHEMA: '3.0' }, /^UTILMETA_PROXY_OPS_SCHEMA: expected one of 2.9, 2.8/],
      [{ UTILMETA_PROXY_DB_NAME: 'x; drop' }, /^UTILMETA_PROXY_DB_NAME: expected a PostgreSQL database name/],
      [{ UTILMETA_PROXY_WS_IDLE_TIMEOUT: '5' }, /^UTILMETA_PROXY_WS_IDLE_TIMEOUT: expected 0 or an integer from 8 to 86400, got '5'$/],
      [{ UTILMETA_PROXY_WS_MAX_MESSAGE: '10' }, /^UTILMETA_PROXY_WS_MAX_MESSAGE: expected an integer from 125 to/],
    ];
    for (const [env, pattern] of cases) {
      assert.throws(() => parseConfig(env), (err: Error) => err instanceof ConfigError && pattern.test(err.message) && !err.message.includes('\n'));
    }
  });

  it('reads an env file without overriding the process environment', () => {
    const dir = mkdtempSync(join(tmpdir(), 'umcfg-'));
    const file = join(dir, 'proxy.env');
    writeFileSync(file, 'UTILMETA_PROXY_BIND_PORT=7777\nUTILMETA_PROXY_PRIVATE=true\n');
    const c = loadConfig({ env: { UTILMETA_PROXY_PRIVATE: 'false' }, envFile: file });
    assert.equal(c.bindPort, 7777);
    assert.equal(c.private, false);
    assert.throws(() => loadConfig({ env: {}, envFile: join(dir, 'missing.env') }), /does not exist/);
  });

  it('the CLI reports an invalid value in one line and exits 2', () => {
    const r = cli(['start'], { UTILMETA_PROXY_BIND_PORT: 'x' });
    assert.equal(r.status, 2);
    assert.equal(r.stderr.trim(), "utilmeta-proxy: UTILMETA_PROXY_BIND_PORT: expected an integer from 0 to 65535, got 'x'");
  });

  it('--help, the env example and the README document every variable', () => {
    const help = cli(['--help']);
    assert.equal(help.status, 0);
    const example = readFileSync(join(root, 'utilmeta-proxy.env.example'), 'utf8');
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    for (const v of VARIABLES) {
      assert.ok(help.stdout.includes(PREFIX + v.name), `--help lacks ${v.name}`);
      assert.ok(example.includes(PREFIX + v.name), `env example lacks ${v.name}`);
      assert.ok(readme.includes(PREFIX + v.name) || readme.includes(v.name), `README lacks ${v.name}`);
    }
    // …and nothing the code does not read.
    for (const m of example.matchAll(/UTILMETA_PROXY_([A-Z_]+)=/g)) {
      assert.ok(VARIABLES.some((v) => v.name === m[1]), `env example documents unknown ${m[1]}`);
    }
    for (const cmd of ['start', 'migrate', 'check', 'export-env', 'version']) {
      const r = cli([cmd, '--help']);
      assert.equal(r.status, 0, `${cmd} --help`);
      assert.match(r.stdout, new RegExp(`Usage: utilmeta-proxy ${cmd}`));
    }
  });

  it('export-env prints what services need', () => {
    const r = cli(['export-env'], { UTILMETA_PROXY_BASE_URL: 'http://10.0.0.2:8888/api', UTILMETA_PROXY_DB_HOST: '10.0.0.3', UTILMETA_PROXY_DB_PASSWORD: 'pw' });
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^UTILMETA_PROXY_BASE_URL=http:\/\/10\.0\.0\.2:8888\/api$/m);
    assert.match(r.stdout, /^UTILMETA_OPERATIONS_DB_HOST=10\.0\.0\.3$/m);
    assert.match(r.stdout, /^UTILMETA_OPERATIONS_DB_PASSWORD=pw$/m);
    assert.match(r.stdout, /^UTILMETA_OPERATIONS_DB_NAME=utilmeta_proxy_ops$/m);
    const version = execFileSync(process.execPath, [...CLI_ARGS, 'version'], { encoding: 'utf8' });
    assert.equal(version.trim(), JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version);
  });
});

describe('client IP', () => {
  const { trustedProxies } = parseConfig({ UTILMETA_PROXY_TRUSTED_PROXIES: '127.0.0.1,10.1.0.0/16' });
  const none = parseConfig({}).trustedProxies;

  it('ignores X-Forwarded-For from untrusted peers (§6.19)', () => {
    assert.equal(clientIp('203.0.113.9', '10.0.0.1', '10.0.0.2', none), '203.0.113.9');
    assert.equal(clientIp('::ffff:10.0.0.7', undefined, undefined, none), '10.0.0.7');
  });

  it('walks X-Forwarded-For from the right past trusted hops', () => {
    assert.equal(clientIp('127.0.0.1', '198.51.100.1, 203.0.113.5, 10.1.2.3', undefined, trustedProxies), '203.0.113.5');
    assert.equal(clientIp('127.0.0.1', undefined, '192.168.1.4', trustedProxies), '192.168.1.4');
    assert.equal(clientIp('127.0.0.1', 'garbage', undefined, trustedProxies), '127.0.0.1');
  });

  it('classifies private addresses and compares IPs by value', () => {
    for (const ip of ['10.2.3.4', '172.16.0.1', '192.168.0.1', '127.0.0.1', '::1', 'fd00::1']) assert.equal(isPrivateIp(ip), true, ip);
    for (const ip of ['8.8.8.8', '172.32.0.1', '2001:db8::1', 'not-an-ip']) assert.equal(isPrivateIp(ip), false, ip);
    assert.equal(sameIp('::1', '0:0:0:0:0:0:0:1'), true);
    assert.equal(sameIp('10.0.0.1', '10.0.0.2'), false);
    assert.equal(sameIp('10.0.0.1', 'host.example'), false);
  });
});
