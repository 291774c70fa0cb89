/**
 * Whole-cluster guest writes into a qcow2 image, in place, for commit (into the base) and rebase
 * (into the overlay): each write gives one guest cluster its new content (or zeros).
 *
 * Write order, per batch (each phase synced before the next; a crash between any two writes
 * leaves an image `qemu-img check` finds at most leaking, each cluster holding its old or its new
 * content):
 *  1. data: into new clusters (free when the operation started, so nothing reads them yet), or
 *     over a data cluster only this L1 reaches (refcount 1), as QEMU writes in place. Issued as
 *     the clusters are queued (host-contiguous clusters joined, a few writes in flight while the
 *     caller reads on), not held until the batch ends; all of them completed and synced before 2
 *  2. refcounts: +1 for the new data clusters and L2 tables (RefcountWriter.flush: blocks before
 *     the table entries that point at them)
 *  3. L2 tables: new tables whole (a shared one copied first), changed entries pointing at the new
 *     clusters, zero flags
 *  4. L1 entries for new or copied L2 tables (one write per run of entries)
 *  5. the references the old entries held dropped — compressed data, clusters shared with a
 *     snapshot, the shared L2 tables copied in 3 — and flushed (a crash before: leaks)
 * Compressed clusters (convert -n -c) are packed into new host clusters (one compressed cluster
 * never crosses a host cluster; each host cluster counted once per compressed cluster in it) and
 * written with the data in phase 1; a host cluster is never filled across batches. As QEMU's
 * qcow2_alloc_compressed_cluster_offset, a compressed write over an entry with a host offset is
 * refused (what was queued before it is written first, as QEMU's in-order writes leave it).
 * Zeros are a zero-flag entry in version 3 images (nothing to write but the entry) and a data
 * cluster of zeros in version 2, which has no zero flag for an image with a backing file.
 * A LUKS-encrypted image is written with its passphrase: each data cluster is encrypted (a copy of
 * the caller's bytes) for the host offset it is written to, as QEMU's qcow2_co_encrypt does, before
 * it joins phase 1; compressed writes into it are refused (QEMU would store them unencrypted).
 */
import { throwIfCancelled } from '../../cancel';
import { Qcow2Error, hex } from '../../errors';
import { Qcow2Image } from '../../image/image';
import { compressedEntryHi, compressedLength, compressedOffset, entryOffset, isCompressed, l1EntryOffset, l2EntryPath, putEntry, putOffset, wordHi, wordLo } from '../../qcow2/cluster';
import * as L from '../../qcow2/layout';
import type { DataCipher } from '../../crypto/dataCipher';
import type { Secret } from '../../crypto/secret';
import { RefcountWriter, writeAt } from '../refcountWrite';
import { assertNotLocked, assertWritable } from '../writable';

/**
 * A batch ends at this many clusters queued, this much data written or this much of L2 tables
 * held (each batch costs three or four fsyncs, so larger batches are faster). The data is not
 * held: the memory bound is the tables plus MAX_INFLIGHT + 1 joined writes.
 */
const MAX_PENDING = 4096;
const MAX_BATCH_DATA = 256 * 1024 * 1024;
const MAX_TABLE_BYTES = 32 * 1024 * 1024;
/** The most bytes of host-contiguous data clusters joined into one write. */
const MAX_DATA_WRITE = 8 * 1024 * 1024;
/** Host-contiguous clusters in separate buffers are copied into one write up to this size (larger ones are written as they are). */
const MAX_COPY_JOIN = 1024 * 1024;
/** Data writes in flight at once (on libuv's threads, beside the caller's reads). */
const MAX_INFLIGHT = 4;

interface TableState {
  /** Where the table lives after this batch (a new cluster for new and copied tables). */
  offset: number;
  buf: Buffer;
  dirty: boolean;
  /** The L1 entry must be rewritten to point at `offset`. */
  relink: boolean;
}

export class Qcow2ClusterWriter {
  readonly cs: number;
  private readonly perL2: number;
  private tables = new Map<number, TableState>();
  /** Host-contiguous data being joined into one write: [host, end), its pieces. */
  private run: { host: number; end: number; parts: Buffer[] } | null = null;
  /** Data writes issued and not yet completed, with the host range each covers. */
  private inflight = new Map<Promise<void>, [number, number]>();
  private failure: Error | null = null;
  /** Data bytes written in this batch (phase 1). */
  private batchData = 0;
  private frees: [number, number, string][] = [];
  private pending = 0;
  /** The host cluster compressed clusters are being packed into, and how many of its bytes are used. */
  private packing: { host: number; buf: Buffer; used: number } | null = null;
  /** Clusters written so far (progress). */
  written = 0;

