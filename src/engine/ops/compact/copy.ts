/**
 * The data copy: every kept cluster, in source order. Uncompressed clusters go to the image from
 * cluster 1 on; compressed ones to a side stream that is placed last (after the metadata), so the
 * file ends mid-cluster as qemu-img's does instead of padding a final cluster. All-zero clusters
 * are dropped. A pipeline keeps the disk and both compression workers busy.
 */
import * as zlib from 'node:zlib';
import { throwIfCancelled } from '../../cancel';
import { Qcow2Error } from '../../errors';
import type { Qcow2Image } from '../../image/image';
import { nativeCopy, type NativeCopy } from '../../io/copyRange';
import { forEachHostPiece, holeSeeker } from '../../io/holes';
import { SubclusterType } from '../../qcow2/cluster';
import { decompressCluster, zstdFrameLength } from '../../qcow2/compress';
import * as L from '../../qcow2/layout';
import { type CompactCrypto, decrypt, seal } from './encrypted';
import type { OutFile } from './output';
import { ClusterPlaces, CompressedPlaces } from './places';
import type { CompactPlan, DropSet, Job } from './plan';
import type { CompressPool, Slot } from './pool';

/** A data cluster that reads as zero: it becomes a zero flag (overlay) or unallocated. */
export const ZERO = -1;
export type { Dest } from './places';

/** Where each kept cluster now lies (typed arrays: places.ts). */
export interface Placement {
  /**
   * Source host (or re-clustering job id) → output host offset, or ZERO; a data cluster compressed
   * on the way: its place in the stream (`data.stream`).
   */
  data: ClusterPlaces;
  /** Compressed source offset → its destination. Stream hosts are relative to the stream's start. */
  compressed: CompressedPlaces;
  /** Bytes of the compressed stream. */
  streamLen: number;
}

export interface CopyInput {
  img: Qcow2Image;
  /** Re-clustering an overlay: the image with its backing chain, for guest reads through it. */
  full: Qcow2Image | null;
  plan: CompactPlan;
  recluster: boolean;
  detectZero: boolean;
  /** Source clusters dropped unread, as if they read as zero (sparsify). */
  drop?: DropSet;
  outType: number;
  out: OutFile;
  stream: OutFile;
  pool: CompressPool | null;
  /** An encrypted source (encrypted.ts): clusters decrypted as read, encrypted for their new place. */
  crypt?: CompactCrypto | null;
  progress(bytes: number): void;
  signal?: AbortSignal;
}

interface Batch { list: number[]; bufs: Map<number, Buffer>; batchBuf: Buffer; holeOnly?: Set<number> }
interface Ready { list: number[]; bufs: Map<number, Buffer>; batchBuf: Buffer; keep: number[] }

/** Batches of this many bytes are read, compressed and written as one. */
const BATCH_BYTES = 4 * 1024 * 1024;
/** Batches prepared (read, compressed) ahead of the one being written. */
const AHEAD = 3;

/** Copies the data clusters, then the compressed source clusters; drains both outputs. */
export async function copyClusters(c: CopyInput): Promise<Placement> {
  const { plan, out, stream } = c;
  const cs = plan.cs;
  const clusters = c.recluster ? plan.jobs.length + 1 : Math.ceil(c.img.file.size / cs);
  const data = new ClusterPlaces(clusters, cs, clusters + plan.tables.compressed.size + 1);
  const compressed = new CompressedPlaces(plan.tables.compressed.keys());
  const zero = Buffer.alloc(cs);
  let sorted: Float64Array = c.recluster ? Float64Array.from(plan.jobs, j => j.fake) : plan.tables.data.sorted();
  const drop = c.drop?.data;
  if (drop?.size) {
    for (const s of drop) if (plan.tables.data.has(s)) { data.set(s, ZERO); c.progress(cs); }
    sorted = sorted.filter(s => !drop.has(s));
  }
  const native = !c.crypt && !c.pool && !c.recluster ? nativeCopy() : undefined;
  if (native) await copyInKernel(c, native, sorted, data);
  else if (c.pool) await copyCompressing(c, c.pool, sorted, data, zero);
  else await copyThrough(c, sorted, data, zero);
  await copyCompressed(c, compressed, zero);
  await out.drain();
  await stream.drain();
  return { data, compressed, streamLen: stream.pos };
}

