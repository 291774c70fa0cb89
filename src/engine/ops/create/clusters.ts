/**
 * QEMU 7.2's L1/L2 side of creating and resizing (block/qcow2-cluster.c, qcow2_co_truncate,
 * preallocate_co), driving RefAlloc (refalloc.ts) so the clusters land where qemu-img puts them.
 *
 * Write order, as QEMU issues it (each step synced before the next):
 *  grow L1:   new L1 allocated → refcounts flushed → new L1 written → header l1_size+l1_table_offset
 *             (one 12-byte write) → old L1 freed (a crash before that leaks it)
 *  new L2:    allocated → refcounts flushed → the table written → its L1 entry written
 *  link L2:   data clusters counted → refcounts flushed → L2 entries written (the L2 cache depends
 *             on the refcount cache)
 *  falloc:    refcount blocks + new refcount table for the whole area → header switch → old table
 *             freed → data area zero-filled → L2 entries as above
 *  shrink:    the header's size first (the guest sees the new disk; what follows only tidies
 *             clusters past its end) → L2 entries of the cut clusters cleared → their refcounts dropped → L1
 *             entries past the end zeroed → L2 tables freed → unused refcount blocks dropped from
 *             the table → file truncated
 *  size:      when growing, the header's size field last (8 bytes)
 */
import { Qcow2Error } from '../../errors';
import { entryOffset, wordHi, wordLo } from '../../qcow2/cluster';
import * as L from '../../qcow2/layout';
import type { Preallocation } from '../measure';
import { RefAlloc, type Disk } from './refalloc';

const INT_MAX = 0x7fffffff;
const BDRV_REQUEST_MAX_BYTES = 0x7ffffe00;
const INV = -1;

export interface ClusterState {
  size: number;
  l1Offset: number;
  l1Size: number;
  /** The active L1 table's bytes (big-endian entries). */
  l1: Buffer;
  extendedL2: boolean;
  /** The external data file, when the image has one (data clusters live there, not counted). */
  dataDisk?: Disk;
  dataFileRaw?: boolean;
  /**
   * Writes the new virtual size instead of the plain 8-byte write, when more must switch with it in
   * the same header write (resize's persistent bitmaps, whose tables are sized by the disk). It
   * writes what it needs first and the header last; the model syncs after it.
   */
  writeSize?: (size: number) => Promise<void>;
  /**
   * The guest bytes of the partial last cluster before a falloc/full growth, [start of its
   * cluster, old size): copied into the new cluster that replaces it (QEMU's cow_start).
   */
  cowHead?: Buffer;
}

export interface Meta { guest: number; host: number; n: number }

import type { DataCipher } from '../../crypto/dataCipher';

export class ClusterModel {
  readonly cs: number;
  readonly bits: number;
  readonly entrySize: number;
  readonly l2Size: number;
  size: number;
  l1Offset: number;
  l1Size: number;
  l1: Buffer;
  protected l2 = new Map<number, Buffer>();
  protected l2Dirty = new Set<number>();
  /** An encrypted image's data cipher (create.ts sets it up): guest data is encrypted for its host offset before it is written. */
  cipher: DataCipher | null = null;

  constructor(readonly disk: Disk, readonly rc: RefAlloc, readonly st: ClusterState) {
    this.cs = rc.cs;
    this.bits = rc.bits;
    this.entrySize = st.extendedL2 ? 16 : 8;
    this.l2Size = this.cs / this.entrySize;
    this.size = st.size;
    this.l1Offset = st.l1Offset;
    this.l1Size = st.l1Size;
    this.l1 = st.l1;
    rc.flushL2Raw = () => this.flushL2Raw();
  }

  private fail(what: string, off: number | undefined, detail: string): Qcow2Error {
    return new Qcow2Error(this.disk.path, what, off, detail, 'unsupported');
  }

  sizeToL1(size: number): number {
    return Math.ceil(size / (this.cs * this.l2Size));
  }

