/**
 * Guest data written into a new qcow2 image, through the same step-for-step model of QEMU 7.2's
 * allocator that `create` uses (create/refalloc.ts, create/clusters.ts), so clusters are placed as
 * qemu-img convert places them when it writes in order: the L2 table when its first cluster is
 * written, data clusters after it, refcount blocks (and a larger refcount table) as the file
 * grows, compressed clusters packed by qcow2_alloc_bytes.
 *
 * The image is a temporary file no reader sees until it is renamed into place, so the write order
 * inside it does not matter to a crash; every write still passes the crash hook (FileDisk).
 *
 * Memory: the L2 tables written so far are dropped from the model's cache after every window
 * (`settle`), so what is held is one refcount per host cluster (8 bytes each) and the window.
 */
import { Qcow2Error } from '../../errors';
import type { BufferRing } from '../../io/bufferRing';
import { compressedEntryHi, entryOffset, l2Geometry, type L2Geometry, putEntry, putOffset, wordHi, wordLo } from '../../qcow2/cluster';
import * as L from '../../qcow2/layout';
import { ClusterModel, type ClusterState, type Meta } from '../create/clusters';
import type { Disk, RefAlloc } from '../create/refalloc';

const ALL_SUBCLUSTERS = 0xffffffff;

export class Qcow2Writer extends ClusterModel {
  readonly g: L2Geometry;
  /** qcow2's free_byte_offset: where the next compressed cluster may start inside a partly used cluster. */
  private freeByteOffset = 0;

  /**
   * `preallocated`: the image was created with every guest cluster mapped (preallocation
   * metadata, falloc, full): data goes to the mapped host cluster instead of a new one.
   */
  constructor(disk: Disk, rc: RefAlloc, st: ClusterState, readonly preallocated: boolean) {
    super(disk, rc, st);
    this.g = l2Geometry(this.bits, st.extendedL2);
  }

  private broken(off: number | undefined, detail: string): Qcow2Error {
    return new Qcow2Error(this.disk.path, 'L2 table', off, detail, 'io');
  }

  /**
   * Writes whole clusters of guest data starting at cluster-aligned `guest` (`data.length` a
   * multiple of the cluster size; the tail past the disk's end is zeros). With extended L2
   * entries, `masks` (one per cluster) says which subclusters were written (default: all); with
   * `zeroRest` the others are marked zero instead of left unallocated. `written` (byte ranges of
   * `data`) is what qemu-img writes of it: where QEMU does not copy-on-write the rest of the
   * cluster (extended L2: whole subclusters only; preallocated clusters: exactly those bytes),
   * only that is written, so the file's length and holes are qemu-img's.
   */
  async writeData(guest: number, data: Buffer, masks?: Uint32Array, zeroRest = false, written?: ReadonlyArray<readonly [number, number]>): Promise<void> {
    this.masks = masks;
    this.maskBase = guest;
    this.zeroRest = zeroRest;
    this.written = written;
    if (this.preallocated) return this.writeMapped(guest, data);
    let done = 0;
    while (done < data.length) {
      const r = await this.allocHostOffset(guest + done, data.length - done);
      if (r.bytes <= 0) throw this.broken(undefined, 'the allocator made no progress');
      for (const m of r.metas) {
        const from = m.guest - guest, len = Math.min(m.n * this.cs, data.length - from);
        await this.put(m.host, data, from, len);
        await this.linkData(m);
      }
      done += r.bytes;
    }
  }

  private masks: Uint32Array | undefined;
  private written: ReadonlyArray<readonly [number, number]> | undefined;

  /** Writes data[from, from + len) at `host`, or only the parts of it qemu-img writes (see writeData). */
  private async put(host: number, data: Buffer, from: number, len: number): Promise<void> {
    const partial = this.written && (this.entrySize === 16 || this.preallocated);
    if (!partial) { await this.disk.write(host, await this.sealed(data.subarray(from, from + len), host), 'data'); return; }
    const unit = this.entrySize === 16 ? this.cs / 32 : 1;
    for (const [r0, r1] of this.written!) {
      const s = Math.max(from, Math.floor(r0 / unit) * unit), e = Math.min(from + len, Math.ceil(r1 / unit) * unit);
      if (e > s) await this.disk.write(host + (s - from), await this.sealed(data.subarray(s, e), host + (s - from)), 'data');
    }
  }

  /**
   * Where an encrypted output's data is encrypted before it is written (set by the caller): a ring of
   * shared buffers, so the cipher's workers encrypt there and a buffer is reused only once no write
   * from it is in flight. Without it (or for a longer write) each write gets a copy of its own.
   */
  sealRing: BufferRing | null = null;

  /** Guest bytes as they are stored at `host`: encrypted for that host offset in an encrypted image (a copy; the caller's buffer is kept). */
  private async sealed(bytes: Buffer, host: number): Promise<Buffer> {
    if (!this.cipher) return bytes;
    if (this.sealRing && bytes.length <= this.sealRing.size) {
      const b = await this.sealRing.next(bytes.length);
      bytes.copy(b);
      await this.cipher.encryptRunAsync(b, host);
      return b;
    }
    const copy = Buffer.from(bytes);
    this.cipher.encryptRun(copy, host);
    return copy;
  }
  private maskBase = 0;
  private zeroRest = false;