/** Runs `place` over batches `0, step, 2·step…` of `count`, `ahead` of them prepared while one is placed. */
async function pipeline<R>(c: CopyInput, count: number, step: number, ahead: number, prepare: (k: number) => Promise<R>, place: (r: R) => Promise<void>): Promise<void> {
  const queue: Promise<R>[] = [];
  try {
    for (let k = 0; k < count; k += step) {
      throwIfCancelled(c.signal, c.img.path, 'compaction');
      const p = prepare(k);
      p.catch(() => undefined); // awaited in order below
      queue.push(p);
      if (queue.length >= ahead) await place(await queue.shift()!);
    }
    while (queue.length) {
      throwIfCancelled(c.signal, c.img.path, 'compaction');
      await place(await queue.shift()!);
    }
  } finally {
    await Promise.allSettled(queue);
  }
}

/** Which of a batch's clusters are kept (not zero): the rest are placed as ZERO. */
function keptOf(c: CopyInput, batch: Batch, data: ClusterPlaces, zero: Buffer): number[] {
  // encrypted: the stored bytes of a hole are not zeros of the guest, so every cluster is decrypted and looked at
  const holeOnly = c.crypt ? undefined : batch.holeOnly;
  const keep: number[] = [];
  for (let i = 0; i < batch.list.length; i++) {
    const s = batch.list[i];
    if (c.detectZero && (holeOnly?.has(s) || batch.bufs.get(s)!.equals(zero))) data.set(s, ZERO);
    else keep.push(i);
  }
  return keep;
}

/** The copy through user space without compression (encrypted, or re-clustered), in reused batch buffers. */
async function copyThrough(c: CopyInput, sorted: Float64Array, data: ClusterPlaces, zero: Buffer): Promise<void> {
  const { plan, out } = c, cs = plan.cs;
  const BATCH = Math.max(1, Math.floor(BATCH_BYTES / cs));
  const read = new BatchReader(c, BATCH);
  const prepare = async (k: number): Promise<Ready> => {
    const batch = c.recluster ? await read.jobs(k, plan.jobs, sorted) : await read.clusters(k, sorted);
    if (c.crypt) decrypt(c.crypt, batch.list, batch.bufs);
    return { ...batch, keep: keptOf(c, batch, data, zero).map(i => batch.list[i]) };
  };
  const place = async ({ list, bufs, batchBuf, keep }: Ready) => {
    for (const s of keep) data.set(s, await out.append(seal(c.crypt, out, bufs.get(s)!)));
    await out.flush();
    // the batch buffer is free again once its bytes are on disk; at once when none were kept
    // (all-zero batches: without this, hole-only batches read with no I/O outran the recycling)
    if (keep.length === 0) read.spare.push(batchBuf);
    else out.whenWritten().then(() => read.spare.push(batchBuf), () => undefined);
    c.progress(list.length * cs);
  };
  await pipeline(c, sorted.length, BATCH, AHEAD, prepare, place);
}

interface SlotBatch { list: number[]; bufs: Map<number, Buffer>; slot: Slot; keep: number[]; lengths: number[] }

/**
 * The compressing copy, in the pool's slots (pool.ts): a batch is read into a slot's input, its
 * kept clusters compressed into the slot's output by a worker, then written from the slot (the
 * compressed ones to the stream, those that do not shrink to the image) and the slot given back
 * once both writes are done. The batches in flight are bounded by the slots: reading waits for a
 * free one, so memory does not grow with the disk, whichever side (disk or CPU) is slower.
 */
