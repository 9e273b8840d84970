// POST /api/registry body: validation, aliases and the address / netloc rules of
// spec §1.4 steps 1, 5 and 6. Pure functions; the database work is in store.ts.
import { isIP } from 'node:net';
import { lookup } from 'node:dns/promises';
import { PyNumber, dumps, etag, get, isObject, parse, PyJsonError, type PyValue } from '../pyjson/index.ts';
import { invalid } from '../core/errors.ts';
import { hasControlChars } from '../core/text.ts';

export interface Registration {
  name: string;
  title: string | null;
  description: string;
  address: string;
  host: string; // IP (resolved when the address names a host)
  port: number | null;
  baseUrl: string;
  opsApi: string;
  instanceId: string;
  cwd: string | null;
  version: string;
  asynchronous: boolean;
  production: boolean;
  language: string;
  languageVersion: string | null;
  utilmetaVersion: string;
  backend: string;
  backendVersion: string | null;
  /** The resources document exactly as received (lexemes and key order kept), or null. */
  resources: PyValue | null;
  /** Python json.dumps of `resources` (what is stored, hashed and forwarded). */
  resourcesJson: string | null;
  resourcesEtag: string | null;
}

// Column sizes from schema.sql; a longer value would fail the INSERT, so it is a 400 here.
const LIMITS = { name: 60, address: 255, version: 32, language: 40, language_version: 40, utilmeta_version: 40, backend: 40, backend_version: 40 };

const bad = (msg: string) => invalid(msg);

// Every string field refuses C0 controls and DEL, except that a free-text
// description may span lines (tab, LF, CR): it is stored, never put in a header.
const FREE_TEXT_CTL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;

function field(body: Map<string, PyValue>, names: string[]): PyValue | undefined {
  for (const n of names) {
    const v = body.get(n);
    if (v !== undefined) return v;
  }
  return undefined;
}

function str(
  body: Map<string, PyValue>,
  name: string,
  opts: { aliases?: string[]; required?: boolean; nullable?: boolean; def?: string | null; freeText?: boolean } = {},
): string | null {
  const v = field(body, [name, ...(opts.aliases ?? [])]);
  if (v === undefined || v === null) {
    if (opts.required) throw bad(`registration field '${name}' is required`);
    return opts.def ?? null;
  }
  if (typeof v !== 'string') throw bad(`registration field '${name}' must be a string`);
  if (opts.freeText ? FREE_TEXT_CTL.test(v) : hasControlChars(v)) throw bad(`registration field '${name}' contains control characters`);
  if (opts.required && v.trim() === '') throw bad(`registration field '${name}' must not be empty`);
  const max = (LIMITS as Record<string, number>)[name];
  if (max && v.length > max) throw bad(`registration field '${name}' is longer than ${max} characters`);
  return v;
}

function bool(body: Map<string, PyValue>, name: string): boolean {
  const v = body.get(name);
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw bad(`registration field '${name}' must be a boolean`);
  return v;
}

/** Parses `host:port` the way the original did (`urlparse("http://" + address)`). */
export function parseAddress(address: string): { hostname: string; port: number | null } {
  let u: URL;
  try {
    u = new URL(`http://${address}`);
  } catch {
    throw bad(`registration field 'address' is not a valid host:port: '${address}'`);
  }
  if (u.pathname !== '/' || u.search || u.hash || u.username || /[/?#@]/.test(address)) {
    throw bad(`registration field 'address' must be host:port, got '${address}'`);
  }
  const hostname = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  // URL drops a default port (80); the address text still carries it.
  const m = /:(\d+)$/.exec(address);
  return { hostname, port: m ? Number(m[1]) : null };
}

/** The raw netloc of an absolute URL, as Python's urlsplit gives it ('' for a bare path). */
function netloc(url: string): string {
  const m = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(url);
  return m ? m[1] : '';
}

/**
 * Why `url` cannot be an instance URL whatever its netloc, or null: whitespace,
 * control characters and backslashes are read differently by different URL
 * parsers, and a scheme-relative `//host/x` would be joined onto the address
 * as a path that names another host.
 */
export function rawUrlProblem(url: string): string | null {
  if (/[\s\u0000-\u001f\u007f]/.test(url)) return 'contains whitespace or control characters';
  if (url.includes('\\')) return 'contains a backslash';
  if (url.startsWith('//')) return 'is scheme-relative (//host/…): give http://<address>/… or a path';
  return null;
}

/**
 * The path, query and fragment of an absolute URL as written, compared with
 * what the WHATWG URL parser makes of them: a difference means dot-segments
 * (plain or percent-encoded) that a client would resolve, or characters that
 * need percent-encoding. Instance URLs are joined with proxied paths byte for
 * byte, so they must already be canonical.
 */
export function urlRoundTrips(url: string): boolean {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return false;
  }
  const m = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/?#]*(.*)$/.exec(url);
  if (!m) return false;
  const rest = m[1];
  const parsed = u.pathname + u.search + u.hash;
  // An empty path is '/' once parsed.
  return rest === parsed || (rest === '' && parsed === '/') || (rest.startsWith('?') && parsed === `/${rest}`);
}