  /** The subcluster bitmap word of the written cluster at `guest`: [zero bits, allocation bits]. */
  private bitmap(guest: number): [number, number] {
    const alloc = this.masks ? this.masks[(guest - this.maskBase) / this.cs] : ALL_SUBCLUSTERS;
    return [this.zeroRest ? (~alloc) >>> 0 : 0, alloc];
  }

  /** qcow2_alloc_cluster_link_l2 for written clusters: offset + COPIED, the written subclusters allocated. */
  private async linkData(m: Meta): Promise<void> {
    await this.rc.setL2DependsOnRc();
    const { off, t, index } = await this.clusterTable(m.guest);
    for (let i = 0; i < m.n; i++) {
      const p = (index + i) * this.entrySize;
      putOffset(t, p, m.host + i * this.cs, L.OFLAG_COPIED_HI);
      if (this.entrySize === 16) { const [z, a] = this.bitmap(m.guest + i * this.cs); putEntry(t, p + 8, z, a); }
    }
    this.l2Dirty.add(off);
  }

  /** Data into clusters the preallocation already mapped (contiguous host runs written at once). */
  private async writeMapped(guest: number, data: Buffer): Promise<void> {
    let runStart = -1, runHost = -1, runLen = 0;
    const flush = async () => {
      if (runLen) await this.put(runHost, data, runStart, runLen);
      runLen = 0;
    };
    for (let at = 0; at < data.length; at += this.cs) {
      const { off, t, index } = await this.clusterTable(guest + at);
      const p = index * this.entrySize;
      const host = entryOffset(wordHi(t, p), wordLo(t, p));
      if (!host) throw this.broken(off + p, 'a preallocated cluster is not mapped');
      if (this.entrySize === 16) { const [z, a] = this.bitmap(guest + at); putEntry(t, p + 8, z, a); this.l2Dirty.add(off); }
      if (runLen && runHost + runLen === host) runLen += this.cs;
      else { await flush(); runStart = at; runHost = host; runLen = this.cs; }
    }
    await flush();
  }

  /**
   * Zero clusters over [guest, guest + length) (cluster-aligned): qcow2_co_pwrite_zeroes on a
   * version 3 image — the zero flag, nothing allocated (with extended L2: every subcluster zero;
   * a preallocated cluster keeps its host cluster). Version 2 has no zero flag: the caller writes
   * zeros as data instead, as QEMU falls back to.
   */
  async writeZero(guest: number, length: number): Promise<void> {
    for (let at = guest; at < guest + length; at += this.cs) {
      const { off, t, index } = await this.clusterTable(at);
      const p = index * this.entrySize;
      if (this.entrySize === 16) putEntry(t, p + 8, ALL_SUBCLUSTERS, 0);
      else if (!this.preallocated) putEntry(t, p, 0, L.OFLAG_ZERO_LO);
      else continue; // a preallocated cluster of a new image reads as zero already
      this.l2Dirty.add(off);
    }
  }

  /**
   * One compressed cluster at `guest` (qcow2_alloc_compressed_cluster_offset): its L2 table
   * first, then the bytes packed after the previous compressed cluster, then the entry.
   */
  async writeCompressed(guest: number, compressed: Uint8Array): Promise<void> {
    if (this.cipher) throw new Qcow2Error(this.disk.path, 'compressed data', undefined, 'compressed clusters in an encrypted image are not written (QEMU would store them unencrypted)', 'unsupported');
    const { off, index } = await this.clusterTable(guest);
    const host = await this.allocBytes(compressed.length);
    await this.disk.write(host, compressed, 'compressed data');
    // the table may have been written and reloaded by a flush meanwhile: look it up again
    const { t } = await this.clusterTable(guest);
    const p = index * this.entrySize;
    putEntry(t, p, compressedEntryHi(this.g, host, compressed.length), host >>> 0);
    if (this.entrySize === 16) putEntry(t, p + 8, 0, 0);
    this.l2Dirty.add(off);
  }

  /** qcow2_alloc_bytes: compressed clusters share host clusters, each counted once per cluster it touches. */
  private async allocBytes(size: number): Promise<number> {
    const rc = this.rc, cs = this.cs;
    let offset = this.freeByteOffset;
    if (offset && rc.getRefcount(Math.floor(offset / cs)) === rc.max) offset = 0;
    let freeInCluster = cs - (offset % cs);
    for (;;) {
      if (!offset || freeInCluster < size) {
        const fresh = rc.allocClustersNoref(cs);
        if (fresh === 0) throw this.broken(0, 'Preventing invalid allocation of compressed cluster at offset 0');
        if (!offset || Math.ceil(offset / cs) * cs !== fresh) { offset = fresh; freeInCluster = cs; }
        else freeInCluster += cs;
      }
      const r = await rc.updateRefcount(offset, size, 1, false);
      if (r >= 0) break;
      offset = 0; // -EAGAIN: a refcount block took the space; search again
    }
    await rc.setL2DependsOnRc();
    this.freeByteOffset = (offset + size) % cs ? offset + size : 0;
    return offset;
  }

  /** Writes the caches and drops the L2 tables from memory (they are reloaded if touched again). */
  async settle(): Promise<void> {
    await this.writeCaches();
    this.l2.clear();
  }
}
