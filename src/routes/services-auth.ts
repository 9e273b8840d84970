// The Services Authorization API under /api/v1 (per-service authorizations, the
// enable switches, the user permission queries, the authorization list) and its
// extensions (services, APIs, settings, audit events), as a route table for the
// /api/v1 mount. The rules live in src/access/services-auth.ts; this file only
// authenticates, reads the body and query, and shapes the answer.
import { ServicesAuth } from '../access/services-auth.ts';
import type { SurfaceContext } from './context.ts';
import { v1Caller, type V1Call, type V1Route } from './v1.ts';

export function servicesAuthRoutes(ctx: SurfaceContext): V1Route[] {
  const domain = new ServicesAuth({ store: ctx.access.store, view: ctx.access.view });

  const authed = (call: V1Call, withBody: boolean) => v1Caller(ctx, call, withBody);
  const query = (call: V1Call): Record<string, string> => Object.fromEntries(new URLSearchParams(call.req.query));
  const params = (call: V1Call) => new URLSearchParams(call.req.query);

  return [
    { method: 'GET', path: '/services', handle: async (call) => {
      const { caller } = await authed(call, false);
      return { data: await domain.services(caller, query(call)) };
    } },
    { method: 'GET', path: '/services/auth', handle: async (call) => {
      const { caller } = await authed(call, false);
      return { data: await domain.list(caller, params(call)) };
    } },
    { method: 'PUT', path: '/services/auth/{authId}', handle: async (call) => {
      const { caller, body } = await authed(call, true);
      return { data: await domain.replace(caller, call.params.authId!, body) };
    } },
    { method: 'DELETE', path: '/services/auth/{authId}', handle: async (call) => {
      const { caller } = await authed(call, false);
      return { data: await domain.delete(caller, call.params.authId!) };
    } },
    { method: 'POST', path: '/services/{id}/auth', handle: async (call) => {
      const { caller, body } = await authed(call, true);
      return { data: await domain.add(caller, call.params.id!, body) };
    } },
    { method: 'PATCH', path: '/services/{id}/auth/enabled', handle: async (call) => {
      const { caller } = await authed(call, false);
      const r = await domain.setEnabled(caller, call.params.id!, query(call));
      return r.warning ? { data: r.data, ext: { warning: r.warning } } : { data: r.data };
    } },
    { method: 'PATCH', path: '/services/{id}/apis/auth/enabled', handle: async (call) => {
      const { caller } = await authed(call, false);
      return { data: await domain.setApisEnabled(caller, call.params.id!, query(call)) };
    } },
    { method: 'PATCH', path: '/services/{id}/auth/settings', handle: async (call) => {
      const { caller, body } = await authed(call, true);
      return { data: await domain.setSettings(caller, call.params.id!, body) };
    } },
    { method: 'GET', path: '/services/{id}/auth/status', handle: async (call) => {
      const { caller } = await authed(call, false);
      return { data: await domain.status(caller, call.params.id!) };
    } },
    { method: 'GET', path: '/services/{id}/user/auth/current', handle: async (call) => {
      const { caller } = await authed(call, false);
      return { data: await domain.userAuth(caller, call.params.id!, null, query(call)) };
    } },
    { method: 'GET', path: '/services/{id}/user/{userId}/auth', handle: async (call) => {
      const { caller } = await authed(call, false);
      return { data: await domain.userAuth(caller, call.params.id!, call.params.userId!, query(call)) };
    } },
    { method: 'GET', path: '/services/{id}/user/{userId}/auth/{authPermission}/check', handle: async (call) => {
      const { caller } = await authed(call, false);
      return { data: await domain.check(caller, call.params.id!, call.params.userId!, call.params.authPermission!) };
    } },
    { method: 'GET', path: '/services/{id}/apis', handle: async (call) => {
      const { caller } = await authed(call, false);
      return { data: await domain.apis(caller, call.params.id!, query(call)) };
    } },
    { method: 'POST', path: '/services/{id}/apis', handle: async (call) => {
      const { caller, body } = await authed(call, true);
      return { data: await domain.addApi(caller, call.params.id!, body) };
    } },
    { method: 'PATCH', path: '/services/{id}/apis/{apiId}', handle: async (call) => {
      const { caller, body } = await authed(call, true);
      return { data: await domain.updateApi(caller, call.params.id!, call.params.apiId!, body) };
    } },
    { method: 'GET', path: '/audit-events', handle: async (call) => {
      const { caller } = await authed(call, false);
      return { data: await domain.auditEvents(caller, params(call)) };
    } },
  ];
}