  private l1Entry(i: number): { off: number; copied: boolean } {
    if (i >= this.l1Size) return { off: 0, copied: false };
    const hi = wordHi(this.l1, i * 8), lo = wordLo(this.l1, i * 8);
    return { off: entryOffset(hi, lo), copied: (hi & L.OFLAG_COPIED_HI) !== 0 };
  }

  private setL1(i: number, off: number, copied: boolean): void {
    this.l1.writeBigUInt64BE(BigInt(off) | (copied ? L.QCOW_OFLAG_COPIED : 0n), i * 8);
  }

  private async flushL2Raw(): Promise<void> {
    if (!this.l2Dirty.size) return;
    for (const off of [...this.l2Dirty].sort((a, b) => a - b)) await this.disk.write(off, this.l2.get(off)!, 'L2 table');
    this.l2Dirty.clear();
    await this.disk.sync();
  }

  private async loadL2(off: number): Promise<Buffer> {
    let t = this.l2.get(off);
    if (!t) {
      t = Buffer.from(await this.disk.read(off, this.cs, 'L2 table'));
      this.l2.set(off, t);
    }
    return t;
  }

  private async writeL1Entry(i: number): Promise<void> {
    await this.disk.write(this.l1Offset + i * 8, this.l1.subarray(i * 8, i * 8 + 8), `L1[${i}]`);
    await this.disk.sync();
  }

  /** qcow2_grow_l1_table. */
  async growL1(minSize: number, exact: boolean): Promise<void> {
    if (minSize <= this.l1Size) return;
    if (minSize > INT_MAX / 8) throw this.fail('L1 table', this.l1Offset, 'Failed to grow the L1 table: File too large');
    let n = minSize;
    if (!exact) { n = Math.max(1, this.l1Size); while (minSize > n) n = Math.ceil((n * 3) / 2); }
    if (n > L.QCOW_MAX_L1_SIZE / 8) throw this.fail('L1 table', this.l1Offset, 'Failed to grow the L1 table: File too large');
    const table = Buffer.alloc(n * 8);
    this.l1.copy(table, 0, 0, this.l1Size * 8);
    const off = await this.rc.allocClusters(n * 8);
    await this.rc.flushRefcounts();
    await this.disk.write(off, table, 'L1 table');
    await this.disk.sync();
    const hdr = Buffer.alloc(12);
    hdr.writeUInt32BE(n, 0);
    hdr.writeBigUInt64BE(BigInt(off), 4);
    await this.disk.write(L.HEADER_FIELD.l1_size.offset, hdr, 'header.l1_size');
    await this.disk.sync();
    const oldOff = this.l1Offset, oldSize = this.l1Size;
    this.l1Offset = off;
    this.l1Size = n;
    this.l1 = table;
    await this.rc.freeClusters(oldOff, oldSize * 8);
  }

  /** l2_allocate: a new L2 table for l1Index (a copy of the old one when it was shared). */
  private async l2Allocate(l1Index: number): Promise<void> {
    const old = this.l1Entry(l1Index).off;
    const off = await this.rc.allocClusters(this.cs);
    if (off === 0) throw this.fail('L2 table', 0, 'would be allocated at offset 0');
    await this.rc.flushRefcounts();
    const t = old ? Buffer.from(await this.loadL2(old)) : Buffer.alloc(this.cs);
    this.l2.set(off, t);
    this.l2Dirty.add(off);
    await this.rc.flushL2();
    this.setL1(l1Index, off, true);
    await this.writeL1Entry(l1Index);
  }

  /** get_cluster_table: the L2 table covering `guest`, allocated (or un-shared) first. */
  protected async clusterTable(guest: number): Promise<{ off: number; t: Buffer; index: number }> {
    const l1Index = Math.floor(guest / (this.cs * this.l2Size));
    if (l1Index >= this.l1Size) await this.growL1(l1Index + 1, false);
    let e = this.l1Entry(l1Index);
    if (!e.copied) {
      await this.l2Allocate(l1Index);
      if (e.off) await this.rc.freeClusters(e.off, this.cs);
      e = this.l1Entry(l1Index);
    }
    const t = await this.loadL2(e.off);
    return { off: e.off, t, index: Math.floor(guest / this.cs) % this.l2Size };
  }

