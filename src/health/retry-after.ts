// Retry-After and the retry-timing decision.
//
// Rules:
// - `Retry-After` is either delay-seconds (digits only) or an HTTP-date
//   (IMF-fixdate, or the obsolete RFC 850 and asctime forms every HTTP/1.1
//   recipient must accept). A date in the past means "now". Anything else is
//   ignored as if the header were absent (a malformed header must not block a
//   retry that would otherwise happen, nor crash).
// - Only 429 and 503 answers carry a meaningful Retry-After; for every other
//   retryable outcome the retry goes now (to the next candidate).
// - A wait is taken only when the wait plus the time an attempt needs
//   (`attemptMs`) still ends before the request's deadline, and the wait is not
//   longer than `maxDelayMs` (default 10 s); otherwise the request stops and the
//   client gets the upstream's answer, Retry-After included.
// - With `otherCandidates`, a 429/503 from one instance does not make the
//   request wait: another instance is tried now, since the Retry-After speaks
//   for the instance that sent it.

export type RetryDecision =
  | { action: 'now' }
  | { action: 'after'; delayMs: number }
  | { action: 'stop'; reason: 'beyond_deadline' | 'too_long' };

const DATE_FORMS = [
  // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
  /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/,
  // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
  /^(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), \d{2}-(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-\d{2} \d{2}:\d{2}:\d{2} GMT$/,
  // asctime: Sun Nov  6 08:49:37 1994
  /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d{2}:\d{2}:\d{2} \d{4}$/,
];

/**
 * Milliseconds to wait from `now` (epoch ms), or null when the value is absent
 * or malformed. Very large delays are clamped rather than overflowing.
 */
export function parseRetryAfter(value: string | null | undefined, now: number): number | null {
  if (value === null || value === undefined) return null;
  const v = value.trim();
  if (v === '') return null;
  if (/^\d+$/.test(v)) {
    // More than ten digits is more than 300 years: clamp instead of losing precision.
    const secs = v.length > 10 ? 9_999_999_999 : Number(v);
    return secs * 1000;
  }
  if (!DATE_FORMS.some((re) => re.test(v))) return null;
  // asctime has no zone; HTTP-dates are always UTC.
  let t = Date.parse(DATE_FORMS[2].test(v) ? `${v} GMT` : v);
  if (Number.isNaN(t)) return null;
  if (DATE_FORMS[1].test(v)) {
    // Two-digit years: a year more than 50 years ahead means the past century.
    const d = new Date(t);
    const year = d.getUTCFullYear();
    const nowYear = new Date(now).getUTCFullYear();
    const yy = year % 100;
    let full = Math.floor(nowYear / 100) * 100 + yy;
    if (full > nowYear + 50) full -= 100;
    d.setUTCFullYear(full);
    t = d.getTime();
  }
  return Math.max(0, t - now);
}

export interface RetryTiming {
  /** The retryable answer's status, or null for a transport failure. */
  status: number | null;
  /** The answer's Retry-After header value, if any. */
  retryAfter?: string | null;
  /** Epoch ms now. */
  now: number;
  /** Epoch ms by which the whole request must be answered. */
  deadline: number;
  /** Time reserved for the next attempt itself (default 0). */
  attemptMs?: number;
  /** Longest wait ever taken (default 10 s). */
  maxDelayMs?: number;
  /** Another instance is available for the retry. */
  otherCandidates?: boolean;
}

export function decideRetry(t: RetryTiming): RetryDecision {
  const attemptMs = t.attemptMs ?? 0;
  const remaining = t.deadline - t.now;
  if (remaining <= attemptMs) return { action: 'stop', reason: 'beyond_deadline' };
  if (t.status !== 429 && t.status !== 503) return { action: 'now' };
  if (t.otherCandidates) return { action: 'now' };
  const delay = parseRetryAfter(t.retryAfter, t.now);
  if (delay === null || delay === 0) return { action: 'now' };
  if (delay > (t.maxDelayMs ?? 10_000)) return { action: 'stop', reason: 'too_long' };
  if (delay + attemptMs >= remaining) return { action: 'stop', reason: 'beyond_deadline' };
  return { action: 'after', delayMs: delay };
}
