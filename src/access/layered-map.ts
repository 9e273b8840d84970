// A read-only map made of a large shared base plus a small overlay of changes, so that a new
// decision state after one event costs a copy of the overlay, not of 100,000 entries.
//
// Hand-written rather than a persistent-map library (immutable-js and the like): lookups stay
// one native Map.get on the hot path (an empty overlay is skipped by a size check), entries
// stay plain objects, and the base keeps native Map memory density.

const TOMBSTONE = Symbol('deleted');

/** Beyond this many overlay entries, the next draft folds the overlay into a new base. */
export const COMPACT_AT = 2048;

export interface WritableMap<K, V> extends ReadonlyMap<K, V> {
  set(key: K, value: V): this;
  delete(key: K): boolean;
}

export class LayeredMap<K, V> implements WritableMap<K, V> {
  private constructor(
    private readonly base: ReadonlyMap<K, V>,
    private readonly top: Map<K, V | typeof TOMBSTONE>,
  ) {}

  /**
   * A writable copy of `m` for one batch of changes: `m` itself is never modified. Values must
   * never be `undefined` (absence is how lookups fall through to the base).
   */
  static draft<K, V>(m: ReadonlyMap<K, V>): LayeredMap<K, V> {
    if (!(m instanceof LayeredMap)) return new LayeredMap(m, new Map());
    if (m.top.size >= COMPACT_AT) return new LayeredMap(new Map(m), new Map());
    return new LayeredMap(m.base, new Map(m.top));
  }

  get(key: K): V | undefined {
    if (this.top.size !== 0) {
      const v = this.top.get(key);
      if (v !== undefined) return v === TOMBSTONE ? undefined : v;
    }
    return this.base.get(key);
  }

  has(key: K): boolean {
    return this.get(key) !== undefined;
  }

  get size(): number {
    let n = this.base.size;
    for (const [k, v] of this.top) {
      const inBase = this.base.has(k);
      if (v === TOMBSTONE) n -= inBase ? 1 : 0;
      else n += inBase ? 0 : 1;
    }
    return n;
  }

  /** Only on a fresh draft, before it is published in a state. */
  set(key: K, value: V): this {
    this.top.set(key, value);
    return this;
  }

  /** Only on a fresh draft, before it is published in a state. */
  delete(key: K): boolean {
    const had = this.has(key);
    if (this.base.has(key)) this.top.set(key, TOMBSTONE);
    else this.top.delete(key);
    return had;
  }

  *entries(): MapIterator<[K, V]> {
    for (const [k, v] of this.top) if (v !== TOMBSTONE) yield [k, v];
    for (const [k, v] of this.base) if (!this.top.has(k)) yield [k, v];
  }

  *keys(): MapIterator<K> {
    for (const [k] of this.entries()) yield k;
  }

  *values(): MapIterator<V> {
    for (const [, v] of this.entries()) yield v;
  }

  [Symbol.iterator](): MapIterator<[K, V]> {
    return this.entries();
  }

  forEach(fn: (value: V, key: K, map: ReadonlyMap<K, V>) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) fn.call(thisArg, v, k, this);
  }
}

export const draftOf = <K, V>(m: ReadonlyMap<K, V>): LayeredMap<K, V> => LayeredMap.draft(m);
