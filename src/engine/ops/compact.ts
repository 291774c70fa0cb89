/**
 * Compaction: a new image holding only the clusters that carry data. Unlike `qemu-img convert` it
 * keeps internal snapshots (a source host cluster shared by several L2 tables is copied once and
 * stays shared), persistent bitmaps and the backing file reference (unallocated stays
 * unallocated; in an overlay, zero stays zero-flagged). Optionally compresses (zlib or zstd) on
 * two worker threads.
 *
 * Crash safety: the new image is written to a temporary file in the destination's folder, synced,
 * then renamed over the destination (and the folder synced). The source is only read; a crash or a
 * cancellation leaves it untouched (the temporary file is removed on cancel/error).
 *
 * Output layout: cluster 0 header (+ extensions, backing file name, copied from the source), data
 * clusters (compressed ones packed byte-wise, as QEMU packs them), then L2 tables, L1 tables,
 * snapshot table, bitmap data/tables/directory, refcount blocks and the refcount table.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { readBitmapTable } from '../qcow2/bitmap';
import { decodeCompressed, entryOffset, l2Geometry, SubclusterType, wordHi, wordLo } from '../qcow2/cluster';
import { decompressCluster, zstdFrameLength } from '../qcow2/compress';
import * as zlib from 'node:zlib';
import type { CompressReply, CompressRequest } from '../qcow2/compress.worker';
import { Qcow2Error } from '../errors';
import { forEachHostPiece, holeSeeker } from '../io/holes';
import { Qcow2Image } from '../image/image';
import { ImageFile, readMany } from '../io/reader';
import * as L from '../qcow2/layout';
import { maxRefcount, refcountGeometry, setRefcountAt } from '../qcow2/refcount';
import { encodeSnapshot } from '../qcow2/snapshot';
import { assertNotLocked, assertWritable, beforeWrite, WriteFeature } from './writable';

export interface CompactOptions {
  /** Write here instead of replacing the source. */
  output?: string;
  compress?: 'zlib' | 'zstd';
  /** Output cluster size in bytes (default: the source's); a different size re-clusters. */
  clusterSize?: number;
  signal?: AbortSignal;
  onProgress?(doneBytes: number, totalBytes: number): void;
}

export interface CompactResult {
  bytesBefore: number;
  bytesAfter: number;
  output: string;
}

/** Where a source cluster (or compressed blob) went: an L2 entry's value without COPIED. */
const ZERO = -1; // reads as zero: becomes a zero flag (overlay) or unallocated
type Dest = { kind: 'data'; host: number } | { kind: 'compressed'; host: number; len: number } | { kind: 'zero' };

class OutFile {
  pos = 0;
  private pending: Buffer[] = [];
  private pendingStart = 0;
  private pendingBytes = 0;
  constructor(readonly f: ImageFile) {}
  /** Appends at the current end without writing yet; returns the host offset. */
  push(b: Buffer): number {
    const at = this.pos;
    if (this.pendingBytes === 0) this.pendingStart = at;
    this.pending.push(b);
    this.pendingBytes += b.length;
    this.pos += b.length;
    return at;
  }
  /** Appends at the current end (buffered into large writes). */
  async append(b: Buffer): Promise<number> {
    const at = this.push(b);
    if (this.pendingBytes >= 8 * 1024 * 1024) await this.flush();
    return at;
  }
  async flushIfLarge(): Promise<void> {
    if (this.pendingBytes >= 8 * 1024 * 1024) await this.flush();
  }
  async padTo(align: number): Promise<void> {
    const r = this.pos % align;
    if (r) await this.append(Buffer.alloc(align - r));
  }
  private inflight: Promise<void>[] = [];
  /** Starts writing what is buffered (pwritev, no copy); up to four writes run at once. */
  async flush(): Promise<void> {
    if (!this.pendingBytes) return;
    const bufs = this.pending, start = this.pendingStart, len = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    beforeWrite();
    const f = this.f;
    const p = (async () => {
      let done = 0, i = 0, skip = 0;
      while (done < len) {
        const view = bufs.slice(i);
        if (skip) view[0] = view[0].subarray(skip);
        const { bytesWritten } = await f.handle.writev(view, start + done);
        done += bytesWritten;
        // advance past what was written (short writes are rare but legal)
        let w = bytesWritten + skip;
        skip = 0;
        while (i < bufs.length && w >= bufs[i].length) { w -= bufs[i].length; i++; }
        skip = w;
      }
      if (start + len > f.size) f.size = start + len;
    })();
    p.catch(() => undefined); // awaited later; never an unhandled rejection if we stop first
    this.inflight.push(p);
    if (this.inflight.length >= 4) await this.inflight.shift();
  }
  /** Resolves once every write started so far has completed. */
  whenWritten(): Promise<unknown> {
    return Promise.all(this.inflight);
  }
  /** Waits for every started write. */
  async drain(): Promise<void> {
    await this.flush();
    const all = this.inflight;
    this.inflight = [];
    await Promise.all(all);
  }
  async writeAt(off: number, b: Buffer, what: string): Promise<void> {
    await this.drain();
    beforeWrite();
    await this.f.write(off, b, what);
  }
}

/** Two compression workers, fed batches round-robin. */
class CompressPool {
  private workers: Worker[] = [];
  private waiting = new Map<number, { resolve(r: CompressReply): void; reject(e: Error): void }>();
  private next = 0;
  private rr = 0;
  constructor(readonly type: 'zlib' | 'zstd', n = 2) {
    const file = workerPath();
    for (let i = 0; i < n; i++) {
      const w = new Worker(file);
      w.on('message', (r: CompressReply) => {
        const p = this.waiting.get(r.id);
        this.waiting.delete(r.id);
        if (r.error) p?.reject(new Error(r.error));
        else p?.resolve(r);
      });
      w.on('error', e => { for (const p of this.waiting.values()) p.reject(e); this.waiting.clear(); });
      this.workers.push(w);
    }
  }
  compress(data: Buffer, clusterSize: number): Promise<CompressReply> {
    const id = this.next++;
    const ab = data.buffer.slice(data.byteOffset, data.byteOffset + data.length) as ArrayBuffer;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.workers[this.rr++ % this.workers.length].postMessage({ id, type: this.type, clusterSize, data: ab } satisfies CompressRequest, [ab]);
    });
  }
  async close(): Promise<void> {
    await Promise.all(this.workers.map(w => w.terminate()));
  }
}

