// A small method + path-template router for the management surfaces
// ('/orgs/{org_id}/users'). Templates are split into segments once; a literal
// segment beats a parameter, as OpenAPI resolves them. Hand-written because the
// listener hands us raw paths and every surface needs the same three answers —
// a match, "path exists but not this method" (405 with Allow), or nothing — which
// general routers bury behind their own request objects.

export interface RouteMatch<H> {
  handler: H;
  /** Percent-decoded path parameters. */
  params: Record<string, string>;
  template: string;
}

export type RouteResult<H> = { found: RouteMatch<H> } | { allowed: string[] } | null;

interface Node<H> {
  literal: Map<string, Node<H>>;
  param: { name: string; node: Node<H> } | null;
  handlers: Map<string, { handler: H; template: string }>;
}

const newNode = <H>(): Node<H> => ({ literal: new Map(), param: null, handlers: new Map() });

function segments(path: string): string[] {
  const s = path.split('/');
  if (s[0] === '') s.shift();
  if (s.length > 0 && s[s.length - 1] === '') s.pop();
  return s;
}

export class Router<H> {
  private readonly root: Node<H> = newNode();

  add(method: string, template: string, handler: H): this {
    let node = this.root;
    for (const seg of segments(template)) {
      const m = /^\{(\w+)\}$/.exec(seg);
      if (m) {
        if (node.param && node.param.name !== m[1]) throw new Error(`route ${template}: parameter {${m[1]}} clashes with {${node.param.name}}`);
        node.param ??= { name: m[1], node: newNode() };
        node = node.param.node;
      } else {
        let next = node.literal.get(seg);
        if (!next) node.literal.set(seg, (next = newNode()));
        node = next;
      }
    }
    if (node.handlers.has(method)) throw new Error(`route ${method} ${template} is defined twice`);
    node.handlers.set(method, { handler, template });
    return this;
  }

  /** `path` is the raw path relative to the surface's mount; HEAD falls back to GET. */
  match(method: string, path: string): RouteResult<H> {
    const params: Record<string, string> = {};
    const node = this.walk(this.root, segments(path), 0, params);
    if (!node || node.handlers.size === 0) return null;
    const h = node.handlers.get(method) ?? (method === 'HEAD' ? node.handlers.get('GET') : undefined);
    if (!h) return { allowed: [...node.handlers.keys()] };
    return { found: { handler: h.handler, params, template: h.template } };
  }

  private walk(node: Node<H>, segs: string[], i: number, params: Record<string, string>): Node<H> | null {
    if (i === segs.length) return node;
    const lit = node.literal.get(segs[i]);
    if (lit) {
      const found = this.walk(lit, segs, i + 1, params);
      if (found && found.handlers.size > 0) return found;
    }
    if (node.param && segs[i] !== '') {
      let value: string;
      try {
        value = decodeURIComponent(segs[i]);
      } catch {
        return null;
      }
      const found = this.walk(node.param.node, segs, i + 1, params);
      if (found && found.handlers.size > 0) {
        params[node.param.name] = value;
        return found;
      }
    }
    return null;
  }
}
