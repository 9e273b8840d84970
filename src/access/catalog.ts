// The API catalog: from the OpenAPI documents instances register (`resources.openapi`) to the
// rows of `authz_api`. Pure: the caller reads the instances and writes the rows.
//
// Instances are foreign input, so nothing here throws on a malformed document: bad entries are
// skipped and reported, and the rest of the document still counts.

import { createHash } from 'node:crypto';

export const CATALOG_METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'trace'] as const;
export type CatalogMethod = 'GET' | 'PUT' | 'POST' | 'DELETE' | 'PATCH' | 'HEAD' | 'TRACE';

/** Column limits of `authz_api`. */
const MAX_TEMPLATE = 500;
const MAX_OPERATION_ID = 200;
const MAX_SUMMARY = 500;
/** A bound on one document's operations, so a hostile registration cannot blow up memory. */
export const MAX_OPERATIONS_PER_DOCUMENT = 10_000;

export interface CatalogApi {
  apiId: string;
  serviceId: string;
  method: CatalogMethod;
  pathTemplate: string;
  routeKey: string;
  operationId: string | null;
  summary: string;
}

export interface CatalogProblem {
  /** Index of the instance in the input. */
  instance: number;
  /** Where in the document (e.g. `paths./items/{id}.get`), or `openapi`/`servers`/`base_url`. */
  at: string;
  message: string;
}

export interface CatalogInstance {
  /** The instance's registered `base_url`. */
  baseUrl: string | null | undefined;
  /** Its `resources.openapi` (an object, or JSON text). */
  openapi: unknown;
}

/** `hex(SHA-256(service_id + "\n" + METHOD + "\n" + route_key))[0:32]`. */
export function apiIdOf(serviceId: string | number | bigint, method: string, routeKey: string): string {
  return createHash('sha256').update(`${String(serviceId)}\n${method.toUpperCase()}\n${routeKey}`).digest('hex').slice(0, 32);
}

/** Each `{param}` (also inside a segment) becomes `{}`; one trailing `/` is removed (`/` stays). */
export function routeKeyOf(template: string): string {
  let key = template.replace(/\{[^{}/]*\}/g, '{}');
  if (key.length > 1 && key.endsWith('/')) key = key.slice(0, -1);
  return key;
}

/**
 * Why a path template is unusable, or null when it is fine: it must start with `/`, have no
 * empty segment (but may end with one `/`), no `.`/`..` segment, balanced `{…}` with no nesting,
 * and fit the column.
 */
export function templateProblem(template: string): string | null {
  if (typeof template !== 'string' || !template.startsWith('/')) return 'the path must start with /';
  if (template.length > MAX_TEMPLATE) return `the path is longer than ${MAX_TEMPLATE} characters`;
  if (template.includes('//')) return 'the path has an empty segment (//)';
  let depth = 0;
  for (const ch of template) {
    if (ch === '{') depth++;
    else if (ch === '}') depth--;
    if (depth < 0 || depth > 1) return 'the path has unbalanced or nested braces';
    if (depth === 1 && ch === '/') return 'a path parameter contains /';
  }
  if (depth !== 0) return 'the path has unbalanced braces';
  for (const seg of template.split('/')) if (seg === '.' || seg === '..') return 'the path has a . or .. segment';
  return null;
}

function pathOfUrl(url: string): string | null {
  try {
    // Relative server URLs (`/api`) are resolved against a dummy origin: only the path matters.
    const p = new URL(url, 'http://localhost').pathname;
    return p;
  } catch {
    return null;
  }
}