  private constructor(readonly img: Qcow2Image, readonly rc: RefcountWriter, private signal?: AbortSignal, private readonly cipher: DataCipher | null = null) {
    this.cs = img.clusterSize;
    this.perL2 = img.g.clusterSize * img.g.l2Size;
  }

  /**
   * Opens `path` for in-place cluster writes (refused when QEMU holds it, or it is corrupt, dirty,
   * legacy-AES encrypted or has an external data file); a LUKS image needs `key`: its passphrase,
   * or an open image of the same file already unlocked (its master key is taken: no second PBKDF2).
   */
  static async open(path: string, signal?: AbortSignal, key?: Secret | Qcow2Image): Promise<Qcow2ClusterWriter> {
    assertNotLocked(path);
    const img = await Qcow2Image.open(path, { writable: true, openBacking: false, openDataFile: false });
    try {
      assertWritable(img);
      const h = img.header, at = L.HEADER_FIELD.crypt_method.offset;
      if (h.cryptMethod === L.CRYPT_AES) throw new Qcow2Error(path, 'header.crypt_method', at, 'legacy AES images are read and converted, never written: convert it to a LUKS image (convert -o encrypt.format=luks,…)', 'unsupported');
      if (h.cryptMethod !== L.CRYPT_NONE) {
        if (!key) throw new Qcow2Error(path, 'header.crypt_method', at, 'the image is encrypted (LUKS); writing its guest data needs the passphrase (--object secret,id=ID,file=PATH --image-opts driver=qcow2,file.filename=PATH,encrypt.key-secret=ID)', 'encrypted');
        if (key instanceof Qcow2Image) await img.unlockLike(key);
        else await img.unlock(key);
      }
      if ((h.incompatibleFeatures & L.INCOMPAT_DATA_FILE) !== 0n) throw new Qcow2Error(path, 'header extension external data file name', undefined, 'writing guest data into an image with an external data file is not supported yet', 'unsupported');
      const rc = await RefcountWriter.load({ file: img.file, clusterBits: h.clusterBits, refcountOrder: h.refcountOrder, tableOffset: h.refcountTableOffset, tableClusters: h.refcountTableClusters, table: img.refcountTable });
      return new Qcow2ClusterWriter(img, rc, signal, img.cipher);
    } catch (e) {
      await img.close();
      throw e;
    }
  }

  get virtualSize(): number {
    return this.img.virtualSize;
  }

  private async table(l1Index: number): Promise<TableState> {
    const hit = this.tables.get(l1Index);
    if (hit) return hit;
    const img = this.img;
    if (l1Index >= img.l1Size) throw new Qcow2Error(img.path, `L1[${l1Index}]`, img.header.l1TableOffset, `the L1 table has ${img.l1Size} entries only`);
    const old = l1EntryOffset(img.l1, l1Index);
    let t: TableState;
    if (old === 0) {
      t = { offset: this.rc.allocate(1, 'L2 table'), buf: Buffer.alloc(this.cs), dirty: true, relink: true };
    } else {
      img.checkL2Offset(old, l1Index);
      const buf = Buffer.from(await img.file.read(old, this.cs, `L1[${l1Index}] → L2 table`));
      if (this.rc.get(old / this.cs) === 1) {
        t = { offset: old, buf, dirty: false, relink: false };
      } else {
        // shared with a snapshot: the active L1 gets its own copy (the data it points at keeps its counts)
        t = { offset: this.rc.allocate(1, 'L2 table (copy)'), buf, dirty: true, relink: true };
        this.frees.push([old, this.cs, `L1[${l1Index}] → shared L2 table`]);
      }
    }
    this.tables.set(l1Index, t);
    return t;
  }

  /** The references an entry held, dropped once nothing points at them (phase 5). */
  private dropOld(hi: number, lo: number, path: string, keepHost = -1): void {
    const g = this.img.g;
    if (isCompressed(hi)) {
      this.frees.push([compressedOffset(g, hi, lo), compressedLength(g, hi, lo), `${path} → compressed data`]);
      return;
    }
    const host = entryOffset(hi, lo);
    if (host !== 0 && host !== keepHost) this.frees.push([host, this.cs, `${path} → data`]);
  }

