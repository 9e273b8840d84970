// The access plane: who may call what. Pure decision logic (permissions,
// catalog, router, decide), the data layer (schema writer, credentials,
// directory), SigV4, and the live view every node decides from.
export { AccessView, type AccessSnapshot, type AccessViewOptions, type EventPayload } from './view.ts';
export { resolveCredential, bearerToken, sigv4NeedsBody, keyResolver, type CredentialInput, type CredentialResult } from './authenticate.ts';
export { decide, authenticateBearer, principalForAccessKey, appBoundTo, testInstancesOnly, type Principal, type AuthFailure, type Decision, type Allow, type Deny, type DecisionRequest } from './decide.ts';
export { decideSupervisor, jtiRevoked } from './platform-policy.ts';
export {
  verifySigV4, finishSigV4, authenticateSigV4, findCarriers, sigv4ErrorResponse, sha256Hex, EMPTY_SHA256, DEFAULT_SIGV4_OPTIONS,
  type SigV4Options, type SigV4Failure, type SigV4Success,
} from './sigv4.ts';
export { AuthzStore, eventPayload, NOTIFY_CHANNEL, type CommittedEvent, type AuthzActor } from './store.ts';
export { Credentials } from './credentials.ts';
export { MemoryLoginLimiter, RedisLoginLimiter } from './login-limit.ts';
export { effectiveMasterKeys, authzMain } from './cli.ts';
export { buildCatalog, apiIdOf, routeKeyOf, deprecationChanges } from './catalog.ts';
export { recordRevokedJtis, type RevokeJtisOptions } from './revocation.ts';
export { Grants, grantError, GRANT_ERRORS, GRANT_DB_ERRORS, parseActionBody, type GrantsCaller } from './grants.ts';
export { Sweeper, startSweeper, sweepOnce } from './sweeper.ts';
export { syncCatalog } from './catalog-sync.ts';
export { ServicesAuth } from './services-auth.ts';
export { SessionIndex, keysOfEffect } from './sessions.ts';
