/**
 * Compaction's per-cluster state in typed arrays sized by the source file's clusters, never a Map
 * or an object per cluster (a 1 TiB image of 64 KiB clusters has 16 M of them):
 *  - ClusterSet: the source's data clusters, a bit each;
 *  - ClusterPlaces: where each went, an output cluster number each (4 bytes; 8 past 2^32 clusters),
 *    and where a data cluster compressed on the way lies in the stream (12 bytes, compressing only);
 *  - CompressedPlaces: where each compressed source cluster went, by its index among them.
 * Host offsets the L2 tables name past the end of the file (they read as zero) are rare and
 * untrusted: they are kept in a Map beside, so no array is sized by an L2 entry.
 */
import { Qcow2Error } from '../../errors';

/** Set of cluster-aligned source host offsets below `fileSize`, a bit each; others in a Set. */
export class ClusterSet implements Iterable<number> {
  private readonly bits: Uint8Array;
  private readonly beyond = new Set<number>();
  private count = 0;
  constructor(fileSize: number, private readonly cs: number) {
    this.bits = new Uint8Array(Math.ceil(Math.ceil(fileSize / cs) / 8));
  }
  get size(): number { return this.count + this.beyond.size; }
  add(host: number): this {
    const c = host / this.cs;
    if (!Number.isInteger(c) || c >= this.bits.length * 8) { this.beyond.add(host); return this; }
    const m = 1 << (c & 7);
    if (!(this.bits[c >>> 3] & m)) { this.bits[c >>> 3] |= m; this.count++; }
    return this;
  }
  has(host: number): boolean {
    const c = host / this.cs;
    if (!Number.isInteger(c) || c >= this.bits.length * 8) return this.beyond.has(host);
    return (this.bits[c >>> 3] & (1 << (c & 7))) !== 0;
  }
  /** Ascending host offsets. */
  *[Symbol.iterator](): Iterator<number> {
    const b = this.bits, cs = this.cs;
    for (let i = 0; i < b.length; i++) {
      if (!b[i]) continue;
      for (let k = 0; k < 8; k++) if (b[i] & (1 << k)) yield (i * 8 + k) * cs;
    }
    yield* [...this.beyond].sort((x, y) => x - y);
  }
  /** Ascending host offsets, in one typed array. */
  sorted(): Float64Array {
    const out = new Float64Array(this.size);
    let n = 0;
    for (const h of this) out[n++] = h;
    return out;
  }
}

/** A data cluster that reads as zero (as copy.ts's ZERO). */
const ZERO = -1;
const U32_ZERO = 0xffffffff;

/**
 * Source data cluster (host offset, or a re-clustering job id) → output host offset or ZERO, and
 * for a data cluster compressed on the way its place in the stream. Output hosts are cluster
 * aligned and never 0 (the header), so 0 marks "not placed".
 */
export class ClusterPlaces {
  private readonly at: Uint32Array | Float64Array;
  private readonly beyond = new Map<number, number>();
  private streamAt: Float64Array | null = null;
  private streamLen: Uint32Array | null = null;
  private readonly streamBeyond = new Map<number, { host: number; len: number }>();
  /** `clusters`: source clusters covered by the arrays (the file's); output clusters `maxOut` at most. */
  constructor(private readonly clusters: number, private readonly cs: number, maxOut = clusters + 1) {
    this.at = maxOut < U32_ZERO - 1 ? new Uint32Array(clusters) : new Float64Array(clusters);
  }
  private index(host: number): number {
    const c = host / this.cs;
    return Number.isInteger(c) && c < this.clusters ? c : -1;
  }
  set(host: number, out: number): this {
    const i = this.index(host);
    if (i < 0) { this.beyond.set(host, out); return this; }
    const big = this.at instanceof Float64Array;
    this.at[i] = out === ZERO ? (big ? -1 : U32_ZERO) : out / this.cs;
    return this;
  }
  get(host: number): number | undefined {
    const i = this.index(host);
    if (i < 0) return this.beyond.get(host);
    const v = this.at[i];
    if (v === 0) return undefined;
    return v === U32_ZERO || v === -1 ? ZERO : v * this.cs;
  }
  /** Data cluster `host` went to the stream, `len` bytes at `streamHost`. */
  setStream(host: number, streamHost: number, len: number): void {
    const i = this.index(host);
    if (i < 0) { this.streamBeyond.set(host, { host: streamHost, len }); return; }
    this.streamAt ??= new Float64Array(this.clusters);
    this.streamLen ??= new Uint32Array(this.clusters);
    this.streamAt[i] = streamHost;
    this.streamLen[i] = len;
  }
  /** Where data cluster `host` lies in the stream, when it was compressed on the way. */
  stream(host: number): { host: number; len: number } | undefined {
    const i = this.index(host);
    if (i < 0) return this.streamBeyond.get(host);
    if (!this.streamLen?.[i]) return undefined;
    return { host: this.streamAt![i], len: this.streamLen[i] };
  }
}

/** Where a compressed source cluster (or a data cluster that compressed) went. */
export type Dest = { kind: 'data'; host: number } | { kind: 'compressed'; host: number; len: number } | { kind: 'zero' };

const KIND_NONE = 0, KIND_DATA = 1, KIND_COMPRESSED = 2, KIND_ZERO = 3;

/** Compressed source offset → its Dest, over the (known) offsets of the source's compressed clusters. */
export class CompressedPlaces {
  private readonly keys: Float64Array;
  private readonly kind: Uint8Array;
  private readonly host: Float64Array;
  private readonly len: Uint32Array;
  constructor(offsets: Iterable<number>) {
    this.keys = Float64Array.from(offsets).sort();
    const n = this.keys.length;
    this.kind = new Uint8Array(n);
    this.host = new Float64Array(n);
    this.len = new Uint32Array(n);
  }
  private find(off: number): number {
    const k = this.keys;
    let lo = 0, hi = k.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (k[mid] === off) return mid;
      if (k[mid] < off) lo = mid + 1; else hi = mid - 1;
    }
    return -1;
  }
  set(off: number, d: Dest): this {
    const i = this.find(off);
    if (i < 0) throw new Qcow2Error('compaction', 'compressed cluster', off, 'internal: not among the source\'s compressed clusters', 'io');
    this.kind[i] = d.kind === 'data' ? KIND_DATA : d.kind === 'compressed' ? KIND_COMPRESSED : KIND_ZERO;
    if (d.kind !== 'zero') this.host[i] = d.host;
    if (d.kind === 'compressed') this.len[i] = d.len;
    return this;
  }
  get(off: number): Dest | undefined {
    const i = this.find(off);
    if (i < 0) return undefined;
    switch (this.kind[i]) {
      case KIND_DATA: return { kind: 'data', host: this.host[i] };
      case KIND_COMPRESSED: return { kind: 'compressed', host: this.host[i], len: this.len[i] };
      case KIND_ZERO: return { kind: 'zero' };
      case KIND_NONE:
      default: return undefined;
    }
  }
}
