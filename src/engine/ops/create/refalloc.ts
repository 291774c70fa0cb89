/**
 * QEMU 7.2's cluster allocator (block/qcow2-refcount.c), reproduced step for step so an image we
 * create or resize has qemu-img's layout to the cluster: alloc_clusters_noref's moving
 * free_cluster_index, update_refcount with alloc_refcount_block's self-describing blocks and its
 * -EAGAIN restarts, qcow2_refcount_area for a new refcount table, and the refcount block cache
 * with its flush points and its dependency on the L2 cache. Writes go straight to a Disk (every
 * one through the crash hook), in the order QEMU issues them and with its syncs, so an in-place
 * operation is exactly as crash-safe as QEMU's own: refcount blocks are flushed before anything
 * that points to what they count, and decrements only after the pointers are gone.
 */
import { Qcow2Error } from '../../errors';
import { setRefcountAt } from '../../qcow2/refcount';

export const EAGAIN = -11;

/** Where the model's writes go: the new image (create) or the image itself (in place). */
export interface Disk {
  readonly path: string;
  write(off: number, data: Uint8Array, what: string): Promise<void>;
  /** Zeroes [off, off+len): written (QEMU's falloc/full preallocation and pwrite_zeroes). */
  writeZeroes(off: number, len: number, what: string): Promise<void>;
  read(off: number, len: number, what: string): Promise<Buffer>;
  sync(): Promise<void>;
  truncate(size: number): Promise<void>;
  length(): number;
}

export interface RefState {
  clusterBits: number;
  refcountOrder: number;
  reftable: Float64Array;
  reftableOffset: number;
  /** Refcount of every cluster (blocks absent from the table count as zero). */
  counts: Float64Array;
}

export class RefAlloc {
  readonly cs: number;
  readonly bits: number;
  readonly order: number;
  /** Refcounts per refcount block (QEMU's refcount_block_size). */
  readonly blockEntries: number;
  readonly blockBits: number;
  readonly max: number;
  reftable: Float64Array;
  reftableOffset: number;
  counts: Float64Array;
  freeClusterIndex = 0;
  maxReftableIndex = 0;
  /** Refcount blocks (by table index) changed since their last write. */
  private dirtyBlocks = new Set<number>();
  /** The refcount cache must not be written before the L2 cache (after a decrement). */
  rcDependsOnL2 = false;
  /** Hook to the L2 cache's raw flush (the cluster model installs it). */
  flushL2Raw: () => Promise<void> = async () => undefined;
  l2DependsOnRc = false;

  constructor(readonly disk: Disk, st: RefState) {
    this.bits = st.clusterBits;
    this.cs = 2 ** st.clusterBits;
    this.order = st.refcountOrder;
    this.blockBits = st.clusterBits + 3 - st.refcountOrder;
    this.blockEntries = 2 ** this.blockBits;
    this.max = st.refcountOrder === 6 ? Number.MAX_SAFE_INTEGER : 2 ** (2 ** st.refcountOrder) - 1;
    this.reftable = st.reftable;
    this.reftableOffset = st.reftableOffset;
    this.counts = st.counts;
    this.updateMaxIndex();
  }

  get reftableSize(): number {
    return this.reftable.length;
  }

  private updateMaxIndex(): void {
    let i = this.reftable.length - 1;
    while (i >= 0 && this.reftable[i] === 0) i--;
    this.maxReftableIndex = Math.max(0, i);
  }

  private fail(what: string, off: number | undefined, detail: string): Qcow2Error {
    return new Qcow2Error(this.disk.path, what, off, detail, 'unsupported');
  }

  getRefcount(ci: number): number {
    const ti = Math.floor(ci / this.blockEntries);
    if (ti >= this.reftable.length || this.reftable[ti] === 0) return 0;
    return ci < this.counts.length ? this.counts[ci] : 0;
  }

  private setCount(ci: number, v: number): void {
    if (ci >= this.counts.length) {
      const n = new Float64Array(Math.max(ci + 1, Math.ceil(this.counts.length * 1.5) + this.blockEntries));
      n.set(this.counts);
      this.counts = n;
    }
    this.counts[ci] = v;
  }

  /** Clears a new refcount block's counts (QEMU memsets the cache entry). */
  private zeroBlock(ti: number): void {
    const base = ti * this.blockEntries;
    const end = Math.min(this.counts.length, base + this.blockEntries);
    for (let i = base; i < end; i++) this.counts[i] = 0;
  }