function withoutTrailingSlash(p: string): string {
  return p.length > 1 && p.endsWith('/') ? p.replace(/\/+$/, '') || '/' : p;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The APIs one instance's document declares, relative to its `base_url`: with `servers[0].url`
 * of path P and a base_url of path B, the template is P + key with the prefix B removed (so a
 * service mounted at `/api` whose document says `/api/user` has the template `/user`); without
 * servers the keys are already relative.
 */
export function instanceApis(serviceId: string | number | bigint, inst: CatalogInstance, index: number, problems: CatalogProblem[]): CatalogApi[] {
  const report = (at: string, message: string) => problems.push({ instance: index, at, message });
  let doc = inst.openapi;
  if (typeof doc === 'string') {
    try {
      doc = JSON.parse(doc);
    } catch {
      report('openapi', 'the document is not valid JSON');
      return [];
    }
  }
  if (!isRecord(doc)) {
    report('openapi', 'the document is not an object');
    return [];
  }
  const paths = doc.paths;
  if (!isRecord(paths)) {
    report('paths', 'the document has no paths object');
    return [];
  }

  // null: no usable servers entry, so the keys are already relative to base_url.
  let prefix: string | null = null;
  const servers = doc.servers;
  if (servers !== undefined) {
    const first = Array.isArray(servers) ? servers[0] : undefined;
    if (Array.isArray(servers) && servers.length === 0) {
      // No server: the keys are relative already.
    } else if (!isRecord(first) || typeof first.url !== 'string') {
      report('servers', 'servers[0].url is not a string; the keys are taken as relative');
    } else {
      const p = pathOfUrl(first.url);
      if (p === null) report('servers', 'servers[0].url is not a URL; the keys are taken as relative');
      else prefix = withoutTrailingSlash(p) === '/' ? '' : withoutTrailingSlash(p);
    }
  }
  let base = '';
  if (inst.baseUrl !== undefined && inst.baseUrl !== null) {
    const b = typeof inst.baseUrl === 'string' ? pathOfUrl(inst.baseUrl) : null;
    if (b === null) report('base_url', 'base_url is not a URL; nothing is stripped');
    else base = withoutTrailingSlash(b) === '/' ? '' : withoutTrailingSlash(b);
  }

  const out: CatalogApi[] = [];
  for (const key of Object.keys(paths)) {
    const item = paths[key];
    const where = `paths.${key.slice(0, 200)}`;
    if (!isRecord(item)) {
      report(where, 'the path item is not an object');
      continue;
    }
    if (!key.startsWith('/')) {
      report(where, 'the path must start with /');
      continue;
    }
    const full = (prefix ?? '') + key;
    let template: string;
    if (prefix === null || base === '') template = full;
    else if (full === base) template = '/';
    else if (full.startsWith(base + '/')) template = full.slice(base.length);
    else {
      report(where, `the path is outside base_url's path ${base}`);
      continue;
    }
    const problem = templateProblem(template);
    if (problem) {
      report(where, problem);
      continue;
    }
    const routeKey = routeKeyOf(template);
    for (const m of CATALOG_METHODS) {
      if (!Object.hasOwn(item, m)) continue;
      const op = item[m];
      if (!isRecord(op)) {
        report(`${where}.${m}`, 'the operation is not an object');
        continue;
      }
      if (out.length >= MAX_OPERATIONS_PER_DOCUMENT) {
        report('paths', `more than ${MAX_OPERATIONS_PER_DOCUMENT} operations; the rest are ignored`);
        return out;
      }
      const method = m.toUpperCase() as CatalogMethod;
      const operationId = typeof op.operationId === 'string' && op.operationId !== '' ? op.operationId.slice(0, MAX_OPERATION_ID) : null;
      const summary = typeof op.summary === 'string' ? op.summary.slice(0, MAX_SUMMARY) : '';
      out.push({ apiId: apiIdOf(serviceId, method, routeKey), serviceId: String(serviceId), method, pathTemplate: template, routeKey, operationId, summary });
    }
  }
  return out;
}

export interface CatalogResult {
  /** One entry per (method, route key), in first-seen order across the instances. */
  apis: CatalogApi[];
  problems: CatalogProblem[];
}

/**
 * Merges the documents of a service's live instances. When instances disagree on an API's
 * template spelling, summary or operationId, the first instance (in input order) that declares
 * it wins, so the caller should pass instances in a stable order (e.g. by instance id).
 */
export function buildCatalog(serviceId: string | number | bigint, instances: readonly CatalogInstance[]): CatalogResult {
  const problems: CatalogProblem[] = [];
  const seen = new Map<string, CatalogApi>();
  instances.forEach((inst, i) => {
    if (!isRecord(inst)) {
      problems.push({ instance: i, at: 'instance', message: 'the instance is not an object' });
      return;
    }
    for (const api of instanceApis(serviceId, inst, i, problems)) if (!seen.has(api.apiId)) seen.set(api.apiId, api);
  });
  return { apis: [...seen.values()], problems };
}

export interface StoredApi {
  apiId: string;
  source: 'openapi' | 'manual';
  deprecatedAt: Date | string | number | null;
}

/**
 * Which stored rows change state after a catalog build: `deprecate` are openapi APIs absent from
 * every live instance and not yet deprecated; `revive` are deprecated ones that are back.
 * Manual APIs are never deprecated by the catalog. Nothing is ever deleted.
 */
export function deprecationChanges(stored: readonly StoredApi[], live: readonly CatalogApi[]): { deprecate: string[]; revive: string[] } {
  const liveIds = new Set(live.map((a) => a.apiId));
  const deprecate: string[] = [];
  const revive: string[] = [];
  for (const row of stored) {
    const isDeprecated = row.deprecatedAt !== null && row.deprecatedAt !== undefined;
    if (liveIds.has(row.apiId)) {
      if (isDeprecated) revive.push(row.apiId);
    } else if (row.source === 'openapi' && !isDeprecated) {
      deprecate.push(row.apiId);
    }
  }
  return { deprecate, revive };
}
