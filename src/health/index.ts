// Instance health and safe-retry building blocks: the public surface.
export { InstanceHealth, outcomeOf, type InstanceHealthOptions, type InstanceHealthReport, type HealthStateName, type HealthMetrics, type InstanceRef, type AttemptFailure } from './health.ts';
export { OutlierDetector, DEFAULT_OUTLIER_OPTIONS, type OutlierOptions, type Ejection, type AttemptOutcome } from './outlier.ts';
export { ActiveHealthChecker, type ActiveCheckOptions, type ProbeTarget } from './checker.ts';
export { RedisLeaderLock, SoloLeader, type LeaderLock, type RedisLeaderOptions } from './leader.ts';
export { DEFAULT_HEALTH_PREFIX, type ProbeState, type DrainEntry } from './sync.ts';
export { RetryBudget, RetryBudgets, DEFAULT_RETRY_BUDGET, type RetryBudgetOptions } from './retry-budget.ts';
export { parseRetryAfter, decideRetry, type RetryDecision, type RetryTiming } from './retry-after.ts';
export {
  IdempotencyStore, ResponseRecorder, parseIdempotencyKey, requestFingerprint, requiresIdempotencyCheck, idempotencyError,
  type IdempotencyBegin, type IdempotencyLease, type IdempotencyOptions, type StoredResponse, type RecordedResponse,
} from './idempotency.ts';
