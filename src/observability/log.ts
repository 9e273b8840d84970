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

export function isSecretName(name: string): boolean {
  const l = name.toLowerCase();
  return SECRET_NAMES.some((s) => l.includes(s));
}

/** Deep copy with every field whose name looks secret replaced by '[redacted]'. */
export function redact(value: unknown, depth = 0): unknown {
  if (depth > 8 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) {
    // header pair lists: [name, value]
    if (value.length === 2 && typeof value[0] === 'string' && typeof value[1] === 'string' && isSecretName(value[0])) {
      return [value[0], '[redacted]'];
    }
    return value.map((v) => redact(v, depth + 1));
  }
  if (value instanceof Error) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    out[k] = isSecretName(k) ? '[redacted]' : redact(v, depth + 1);
  }
  return out;
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
