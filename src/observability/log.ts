// Structured logging with pino. JSON to a non-blocking destination in production
// (no synchronous writes on the hot path); pretty output when attached to a terminal.
import pino, { type Logger } from 'pino';

export type { Logger };

/** UtilMeta's default secret_names, plus the proxy's own secrets. */
export const SECRET_NAMES = [
  'password', 'secret', 'dsn', 'sessionid', 'pwd', 'passphrase', 'cookie',
  'authorization', '_token', '_key',
  'proxy-authorization', 'cluster_key', 'cluster-key', 'node-key', 'node_key', 'x-proxy-token', 'init_key',
];

// Field and header names repeat endlessly: remember the verdict per name.
const verdicts = new Map<string, boolean>();

export function isSecretName(name: string): boolean {
  let v = verdicts.get(name);
  if (v === undefined) {
    const l = name.toLowerCase();
    v = SECRET_NAMES.some((s) => l.includes(s));
    if (verdicts.size > 10_000) verdicts.clear();
    verdicts.set(name, v);
  }
  return v;
}

const REDACTED = '[redacted]';

/**
 * Every field (or [name, value] header pair) whose name looks secret replaced by
 * '[redacted]', at any depth. Returns the value itself when nothing needs hiding,
 * so the per-request log line costs no copy.
 */
export function redact(value: unknown, depth = 0): unknown {
  if (depth > 8 || value === null || typeof value !== 'object' || value instanceof Error) return value;
  if (Array.isArray(value)) {
    if (value.length === 2 && typeof value[0] === 'string' && typeof value[1] === 'string' && isSecretName(value[0])) {
      return [value[0], REDACTED];
    }
    let out: unknown[] | null = null;
    for (let i = 0; i < value.length; i++) {
      const r = redact(value[i], depth + 1);
      if (r !== value[i]) (out ??= value.slice())[i] = r;
    }
    return out ?? value;
  }
  let out: Record<string, unknown> | null = null;
  for (const k in value as Record<string, unknown>) {
    const v = (value as Record<string, unknown>)[k];
    const r = isSecretName(k) ? REDACTED : redact(v, depth + 1);
    if (r !== v) (out ??= { ...(value as Record<string, unknown>) })[k] = r;
  }
  return out ?? value;
}

export interface LogOptions {
  level: string;
  pretty?: boolean;
  /** For tests: a stream receiving JSON lines. */
  stream?: NodeJS.WritableStream;
}

export function createLogger(opts: LogOptions): Logger {
  const base: pino.LoggerOptions = {
    level: opts.level,
    base: { pid: process.pid },
    // Redact every object logged, whatever its shape: pino's path-based redaction
    // cannot express "any key containing _token", so a formatter does it.
    formatters: { log: (obj) => redact(obj) as Record<string, unknown> },
    serializers: { err: pino.stdSerializers.err },
  };
  if (opts.stream) return pino(base, opts.stream as pino.DestinationStream);
  const pretty = opts.pretty ?? Boolean(process.stdout.isTTY);
  if (pretty) {
    return pino({ ...base, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } });
  }
  return pino(base, pino.destination({ dest: 1, sync: false }));
}