function workerPath(): string {
  const candidates = [path.join(__dirname, 'compress.worker.js')];
  for (let d = __dirname; path.dirname(d) !== d; d = path.dirname(d)) {
    candidates.push(path.join(d, 'dist', 'compress.worker.js'));
    if (fs.existsSync(path.join(d, 'package.json'))) break;
  }
  const hit = candidates.find(p => fs.existsSync(p));
  if (!hit) throw new Qcow2Error('compress.worker.js', 'file', undefined, 'the compression worker is not built (run node build.mjs)', 'io');
  return hit;
}

/** The real length of a stored compressed cluster (the L2 entry only bounds it to 512-byte sectors). */
function compressedLength(type: number, stored: Buffer, cs: number, file: string, off: number): number {
  try {
    if (type === L.COMPRESSION_ZSTD) return zstdFrameLength(stored);
    const r = zlib.inflateRawSync(stored, { info: true, finishFlush: zlib.constants.Z_SYNC_FLUSH, maxOutputLength: cs }) as unknown as { engine: { bytesWritten: number } };
    return r.engine.bytesWritten;
  } catch (e) {
    throw new Qcow2Error(file, 'compressed cluster', off, `cannot be decoded (${(e as Error).message})`);
  }
}

/** Removes temp files left by a compaction of `dest` whose process is gone (killed, crashed). */
function removeStaleTemps(dest: string): void {
  const dir = path.dirname(path.resolve(dest));
  const re = new RegExp(`^\\.${path.basename(dest).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.compact-(\\d+)-\\d+\\.tmp(\\.stream)?$`);
  let names: string[] = [];
  try { names = fs.readdirSync(dir); } catch { return; }
  for (const n of names) {
    const m = re.exec(n);
    if (!m) continue;
    const pid = Number(m[1]);
    let alive = pid === process.pid;
    if (!alive) {
      try { process.kill(pid, 0); alive = true; } catch (e) { alive = (e as NodeJS.ErrnoException).code === 'EPERM'; }
    }
    if (!alive) fs.rmSync(path.join(dir, n), { force: true });
  }
}

function cancelled(p: string): Qcow2Error {
  return new Qcow2Error(p, 'compaction', undefined, 'cancelled', 'cancelled');
}

