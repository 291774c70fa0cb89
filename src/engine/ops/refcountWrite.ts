/**
 * Cluster allocation and refcount updates for the write paths (snapshots, compaction, repair).
 * All refcounts live in memory while an operation runs; `flush()` writes them in the crash-safe
 * order: refcount blocks first (new blocks before the table entries that point at them), then the
 * refcount table (a grown table goes to new clusters and only the header switch makes it live),
 * and the old table is freed last. A crash at any point leaves at most leaked clusters.
 *
 * Counts are numbers; 64-bit refcounts of 2^53 or more are kept exactly beside them (`exact`), so
 * rewriting a block never changes a refcount nobody touched, and arithmetic on them is exact.
 */
import { Qcow2Error } from '../errors';
import { ImageFile } from '../io/reader';
import { headerPath } from '../qcow2/header';
import * as L from '../qcow2/layout';
import { formatPath, step } from '../path';
import { type ExactRefcounts, maxRefcount, readAllRefcounts, readBlocksPadded, REFCOUNT_MAX_64, RefcountGeometry, refcountGeometry, setRefcountAt } from '../qcow2/refcount';
import { beforeWrite } from './writable';

/** One write through the crash hook (tests can stop the process after any write). */
export async function writeAt(file: ImageFile, hostOffset: number, data: Uint8Array, structure: string): Promise<void> {
  beforeWrite();
  await file.write(hostOffset, data, structure);
}

export interface RefcountWriterInit {
  file: ImageFile;
  clusterBits: number;
  refcountOrder: number;
  tableOffset: number;
  tableClusters: number;
  table: Float64Array;
}

export class RefcountWriter {
  readonly clusterSize: number;
  readonly g: RefcountGeometry;
  private counts: Float64Array;
  /** 64-bit refcounts of 2^53 or more, exact (`counts` holds them rounded). */
  private exact: ExactRefcounts;
  /** Clusters whose refcount is tracked: [0, end). Allocation past it extends the file. */
  private end: number;
  private dirtyBlocks = new Set<number>();
  /** The block last marked dirty (runs of adds hit the same block; saves a Set lookup each). */
  private lastDirty = -1;
  private blocks = new Map<number, Buffer>();
  private dirtyTableEntries = new Set<number>();
  /** Clusters freed during this operation: never reused before the operation ends (crash safety). */
  private freedNow = new Set<number>();
  private hint = 1;
  private oldTable: { offset: number; clusters: number } | null = null;
  table: Float64Array;
  tableOffset: number;
  tableClusters: number;
  readonly max: number;

  private constructor(private init: RefcountWriterInit, counts: Float64Array, exact: ExactRefcounts) {
    this.clusterSize = 2 ** init.clusterBits;
    this.g = refcountGeometry(init.clusterBits, init.refcountOrder);
    this.counts = counts;
    this.exact = exact;
    this.end = counts.length;
    this.table = Float64Array.from(init.table);
    this.tableOffset = init.tableOffset;
    this.tableClusters = init.tableClusters;
    this.max = maxRefcount(init.refcountOrder);
  }

  get file(): ImageFile {
    return this.init.file;
  }

  static async load(init: RefcountWriterInit): Promise<RefcountWriter> {
    const cs = 2 ** init.clusterBits;
    const g = refcountGeometry(init.clusterBits, init.refcountOrder);
    const nb = Math.ceil(init.file.size / cs);
    const exact: ExactRefcounts = new Map();
    const counts = await readAllRefcounts(init.file, init.table, g, nb, (i, off, reason) => {
      throw new Qcow2Error(init.file.path, formatPath([step('refcount table', i), step('refcount block')]), off, reason);
    }, exact);
    const w = new RefcountWriter(init, counts, exact);
    // the blocks' own bytes, so entries past the end of the file are rewritten unchanged
    const offs: number[] = [];
    for (let i = 0; i < w.table.length; i++) if (w.table[i] !== 0) offs.push(w.table[i]);
    const got = await readBlocksPadded(init.file, offs, cs);
    for (let i = 0; i < w.table.length; i++) if (w.table[i] !== 0) w.blocks.set(i, Buffer.from(got.get(w.table[i])!));
    return w;
  }

  /** The file size needed to hold every cluster with a non-zero refcount. */
  get endOffset(): number {
    let e = this.end;
    while (e > 0 && this.counts[e - 1] === 0) e--;
    return e * this.clusterSize;
  }

  /** One refcount; from 2^53 on (64-bit refcounts) rounded: `exactAt` has it exactly. */
  get(clusterIndex: number): number {
    return clusterIndex < this.end ? this.counts[clusterIndex] : 0;
  }

  /** One refcount, exact also beyond 2^53. */
  exactAt(clusterIndex: number): number | bigint {
    return this.exact.get(clusterIndex) ?? this.get(clusterIndex);
  }