  private entryIsZero(t: Buffer, i: number): boolean {
    const p = i * this.entrySize;
    return wordHi(t, p) === 0 && wordLo(t, p) === 0 && (this.entrySize === 8 || (wordHi(t, p + 8) | wordLo(t, p + 8)) === 0);
  }

  /** qcow2_alloc_host_offset for a range whose L2 entries are all unallocated. */
  protected async allocHostOffset(offset: number, bytes: number): Promise<{ bytes: number; host: number; metas: Meta[] }> {
    let start = offset, remaining = bytes, clusterOffset = INV, host = INV, cur = 0;
    const metas: Meta[] = [];
    for (;;) {
      if (host === INV && clusterOffset !== INV) host = clusterOffset;
      start += cur;
      remaining -= cur;
      if (clusterOffset !== INV) clusterOffset += cur;
      if (remaining === 0) break;
      cur = remaining;
      // handle_copied: brings in (allocates) the L2 table; a new range has nothing to keep
      const { t, index } = await this.clusterTable(start);
      if (!this.entryIsZero(t, index)) throw this.fail('L2 table', undefined, 'the area being preallocated already has clusters (not supported)');
      // handle_alloc
      let nb = Math.ceil(((start % this.cs) + cur) / this.cs);
      nb = Math.min(nb, this.l2Size - index, Math.floor(BDRV_REQUEST_MAX_BYTES / this.cs));
      let k = 0;
      while (k < nb && this.entryIsZero(t, index + k)) k++;
      nb = k;
      let alloc: number;
      if (this.st.dataDisk) {
        alloc = clusterOffset === INV ? Math.floor(start / this.cs) * this.cs : Math.floor(clusterOffset / this.cs) * this.cs;
      } else if (clusterOffset === INV) {
        alloc = await this.rc.allocClusters(nb * this.cs);
      } else {
        alloc = Math.floor(clusterOffset / this.cs) * this.cs;
        nb = await this.rc.allocClustersAt(alloc, nb);
        if (nb === 0) break;
      }
      metas.push({ guest: Math.floor(start / this.cs) * this.cs, host: alloc, n: nb });
      clusterOffset = alloc;
      cur = Math.min(cur, nb * this.cs - (start % this.cs));
    }
    if (host !== INV) host += offset % this.cs;
    return { bytes: bytes - remaining, host, metas };
  }

  /** qcow2_alloc_cluster_link_l2 for preallocated clusters (no data written, no subcluster bits). */
  private async linkL2(m: Meta): Promise<void> {
    await this.rc.setL2DependsOnRc();
    const { off, t, index } = await this.clusterTable(m.guest);
    for (let i = 0; i < m.n; i++) {
      const p = (index + i) * this.entrySize;
      t.writeBigUInt64BE(BigInt(m.host + i * this.cs) | L.QCOW_OFLAG_COPIED, p);
    }
    this.l2Dirty.add(off);
  }

  /** preallocate_co: metadata for [offset, newLength), data clusters counted but not written. */
  private async preallocate(offset: number, newLength: number, mode: Preallocation): Promise<void> {
    let bytes = newLength - offset, host = 0, cur = 0;
    while (bytes) {
      cur = Math.min(bytes, Math.floor(INT_MAX / this.cs) * this.cs);
      const r = await this.allocHostOffset(offset, cur);
      cur = r.bytes;
      host = r.host;
      for (const m of r.metas) {
        // the unaligned tail of the last cluster is copied-on-write (zeros) before the entry is linked
        const end = offset + cur;
        if (end % this.cs && end > m.guest && end < m.guest + m.n * this.cs) {
          const sub = this.st.extendedL2 ? this.cs / 32 : this.cs;
          const from = m.host + (end - m.guest), to = m.host + Math.ceil((end - m.guest) / sub) * sub;
          if (to > from) await (this.st.dataDisk ?? this.disk).write(from, Buffer.alloc(to - from), 'data (copy on write)');
        }
        await this.linkL2(m);
      }
      bytes -= cur;
      offset += cur;
    }
    const data = this.st.dataDisk ?? this.disk;
    const end = host + cur;
    if (end > data.length()) {
      if (mode === 'falloc' || mode === 'full') await data.writeZeroes(data.length(), end - data.length(), 'data');
      else await growFile(data, end);
    }
  }