export async function compactImage(src: string, opts: CompactOptions = {}): Promise<CompactResult> {
  assertNotLocked(src);
  if (opts.output && fs.existsSync(opts.output)) assertNotLocked(opts.output);
  const img = await Qcow2Image.open(src, { openBacking: false, openDataFile: false });
  // in place through a symbolic link: the linked file is replaced, not the link
  const dest = opts.output ?? fs.realpathSync(src);
  removeStaleTemps(dest);
  const tmp = path.join(path.dirname(path.resolve(dest)), `.${path.basename(dest)}.compact-${process.pid}-${Date.now()}.tmp`);
  const streamTmp = tmp + '.stream';
  let out: ImageFile | null = null;
  let streamFile: ImageFile | null = null;
  let pool: CompressPool | null = null;
  let full: Qcow2Image | null = null;
  try {
    const h = img.header;
    const features: WriteFeature[] = [];
    if (opts.compress === 'zstd') features.push('zstd');
    assertWritable(img, features);
    if (img.encrypted) throw new Qcow2Error(src, 'header.crypt_method', 32, 'encrypted images cannot be compacted (the key is not handled)', 'unsupported');
    if ((h.incompatibleFeatures & L.INCOMPAT_DATA_FILE) !== 0n) throw new Qcow2Error(src, 'header.incompatible_features', 72, 'images with an external data file hold no data clusters to compact', 'unsupported');
    const recluster = opts.clusterSize !== undefined && opts.clusterSize !== h.clusterSize;
    if (recluster) {
      const c = opts.clusterSize!;
      if (!Number.isInteger(Math.log2(c)) || c < 2 ** L.MIN_CLUSTER_BITS || c > 2 ** L.MAX_CLUSTER_BITS) {
        throw new Qcow2Error(src, 'cluster size', undefined, `${c} is not a power of two between 512 and 2 MiB`, 'unsupported');
      }
      if (h.headerEnd > c) throw new Qcow2Error(src, 'header', 0, `the header and its extensions (${h.headerEnd} bytes) do not fit in a ${c}-byte cluster`, 'unsupported');
    }
    if (opts.compress && img.g.extendedL2) {
      throw new Qcow2Error(src, 'header.incompatible_features', 72, 'compressing an image with extended L2 entries (subclusters) is not supported', 'unsupported');
    }
    const outType = opts.compress === 'zstd' ? L.COMPRESSION_ZSTD : opts.compress === 'zlib' ? L.COMPRESSION_ZLIB : h.compressionType;
    if (outType === L.COMPRESSION_ZSTD && h.headerLength <= 104) {
      throw new Qcow2Error(src, 'header.header_length', 100, 'the header has no compression_type field, so zstd cannot be recorded', 'unsupported');
    }
    let g = img.g;
    let cs = h.clusterSize;
    const hasBacking = !!h.backingFile;
    // zero flags are kept in overlays (they hide backing data); a v2 overlay keeps zero data clusters
    const canZeroFlag = h.version >= 3;
    const detectZero = !g.extendedL2 && (!hasBacking || canZeroFlag);
    const bytesBefore = img.file.size;
    const st = fs.statSync(src);
    const stamp = fs.statSync(src, { bigint: true });

    // ── pass A: every L1 table and the distinct source clusters they reach ──
    const l1Tables: { l1: Buffer; label: string }[] = [{ l1: img.l1, label: 'L1' }];
    for (const sn of img.snapshots) {
      l1Tables.push({ l1: sn.l1Size ? await img.file.read(sn.l1TableOffset, sn.l1Size * 8, `snapshot "${sn.name}" L1 table`) : Buffer.alloc(0), label: `snapshot "${sn.name}" L1` });
    }
    const srcL2 = new Map<number, Buffer>();
    const dataSet = new Set<number>(); // source host offsets of data clusters
    const compSet = new Map<number, number>(); // compressed source offset -> size
    for (const { l1, label } of l1Tables) {
      const offs: number[] = [];
      for (let i = 0; i < l1.length / 8; i++) {
        const o = entryOffset(wordHi(l1, i * 8), wordLo(l1, i * 8));
        if (o && !srcL2.has(o)) { img.checkL2Offset(o, i, label); offs.push(o); }
      }
      const got = await readMany(img.file, offs, cs, o => `${label} → L2 table at 0x${o.toString(16)}`);
      for (const [o, t] of got) {
        srcL2.set(o, t);
        for (let j = 0; j < g.l2Size; j++) {
          const p = j * g.l2EntrySize;
          const hi = wordHi(t, p), lo = wordLo(t, p);
          if (hi & 0x40000000) {
            const c = decodeCompressed(g, hi, lo);
            compSet.set(c.hostOffset, c.compressedSize);
          } else {
            const host = entryOffset(hi, lo);
            if (host && !(!g.extendedL2 && (lo & 1))) {
              if (host % cs) throw new Qcow2Error(src, `${label} → L2 table at 0x${o.toString(16)}[${j}]`, o + p, 'data cluster offset is not cluster-aligned');
              dataSet.add(host);
            }
          }
        }
      }
    }
    // ── re-clustering (--cluster-size differs): the guest view of every L1 table is cut into
    // output clusters; each distinct content source (the same source clusters, or slices of them)
    // becomes one output cluster, so what snapshots share stays shared. The result is expressed as
    // synthetic "source" L1/L2 tables over synthetic host ids, which the rest of this function
    // lays out exactly as it does for a same-size compaction. ──
    type Piece = { type: SubclusterType; guest: number; len: number; host: number; comp?: number; compSize?: number; within: number };
    const jobs: { fake: number; guest: number; pieces: Piece[] }[] = [];
    if (recluster) {
      if (img.bitmaps.length) throw new Qcow2Error(src, 'bitmaps', undefined, 'changing the cluster size of an image with persistent bitmaps is not supported', 'unsupported');
      if (g.extendedL2) throw new Qcow2Error(src, 'header.incompatible_features', 72, 'changing the cluster size of an image with extended L2 entries is not supported', 'unsupported');
      // a savevm snapshot's VM state lies past its disk size, at an offset that depends on the
      // cluster size; the guest-view walk below would drop it
      const withState = img.snapshots.find(sn => (sn.vmStateSizeLarge ?? sn.vmStateSize) > 0);
      if (withState) throw new Qcow2Error(src, `snapshot "${withState.name}"`, withState.hostOffset, 'changing the cluster size of an image whose snapshots carry VM state is not supported', 'unsupported');
      const ocs = opts.clusterSize!;
      const og = l2Geometry(Math.log2(ocs), false);
      if (hasBacking) full = await Qcow2Image.open(src, { openDataFile: false });
      const byKey = new Map<string, number>();
      const fakeL2 = new Map<number, Buffer>();
      const byContent = new Map<string, number>();
      let nextFakeL2 = 1;
      const trivial = (t: SubclusterType) => t === SubclusterType.UnallocatedPlain || t === SubclusterType.UnallocatedAlloc ||
        (!hasBacking && (t === SubclusterType.ZeroPlain || t === SubclusterType.ZeroAlloc));
      const isUnalloc = (t: SubclusterType) => t === SubclusterType.UnallocatedPlain || t === SubclusterType.UnallocatedAlloc;
      const isZero = (t: SubclusterType) => t === SubclusterType.ZeroPlain || t === SubclusterType.ZeroAlloc;
      const newTables: { l1: Buffer; label: string }[] = [];
      const sizes = [h.size, ...img.snapshots.map(sn => sn.diskSize ?? h.size)];
      for (let ti = 0; ti < l1Tables.length; ti++) {
        const { l1: srcL1, label } = l1Tables[ti];
        const size = sizes[ti];
        const perL2 = ocs * og.l2Size;
        const l1 = Buffer.alloc(Math.ceil(size / perL2) * 8);
        const l2For = new Map<number, Buffer>();
        const setEntry = (c: number, hi: number, lo: number) => {
          const li = Math.floor(c / og.l2Size);
          let t = l2For.get(li);
          if (!t) { t = Buffer.alloc(ocs); l2For.set(li, t); }
          t.writeUInt32BE(hi >>> 0, (c % og.l2Size) * 8);
          t.writeUInt32BE(lo >>> 0, (c % og.l2Size) * 8 + 4);
        };
        let cur: { index: number; pieces: Piece[] } | null = null;
        const finalize = () => {
          if (!cur) return;
          const ps = cur.pieces;
          const c = cur.index;
          cur = null;
          if (ps.every(p => isUnalloc(p.type))) return;
          // zero throughout (without a backing file, unallocated reads as zero too)
          if (ps.every(p => isZero(p.type) || (!hasBacking && isUnalloc(p.type)))) { if (hasBacking) setEntry(c, 0, 1); return; }
          const key = ps.map(p => p.type === SubclusterType.Normal ? `d${p.host}:${p.len}` : p.type === SubclusterType.Compressed ? `c${p.comp}+${p.within}:${p.len}`
            : isZero(p.type) ? `z${p.len}` : `u${p.guest}:${p.len}`).join('|');
          let fake = byKey.get(key);
          if (fake === undefined) {
            fake = (jobs.length + 1) * ocs;
            byKey.set(key, fake);
            jobs.push({ fake, guest: c * ocs, pieces: ps });
          }
          setEntry(c, Math.floor(fake / 0x100000000), fake >>> 0);
        };
        await img.walk(0, size, r => {
          let pos = r.guestOffset;
          const end = r.guestOffset + r.length;
          while (pos < end) {
            const c = Math.floor(pos / ocs);
            if (cur && cur.index !== c) finalize();
            if (trivial(r.type) && pos % ocs === 0 && end - pos >= ocs) {
              pos += Math.floor((end - pos) / ocs) * ocs; // whole clusters with nothing to keep
              continue;
            }
            const ce = Math.min(end, (c + 1) * ocs);
            if (!cur) cur = { index: c, pieces: [] };
            cur.pieces.push({
              type: r.type, guest: pos, len: ce - pos,
              host: r.type === SubclusterType.Normal ? r.hostOffset + (pos - r.guestOffset) : 0,
              comp: r.compressedOffset, compSize: r.compressedSize, within: pos % cs,
            });
            pos = ce;
          }
        }, { l1: srcL1, l1Label: label, signal: opts.signal });
        finalize();
        for (const [li, t] of l2For) {
          const k = t.toString('base64');
          let off = byContent.get(k);
          if (off === undefined) { off = nextFakeL2++ * ocs; byContent.set(k, off); fakeL2.set(off, t); }
          l1.writeBigUInt64BE(BigInt(off), li * 8);
        }
        newTables.push({ l1, label });
      }
      // from here on, the synthetic tables are the source and the output geometry is the geometry
      l1Tables.splice(0, l1Tables.length, ...newTables);
      srcL2.clear();
      for (const [o, t] of fakeL2) srcL2.set(o, t);
      dataSet.clear();
      compSet.clear();
      g = og;
      cs = ocs;
    }
    const bitmapTables = [];
    for (const bm of img.bitmaps) bitmapTables.push(await readBitmapTable(img.file, bm));
    const bitmapClusters = bitmapTables.reduce((a, t) => a + t.filter(e => e.hostOffset).length, 0);
    const totalBytes = (dataSet.size + compSet.size + bitmapClusters + jobs.length) * cs;
    let doneBytes = 0;
    const progress = (n: number) => { doneBytes += n; opts.onProgress?.(Math.min(doneBytes, totalBytes), totalBytes); };

    // ── pass B: data, in source order. Uncompressed clusters go to the image from cluster 1 on;
    // compressed ones to a side stream that is placed last (after the metadata), so the file ends
    // mid-cluster as qemu-img's does instead of padding a final cluster. ──
    const fh = await fs.promises.open(tmp, 'wx', st.mode & 0o7777);
    await fh.close();
    out = await ImageFile.open(tmp, true);
    const o = new OutFile(out);
    o.push(Buffer.alloc(cs)); // header, written last
    const sfh = await fs.promises.open(streamTmp, 'wx', 0o600);
    await sfh.close();
    streamFile = await ImageFile.open(streamTmp, true);
    const zs = new OutFile(streamFile);
    const dataDest = new Map<number, number>(); // source host -> dest host, or ZERO
    const compDest = new Map<number, Dest>(); // 'compressed' hosts are relative to the stream start
    if (opts.compress) pool = new CompressPool(opts.compress);
    const zero = Buffer.alloc(cs);
    const sorted = recluster ? jobs.map(j => j.fake) : [...dataSet].sort((a, b) => a - b);
    const BATCH = Math.max(1, Math.floor((4 * 1024 * 1024) / cs));
    // reads of the next batch overlap compression / writes of the current one
    // batch buffers are reused once their writes are done (fresh 4 MiB buffers cost page faults)
    const spare: Buffer[] = [];
    let lastComp: { off: number; data: Buffer } | null = null;
    const readJobs = async (k: number): Promise<{ list: number[]; bufs: Map<number, Buffer>; batchBuf: Buffer }> => {
      const list = sorted.slice(k, k + BATCH);
      const bufs = new Map<number, Buffer>();
      const batchBuf = spare.pop() ?? Buffer.allocUnsafeSlow(BATCH * cs);
      for (let i = 0; i < list.length; i++) {
        const job = jobs[k + i];
        const b = batchBuf.subarray(i * cs, (i + 1) * cs);
        b.fill(0);
        for (const p of job.pieces) {
          const at = p.guest - job.guest;
          if (p.type === SubclusterType.Normal) (await img.file.readPadded(p.host, p.len, 'data cluster')).copy(b, at);
          else if (p.type === SubclusterType.Compressed) {
            let lc = lastComp;
            if (!lc || lc.off !== p.comp) lastComp = lc = { off: p.comp!, data: await img.readCompressedCluster(p.comp!, p.compSize!, 'compressed cluster') };
            lc.data.copy(b, at, p.within, p.within + p.len);
          } else if ((p.type === SubclusterType.UnallocatedPlain || p.type === SubclusterType.UnallocatedAlloc) && full?.backing) {
            const bEnd = Math.min(p.guest + p.len, full.backing.virtualSize);
            if (bEnd > p.guest) (await full.backing.readGuest(p.guest, bEnd - p.guest)).copy(b, at);
          }
        }
        bufs.set(list[i], b);
      }
      return { list, bufs, batchBuf };
    };
    // Holes of a sparse host file (preallocation=metadata) are zeros: asked of the file system
    // (SEEK_DATA/SEEK_HOLE, native/holes.c) instead of read, and clusters wholly inside one are
    // known to be zero without comparing their bytes.
    const seeker = holeSeeker();
    const readRun = async (b: Buffer, host: number, holeOnly: Set<number>): Promise<void> => {
      const avail = Math.max(0, Math.min(b.length, img.file.size - host));
      b.fill(0, avail); // data clusters past the end of the file read as zero, as in QEMU
      const readInto = async (from: number, len: number) => {
        let got = 0;
        while (got < len) {
          const { bytesRead } = await img.file.handle.read(b, from - host + got, len - got, from + got);
          if (bytesRead === 0) { b.fill(0, from - host + got, from - host + len); break; }
          got += bytesRead;
        }
      };
      if (!seeker) return readInto(host, avail);
      const pieces: { at: number; len: number; hole: boolean }[] = [];
      forEachHostPiece(seeker, img.file.handle.fd, host, avail, (at, len, hole) => pieces.push({ at, len, hole }));
      for (const p of pieces) {
        if (!p.hole) { await readInto(p.at, p.len); continue; }
        b.fill(0, p.at - host, p.at - host + p.len);
        for (let c = Math.ceil((p.at - host) / cs) * cs; c + cs <= p.at - host + p.len; c += cs) holeOnly.add(host + c);
      }
      for (let c = Math.ceil(avail / cs) * cs; c < b.length; c += cs) holeOnly.add(host + c); // wholly past the end
    };
    const readBatch = async (k: number): Promise<{ list: number[]; bufs: Map<number, Buffer>; batchBuf: Buffer; holeOnly?: Set<number> }> => {
      if (recluster) return readJobs(k);
      const list = sorted.slice(k, k + BATCH);
      const bufs = new Map<number, Buffer>();
      const holeOnly = new Set<number>();
      const batchBuf = spare.pop() ?? Buffer.allocUnsafeSlow(BATCH * cs);
      let i = 0;
      while (i < list.length) {
        let j = i + 1;
        while (j < list.length && list[j] === list[j - 1] + cs) j++;
        const b = batchBuf.subarray(i * cs, j * cs);
        await readRun(b, list[i], holeOnly);
        for (let k2 = i; k2 < j; k2++) bufs.set(list[k2], b.subarray((k2 - i) * cs, (k2 - i + 1) * cs));
        i = j;
      }
      return { list, bufs, batchBuf, holeOnly };
    };
    // a pipeline: up to three batches are read (and compressed, on the workers) ahead of the one
    // being written, so the disk and both cores stay busy; results are placed in batch order
    type Ready = { list: number[]; bufs: Map<number, Buffer>; batchBuf: Buffer; keep: number[]; parts: number[][]; replies: CompressReply[] };
    const prepare = async (k: number): Promise<Ready> => {
      const { list, bufs, batchBuf, holeOnly } = await readBatch(k);
      const keep: number[] = [];
      for (const s of list) {
        if (detectZero && (holeOnly?.has(s) || bufs.get(s)!.equals(zero))) dataDest.set(s, ZERO);
        else keep.push(s);
      }
      let parts: number[][] = [], replies: CompressReply[] = [];
      if (pool && keep.length) {
        const half = Math.ceil(keep.length / 2);
        parts = [keep.slice(0, half), keep.slice(half)].filter(p => p.length);
        replies = await Promise.all(parts.map(p => pool!.compress(Buffer.concat(p.map(s => bufs.get(s)!)), cs)));
      }
      return { list, bufs, batchBuf, keep, parts, replies };
    };
    const place = async ({ list, bufs, batchBuf, keep, parts, replies }: Ready) => {
      if (pool && keep.length) {
        for (let pi = 0; pi < parts.length; pi++) {
          const r = replies[pi], data = Buffer.from(r.data);
          let at = 0;
          for (let idx = 0; idx < parts[pi].length; idx++) {
            const s = parts[pi][idx], len = r.lengths[idx];
            if (len < 0) { dataDest.set(s, await o.append(bufs.get(s)!)); continue; }
            compDest.set(-1 - s, { kind: 'compressed', host: zs.push(data.subarray(at, at + len)), len }); // keyed apart from compressed sources
            at += len;
          }
        }
        await zs.flushIfLarge();
      } else {
        for (const s of keep) dataDest.set(s, await o.append(bufs.get(s)!));
      }
      await o.flush();
      // the batch buffer is free again once its bytes are on disk; at once when none were kept
      // (all-zero batches: without this, hole-only batches read with no I/O outran the recycling)
      if (keep.length === 0) spare.push(batchBuf);
      else o.whenWritten().then(() => spare.push(batchBuf), () => undefined);
      progress(list.length * cs);
    };
    const ahead: Promise<Ready>[] = [];
    try {
      for (let k = 0; k < sorted.length; k += BATCH) {
        if (opts.signal?.aborted) throw cancelled(src);
        ahead.push(prepare(k));
        if (ahead.length >= 3) await place(await ahead.shift()!);
      }
      while (ahead.length) {
        if (opts.signal?.aborted) throw cancelled(src);
        await place(await ahead.shift()!);
      }
    } finally {
      await Promise.allSettled(ahead);
    }
    // compressed source clusters: copied as they are (trimmed to their real length), or
    // recompressed when the compression type changes
    const compSorted = [...compSet].sort((a, b) => a[0] - b[0]);
    for (const [off, size] of compSorted) {
      if (opts.signal?.aborted) throw cancelled(src);
      const stored = await img.file.readPadded(off, Math.min(size, 2 * cs + 512), 'compressed cluster');
      if (outType === h.compressionType) {
        const len = Math.min(size, compressedLength(h.compressionType, stored, cs, src, off));
        compDest.set(off, { kind: 'compressed', host: zs.push(Buffer.from(stored.subarray(0, len))), len });
        await zs.flushIfLarge();
      } else {
        const plain = decompressCluster(h.compressionType, stored, cs);
        if (plain.equals(zero) && detectZero) { compDest.set(off, { kind: 'zero' }); progress(cs); continue; }
        const r = await (pool ?? (pool = new CompressPool(opts.compress!))).compress(plain, cs);
        if (r.lengths[0] < 0) compDest.set(off, { kind: 'data', host: await o.append(plain) });
        else compDest.set(off, { kind: 'compressed', host: zs.push(Buffer.from(r.data)), len: r.lengths[0] });
      }
      progress(cs);
    }
    await o.drain();
    await zs.drain();
    const streamLen = zs.pos;

    // ── L2 tables (built twice: once to count the survivors, once with final offsets) ──
    const x = g.compressedOffsetBits;
    const encodeCompressed = (host: number, len: number): [number, number] => {
      const nb = Math.floor((host + len - 1) / 512) - Math.floor(host / 512);
      const v = (1n << 62n) | (BigInt(nb) << BigInt(x)) | BigInt(host);
      return [Number(v >> 32n), Number(v & 0xffffffffn)];
    };
    const buildL2 = (t: Buffer, streamBase: number): Buffer | null => {
      const n = Buffer.alloc(cs);
      let any = false;
      for (let j = 0; j < g.l2Size; j++) {
        const p = j * g.l2EntrySize;
        const hi = wordHi(t, p), lo = wordLo(t, p);
        let nhi = 0, nlo = 0;
        const zeroEntry = () => { nhi = 0; nlo = hasBacking ? 1 : 0; };
        const toHost = (d: number) => { nhi = Math.floor(d / 0x100000000); nlo = d >>> 0; };
        if (hi & 0x40000000) {
          const d = compDest.get(decodeCompressed(g, hi, lo).hostOffset)!;
          if (d.kind === 'compressed') [nhi, nlo] = encodeCompressed(streamBase + d.host, d.len);
          else if (d.kind === 'data') toHost(d.host);
          else zeroEntry();
        } else {
          const host = entryOffset(hi, lo);
          const zeroFlag = !g.extendedL2 && (lo & 1) === 1;
          if (zeroFlag) zeroEntry(); // zero, with or without a reserved cluster: the cluster is dropped
          else if (host) {
            const viaComp = compDest.get(-1 - host);
            const d = dataDest.get(host)!;
            if (viaComp && viaComp.kind === 'compressed') [nhi, nlo] = encodeCompressed(streamBase + viaComp.host, viaComp.len);
            else if (d === ZERO) zeroEntry();
            else toHost(d);
          }
        }
        if (g.extendedL2 && !(nhi & 0x40000000)) {
          const bhi = wordHi(t, p + 8), blo = wordLo(t, p + 8);
          n.writeUInt32BE(bhi, p + 8); n.writeUInt32BE(blo, p + 12);
          if (bhi || blo) any = true;
        }
        if (nhi || nlo) any = true;
        n.writeUInt32BE(nhi >>> 0, p); n.writeUInt32BE(nlo >>> 0, p + 4);
      }
      return any ? n : null;
    };
    // every L1 reference to an L2 table counts the table and its entries once
    const l2Refs = new Map<number, number>();
    for (const [so, t] of srcL2) if (buildL2(t, 0)) l2Refs.set(so, 0);
    for (const { l1 } of l1Tables) {
      for (let i = 0; i < l1.length / 8; i++) {
        const so = entryOffset(wordHi(l1, i * 8), wordLo(l1, i * 8));
        if (so && l2Refs.has(so)) l2Refs.set(so, l2Refs.get(so)! + 1);
      }
    }

    // ── bitmaps: their non-zero data clusters, read now to know how many there are ──
    const bitmapData: { tbl: Buffer; clusters: { index: number; data: Buffer }[] }[] = [];
    for (let b = 0; b < img.bitmaps.length; b++) {
      const bm = img.bitmaps[b];
      const tbl = Buffer.alloc(bm.bitmapTableSize * 8);
      const clusters: { index: number; data: Buffer }[] = [];
      for (const e of bitmapTables[b]) {
        if (e.hostOffset) {
          const data = await img.file.read(e.hostOffset, cs, `bitmap "${bm.name}" data`);
          progress(cs);
          if (!data.equals(zero)) clusters.push({ index: e.index, data });
        } else if (e.allOnes) tbl.writeBigUInt64BE(1n, e.index * 8);
      }
      bitmapData.push({ tbl, clusters });
    }

    // ── layout of the metadata, then the compressed stream ──
    const clustersOf = (bytes: number) => Math.ceil(bytes / cs);
    let pos = o.pos; // cluster-aligned: only whole clusters so far
    const l2Dest = new Map<number, number>();
    for (const so of [...l2Refs.keys()].sort((a, b) => a - b)) { l2Dest.set(so, pos); pos += cs; }
    // with no compressed stream, the active L1 table goes last and the file ends where it ends (as
    // qemu-img's output does) instead of padding its last cluster
    const l1Last = streamLen === 0 && l1Tables[0].l1.length > 0;
    const newL1Offsets: number[] = [];
    for (const [ti, { l1 }] of l1Tables.entries()) {
      if (l1.length === 0 || (ti === 0 && l1Last)) { newL1Offsets.push(0); continue; }
      newL1Offsets.push(pos);
      pos += clustersOf(l1.length) * cs;
    }
    const snapTable = img.snapshots.length ? Buffer.concat(img.snapshots.map((sn, i) => encodeSnapshot({ ...sn, l1TableOffset: newL1Offsets[i + 1], l1Size: l1Tables[i + 1].l1.length / 8 }))) : null;
    const snapOffset = snapTable ? pos : 0;
    if (snapTable) pos += clustersOf(snapTable.length) * cs;
    const bitmapPlaces: { tableAt: number; dataAt: number[] }[] = [];
    for (const bd of bitmapData) {
      const dataAt = bd.clusters.map(() => { const a = pos; pos += cs; return a; });
      const tableAt = bd.tbl.length ? pos : 0;
      pos += clustersOf(bd.tbl.length) * cs;
      bitmapPlaces.push({ tableAt, dataAt });
    }
    let bitmapDir: { offset: number; size: number; data: Buffer } | null = null;
    if (img.bitmaps.length) {
      const rawDir = await img.file.read(h.bitmaps!.bitmapDirectoryOffset, h.bitmaps!.bitmapDirectorySize, 'bitmap directory');
      const parts = img.bitmaps.map((bm, b) => {
        const rel = bm.hostOffset - h.bitmaps!.bitmapDirectoryOffset;
        const ent = Buffer.from(rawDir.subarray(rel, rel + bm.entrySize));
        ent.writeBigUInt64BE(BigInt(bitmapPlaces[b].tableAt), 0);
        return ent;
      });
      const data = Buffer.concat(parts);
      bitmapDir = { offset: pos, size: data.length, data };
      pos += clustersOf(data.length) * cs;
    }
    const rg = refcountGeometry(Math.log2(cs), h.refcountOrder);
    const metaStart = pos / cs;
    const streamClusters = clustersOf(streamLen);
    let nBlocks = 0, nTable = 0;
    for (;;) {
      const total = metaStart + nBlocks + nTable + streamClusters + (l1Last ? clustersOf(l1Tables[0].l1.length) : 0);
      const b = Math.ceil(total / rg.blockEntries);
      const t = Math.max(1, Math.ceil((b * 8) / cs));
      if (b === nBlocks && t === nTable) break;
      nBlocks = b; nTable = t;
    }
    const blocksAt = pos;
    const tableAt = blocksAt + nBlocks * cs;
    if (l1Last) newL1Offsets[0] = tableAt + nTable * cs;
    const streamBase = l1Last ? newL1Offsets[0] + l1Tables[0].l1.length : tableAt + nTable * cs;

    // ── refcounts ──
    const counts = new Float64Array(Math.ceil(streamBase / cs) + streamClusters);
    const inc = (host: number, len = cs, times = 1) => {
      for (let c = Math.floor(host / cs); c <= Math.floor((host + len - 1) / cs); c++) counts[c] += times;
    };
    inc(0); // header
    const newL2 = new Map<number, Buffer>();
    for (const [so, refs] of l2Refs) {
      const t = buildL2(srcL2.get(so)!, streamBase)!;
      newL2.set(so, t);
      inc(l2Dest.get(so)!, cs, refs);
      for (let j = 0; j < g.l2Size; j++) {
        const p = j * g.l2EntrySize;
        const hi = wordHi(t, p), lo = wordLo(t, p);
        if (hi & 0x40000000) {
          const c = decodeCompressed(g, hi, lo);
          inc(c.hostOffset, c.compressedSize, refs);
        } else {
          const host = entryOffset(hi, lo);
          if (host) inc(host, cs, refs);
        }
      }
    }
    // COPIED flags: refcount exactly 1
    for (const t of newL2.values()) {
      for (let j = 0; j < g.l2Size; j++) {
        const p = j * g.l2EntrySize;
        const hi = wordHi(t, p), lo = wordLo(t, p);
        if (hi & 0x40000000) continue;
        const host = entryOffset(hi, lo);
        if (host && counts[host / cs] === 1) t.writeUInt32BE((hi | 0x80000000) >>> 0, p);
      }
    }
    l1Tables.forEach(({ l1 }, i) => { if (l1.length) inc(newL1Offsets[i], l1.length); });
    if (snapTable) inc(snapOffset, snapTable.length);
    bitmapData.forEach((bd, b) => {
      bitmapPlaces[b].dataAt.forEach(a => inc(a));
      if (bd.tbl.length) inc(bitmapPlaces[b].tableAt, bd.tbl.length);
    });
    if (bitmapDir) inc(bitmapDir.offset, bitmapDir.size);
    inc(blocksAt, (nBlocks + nTable) * cs);
    const maxRc = maxRefcount(rg.order);
    const blocks = Buffer.alloc(nBlocks * cs);
    for (let c = 0; c < counts.length; c++) {
      const v = counts[c];
      if (!v) continue;
      if (v > maxRc) throw new Qcow2Error(src, 'refcount', c * cs, `cluster would need refcount ${v}, more than ${2 ** rg.order}-bit refcounts hold`, 'unsupported');
      const bi = Math.floor(c / rg.blockEntries);
      setRefcountAt(blocks.subarray(bi * cs, (bi + 1) * cs), c % rg.blockEntries, rg.order, v);
    }

    // ── write the metadata in the layout order, then the stream ──
    for (const so of [...l2Refs.keys()].sort((a, b) => a - b)) await o.append(newL2.get(so)!);
    const encodeL1 = (l1: Buffer, padded: boolean): Buffer => {
      const n = Buffer.alloc(padded ? clustersOf(l1.length) * cs : l1.length);
      for (let e = 0; e < l1.length / 8; e++) {
        const so = entryOffset(wordHi(l1, e * 8), wordLo(l1, e * 8));
        const d = so ? l2Dest.get(so) : undefined;
        if (d !== undefined) n.writeBigUInt64BE(BigInt(d) | (l2Refs.get(so) === 1 ? L.QCOW_OFLAG_COPIED : 0n), e * 8);
      }
      return n;
    };
    for (let i = 0; i < l1Tables.length; i++) {
      const l1 = l1Tables[i].l1;
      if (!l1.length || (i === 0 && l1Last)) continue;
      await o.append(encodeL1(l1, true));
    }
    if (snapTable) { await o.append(snapTable); await o.padTo(cs); }
    for (let b = 0; b < bitmapData.length; b++) {
      const bd = bitmapData[b];
      bd.clusters.forEach((c, k) => bd.tbl.writeBigUInt64BE(BigInt(bitmapPlaces[b].dataAt[k]), c.index * 8));
      for (const c of bd.clusters) await o.append(c.data);
      if (bd.tbl.length) { await o.append(bd.tbl); await o.padTo(cs); }
    }
    if (bitmapDir) { await o.append(bitmapDir.data); await o.padTo(cs); }
    await o.append(blocks);
    const table = Buffer.alloc(nTable * cs);
    for (let i = 0; i < nBlocks; i++) table.writeBigUInt64BE(BigInt(blocksAt + i * cs), i * 8);
    await o.append(table);
    if (l1Last) await o.append(encodeL1(l1Tables[0].l1, false));
    await o.drain();
    if (o.pos !== streamBase) throw new Error(`internal: layout mismatch (${o.pos} != ${streamBase})`);
    for (let at = 0; at < streamLen; at += 8 * 1024 * 1024) {
      if (opts.signal?.aborted) throw cancelled(src);
      await o.append(await streamFile.read(at, Math.min(8 * 1024 * 1024, streamLen - at), 'compressed stream'));
    }
    await o.drain();
    await streamFile.close();
    streamFile = null;
    fs.rmSync(streamTmp, { force: true });

    // ── header, last ──
    const hdr = Buffer.alloc(cs);
    const first = await img.file.read(0, Math.min(h.clusterSize, img.file.size), 'header');
    first.copy(hdr, 0, 0, Math.min(first.length, h.headerEnd));
    hdr.writeUInt32BE(Math.log2(cs), 20);
    hdr.writeUInt32BE(l1Tables[0].l1.length / 8, 36);
    hdr.writeBigUInt64BE(BigInt(newL1Offsets[0]), 40);
    hdr.writeBigUInt64BE(BigInt(tableAt), 48);
    hdr.writeUInt32BE(nTable, 56);
    hdr.writeUInt32BE(img.snapshots.length, 60);
    hdr.writeBigUInt64BE(BigInt(snapOffset), 64);
    if (h.version >= 3) {
      let inc2 = h.incompatibleFeatures & ~L.INCOMPAT_DIRTY;
      if (outType === L.COMPRESSION_ZSTD) inc2 |= L.INCOMPAT_COMPRESSION; else inc2 &= ~L.INCOMPAT_COMPRESSION;
      hdr.writeBigUInt64BE(inc2, 72);
      if (h.headerLength > 104) hdr[104] = outType;
    }
    // a relative backing file name is resolved against the image's folder: written into another
    // folder, the output would silently read a different file of that name (or none). Re-point it.
    // (in place the folder is the same; through a symlink QEMU still resolves against the link's)
    if (opts.output && h.backingFile && !path.isAbsolute(h.backingFile)) {
      const target = path.resolve(path.dirname(src), h.backingFile);
      const rel = path.relative(path.dirname(path.resolve(dest)), target);
      if (rel !== h.backingFile && fs.existsSync(target)) {
        const name = Buffer.from(rel, 'utf8');
        const extEnd = h.extensions.reduce((a, e) => Math.max(a, e.hostOffset + 8 + L.alignUp(e.length, 8) + 8), h.headerLength);
        if (name.length > L.QCOW_MAX_BACKING_FILE_NAME || h.backingFileOffset < extEnd || h.backingFileOffset + name.length > cs) {
          throw new Qcow2Error(src, 'header.backing_file_offset', 8, `the backing file name "${h.backingFile}" is relative and the output's name for it ("${rel}") does not fit in the header; write the output next to the source`, 'unsupported');
        }
        hdr.fill(0, h.backingFileOffset, Math.min(cs, h.backingFileOffset + h.backingFileSize));
        name.copy(hdr, h.backingFileOffset);
        hdr.writeUInt32BE(name.length, 16);
      }
    }
    if (bitmapDir) {
      const ext = h.extensions.find(e => e.type === L.EXT_BITMAPS)!;
      hdr.writeBigUInt64BE(BigInt(bitmapDir.size), ext.hostOffset + 8 + 8);
      hdr.writeBigUInt64BE(BigInt(bitmapDir.offset), ext.hostOffset + 8 + 16);
    }
    await o.writeAt(0, hdr, 'header');
    await out.sync();
    const bytesAfter = out.size;
    await out.close();
    out = null;
    if (opts.signal?.aborted) throw cancelled(src);
    // nothing holds the source while we read it: a VM started meanwhile (or any writer) may have
    // changed it, and replacing it now would drop those writes (a separate output would be torn)
    assertNotLocked(src);
    const now = fs.statSync(src, { bigint: true });
    if (now.ino !== stamp.ino || now.size !== stamp.size || now.mtimeNs !== stamp.mtimeNs) {
      throw new Qcow2Error(src, 'file', undefined, 'the image changed while it was being compacted; nothing was replaced, compact it again', 'locked');
    }
    if (!opts.output) {
      // in place: the file keeps its owner and group (root compacting a VM's image must not hand it
      // to root); without the privilege to give it away, chown fails and the file stays ours
      try { fs.chownSync(tmp, st.uid, st.gid); } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'EPERM') throw e; }
    }
    fs.chmodSync(tmp, st.mode & 0o7777);
    fs.renameSync(tmp, dest);
    const dfd = fs.openSync(path.dirname(path.resolve(dest)), 'r');
    try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
    return { bytesBefore, bytesAfter, output: dest };
  } catch (e) {
    if (out) await out.close().catch(() => undefined);
    if (streamFile) await streamFile.close().catch(() => undefined);
    fs.rmSync(tmp, { force: true });
    fs.rmSync(streamTmp, { force: true });
    throw e;
  } finally {
    await pool?.close();
    await full?.close();
    await img.close();
  }
}
