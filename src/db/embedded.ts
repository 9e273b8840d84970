// Embedded PostgreSQL: PGlite (WASM, single backend) exposed on 127.0.0.1 over
// the wire protocol by pglite-socket, so the server-mode postgres.js code path
// is used unchanged.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { resolve, join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import type { Logger } from 'pino';
import { DbError } from './client.ts';

export interface EmbeddedServer {
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  /** Milliseconds PGlite took to open (includes initdb on a new directory). */
  readonly startMs: number;
  stop(): Promise<void>;
}

const LOCK_FILE = 'utilmeta-proxy.lock';
// Directories this process holds, to tell our own stale lock (pid reuse, e.g. pid 1
// in containers) from a live one.
const held = new Set<string>();

/**
 * PGlite happily opens a directory that another process has open and both then
 * corrupt it, so guard the directory with a pid lock file.
 */
function acquireLock(dir: string): string {
  const file = join(dir, LOCK_FILE);
  if (held.has(dir)) throw new DbError(`embedded PGlite at ${dir} is already open in this process`, 'ELOCKED');
  try {
    writeFileSync(file, String(process.pid), { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const pid = Number.parseInt(readFileSync(file, 'utf8'), 10);
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
      throw new DbError(
        `embedded PGlite at ${dir} is in use by process ${pid}; stop it or set another data directory`,
        'ELOCKED',
      );
    }
    writeFileSync(file, String(process.pid)); // stale lock from a crashed run
  }
  held.add(dir);
  return file;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function startEmbedded(dataDir: string, maxConnections: number, log: Logger): Promise<EmbeddedServer> {
  const dir = resolve(dataDir);
  mkdirSync(dir, { recursive: true });
  const lock = acquireLock(dir);
  const release = () => {
    held.delete(dir);
    rmSync(lock, { force: true });
  };
  const t0 = performance.now();
  let db: PGlite;
  try {
    db = await PGlite.create({ dataDir: dir });
  } catch (err) {
    release();
    throw new DbError(`cannot open embedded PGlite at ${dataDir}: ${(err as Error).message ?? err}`.replace(/\s+/g, ' '), undefined, { cause: err });
  }
  const startMs = Math.round(performance.now() - t0);
  const host = '127.0.0.1';
  const server = new PGLiteSocketServer({ db, host, port: 0, maxConnections });
  try {
    await server.start();
  } catch (err) {
    await db.close().catch(() => {});
    release();
    throw new DbError(`cannot start the embedded PGlite socket on ${host}: ${(err as Error).message}`, undefined, { cause: err });
  }
  // getServerConn() is "host:port"; port 0 was resolved to the ephemeral port on listen.
  const port = Number(server.getServerConn().split(':').pop());
  log.debug({ dataDir: dir, port, startMs }, 'embedded PGlite started');

  let stopped: Promise<void> | undefined;
  return {
    host,
    port,
    dataDir,
    startMs,
    stop() {
      stopped ??= (async () => {
        // Handlers detach (and roll back an open transaction) asynchronously when their
        // socket closes; give them a moment so PGlite is idle before it shuts down.
        for (let i = 0; i < 50 && server.getStats().activeConnections > 0; i++) {
          await new Promise((r) => setTimeout(r, 10));
        }
        await server.stop();
        await db.close();
        release();
      })();
      return stopped;
    },
  };
}