  async writeCaches(): Promise<void> {
    await this.rc.flushL2();
    await this.rc.flushRefcounts();
  }

  /** qcow2_co_truncate (the header's size written last). */
  async truncate(offset: number, prealloc: Preallocation): Promise<void> {
    if (offset % 512 !== 0) throw this.fail('size', undefined, 'The new size must be a multiple of 512');
    const old = this.size;
    const newL1 = this.sizeToL1(offset);
    if (offset < old) {
      if (prealloc !== 'off') throw this.fail('size', undefined, "Preallocation can't be used for shrinking an image");
      // The size first (QEMU writes it last): once it is on disk the guest sees the new disk, and
      // the discards that follow only drop clusters past its end — a crash in between leaves the
      // old disk or the new one, never the old size with its tail already gone.
      await this.writeSize(offset);
      await this.discard(Math.ceil(offset / this.cs) * this.cs, old);
      await this.shrinkL1(newL1);
      await this.rc.shrinkReftable();
      await this.rc.flushL2();
      await this.rc.flushRefcounts();
      const fileSize = this.disk.length();
      const last = this.rc.lastCluster(fileSize);
      if ((last + 1) * this.cs < fileSize) await this.disk.truncate((last + 1) * this.cs);
    } else {
      await this.growL1(newL1, true);
      if (this.st.dataFileRaw && prealloc === 'off') prealloc = 'metadata';
    }
    if (prealloc === 'off') {
      if (this.st.dataDisk) await resizeFile(this.st.dataDisk, offset);
    } else if (prealloc === 'metadata' || this.st.dataDisk) {
      await this.preallocate(old, offset, prealloc);
    } else {
      await this.fullPrealloc(old, offset);
    }
    if (prealloc !== 'off') await this.writeCaches();
    if (offset >= old) await this.writeSize(offset);
    this.size = offset;
  }

  private async writeSize(size: number): Promise<void> {
    if (this.st.writeSize) await this.st.writeSize(size);
    else await this.disk.write(L.HEADER_FIELD.size.offset, L.encodeHeaderField('size', size), 'header.size');
    await this.disk.sync();
  }

  /** The falloc/full branch of qcow2_co_truncate: refcount room first, data area, then L2 entries. */
  private async fullPrealloc(old: number, offset: number): Promise<void> {
    const head = this.st.cowHead;
    if (old % this.cs !== 0 && (!head || head.length !== old % this.cs)) throw this.fail('size', undefined, 'preallocating from a size that is not a multiple of the cluster size needs its partial cluster\'s content');
    let oldFile = this.disk.length();
    const last = this.rc.lastCluster(oldFile);
    oldFile = last >= 0 ? (last + 1) * this.cs : Math.ceil(oldFile / this.cs) * this.cs;
    let nbData = (Math.ceil(offset / this.cs) * this.cs - Math.floor(old / this.cs) * this.cs) / this.cs;
    const nbL2 = Math.ceil(nbData / this.l2Size) + 1;
    const start = await this.rc.refcountArea(oldFile, nbData + nbL2, true, 0, 0);
    const got = await this.rc.allocClustersAt(start, nbData);
    if (got !== nbData) throw this.fail('data', start, 'could not allocate the data area');
    const newFile = start + nbData * this.cs;
    if (newFile > this.disk.length()) await this.disk.writeZeroes(this.disk.length(), newFile - this.disk.length(), 'preallocated data');
    let host = start, guest = old;
    // the partial first cluster: a new one takes its head (copied before it is linked, as
    // perform_cow), and what the old entry referenced is freed after the link
    let replaced: [number, number, number] | undefined;
    if (old % this.cs !== 0) {
      await this.disk.write(start, head!, 'data (copy on write)');
      const { off, t, index } = await this.clusterTable(Math.floor(old / this.cs) * this.cs);
      const p = index * this.entrySize, hi = wordHi(t, p), lo = wordLo(t, p);
      if (hi !== 0 || lo !== 0) replaced = [hi, lo, off + p];
    }
    while (nbData) {
      const n = Math.min(nbData, this.l2Size - (Math.floor(guest / this.cs) % this.l2Size));
      await this.linkL2({ guest: Math.floor(guest / this.cs) * this.cs, host, n });
      if (replaced) { await this.freeAny(...replaced); replaced = undefined; }
      guest += n * this.cs;
      host += n * this.cs;
      nbData -= n;
    }
  }