  /** Sets one cluster's refcount to a value computed exactly (e.g. the check's count of its users). */
  set(clusterIndex: number, value: number, what = 'cluster'): void {
    if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`refcount ${value} is not a count`);
    if (clusterIndex >= this.end) this.grow(clusterIndex + 1);
    const before = this.exactAt(clusterIndex);
    if (value > this.max) {
      throw new Qcow2Error(this.file.path, what, clusterIndex * this.clusterSize, `refcount ${value} exceeds ${this.max}, the largest refcount this image stores`, 'unsupported');
    }
    this.exact.delete(clusterIndex);
    this.store(clusterIndex, value, value === 0 && before !== 0 && before !== 0n);
  }

  /** Stores one new count and marks its block dirty. */
  private store(clusterIndex: number, v: number, freed: boolean): void {
    this.counts[clusterIndex] = v;
    if (freed) this.freedNow.add(clusterIndex);
    const bi = Math.floor(clusterIndex / this.g.blockEntries);
    if (bi !== this.lastDirty) { this.dirtyBlocks.add(bi); this.lastDirty = bi; }
  }

  /** add() on a 64-bit refcount at or past 2^53, in bigint. */
  private addExact(clusterIndex: number, delta: number, what: string): number {
    const v = BigInt(this.exactAt(clusterIndex)) + BigInt(delta);
    if (v < 0n) {
      throw new Qcow2Error(this.file.path, what, clusterIndex * this.clusterSize, 'refcount would drop below zero (the image is inconsistent; run qemu-img check)');
    }
    if (v > REFCOUNT_MAX_64) {
      throw new Qcow2Error(this.file.path, what, clusterIndex * this.clusterSize, `refcount would exceed ${REFCOUNT_MAX_64}, the largest 64-bit refcount`, 'unsupported');
    }
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.exact.set(clusterIndex, v);
    else this.exact.delete(clusterIndex);
    this.store(clusterIndex, Number(v), v === 0n && delta < 0);
    return Number(v);
  }

  private grow(n: number): void {
    if (n <= this.counts.length) { this.end = Math.max(this.end, n); return; }
    const c = new Float64Array(Math.max(n, Math.ceil(this.counts.length * 1.5) + 64));
    c.set(this.counts.subarray(0, this.end));
    this.counts = c;
    this.end = n;
  }

  /** Adds `delta` to one cluster's refcount; refuses overflow and underflow before anything is written. */
  add(clusterIndex: number, delta: number, what = 'cluster'): number {
    if (clusterIndex >= this.end) this.grow(clusterIndex + 1);
    const v = this.counts[clusterIndex] + delta;
    if (this.g.order === 6 && (this.exact.has(clusterIndex) || !Number.isSafeInteger(v))) return this.addExact(clusterIndex, delta, what);
    if (v < 0) {
      throw new Qcow2Error(this.file.path, what, clusterIndex * this.clusterSize, 'refcount would drop below zero (the image is inconsistent; run qemu-img check)');
    }
    if (v > this.max) {
      throw new Qcow2Error(this.file.path, what, clusterIndex * this.clusterSize,
        `refcount would exceed ${this.max}, the largest ${this.g.order === 0 ? '1-bit' : `${2 ** this.g.order}-bit`} refcount this image stores`, 'unsupported');
    }
    this.store(clusterIndex, v, v === 0 && delta < 0);
    return v;
  }

  /** Adds `delta` to every cluster touched by the byte range [hostOffset, hostOffset+length). */
  addRange(hostOffset: number, length: number, delta: number, what = 'cluster'): void {
    if (length <= 0) return;
    const first = Math.floor(hostOffset / this.clusterSize);
    const last = Math.floor((hostOffset + length - 1) / this.clusterSize);
    for (let c = first; c <= last; c++) this.add(c, delta, what);
  }

  /**
   * Allocates `n` contiguous clusters (refcount 1 each) and returns the host offset of the first.
   * Clusters free when the operation started are reused; clusters freed during it are not.
   */
  allocate(n: number, what = 'cluster'): number {
    if (n <= 0) return 0;
    let start = -1;
    let run = 0;
    let firstFree = -1;
    for (let i = this.hint; i < this.end; i++) {
      if (this.counts[i] === 0 && !this.freedNow.has(i)) {
        if (firstFree < 0) firstFree = i;
        if (run === 0) start = i;
        if (++run === n) break;
      } else run = 0;
    }
    if (run < n) {
      // extend from the last used cluster (a trailing free run is reused)
      if (run === 0 || start + run !== this.end) start = this.end;
    }
    if (start + n > this.end) this.grow(start + n);
    for (let i = start; i < start + n; i++) this.add(i, 1, what);
    // Nothing below the first free cluster seen is reusable (clusters freed now never are), nor is the
    // run just taken: the next search starts there, not again near the start of the file.
    this.hint = firstFree < 0 || firstFree === start ? start + n : firstFree;
    return start * this.clusterSize;
  }

  /** Drops one reference from each cluster of [hostOffset, hostOffset+length). */
  free(hostOffset: number, length: number, what = 'cluster'): void {
    this.addRange(hostOffset, length, -1, what);
  }

  get dirty(): boolean {
    return this.dirtyBlocks.size > 0 || this.dirtyTableEntries.size > 0;
  }

  /**
   * Gives every dirty range a refcount block and the table room for it (new blocks and a new,
   * larger table are themselves allocated here, which may need further blocks: repeat until stable).
   */
  private materialize(): void {
    for (;;) {
      let changed = false;
      for (const bi of [...this.dirtyBlocks].sort((a, b) => a - b)) {
        if (bi < this.table.length && this.table[bi] !== 0) continue;
        // only blocks with a non-zero count need to exist
        const base = bi * this.g.blockEntries;
        let any = false;
        for (let k = base; k < Math.min(this.end, base + this.g.blockEntries); k++) if (this.counts[k] !== 0) { any = true; break; }
        if (!any) { this.dirtyBlocks.delete(bi); continue; }
        if (bi >= this.table.length) { this.growTable(bi + 1); changed = true; break; }
        const off = this.allocate(1, `refcount block ${bi}`);
        this.table[bi] = off;
        this.blocks.set(bi, Buffer.alloc(this.clusterSize));
        this.dirtyTableEntries.add(bi);
        changed = true;
      }
      if (!changed) return;
    }
  }

  private growTable(minEntries: number): void {
    const entriesPerCluster = this.clusterSize / 8;
    // room for growth, as QEMU leaves (about half as much again)
    const clusters = Math.ceil((minEntries + Math.ceil(minEntries / 2) + 1) / entriesPerCluster);
    if (clusters * this.clusterSize > L.QCOW_MAX_REFTABLE_SIZE) {
      throw new Qcow2Error(this.file.path, 'refcount table', this.tableOffset, `would need ${clusters} clusters, beyond QEMU's 8 MiB limit`, 'unsupported');
    }
    const t = new Float64Array(clusters * entriesPerCluster);
    t.set(this.table);
    if (!this.oldTable) this.oldTable = { offset: this.tableOffset, clusters: this.tableClusters };
    else this.free(this.tableOffset, this.tableClusters * this.clusterSize, 'refcount table'); // an unpublished table
    this.table = t;
    this.tableOffset = this.allocate(clusters, 'refcount table');
    this.tableClusters = clusters;
    for (let i = 0; i < t.length; i++) if (t[i] !== 0) this.dirtyTableEntries.add(i);
  }

  private encodeBlock(bi: number): Buffer {
    const blk = this.blocks.get(bi) ?? Buffer.alloc(this.clusterSize);
    this.blocks.set(bi, blk);
    const base = bi * this.g.blockEntries;
    const n = Math.min(this.g.blockEntries, this.end - base);
    const exact = this.exact.size > 0 ? this.exact : undefined;
    for (let k = 0; k < n; k++) setRefcountAt(blk, k, this.g.order, exact?.get(base + k) ?? this.counts[base + k]);
    return blk;
  }

  /**
   * Writes every changed refcount in the crash-safe order and syncs after each step. Returns once
   * the on-disk refcounts equal the in-memory ones.
   */
  async flush(): Promise<void> {
    if (!this.dirty) return;
    this.materialize();
    for (const bi of [...this.dirtyBlocks].sort((a, b) => a - b)) {
      if (!(bi < this.table.length && this.table[bi] !== 0)) continue;
      await writeAt(this.file, this.table[bi], this.encodeBlock(bi), `refcount block ${bi}`);
    }
    this.dirtyBlocks.clear();
    this.lastDirty = -1;
    await this.file.sync();
    if (this.oldTable) {
      // a new table: written whole, then published by the header, then the old one is freed
      const buf = Buffer.alloc(this.tableClusters * this.clusterSize);
      for (let i = 0; i < this.table.length; i++) buf.writeBigUInt64BE(BigInt(this.table[i]), i * 8);
      await writeAt(this.file, this.tableOffset, buf, 'refcount table');
      await this.file.sync();
      const sw = L.encodeHeaderRun([['refcount_table_offset', this.tableOffset], ['refcount_table_clusters', this.tableClusters]]);
      await writeAt(this.file, sw.offset, sw.bytes, headerPath('refcount_table_offset'));
      await this.file.sync();
      const old = this.oldTable;
      this.oldTable = null;
      this.dirtyTableEntries.clear();
      this.free(old.offset, old.clusters * this.clusterSize, 'old refcount table');
      await this.flush();
      return;
    }
    for (const i of [...this.dirtyTableEntries].sort((a, b) => a - b)) {
      const b = Buffer.alloc(8);
      b.writeBigUInt64BE(BigInt(this.table[i]), 0);
      await writeAt(this.file, this.tableOffset + i * 8, b, formatPath([step('refcount table', i)]));
    }
    if (this.dirtyTableEntries.size) await this.file.sync();
    this.dirtyTableEntries.clear();
  }
}
