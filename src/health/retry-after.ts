// Retry-After and the retry-timing decision.
//
// Rules (the upstream leg applies them to 408/429/500/502/503/504 answers of
// requests that may be retried: idempotent, body replayable):
// - `Retry-After` is either delay-seconds (digits only) or an HTTP-date
//   (IMF-fixdate, or the obsolete RFC 850 and asctime forms every HTTP/1.1
//   recipient must accept). A date in the past means "now". Anything else is
//   ignored as if the header were absent (a malformed header must not block a
//   retry that would otherwise happen, nor crash).
// - Only 429 and 503 answers carry a meaningful Retry-After. Without one (or
//   with 0), a retryable answer fails over to the next candidate now, and is
//   relayed when none is left.
// - 503 with Retry-After speaks for the instance that sent it: the next
//   candidate is tried now; on the last candidate the request waits and retries
//   the same instance. (The instance is also held out of rotation until then.)
// - 429 with Retry-After speaks for the caller (rate limits are usually per
//   client and shared by the instances): the request never hops to another
//   instance to sidestep it; it waits and retries the same instance.
// - A wait is taken only when it is at most `maxDelayMs` (default 10 s) and the
//   wait plus the time reserved for the retried attempt (`attemptMs`) ends
//   before the request's deadline (its timeout, counted from its start);
//   otherwise the answer is relayed to the client unchanged, Retry-After
//   included. A wait never runs past the deadline.

export type RetryDecision =
  | { action: 'next' }
  | { action: 'wait'; delayMs: number }
  | { action: 'relay'; reason: 'no_candidate' | 'beyond_deadline' | 'too_long' };

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
  /** The retryable answer's status. */
  status: number;
  /** The answer's Retry-After in ms (parseRetryAfter), null when absent or malformed. */
  retryAfterMs: number | null;
  /** Epoch ms now. */
  now: number;
  /** Epoch ms by which the whole request must be answered. */
  deadline: number;
  /** Time reserved for the retried attempt itself (default 0). */
  attemptMs?: number;
  /** Longest wait ever taken (default 10 s). */
  maxDelayMs?: number;
  /** Another candidate instance remains for this request. */
  otherCandidates: boolean;
}

export function decideRetry(t: RetryTiming): RetryDecision {
  const delay = (t.status === 429 || t.status === 503) && t.retryAfterMs !== null ? t.retryAfterMs : 0;
  if (delay === 0 || (t.status === 503 && t.otherCandidates)) return t.otherCandidates ? { action: 'next' } : { action: 'relay', reason: 'no_candidate' };
  if (delay > (t.maxDelayMs ?? 10_000)) return { action: 'relay', reason: 'too_long' };
  if (t.now + delay + (t.attemptMs ?? 0) > t.deadline) return { action: 'relay', reason: 'beyond_deadline' };
  return { action: 'wait', delayMs: delay };
}
