// A per-service segment trie over the APIs' route keys, built once per snapshot.
//
// Matching rules: literal segments equal the percent-decoded request segment exactly; `{}`
// matches any one non-empty segment; a segment mixing text and parameters (`{}.json`) matches
// by its literal parts; at the first segment where candidates differ, a literal beats a mixed
// segment, which beats a bare parameter (OpenAPI's "concrete before templated"). The search
// backtracks, so a literal branch that dead-ends deeper still lets a parameter branch match.
// Every trie node sits at a fixed depth, so one match visits each node at most once.
//
// Hand-written rather than a router library: the rules above (byte-exact literals on decoded
// segments, method-aware backtracking, HEAD→GET fallback) are the contract, and common routers
// each differ from it in at least one of them.

import { canonicalPath, type NonCanonicalReason } from './canonical-path.ts';

export interface RoutableApi {
  readonly apiId: string;
  readonly method: string;
  readonly routeKey: string;
}

interface Pattern<A> {
  readonly source: string;
  /** The literal pieces around the `{}`s: `{}.json` → ['', '.json']. */
  readonly pieces: string[];
  readonly node: TrieNode<A>;
}

interface TrieNode<A> {
  literal: Map<string, TrieNode<A>> | null;
  patterns: Pattern<A>[] | null;
  param: TrieNode<A> | null;
  /** METHOD → API ending here. */
  apis: Map<string, A> | null;
}

export type RouteMatch<A> =
  | { ok: true; api: A | null }
  | { ok: false; reason: NonCanonicalReason; segment: number };

const newNode = <A>(): TrieNode<A> => ({ literal: null, patterns: null, param: null, apis: null });

/** Splits a route key (`/items/{}`; `/` for the root) into its segments. */
export function routeKeySegments(routeKey: string): string[] {
  if (routeKey === '/' || routeKey === '') return [];
  const body = routeKey.startsWith('/') ? routeKey.slice(1) : routeKey;
  const parts = body.split('/');
  if (parts[parts.length - 1] === '') parts.pop();
  return parts;
}

/**
 * Does `seg` match the pieces, each `{}` between them taking at least one character? Placing
 * each middle piece at its leftmost possible position is optimal (it leaves the most room for
 * the rest), so this is linear-ish with no backtracking: a regex here could be driven into
 * polynomial blow-up by a long segment.
 */
function patternMatches(pieces: readonly string[], seg: string): boolean {
  const first = pieces[0];
  const last = pieces[pieces.length - 1];
  if (!seg.startsWith(first)) return false;
  let pos = first.length;
  for (let k = 1; k < pieces.length - 1; k++) {
    const at = seg.indexOf(pieces[k], pos + 1);
    if (at < 0) return false;
    pos = at + pieces[k].length;
  }
  const suffixAt = seg.length - last.length;
  return suffixAt >= pos + 1 && seg.endsWith(last);
}

export class ApiRouter<A extends RoutableApi> {
  private readonly root: TrieNode<A> = newNode<A>();
  readonly size: number;

  constructor(apis: Iterable<A>) {
    let n = 0;
    for (const api of apis) {
      this.insert(api);
      n++;
    }
    this.size = n;
  }

  private insert(api: A): void {
    let node = this.root;
    for (const seg of routeKeySegments(api.routeKey)) {
      if (seg === '{}') {
        node = node.param ??= newNode<A>();
      } else if (seg.includes('{}')) {
        node.patterns ??= [];
        let p = node.patterns.find((x) => x.source === seg);
        if (!p) {
          p = { source: seg, pieces: seg.split('{}'), node: newNode<A>() };
          node.patterns.push(p);
          // More literal text first: the more concrete pattern wins.
          node.patterns.sort((a, b) => b.source.replaceAll('{}', '').length - a.source.replaceAll('{}', '').length || (a.source < b.source ? -1 : 1));
        }
        node = p.node;
      } else {
        node.literal ??= new Map();
        let next = node.literal.get(seg);
        if (!next) node.literal.set(seg, (next = newNode<A>()));
        node = next;
      }
    }
    node.apis ??= new Map();
    // The first API registered for (method, route key) stays: route keys are unique per method
    // in the catalog, so a duplicate is a caller bug and must not silently replace.
    const method = api.method.toUpperCase();
    if (!node.apis.has(method)) node.apis.set(method, api);
  }

  /** The API for decoded segments (see canonicalPath), or null. HEAD falls back to GET. */
  matchSegments(method: string, segments: readonly string[]): A | null {
    const m = method.toUpperCase();
    const hit = this.walk(this.root, segments, 0, m);
    if (hit !== null || m !== 'HEAD') return hit;
    return this.walk(this.root, segments, 0, 'GET');
  }

  /** Canonical check then match. Never throws. */
  match(method: string, rawPath: string): RouteMatch<A> {
    const c = canonicalPath(rawPath);
    if (!c.ok) return c;
    return { ok: true, api: this.matchSegments(method, c.segments) };
  }

  private walk(node: TrieNode<A>, segs: readonly string[], i: number, method: string): A | null {
    if (i === segs.length) return node.apis?.get(method) ?? null;
    const seg = segs[i];
    if (node.literal) {
      const next = node.literal.get(seg);
      if (next) {
        const hit = this.walk(next, segs, i + 1, method);
        if (hit !== null) return hit;
      }
    }
    if (node.patterns) {
      for (const p of node.patterns) {
        if (patternMatches(p.pieces, seg)) {
          const hit = this.walk(p.node, segs, i + 1, method);
          if (hit !== null) return hit;
        }
      }
    }
    if (node.param && seg !== '') return this.walk(node.param, segs, i + 1, method);
    return null;
  }
}