async function copyCompressing(c: CopyInput, pool: CompressPool, sorted: Float64Array, data: ClusterPlaces, zero: Buffer): Promise<void> {
  const { plan, out, stream } = c, cs = plan.cs;
  const BATCH = Math.max(1, Math.floor(pool.slotBytes / cs));
  const read = new BatchReader(c, BATCH);
  const prepare = async (k: number): Promise<SlotBatch> => {
    const slot = await pool.acquire();
    try {
      const batch = c.recluster ? await read.jobs(k, plan.jobs, sorted, slot.input) : await read.clusters(k, sorted, slot.input);
      const keep = keptOf(c, batch, data, zero);
      const lengths = keep.length ? await pool.compressSlot(slot, cs, keep) : [];
      return { list: batch.list, bufs: batch.bufs, slot, keep, lengths };
    } catch (e) {
      pool.release(slot);
      throw e;
    }
  };
  const place = async ({ list, bufs, slot, keep, lengths }: SlotBatch) => {
    try {
      let at = 0;
      for (let j = 0; j < keep.length; j++) {
        const s = list[keep[j]], len = lengths[j];
        if (len < 0) { data.set(s, out.push(bufs.get(s)!)); continue; }
        data.setStream(s, stream.push(slot.output.subarray(at, at + len)), len);
        at += len;
      }
      await out.flush();
      await stream.flush();
    } finally {
      // the slot is free again once every write reading from it is done (or failed: it no longer reads)
      const release = () => pool.release(slot);
      Promise.all([out.whenWritten(), stream.whenWritten()]).then(release, release);
    }
    c.progress(list.length * cs);
  };
  // every slot but the ones whose writes are still running may be filling or compressing
  await pipeline(c, sorted.length, BATCH, Math.max(1, pool.slotCount - 2), prepare, place);
}

/** Source clusters looked at (for zeros) and copied per batch on the in-kernel path. */
const KERNEL_BATCH_BYTES = 16 * 1024 * 1024;

/**
 * The plain data copy (no compression, no encryption, same cluster size) with no user-space copy:
 * each batch's zero clusters found ahead (holes asked of the file system, the rest by zeroScan,
 * which reads a cluster's first 512 bytes and the rest only when those are zero), then each run of
 * kept clusters adjacent in the source copied as one copy_file_range (OutFile.copyFrom, which
 * falls back to read and write where the kernel refuses).
 */
async function copyInKernel(c: CopyInput, native: NativeCopy, sorted: Float64Array, data: ClusterPlaces): Promise<void> {
  const { out } = c, file = c.img.file, cs = c.plan.cs;
  const BATCH = Math.max(1, Math.floor(KERNEL_BATCH_BYTES / cs));
  const seeker = holeSeeker();
  // which of sorted[k…k+n) read as zero (1) or are kept (0)
  const scan = async (k: number, n: number): Promise<Uint8Array> => {
    const mask = new Uint8Array(new ArrayBuffer(n));
    if (!c.detectZero) return mask;
    const scans: Promise<number>[] = [];
    const scanRun = (i: number, j: number) => { if (j > i) scans.push(native.zeroScan(file.handle.fd, sorted[k + i], j - i, cs, mask.subarray(i, j))); };
    for (let i = 0; i < n;) {
      let j = i + 1;
      while (j < n && sorted[k + j] === sorted[k + j - 1] + cs) j++;
      const host = sorted[k + i], avail = Math.max(0, Math.min((j - i) * cs, file.size - host));
      // clusters wholly in a hole of the host file, or past its end, are zero unread
      const hole = new Uint8Array(j - i);
      for (let x = Math.ceil(avail / cs); x < j - i; x++) hole[x] = 1;
      if (seeker && avail) {
        forEachHostPiece(seeker, file.handle.fd, host, avail, (at, len, isHole) => {
          if (!isHole) return;
          for (let x = Math.ceil((at - host) / cs); (x + 1) * cs <= at - host + len; x++) hole[x] = 1;
        });
      }
      let from = i;
      for (let x = i; x < j; x++) {
        if (!hole[x - i]) continue;
        mask[x] = 1;
        scanRun(from, x);
        from = x + 1;
      }
      scanRun(from, j);
      i = j;
    }
    await Promise.all(scans);
    return mask;
  };
  const ahead: { k: number; n: number; mask: Promise<Uint8Array> }[] = [];
  const place = async ({ k, n, mask }: { k: number; n: number; mask: Promise<Uint8Array> }) => {
    const m = await mask;
    for (let i = 0; i < n;) {
      if (m[i]) { data.set(sorted[k + i], ZERO); i++; continue; }
      let j = i + 1;
      while (j < n && !m[j] && sorted[k + j] === sorted[k + j - 1] + cs) j++;
      const at = await out.copyFrom(file, sorted[k + i], (j - i) * cs, native);
      for (let x = i; x < j; x++) data.set(sorted[k + x], at + (x - i) * cs);
      i = j;
    }
    c.progress(n * cs);
  };
  try {
    for (let k = 0; k < sorted.length; k += BATCH) {
      throwIfCancelled(c.signal, c.img.path, 'compaction');
      const n = Math.min(BATCH, sorted.length - k);
      const mask = scan(k, n);
      mask.catch(() => undefined); // awaited in order by place
      ahead.push({ k, n, mask });
      if (ahead.length >= AHEAD) await place(ahead.shift()!);
    }
    while (ahead.length) {
      throwIfCancelled(c.signal, c.img.path, 'compaction');
      await place(ahead.shift()!);
    }
  } finally {
    await Promise.allSettled(ahead.map(a => a.mask));
  }
}

