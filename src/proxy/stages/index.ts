export { requireCanonicalPath, pathProblem } from './path.ts';
export { requireServiceName, requireNodeId, identifyCaller } from './caller.ts';
export { authenticatePlatform, platformTarget } from './platform.ts';
export { resolveByName, resolvePlatformService } from './resolve.ts';
export { chooseInstances, requireCandidates } from './choose.ts';
export { bodyPolicy } from './body.ts';
export { forward, proxyHeaders } from './forward.ts';
export { healthyInstances, type HealthFilter } from './health.ts';
export { withIdempotency } from './idempotency.ts';
