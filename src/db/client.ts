// postgres.js client factory and error wrapping shared by server and embedded mode.
import postgres from 'postgres';
import type { Logger } from 'pino';

/** Where a client points; used to build one-line error messages. */
export interface DbTarget {
  host: string;
  port: number;
  user: string;
  database: string;
  /** Set for the embedded server so messages say what it is. */
  embeddedDir?: string;
}

export interface ClientOptions extends DbTarget {
  password: string;
  ssl: boolean;
  max: number;
}

/**
 * One-line, user-facing database error. `code` is the SQLSTATE or the Node
 * error code of the cause (e.g. '3D000', 'ECONNREFUSED').
 */
export class DbError extends Error {
  readonly code: string | undefined;
  constructor(message: string, code: string | undefined, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DbError';
    this.code = code;
  }
}

export function targetLabel(t: DbTarget): string {
  return t.embeddedDir !== undefined
    ? `embedded PGlite at ${t.embeddedDir} (${t.host}:${t.port})`
    : `PostgreSQL at ${t.host}:${t.port}, database "${t.database}", user "${t.user}"`;
}

/** SQLSTATE or Node error code of anything postgres.js throws. */
export function errorCode(err: unknown): string | undefined {
  if (err && typeof err === 'object' && 'code' in err) {
    const c = (err as { code: unknown }).code;
    if (typeof c === 'string') return c;
  }
  return undefined;
}

const HINTS: Record<string, string> = {
  ECONNREFUSED: 'connection refused (is PostgreSQL running and listening there?)',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  ETIMEDOUT: 'connection timed out',
  CONNECT_TIMEOUT: 'connection timed out',
  ECONNRESET: 'connection reset by the server',
  '28P01': 'password authentication failed',
  '28000': 'authentication rejected',
  '3D000': 'database does not exist (run `migrate` to create it)',
  '42501': 'permission denied',
  '53300': 'too many connections',
  '57P03': 'the server is starting up or shutting down',
};

/** Wraps any error into a single-line DbError naming host/port/database. */
export function wrapDbError(err: unknown, target: DbTarget, doing?: string): DbError {
  if (err instanceof DbError) return err;
  const code = errorCode(err);
  const raw = err instanceof Error ? err.message : String(err);
  const hint = code !== undefined ? HINTS[code] : undefined;
  // postgres.js messages are one line already, but PostgreSQL DETAIL/HINT may not be.
  const msg = (hint && !raw.toLowerCase().includes(hint.split(' (')[0]!) ? `${hint}: ${raw}` : raw).replace(/\s+/g, ' ').trim();
  const what = doing ? `${doing}: ` : '';
  return new DbError(`${what}${targetLabel(target)}: ${msg}${code ? ` [${code}]` : ''}`, code, { cause: err });
}

export function createClient(o: ClientOptions, log: Logger): postgres.Sql {
  return postgres({
    host: o.host,
    port: o.port,
    user: o.user,
    // Empty password means "none" (trust / peer auth); postgres.js would otherwise send ''.
    password: o.password === '' ? undefined : o.password,
    database: o.database,
    // 'require' = encrypt without certificate verification, like libpq sslmode=require.
    ssl: o.ssl ? 'require' : false,
    max: o.max,
    prepare: true,
    connect_timeout: 10,
    // postgres.js backs off reconnects up to 20 s (shared by the pool and the
    // LISTEN connection), so after an outage the first query waited up to that
    // long. 50 ms doubling to a 1 s cap (jittered) is still cheap against a
    // server that is down: connects are made only for queued queries and LISTEN.
    backoff: (retries: number) => (0.5 + Math.random() / 2) * Math.min(0.05 * 2 ** retries, 1),
    // Django forces UTC sessions; timestamptz text and date_trunc etc. must agree with it.
    connection: { TimeZone: 'UTC', application_name: 'utilmeta-proxy' },
    onnotice: (n) => log.debug({ code: n['code'], db: o.database }, `postgres notice: ${n['message']}`),
  });
}