  /** Queues guest cluster `guestOffset` (cluster-aligned) to hold `data` (a full cluster; null: zeros). */
  async writeCluster(guestOffset: number, data: Buffer | null): Promise<void> {
    throwIfCancelled(this.signal, this.img.path, 'write');
    const img = this.img, g = img.g, cs = this.cs;
    if (guestOffset % cs !== 0 || guestOffset >= img.virtualSize) throw new RangeError(`guest cluster ${guestOffset} is not a cluster of the disk`);
    const l1Index = Math.floor(guestOffset / this.perL2);
    const l2Index = (guestOffset % this.perL2) / cs;
    const t = await this.table(l1Index);
    const pos = l2Index * g.l2EntrySize;
    const hi = wordHi(t.buf, pos), lo = wordLo(t.buf, pos);
    const path = l2EntryPath('L1', l1Index, l2Index);
    const compressed = isCompressed(hi);
    const host = compressed ? 0 : entryOffset(hi, lo);
    if (host % cs !== 0) throw new Qcow2Error(img.path, path, t.offset + pos, `data cluster offset ${hex(host)} is not cluster-aligned`);
    if (data === null && img.header.version >= 3) {
      this.dropOld(hi, lo, path);
      t.buf.fill(0, pos, pos + g.l2EntrySize);
      if (g.extendedL2) t.buf.writeUInt32BE(0xffffffff, pos + 8); // every subcluster reads as zero
      else t.buf.writeUInt32BE(L.OFLAG_ZERO_LO, pos + 4);
      t.dirty = true;
    } else {
      const bytes = data ?? Buffer.alloc(cs);
      let target: number;
      if (host !== 0 && this.rc.get(host / cs) === 1) {
        target = host; // only this L1 reaches it: written in place, as QEMU does
      } else {
        target = this.rc.allocate(1, `${path} → data`);
        this.dropOld(hi, lo, path);
      }
      let stored = bytes;
      if (this.cipher) {
        stored = Buffer.from(bytes); // the caller's buffer stays plaintext
        this.cipher.encryptRun(stored, target);
      }
      await this.queueData(target, stored);
      putOffset(t.buf, pos, target, L.OFLAG_COPIED_HI);
      if (g.extendedL2) { t.buf.writeUInt32BE(0, pos + 8); t.buf.writeUInt32BE(0xffffffff, pos + 12); } // all subclusters allocated
      t.dirty = true;
    }
    this.written++;
    if (++this.pending >= MAX_PENDING || this.batchData >= MAX_BATCH_DATA || this.tables.size * cs >= MAX_TABLE_BYTES) await this.flush();
  }

  /**
   * Queues guest cluster `guestOffset` to hold `compressed` (its compressed bytes, shorter than a
   * cluster). Throws, after writing what was queued, when the entry already has a host offset.
   */
  async writeCompressed(guestOffset: number, compressed: Buffer): Promise<void> {
    throwIfCancelled(this.signal, this.img.path, 'write');
    const img = this.img, g = img.g, cs = this.cs;
    if (guestOffset % cs !== 0 || guestOffset >= img.virtualSize) throw new RangeError(`guest cluster ${guestOffset} is not a cluster of the disk`);
    if (compressed.length >= cs) throw new RangeError('a compressed cluster must be shorter than a cluster');
    if (this.cipher) throw new Qcow2Error(img.path, 'header.crypt_method', L.HEADER_FIELD.crypt_method.offset, 'compressed clusters are not written into an encrypted image: QEMU stores compressed clusters unencrypted', 'unsupported');
    const l1Index = Math.floor(guestOffset / this.perL2);
    const l2Index = (guestOffset % this.perL2) / cs;
    const t = await this.table(l1Index);
    const pos = l2Index * g.l2EntrySize;
    const hi = wordHi(t.buf, pos), lo = wordLo(t.buf, pos);
    if (isCompressed(hi) || entryOffset(hi, lo) !== 0) {
      await this.flush();
      throw new Qcow2Error(img.path, l2EntryPath('L1', l1Index, l2Index), t.offset + pos,
        `error while writing at byte ${guestOffset}: Input/output error (a compressed cluster cannot be written over an allocated one; QEMU refuses it the same way)`, 'unsupported');
    }
    let p = this.packing;
    if (!p || cs - p.used < compressed.length) {
      if (p) await this.queueData(p.host, p.buf);
      p = this.packing = { host: this.rc.allocate(1, 'compressed data'), buf: Buffer.alloc(cs), used: 0 };
    } else {
      this.rc.add(p.host / cs, 1, 'compressed data');
    }
    const host = p.host + p.used;
    compressed.copy(p.buf, p.used);
    p.used += compressed.length;
    putEntry(t.buf, pos, compressedEntryHi(g, host, compressed.length), host >>> 0);
    if (g.extendedL2) putEntry(t.buf, pos + 8, 0, 0);
    t.dirty = true;
    this.written++;
    if (++this.pending >= MAX_PENDING || this.batchData >= MAX_BATCH_DATA || this.tables.size * cs >= MAX_TABLE_BYTES) await this.flush();
  }

