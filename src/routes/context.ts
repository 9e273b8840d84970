// What every management surface is built from (the node's parts it may use).
import type { Logger } from 'pino';
import type { Config } from '../config/index.ts';
import type { Database } from '../db/index.ts';
import type { AccessView, AuthzStore, Credentials } from '../access/index.ts';
import type { PlatformLink } from '../platform/index.ts';
import type { RegistryCache, RegistryStore } from '../registry/index.ts';
import type { Redis } from '../redis/index.ts';
import type { ManagementAuthDeps } from './management-auth.ts';

export interface SurfaceContext {
  config: Config;
  log: Logger;
  db: Database;
  registry: RegistryCache;
  registryStore: RegistryStore;
  platform: PlatformLink;
  access: { view: AccessView; store: AuthzStore; credentials: Credentials; redis: Redis | null };
  /** What authenticateManagement needs. */
  auth: ManagementAuthDeps;
}
