// Who is calling a management surface. Every surface accepts every user
// credential — SigV4 with a user key (header or presigned), `Authorization:
// Bearer umt_…`, `X-Auth-Token: umt_…` — resolved against the in-memory access
// snapshot; app keys are refused here (they only call /api/proxy). The result is
// the caller the domain functions take.
import { DomainError } from '../core/errors.ts';
import { withSessionCredential } from './console-session.ts';
import type { IncomingRequest } from '../http/types.ts';
import { isAdmin, userRoleClosure } from '../access/decision-state.ts';
import {
  resolveCredential, sigv4NeedsBody, sha256Hex, EMPTY_SHA256, type AccessView, type SigV4Failure, type SigV4Options,
} from '../access/index.ts';

export interface ManagementCaller {
  userId: string;
  account: string;
  isSuperuser: boolean;
  /** Superuser, or a role (or an inherited role) with authz_manage. */
  admin: boolean;
  /** The union of the management permissions of the user's roles. */
  managementPermissions: string[];
  /** `token:<id>` or `ak:<access key id>`, for the audit trail. */
  credential: string;
}

/** A SigV4 failure: the surface answers it in the AWS error shape, whatever its own envelope. */
export class SigV4Refusal extends Error {
  constructor(readonly failure: SigV4Failure) {
    super(failure.message);
  }
}

export interface ManagementAuthDeps {
  view: AccessView;
  sigv4: SigV4Options;
  bodyLimit: number;
}

export interface Authenticated {
  caller: ManagementCaller;
  /** The body, when verifying the signature needed it read (read it from here, not the request). */
  body: Buffer | null;
}

/**
 * Authenticates a management request. Throws DomainError('unauthenticated') for
 * no or a bad credential, SigV4Refusal for a bad signature, DomainError('forbidden')
 * for an app key or a disabled user.
 */
export async function authenticateManagement(deps: ManagementAuthDeps, req: IncomingRequest): Promise<Authenticated> {
  // The console's session cookie counts only under its CSRF rule (console-session.ts).
  req = withSessionCredential(req);
  let body: Buffer | null = null;
  let bodySha256: string | undefined = req.hasBody ? undefined : EMPTY_SHA256;
  if (req.hasBody && sigv4NeedsBody(req.headers, req.query)) {
    body = await req.readBody(deps.bodyLimit);
    bodySha256 = sha256Hex(body);
  }
  const snap = deps.view.current;
  if (!deps.view.ready) throw new DomainError('unavailable', 'access data is not loaded yet (the database is unreachable)', { code: 'DB_UNAVAILABLE' });
  const r = resolveCredential(snap, {
    method: req.method, rawPath: req.path, rawQuery: req.query, headers: req.headers, host: req.header('host'), surface: 'management', bodySha256,
  }, deps.view.now(), deps.sigv4);
  if (r.kind === 'sigv4_failure') throw new SigV4Refusal(r.failure);
  if (r.kind === 'none') throw new DomainError('unauthenticated', 'a user credential is required: Authorization: Bearer umt_…, X-Auth-Token, or an AWS SigV4 signature', { code: 'UNAUTHORIZED' });
  if (r.kind === 'failure') {
    const f = r.failure;
    const kind = f.status === 403 ? 'forbidden' : f.status === 400 ? 'invalid' : 'unauthenticated';
    throw new DomainError(kind, f.message, { state: f.state, code: kind === 'unauthenticated' ? 'UNAUTHORIZED' : kind === 'forbidden' ? 'FORBIDDEN' : 'PARAM_INVALID' });
  }
  const p = r.principal;
  if (p.kind !== 'user') throw new DomainError('forbidden', 'app access keys only call /api/proxy; the management API needs a user credential', { state: 'app_key_not_allowed', code: 'FORBIDDEN' });
  const user = snap.state.users.get(p.userId)!;
  const perms = new Set<string>();
  for (const roleId of userRoleClosure(snap.state, p.userId)) {
    for (const m of snap.state.roles.get(roleId)?.managementPermissions ?? []) perms.add(m);
  }
  return {
    caller: {
      userId: p.userId,
      account: user.account,
      isSuperuser: user.isSuperuser,
      admin: isAdmin(snap.state, p.userId),
      managementPermissions: [...perms],
      credential: p.via === 'bearer' ? `token:${p.tokenId}` : `ak:${p.accessKeyId}`,
    },
    body,
  };
}