/**
 * Compressed source clusters: copied as they are (trimmed to their real length), or recompressed
 * when the compression type changes.
 */
async function copyCompressed(c: CopyInput, compressed: CompressedPlaces, zero: Buffer): Promise<void> {
  const { img, out, stream } = c;
  const h = img.header, cs = c.plan.cs;
  const compSorted = [...c.plan.tables.compressed].sort((a, b) => a[0] - b[0]);
  for (const [off, size] of compSorted) {
    throwIfCancelled(c.signal, img.path, 'compaction');
    if (c.drop?.compressed.has(off)) { compressed.set(off, { kind: 'zero' }); c.progress(cs); continue; }
    const stored = await img.file.readPadded(off, Math.min(size, 2 * cs + 512), 'compressed cluster');
    if (c.outType === h.compressionType) {
      const len = Math.min(size, compressedLength(h.compressionType, stored, cs, img.path, off));
      compressed.set(off, { kind: 'compressed', host: stream.push(Buffer.from(stored.subarray(0, len))), len });
      await stream.flushIfLarge();
    } else {
      const plain = decompressCluster(h.compressionType, stored, cs);
      if (plain.equals(zero) && c.detectZero) { compressed.set(off, { kind: 'zero' }); c.progress(cs); continue; }
      // a different output type comes only from --compress, which started the pool
      const r = await c.pool!.compress(plain, cs);
      if (r.lengths[0] < 0) compressed.set(off, { kind: 'data', host: await out.append(plain) });
      else compressed.set(off, { kind: 'compressed', host: stream.push(Buffer.from(r.data)), len: r.lengths[0] });
    }
    c.progress(cs);
  }
}

/** The real length of a stored compressed cluster (the L2 entry only bounds it to 512-byte sectors). */
export function compressedLength(type: number, stored: Buffer, cs: number, file: string, off: number): number {
  try {
    if (type === L.COMPRESSION_ZSTD) return zstdFrameLength(stored);
    const r = zlib.inflateRawSync(stored, { info: true, finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: cs }) as unknown as { engine: { bytesWritten: number } };
    return r.engine.bytesWritten;
  } catch (e) {
    throw new Qcow2Error(file, 'compressed cluster', off, `cannot be decoded (${(e as Error).message})`);
  }
}

/**
 * Reads batches of clusters into reused buffers (fresh 4 MiB buffers cost page faults): runs of
 * adjacent source clusters in one read each, or re-clustering jobs assembled from their pieces.
 */
class BatchReader {
  readonly spare: Buffer[] = [];
  private lastComp: { off: number; data: Buffer } | null = null;
  // Holes of a sparse host file (preallocation=metadata) are zeros: asked of the file system
  // (SEEK_DATA/SEEK_HOLE, native/holes.c) instead of read, and clusters wholly inside one are
  // known to be zero without comparing their bytes.
  private readonly seeker = holeSeeker();
  private readonly cs: number;
  constructor(private readonly c: CopyInput, private readonly batch: number) {
    this.cs = c.plan.cs;
  }