  /** qcow2_cluster_discard (full discard) of [from, to): entries cleared, then their clusters freed. */
  private async discard(from: number, to: number): Promise<void> {
    for (let g = from; g < to;) {
      const l1Index = Math.floor(g / (this.cs * this.l2Size));
      const tableEnd = Math.min(to, (l1Index + 1) * this.cs * this.l2Size);
      if (l1Index >= this.l1Size || this.l1Entry(l1Index).off === 0) { g = tableEnd; continue; }
      const { off, t, index } = await this.clusterTable(g);
      const n = Math.ceil((tableEnd - g) / this.cs);
      const frees: [number, number, number][] = [];
      for (let i = index; i < index + n; i++) {
        const p = i * this.entrySize;
        const hi = wordHi(t, p), lo = wordLo(t, p);
        if (hi === 0 && lo === 0 && (this.entrySize === 8 || (wordHi(t, p + 8) | wordLo(t, p + 8)) === 0)) continue;
        frees.push([hi, lo, p]);
        t.fill(0, p, p + this.entrySize);
      }
      if (frees.length) this.l2Dirty.add(off);
      for (const [hi, lo, p] of frees) await this.freeAny(hi, lo, off + p);
      g = tableEnd;
    }
  }

  /** qcow2_free_any_cluster: a data or compressed cluster's references dropped. */
  private async freeAny(hi: number, lo: number, at: number): Promise<void> {
    if (hi & L.OFLAG_COMPRESSED_HI) {
      const x = 62 - (this.bits - 8);
      const big = (BigInt(hi & 0x3fffffff) << 32n) | BigInt(lo);
      const hostOffset = Number(big & ((1n << BigInt(x)) - 1n));
      const nb = Number(big >> BigInt(x));
      await this.rc.freeClusters(hostOffset, (nb + 1) * 512 - (hostOffset & 511));
      return;
    }
    const host = entryOffset(hi, lo);
    if (this.st.dataDisk) return;
    if (host === 0) return;
    if (host % this.cs) throw new Qcow2Error(this.disk.path, 'L2 entry', at, 'data cluster offset is not cluster-aligned');
    await this.rc.freeClusters(host, this.cs);
  }

  /** qcow2_shrink_l1_table: entries past the new end zeroed (the table keeps its size), L2 freed. */
  private async shrinkL1(exact: number): Promise<void> {
    if (exact >= this.l1Size) return;
    await this.rc.flushL2();
    await this.disk.write(this.l1Offset + exact * 8, Buffer.alloc((this.l1Size - exact) * 8), 'L1 table');
    await this.disk.sync();
    for (let i = this.l1Size - 1; i > exact - 1; i--) {
      const e = this.l1Entry(i);
      if (e.off === 0) continue;
      await this.rc.freeClusters(e.off, this.cs);
      this.l2.delete(e.off);
      this.l2Dirty.delete(e.off);
      this.setL1(i, 0, false);
    }
    this.l1.fill(0, exact * 8, this.l1Size * 8);
  }
}

/** A file grown by truncation (file-posix, preallocation off): the first block written when it was empty. */
export async function growFile(d: Disk, size: number): Promise<void> {
  const was = d.length();
  await d.truncate(size);
  if (was === 0 && size > 0) await d.write(0, Buffer.alloc(size < 4096 ? 512 : 4096), 'first block');
}

/** bdrv_co_truncate of a raw file with preallocation off (grow or shrink). */
export async function resizeFile(d: Disk, size: number): Promise<void> {
  if (size > d.length()) await growFile(d, size);
  else if (size < d.length()) await d.truncate(size);
}
