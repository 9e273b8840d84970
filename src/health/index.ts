// Instance health and safe-retry building blocks: the public surface.
//
// How the pieces fit a node (each file's header states its rules):
// - InstanceHealth (one per node): `filter(instances)` after resolving a
//   service, `report(instance, outcomeOf(status, error))` after every upstream
//   attempt, `drain`/`undrain`/`lift` for operators, `healthOf(id)` for the
//   registry listing, `metrics()` for the exporter, `retain(ids)` after a
//   registry reload. With Redis it shares everything with the other nodes.
// - ActiveHealthChecker (one per node; only the elected one probes): targets
//   are the registry snapshot's instances; leader = RedisLeaderLock, or
//   SoloLeader without Redis.
// - RetryBudgets (per service) and decideRetry/parseRetryAfter: whether and
//   when a retry goes out.
// - IdempotencyStore: `begin` before forwarding an unsafe request carrying an
//   Idempotency-Key, then `complete` (what the client got) or `release` (the
//   attempt never reached an upstream).
export { InstanceHealth, outcomeOf, type HealthEvent, type InstanceHealthOptions, type InstanceHealthReport, type HealthStateName, type HealthMetrics, type InstanceRef, type AttemptFailure } from './health.ts';
export { OutlierDetector, DEFAULT_OUTLIER_OPTIONS, type OutlierOptions, type Ejection, type AttemptOutcome } from './outlier.ts';
export { ActiveHealthChecker, type ActiveCheckOptions, type ProbeTarget } from './checker.ts';
export { PgAdvisoryLeader, RedisLeaderLock, SoloLeader, type LeaderLock, type LeaderMode, type PgLeaderOptions, type RedisLeaderOptions } from './leader.ts';
export { DEFAULT_HEALTH_PREFIX, type ProbeState, type DrainEntry } from './sync.ts';
export { RetryBudget, RetryBudgets, DEFAULT_RETRY_BUDGET, type RetryBudgetOptions } from './retry-budget.ts';
export { parseRetryAfter, decideRetry, type RetryDecision, type RetryTiming } from './retry-after.ts';
export {
  IdempotencyStore, ResponseRecorder, parseIdempotencyKey, requestFingerprint, requiresIdempotencyCheck, idempotencyError,
  type IdempotencyBegin, type IdempotencyLease, type IdempotencyOptions, type StoredResponse, type RecordedResponse,
} from './idempotency.ts';