  private buffer(): Buffer {
    return this.spare.pop() ?? Buffer.allocUnsafeSlow(this.batch * this.cs);
  }

  /** Source clusters `sorted[k…]`, each batch's adjacent ones read as one run (into `into`, else a reused buffer). */
  async clusters(k: number, sorted: Float64Array, into?: Buffer): Promise<Batch> {
    const cs = this.cs;
    const list = Array.from(sorted.subarray(k, k + this.batch));
    const bufs = new Map<number, Buffer>();
    const holeOnly = new Set<number>();
    const batchBuf = into ?? this.buffer();
    let i = 0;
    while (i < list.length) {
      let j = i + 1;
      while (j < list.length && list[j] === list[j - 1] + cs) j++;
      const b = batchBuf.subarray(i * cs, j * cs);
      await this.run(b, list[i], holeOnly);
      for (let k2 = i; k2 < j; k2++) bufs.set(list[k2], b.subarray((k2 - i) * cs, (k2 - i + 1) * cs));
      i = j;
    }
    return { list, bufs, batchBuf, holeOnly };
  }

  /** Re-clustering jobs `jobs[k…]`, each output cluster assembled from its pieces. */
  async jobs(k: number, jobs: Job[], sorted: Float64Array, into?: Buffer): Promise<Batch> {
    const { img, full } = this.c;
    const cs = this.cs;
    const list = Array.from(sorted.subarray(k, k + this.batch));
    const bufs = new Map<number, Buffer>();
    const batchBuf = into ?? this.buffer();
    for (let i = 0; i < list.length; i++) {
      const job = jobs[k + i];
      const b = batchBuf.subarray(i * cs, (i + 1) * cs);
      b.fill(0);
      for (const p of job.pieces) {
        const at = p.guest - job.guest;
        if (p.type === SubclusterType.Normal) (await img.file.readPadded(p.host, p.len, 'data cluster')).copy(b, at);
        else if (p.type === SubclusterType.Compressed) {
          let lc = this.lastComp;
          if (!lc || lc.off !== p.comp) this.lastComp = lc = { off: p.comp!, data: await img.readCompressedCluster(p.comp!, p.compSize!, 'compressed cluster') };
          lc.data.copy(b, at, p.within, p.within + p.len);
        } else if ((p.type === SubclusterType.UnallocatedPlain || p.type === SubclusterType.UnallocatedAlloc) && full?.backing) {
          const bEnd = Math.min(p.guest + p.len, full.backing.virtualSize);
          if (bEnd > p.guest) (await full.backing.readGuest(p.guest, bEnd - p.guest)).copy(b, at);
        }
      }
      bufs.set(list[i], b);
    }
    return { list, bufs, batchBuf };
  }

  /** Reads the run at `host` into `b`; clusters known to be zero without reading go to `holeOnly`. */
  private async run(b: Buffer, host: number, holeOnly: Set<number>): Promise<void> {
    const file = this.c.img.file, cs = this.cs;
    const avail = Math.max(0, Math.min(b.length, file.size - host));
    b.fill(0, avail); // data clusters past the end of the file read as zero, as in QEMU
    const readInto = async (from: number, len: number) => {
      let got = 0;
      while (got < len) {
        const { bytesRead } = await file.handle.read(b, from - host + got, len - got, from + got);
        if (bytesRead === 0) { b.fill(0, from - host + got, from - host + len); break; }
        got += bytesRead;
      }
    };
    if (!this.seeker) return readInto(host, avail);
    const pieces: { at: number; len: number; hole: boolean }[] = [];
    forEachHostPiece(this.seeker, file.handle.fd, host, avail, (at, len, hole) => pieces.push({ at, len, hole }));
    for (const p of pieces) {
      if (!p.hole) { await readInto(p.at, p.len); continue; }
      b.fill(0, p.at - host, p.at - host + p.len);
      for (let c = Math.ceil((p.at - host) / cs) * cs; c + cs <= p.at - host + p.len; c += cs) holeOnly.add(host + c);
    }
    for (let c = Math.ceil(avail / cs) * cs; c < b.length; c += cs) holeOnly.add(host + c); // wholly past the end
  }
}