  /** Phase 1 for one cluster's bytes at `host`: joined to the run being built when it follows it, else the run is issued and a new one begun. */
  private async queueData(host: number, bytes: Buffer): Promise<void> {
    const r = this.run;
    const last = r?.parts[r.parts.length - 1];
    // the caller's clusters are often views of one buffer, one after the other: joined as a wider view, no copy
    const view = last !== undefined && last.buffer === bytes.buffer && last.byteOffset + last.length === bytes.byteOffset;
    if (r && last && r.end === host && r.end - r.host + bytes.length <= (view ? MAX_DATA_WRITE : MAX_COPY_JOIN)) {
      if (view) r.parts[r.parts.length - 1] = Buffer.from(last.buffer, last.byteOffset, last.length + bytes.length);
      else r.parts.push(bytes); // small pieces: copied into one write when it is issued
      r.end += bytes.length;
    } else {
      await this.issueRun();
      this.run = { host, end: host + bytes.length, parts: [bytes] };
    }
    this.batchData += bytes.length;
  }

  /** Issues the run being built as one write (after any write in flight over the same bytes, so the later content lands last). */
  private async issueRun(): Promise<void> {
    const r = this.run;
    if (!r) return;
    this.run = null;
    for (const [p, [s, e]] of [...this.inflight]) if (s < r.end && r.host < e) await p;
    while (this.inflight.size >= MAX_INFLIGHT) await Promise.race(this.inflight.keys());
    if (this.failure) throw this.failure;
    const bytes = r.parts.length === 1 ? r.parts[0] : Buffer.concat(r.parts);
    const p: Promise<void> = writeAt(this.img.file, r.host, bytes, `data cluster at ${hex(r.host)}`)
      .catch((e: unknown) => { this.failure ??= e instanceof Error ? e : new Error(String(e)); })
      .finally(() => { this.inflight.delete(p); });
    this.inflight.set(p, [r.host, r.end]);
  }

  /** Phase 1 complete: the last run issued, every data write completed (the first failure thrown). */
  private async drainData(): Promise<void> {
    await this.issueRun();
    while (this.inflight.size) await Promise.all([...this.inflight.keys()]);
    if (this.failure) throw this.failure;
  }

  /** Writes everything queued, in the order at the top of this file. */
  async flush(): Promise<void> {
    if (this.pending === 0 && this.frees.length === 0) return;
    const file = this.img.file;
    if (this.packing) { await this.queueData(this.packing.host, this.packing.buf); this.packing = null; }
    // 1. data (issued as it was queued): completed, then synced
    await this.drainData();
    if (this.batchData) await file.sync();
    // 2. refcounts of what is new
    await this.rc.flush();
    // 3. L2 tables
    const order = [...this.tables].sort((a, b) => a[1].offset - b[1].offset);
    let any = false;
    for (const [i, t] of order) {
      if (!t.dirty) continue;
      await writeAt(file, t.offset, t.buf, `L1[${i}] → L2 table`);
      any = true;
    }
    if (any) await file.sync();
    // 4. L1 entries, one write per run of consecutive indexes
    const relink = [...this.tables].filter(([, t]) => t.relink).map(([i]) => i).sort((a, b) => a - b);
    const l1 = this.img.l1;
    for (const [i] of this.tables) {
      const t = this.tables.get(i)!;
      if (t.relink) putOffset(l1, i * 8, t.offset, L.OFLAG_COPIED_HI);
    }
    for (let k = 0; k < relink.length;) {
      let j = k + 1;
      while (j < relink.length && relink[j] === relink[j - 1] + 1) j++;
      const first = relink[k], n = j - k;
      await writeAt(file, this.img.header.l1TableOffset + first * 8, l1.subarray(first * 8, (first + n) * 8), `L1[${first}]`);
      k = j;
    }
    if (relink.length) await file.sync();
    // 5. what the old entries referenced
    for (const [off, len, what] of this.frees) this.rc.free(off, len, what);
    await this.rc.flush();
    this.tables.clear();
    this.batchData = 0;
    this.frees = [];
    this.pending = 0;
  }

  async close(): Promise<void> {
    // after a failure: the writes still in flight end (their result no longer matters) before the file closes
    this.run = null;
    await Promise.allSettled([...this.inflight.keys()]);
    await this.img.close();
  }
}