  sizeToClusters(size: number): number {
    return Math.ceil(size / this.cs);
  }

  allocClustersNoref(size: number): number {
    const nb = this.sizeToClusters(size);
    for (;;) {
      let ok = true;
      for (let i = 0; i < nb; i++) {
        const idx = this.freeClusterIndex++;
        if (this.getRefcount(idx) !== 0) { ok = false; break; }
      }
      if (ok) break;
    }
    return (this.freeClusterIndex - nb) * this.cs;
  }

  /** update_refcount: 0, or EAGAIN when a new refcount block took space the caller searched. */
  async updateRefcount(offset: number, length: number, addend: number, decrease: boolean): Promise<number> {
    if (length <= 0) return 0;
    if (decrease) await this.setRcDependsOnL2();
    const start = Math.floor(offset / this.cs) * this.cs;
    const last = Math.floor((offset + length - 1) / this.cs) * this.cs;
    let oldTi = -1;
    let co = start;
    let ret = 0;
    for (; co <= last; co += this.cs) {
      const ci = co / this.cs;
      const ti = Math.floor(ci / this.blockEntries);
      if (ti !== oldTi) {
        ret = await this.allocRefcountBlock(ci);
        if (ret === EAGAIN && this.freeClusterIndex > start / this.cs) this.freeClusterIndex = start / this.cs;
        if (ret < 0) break;
      }
      oldTi = ti;
      this.dirtyBlocks.add(ti);
      const rc = this.getRefcount(ci);
      const v = decrease ? rc - addend : rc + addend;
      if (v < 0 || v > this.max) throw this.fail('refcount', co, v < 0 ? 'refcount would drop below zero' : `refcount would exceed ${this.max}`);
      if (v === 0 && ci < this.freeClusterIndex) this.freeClusterIndex = ci;
      this.setCount(ci, v);
    }
    if (ret < 0) {
      // undo what was already counted, as QEMU does before the caller retries
      await this.updateRefcount(offset, co - offset, addend, !decrease);
    }
    return ret;
  }

  private inSameBlock(a: number, b: number): boolean {
    return Math.floor(a / this.cs / this.blockEntries) === Math.floor(b / this.cs / this.blockEntries);
  }

  private async allocRefcountBlock(ci: number): Promise<number> {
    const ti = Math.floor(ci / this.blockEntries);
    if (ti < this.reftable.length && this.reftable[ti] !== 0) return 0;
    await this.flushL2();
    const newBlock = this.allocClustersNoref(this.cs);
    if (newBlock === 0) throw this.fail('refcount block', 0, 'would be allocated at offset 0');
    if (this.inSameBlock(newBlock, ci * this.cs)) {
      // the block describes itself
      this.zeroBlock(ti);
      this.setCount(newBlock / this.cs, 1);
    } else {
      const r = await this.updateRefcount(newBlock, this.cs, 1, false);
      if (r < 0) return r;
      await this.flushRefcounts();
      this.zeroBlock(ti);
    }
    // the new block is written before the table points to it
    await this.writeDirtyBlocks();
    await this.writeBlock(ti, newBlock);
    await this.disk.sync();
    if (ti < this.reftable.length) {
      const b = Buffer.alloc(8);
      b.writeBigUInt64BE(BigInt(newBlock));
      await this.disk.write(this.reftableOffset + ti * 8, b, `refcount table[${ti}]`);
      await this.disk.sync();
      this.reftable[ti] = newBlock;
      this.maxReftableIndex = Math.max(this.maxReftableIndex, ti);
      return EAGAIN;
    }
    // the table must grow: new blocks and table past everything counted so far
    const blocksUsed = Math.ceil(Math.max(ci + 1, newBlock / this.cs + 1) / this.blockEntries);
    const metaOffset = blocksUsed * this.blockEntries * this.cs;
    await this.refcountArea(metaOffset, 0, false, ti, newBlock);
    return EAGAIN;
  }

  private encodeBlock(ti: number): Buffer {
    const blk = Buffer.alloc(this.cs);
    const base = ti * this.blockEntries;
    const n = Math.max(0, Math.min(this.blockEntries, this.counts.length - base));
    for (let k = 0; k < n; k++) { const v = this.counts[base + k]; if (v) setRefcountAt(blk, k, this.order, v); }
    return blk;
  }

