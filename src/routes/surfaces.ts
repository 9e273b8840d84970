// Every management surface the node mounts, in one list: each surface is one
// file of src/routes exporting a factory that takes this context and returns its
// Mount. A new surface adds one line here.
import type { Mount } from './index.ts';
import type { SurfaceContext } from './context.ts';
import { createOpsApi } from './ops.ts';
import { createDirectorySurface } from './directory.ts';
import { createV1Surface } from './v1.ts';
import { credentialRoutes } from './credentials.ts';
import { createGrantsApi } from './grants.ts';
import { servicesAuthRoutes } from './services-auth.ts';

export type { SurfaceContext } from './context.ts';


export function managementMounts(ctx: SurfaceContext): Mount[] {
  const { config, log, platform } = ctx;
  return [
    { prefix: '/api/ops', handle: createOpsApi({ config, log, repo: platform.repo, tokens: platform.tokens, openapi: platform.openapi, authz: ctx.access.store }) },
    createDirectorySurface(ctx),
    // /api/v1: every feature under it contributes its route table here.
    createV1Surface(ctx, [credentialRoutes(ctx), servicesAuthRoutes(ctx)]),
    createGrantsApi(ctx),
  ];
}
