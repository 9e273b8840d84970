// The registry domain: registrations (one writer of the registry tables), the
// in-memory snapshot every node serves from, and instance selection.
export { RegistryCache, REGISTRY_CHANNEL, loadRegistry } from './cache.ts';
export { RegistrySnapshot, type InstanceView, type ServiceView } from './snapshot.ts';
export { RegistryStore, registryResponse, type RegisterResult } from './store.ts';
export { parseRegistration, resourcesMetadata, type Registration } from './registration.ts';
export { resolveService, rankInstances, RankedPool, type Resolved } from './select.ts';
export { parseVersion, parseRange, VersionRangeError, type Version } from './version.ts';