  private async writeBlock(ti: number, offset: number): Promise<void> {
    await this.disk.write(offset, this.encodeBlock(ti), `refcount block ${ti}`);
    this.dirtyBlocks.delete(ti);
  }

  /** qcow2_refcount_metadata_size: refcount blocks (and table clusters) that count themselves. */
  static metadataSize(clusters: number, cs: number, order: number, generous: boolean): { blocks: number; bytes: number } {
    const perTable = cs / 8, perBlock = (cs * 8) / 2 ** order;
    let table = 0, blocks = 0, last: number, n = 0;
    do {
      last = n;
      blocks = Math.ceil((clusters + table + blocks) / perBlock);
      table = Math.ceil(blocks / perTable);
      n = clusters + blocks + table;
      if (n === last && generous) { clusters += Math.ceil(table / 2); n = 0; generous = false; }
    } while (n !== last);
    return { blocks, bytes: (blocks + table) * cs };
  }

  /** qcow2_refcount_area: new refcount blocks and a new table at startOffset; returns its end. */
  async refcountArea(startOffset: number, additionalClusters: number, exact: boolean, newIndex: number, newOffset: number): Promise<number> {
    const cs = this.cs;
    const { blocks: total } = RefAlloc.metadataSize(startOffset / cs + additionalClusters, cs, this.order, !exact);
    if (total > 0x800000) throw this.fail('refcount table', this.reftableOffset, 'File too large');
    const areaIndex = Math.floor(startOffset / cs / this.blockEntries);
    let tableSize = exact ? total : total + Math.ceil(total / 2);
    tableSize = Math.ceil(tableSize / (cs / 8)) * (cs / 8);
    const tableClusters = (tableSize * 8) / cs;
    if (tableSize > 0x800000) throw this.fail('refcount table', this.reftableOffset, 'File too large');
    const t = new Float64Array(tableSize);
    if (tableSize > this.maxReftableIndex) t.set(this.reftable.subarray(0, Math.min(this.reftable.length, this.maxReftableIndex + 1)));
    else t.set(this.reftable.subarray(0, tableSize));
    if (newOffset) t[newIndex] = newOffset;
    let additional = 0;
    for (let i = areaIndex; i < total; i++) if (!t[i]) additional++;
    const tableOffset = startOffset + additional * cs;
    const endOffset = tableOffset + tableClusters * cs;
    let blockOffset = startOffset;
    const touched: number[] = [];
    for (let i = areaIndex; i < total; i++) {
      if (!t[i]) {
        this.zeroBlock(i);
        t[i] = blockOffset;
        blockOffset += cs;
      }
      const first = i * this.blockEntries * cs;
      if (first < endOffset) {
        let j = first < startOffset ? (startOffset - first) / cs : 0;
        const endIndex = Math.min((endOffset - first) / cs, this.blockEntries);
        for (; j < endIndex; j++) this.setCount(i * this.blockEntries + j, 1);
      }
      touched.push(i);
    }
    // the blocks (written at their new places), then the table, then the header switch
    const oldTable = this.reftable;
    const oldOffset = this.reftableOffset, oldSize = this.reftable.length;
    this.reftable = t; // the blocks' places, for encoding; published only by the header write
    for (const i of touched) { this.dirtyBlocks.add(i); }
    await this.writeDirtyBlocks();
    await this.disk.sync();
    const buf = Buffer.alloc(tableSize * 8);
    for (let i = 0; i < tableSize; i++) if (t[i]) buf.writeBigUInt64BE(BigInt(t[i]), i * 8);
    await this.disk.write(tableOffset, buf, 'refcount table');
    await this.disk.sync();
    const hdr = Buffer.alloc(12);
    hdr.writeBigUInt64BE(BigInt(tableOffset), 0);
    hdr.writeUInt32BE(tableClusters, 8);
    await this.disk.write(48, hdr, 'header.refcount_table_offset');
    await this.disk.sync();
    void oldTable;
    this.reftableOffset = tableOffset;
    this.updateMaxIndex();
    await this.freeClusters(oldOffset, oldSize * 8);
    return endOffset;
  }

  async allocClusters(size: number): Promise<number> {
    for (;;) {
      const off = this.allocClustersNoref(size);
      const r = await this.updateRefcount(off, size, 1, false);
      if (r !== EAGAIN) return off;
    }
  }