/**
 * Steps 5/6: a URL without a netloc is joined onto http://<address>; an absolute
 * one must name exactly the instance address. Either way the result must be a
 * canonical http(s) URL.
 */
export function normalizeInstanceUrl(fieldName: string, url: string, address: string): string {
  const raw = rawUrlProblem(url);
  if (raw) throw bad(`registration field '${fieldName}' ${raw}`);
  const loc = netloc(url);
  let full: string;
  if (!loc) {
    if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(url)) throw bad(`registration field '${fieldName}' is not a valid URL: '${url}'`);
    const path = url.startsWith('/') ? url : `/${url}`;
    full = `http://${address}${path === '/' ? '' : path}`.replace(/\/+$/, '');
  } else {
    if (!/^https?:\/\//i.test(url)) throw bad(`registration field '${fieldName}' must be an http(s) URL, got '${url}'`);
    if (loc !== address) {
      throw bad(`registration field '${fieldName}' netloc '${loc}' is inconsistent with the instance address '${address}'`);
    }
    full = url;
  }
  if (!urlRoundTrips(full)) {
    throw bad(`registration field '${fieldName}' is not a canonical URL (dot-segments, or characters that need percent-encoding): '${url}'`);
  }
  return full;
}

/** Where in `v` a string or key holds U+0000 (PostgreSQL's jsonb cannot store it), or null. */
export function nulPath(v: PyValue, at: string): string | null {
  if (typeof v === 'string') return v.includes('\u0000') ? at : null;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const p = nulPath(v[i], `${at}[${i}]`);
      if (p) return p;
    }
    return null;
  }
  if (isObject(v)) {
    for (const [k, x] of v) {
      if (k.includes('\u0000')) return `${at} (a key)`;
      const p = nulPath(x, `${at}.${k}`);
      if (p) return p;
    }
  }
  return null;
}

export async function parseRegistration(text: string): Promise<Registration> {
  let doc: PyValue;
  try {
    doc = parse(text);
  } catch (err) {
    if (err instanceof PyJsonError) throw bad(`registration body is not valid JSON: ${err.message}`);
    throw err;
  }
  if (!isObject(doc)) throw bad('registration body must be a JSON object');
  const name = str(doc, 'name', { aliases: ['service_name', 'service_id'], required: true })!;
  const address = str(doc, 'address', { required: true })!;
  const { hostname, port } = parseAddress(address);
  let host = hostname;
  if (isIP(hostname) === 0) {
    // The host column is inet and callers are matched by IP: resolve a host name once, here.
    try {
      host = (await lookup(hostname)).address;
    } catch {
      throw bad(`registration field 'address' names host '${hostname}', which does not resolve to an IP address`);
    }
  }
  const rawId = field(doc, ['instance_id', 'resource_id']);
  let instanceId: string;
  if (rawId instanceof PyNumber && !rawId.isFloat) instanceId = rawId.text;
  else if (typeof rawId === 'string') instanceId = rawId.trim();
  else if (rawId === undefined || rawId === null) throw bad("registration field 'instance_id' is required");
  else throw bad("registration field 'instance_id' must be an integer or a string of digits");
  // schema.md §8.7: validate before querying (the id column is bigint).
  if (!/^\d{1,18}$/.test(instanceId)) throw bad(`registration field 'instance_id' must be the integer id of the instance resource, got '${instanceId}'`);

  const resources = doc.get('resources') ?? null;
  if (resources !== null && !isObject(resources)) throw bad("registration field 'resources' must be an object or null");
  const nul = resources === null ? null : nulPath(resources, 'resources');
  if (nul) throw bad(`registration field '${nul}' contains U+0000`);
  const resourcesJson = resources === null ? null : dumps(resources);
  let cwd = str(doc, 'cwd');
  // cwd is varchar(100) (schema.md §8.3) while services send full paths: keep the tail.
  if (cwd !== null && cwd.length > 100) cwd = `…${cwd.slice(-99)}`;
  return {
    name,
    title: str(doc, 'title'),
    description: str(doc, 'description', { def: '', freeText: true }) ?? '',
    address,
    host,
    port,
    baseUrl: normalizeInstanceUrl('base_url', str(doc, 'base_url', { required: true })!, address),
    opsApi: normalizeInstanceUrl('ops_api', str(doc, 'ops_api', { required: true })!, address),
    instanceId,
    cwd,
    version: str(doc, 'version', { required: true })!,
    asynchronous: bool(doc, 'asynchronous'),
    production: bool(doc, 'production'),
    language: str(doc, 'language', { required: true })!,
    languageVersion: str(doc, 'language_version'),
    utilmetaVersion: str(doc, 'utilmeta_version', { required: true })!,
    backend: str(doc, 'backend', { def: 'utilmeta' }) ?? 'utilmeta',
    backendVersion: str(doc, 'backend_version'),
    resources,
    resourcesJson,
    resourcesEtag: resources === null ? null : etag(resources),
  };
}

/** `resources.metadata` when the service sent it (used for add_node, spec §3.3). */
export function resourcesMetadata(reg: Registration): PyValue | undefined {
  return reg.resources === null ? undefined : get(reg.resources, 'metadata');
}