  /** qcow2_alloc_clusters_at: as many of n clusters at offset as are free, counted; returns how many. */
  async allocClustersAt(offset: number, n: number): Promise<number> {
    if (n === 0) return 0;
    for (;;) {
      let ci = offset / this.cs, i = 0;
      for (; i < n; i++) if (this.getRefcount(ci++) !== 0) break;
      const r = await this.updateRefcount(offset, i * this.cs, 1, false);
      if (r !== EAGAIN) return i;
    }
  }

  async freeClusters(offset: number, size: number): Promise<void> {
    await this.updateRefcount(offset, size, 1, true);
  }

  private async writeDirtyBlocks(): Promise<void> {
    for (const ti of [...this.dirtyBlocks].sort((a, b) => this.reftable[a] - this.reftable[b])) {
      const off = ti < this.reftable.length ? this.reftable[ti] : 0;
      if (off) await this.writeBlock(ti, off);
      else this.dirtyBlocks.delete(ti);
    }
  }

  private async setRcDependsOnL2(): Promise<void> {
    if (this.l2DependsOnRc) { await this.flushRefcountsRaw(); this.l2DependsOnRc = false; }
    this.rcDependsOnL2 = true;
  }

  async setL2DependsOnRc(): Promise<void> {
    if (this.rcDependsOnL2) { await this.flushL2Raw(); this.rcDependsOnL2 = false; }
    this.l2DependsOnRc = true;
  }

  private async flushRefcountsRaw(): Promise<void> {
    if (!this.dirtyBlocks.size) return;
    await this.writeDirtyBlocks();
    await this.disk.sync();
  }

  /** qcow2_cache_flush of the refcount cache (after the L2 cache when it depends on it). */
  async flushRefcounts(): Promise<void> {
    if (this.rcDependsOnL2) { await this.flushL2Raw(); this.rcDependsOnL2 = false; }
    await this.flushRefcountsRaw();
  }

  /** qcow2_cache_flush of the L2 cache (after the refcount cache when it depends on it). */
  async flushL2(): Promise<void> {
    if (this.l2DependsOnRc) { await this.flushRefcountsRaw(); this.l2DependsOnRc = false; }
    await this.flushL2Raw();
  }

  get hasDirtyBlocks(): boolean {
    return this.dirtyBlocks.size > 0;
  }

  /** The index of the last cluster with a non-zero refcount below `fileSize` (qcow2_get_last_cluster). */
  lastCluster(fileSize: number): number {
    for (let i = Math.ceil(fileSize / this.cs) - 1; i >= 0; i--) if (this.getRefcount(i) !== 0) return i;
    return -1;
  }

  /** qcow2_shrink_reftable: drops refcount blocks that count nothing but themselves. */
  async shrinkReftable(): Promise<void> {
    const drop: number[] = [];
    for (let i = 0; i < this.reftable.length; i++) {
      const off = this.reftable[i];
      if (!off) continue;
      const base = i * this.blockEntries, own = off / this.cs;
      const selfDescribing = Math.floor(own / this.blockEntries) === i;
      let unused = true;
      for (let k = 0; k < this.blockEntries; k++) {
        const ci = base + k;
        if (ci >= this.counts.length) break;
        if (selfDescribing && ci === own) continue;
        if (this.counts[ci] !== 0) { unused = false; break; }
      }
      if (unused) drop.push(i);
    }
    await this.flushRefcounts();
    const buf = Buffer.alloc(this.reftable.length * 8);
    for (let i = 0; i < this.reftable.length; i++) if (this.reftable[i] && !drop.includes(i)) buf.writeBigUInt64BE(BigInt(this.reftable[i]), i * 8);
    await this.disk.write(this.reftableOffset, buf, 'refcount table');
    await this.disk.sync();
    for (const i of drop) {
      const off = this.reftable[i], ci = off / this.cs;
      if (this.getRefcount(ci) !== 1) throw this.fail('refcount block', off, 'its refcount is not 1');
      this.setCount(ci, 0);
      this.dirtyBlocks.add(Math.floor(ci / this.blockEntries));
      if (ci < this.freeClusterIndex) this.freeClusterIndex = ci;
      this.reftable[i] = 0;
      this.dirtyBlocks.delete(i);
    }
    this.updateMaxIndex();
  }
}

