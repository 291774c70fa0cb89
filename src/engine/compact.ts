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
import { readBitmapTable } from './bitmap';
import { decodeCompressed, entryOffset, wordHi, wordLo } from './cluster';
import { decompressCluster } from './compress';
import type { CompressReply, CompressRequest } from './compress.worker';
import { Qcow2Error } from './errors';
import { Qcow2Image } from './image';
import { ImageFile, readMany } from './io';
import * as L from './layout';
import { maxRefcount, refcountGeometry, setRefcountAt } from './refcount';
import { encodeSnapshot } from './snapshot';
import { assertNotLocked, assertWritable, beforeWrite, WriteFeature } from './writable';

export interface CompactOptions {
  /** Write here instead of replacing the source. */
  output?: string;
  compress?: 'zlib' | 'zstd';
  /** Must equal the source's cluster size (re-clustering is not implemented). */
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
  async padTo(align: number): Promise<void> {
    const r = this.pos % align;
    if (r) await this.append(Buffer.alloc(align - r));
  }
  async flush(): Promise<void> {
    if (!this.pendingBytes) return;
    const buf = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    beforeWrite();
    await this.f.write(this.pendingStart, buf, 'compacted image');
  }
  async writeAt(off: number, b: Buffer, what: string): Promise<void> {
    await this.flush();
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

function cancelled(p: string): Qcow2Error {
  return new Qcow2Error(p, 'compaction', undefined, 'cancelled', 'cancelled');
}

export async function compactImage(src: string, opts: CompactOptions = {}): Promise<CompactResult> {
  assertNotLocked(src);
  const img = await Qcow2Image.open(src, { openBacking: false, openDataFile: false });
  const dest = opts.output ?? src;
  const tmp = path.join(path.dirname(path.resolve(dest)), `.${path.basename(dest)}.compact-${process.pid}-${Date.now()}.tmp`);
  let out: ImageFile | null = null;
  let pool: CompressPool | null = null;
  try {
    const h = img.header;
    const features: WriteFeature[] = [];
    if (opts.compress === 'zstd') features.push('zstd');
    assertWritable(img, features);
    if (img.encrypted) throw new Qcow2Error(src, 'header.crypt_method', 32, 'encrypted images cannot be compacted (the key is not handled)', 'unsupported');
    if ((h.incompatibleFeatures & L.INCOMPAT_DATA_FILE) !== 0n) throw new Qcow2Error(src, 'header.incompatible_features', 72, 'images with an external data file hold no data clusters to compact', 'unsupported');
    if (opts.clusterSize !== undefined && opts.clusterSize !== h.clusterSize) {
      throw new Qcow2Error(src, 'header.cluster_bits', 20, `changing the cluster size (${h.clusterSize} → ${opts.clusterSize}) is not supported by compaction; use qemu-img convert -o cluster_size=${opts.clusterSize}`, 'unsupported');
    }
    if (opts.compress && img.g.extendedL2) {
      throw new Qcow2Error(src, 'header.incompatible_features', 72, 'compressing an image with extended L2 entries (subclusters) is not supported', 'unsupported');
    }
    const outType = opts.compress === 'zstd' ? L.COMPRESSION_ZSTD : opts.compress === 'zlib' ? L.COMPRESSION_ZLIB : h.compressionType;
    if (outType === L.COMPRESSION_ZSTD && h.headerLength <= 104) {
      throw new Qcow2Error(src, 'header.header_length', 100, 'the header has no compression_type field, so zstd cannot be recorded', 'unsupported');
    }
    const g = img.g;
    const cs = h.clusterSize;
    const hasBacking = !!h.backingFile;
    // zero flags are kept in overlays (they hide backing data); a v2 overlay keeps zero data clusters
    const canZeroFlag = h.version >= 3;
    const detectZero = !g.extendedL2 && (!hasBacking || canZeroFlag);
    const bytesBefore = img.file.size;
    const st = fs.statSync(src);

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
    const bitmapTables = [];
    for (const bm of img.bitmaps) bitmapTables.push(await readBitmapTable(img.file, bm));
    const bitmapClusters = bitmapTables.reduce((a, t) => a + t.filter(e => e.hostOffset).length, 0);
    const totalBytes = (dataSet.size + compSet.size + bitmapClusters) * cs;
    let doneBytes = 0;
    const progress = (n: number) => { doneBytes += n; opts.onProgress?.(Math.min(doneBytes, totalBytes), totalBytes); };

    // ── pass B: data, in source order ──
    const fh = await fs.promises.open(tmp, 'wx', st.mode & 0o7777);
    await fh.close();
    out = await ImageFile.open(tmp, true);
    const o = new OutFile(out);
    await o.append(Buffer.alloc(cs)); // header, written last
    const dataDest = new Map<number, number>(); // source host -> dest host, or ZERO
    const compDest = new Map<number, Dest>();
    if (opts.compress) pool = new CompressPool(opts.compress);
    const zero = Buffer.alloc(cs);
    const sorted = [...dataSet].sort((a, b) => a - b);
    const BATCH = Math.max(1, Math.floor((4 * 1024 * 1024) / cs));
    // reads of the next batch overlap compression / writes of the current one
    const readBatch = async (k: number): Promise<{ list: number[]; bufs: Map<number, Buffer> }> => {
      const list = sorted.slice(k, k + BATCH);
      const bufs = new Map<number, Buffer>();
      let i = 0;
      while (i < list.length) {
        let j = i + 1;
        while (j < list.length && list[j] === list[j - 1] + cs) j++;
        const b = await img.file.readPadded(list[i], (j - i) * cs, 'data cluster');
        for (let k2 = i; k2 < j; k2++) bufs.set(list[k2], b.subarray((k2 - i) * cs, (k2 - i + 1) * cs));
        i = j;
      }
      return { list, bufs };
    };
    let nextRead = sorted.length ? readBatch(0) : null;
    for (let k = 0; k < sorted.length; k += BATCH) {
      if (opts.signal?.aborted) throw cancelled(src);
      const { list, bufs } = await nextRead!;
      nextRead = k + BATCH < sorted.length ? readBatch(k + BATCH) : null;
      const keep: number[] = [];
      for (const s of list) {
        if (detectZero && bufs.get(s)!.equals(zero)) dataDest.set(s, ZERO);
        else keep.push(s);
      }
      if (pool && keep.length) {
        const half = Math.ceil(keep.length / 2);
        const parts = [keep.slice(0, half), keep.slice(half)].filter(p => p.length);
        const replies = await Promise.all(parts.map(p => pool!.compress(Buffer.concat(p.map(s => bufs.get(s)!)), cs)));
        const raw: number[] = [];
        for (let pi = 0; pi < parts.length; pi++) {
          const r = replies[pi], data = Buffer.from(r.data);
          let at = 0;
          parts[pi].forEach((s, idx) => {
            const len = r.lengths[idx];
            if (len < 0) { raw.push(s); return; }
            compDest.set(-1 - s, { kind: 'compressed', host: o.pos, len }); // keyed apart from compressed sources
            o.push(data.subarray(at, at + len));
            at += len;
          });
        }
        await o.flush();
        if (raw.length) {
          await o.padTo(cs);
          for (const s of raw) dataDest.set(s, await o.append(bufs.get(s)!));
        }
      } else {
        if (pool) await o.padTo(cs);
        for (const s of keep) dataDest.set(s, await o.append(bufs.get(s)!));
      }
      progress(list.length * cs);
    }
    // compressed source clusters: copied as they are, or recompressed when the type changes
    const compSorted = [...compSet].sort((a, b) => a[0] - b[0]);
    for (const [off, size] of compSorted) {
      if (opts.signal?.aborted) throw cancelled(src);
      const stored = await img.file.readPadded(off, Math.min(size, 2 * cs + 512), 'compressed cluster');
      if (outType === h.compressionType) {
        const at = o.pos;
        await o.append(stored.subarray(0, size));
        compDest.set(off, { kind: 'compressed', host: at, len: size });
      } else {
        const plain = decompressCluster(h.compressionType, stored, cs);
        if (plain.equals(zero) && detectZero) { compDest.set(off, { kind: 'zero' }); progress(cs); continue; }
        const r = await (pool ?? (pool = new CompressPool(opts.compress!))).compress(plain, cs);
        if (r.lengths[0] < 0) {
          await o.padTo(cs);
          compDest.set(off, { kind: 'data', host: await o.append(plain) });
        } else {
          const at = o.pos;
          await o.append(Buffer.from(r.data));
          compDest.set(off, { kind: 'compressed', host: at, len: r.lengths[0] });
        }
      }
      progress(cs);
    }
    await o.padTo(cs);
    await o.flush();

    // ── L2 and L1 tables ──
    const counts: number[] = [];
    const inc = (host: number, len = cs) => {
      for (let c = Math.floor(host / cs); c <= Math.floor((host + len - 1) / cs); c++) counts[c] = (counts[c] ?? 0) + 1;
    };
    const newL2 = new Map<number, Buffer | null>(); // source L2 offset -> new table (null: dropped)
    const x = g.compressedOffsetBits;
    const encodeCompressed = (host: number, len: number): [number, number] => {
      const nb = Math.floor((host + len - 1) / 512) - Math.floor(host / 512);
      const v = (1n << 62n) | (BigInt(nb) << BigInt(x)) | BigInt(host);
      return [Number(v >> 32n), Number(v & 0xffffffffn)];
    };
    for (const [so, t] of srcL2) {
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
          if (d.kind === 'compressed') [nhi, nlo] = encodeCompressed(d.host, d.len);
          else if (d.kind === 'data') toHost(d.host);
          else zeroEntry();
        } else {
          const host = entryOffset(hi, lo);
          const zeroFlag = !g.extendedL2 && (lo & 1) === 1;
          if (zeroFlag) zeroEntry(); // zero, with or without a reserved cluster: the cluster is dropped
          else if (host) {
            const viaComp = compDest.get(-1 - host);
            const d = dataDest.get(host)!;
            if (viaComp && viaComp.kind === 'compressed') [nhi, nlo] = encodeCompressed(viaComp.host, viaComp.len);
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
      newL2.set(so, any ? n : null);
    }
    // count references: every L1 reference to an L2 table counts it and its entries once
    const l2Refs = new Map<number, number>();
    for (const { l1 } of l1Tables) {
      for (let i = 0; i < l1.length / 8; i++) {
        const so = entryOffset(wordHi(l1, i * 8), wordLo(l1, i * 8));
        if (so && newL2.get(so)) l2Refs.set(so, (l2Refs.get(so) ?? 0) + 1);
      }
    }
    for (const [so, refs] of l2Refs) {
      const t = newL2.get(so)!;
      for (let j = 0; j < g.l2Size; j++) {
        const p = j * g.l2EntrySize;
        const hi = wordHi(t, p), lo = wordLo(t, p);
        if (hi & 0x40000000) {
          const c = decodeCompressed(g, hi, lo);
          for (let r = 0; r < refs; r++) inc(c.hostOffset, c.compressedSize);
        } else {
          const host = entryOffset(hi, lo);
          if (host) for (let r = 0; r < refs; r++) inc(host);
        }
      }
    }
    // COPIED flags (refcount 1), then the tables go to disk
    for (const so of l2Refs.keys()) {
      const t = newL2.get(so)!;
      for (let j = 0; j < g.l2Size; j++) {
        const p = j * g.l2EntrySize;
        const hi = wordHi(t, p), lo = wordLo(t, p);
        if (hi & 0x40000000) continue;
        const host = entryOffset(hi, lo);
        if (host && counts[host / cs] === 1) t.writeUInt32BE((hi | 0x80000000) >>> 0, p);
      }
    }
    const l2Dest = new Map<number, number>();
    for (const so of [...l2Refs.keys()].sort((a, b) => a - b)) {
      const at = await o.append(newL2.get(so)!);
      l2Dest.set(so, at);
      for (let r = 0; r < l2Refs.get(so)!; r++) inc(at);
    }
    const newL1Offsets: number[] = [];
    for (const { l1 } of l1Tables) {
      const n = Buffer.alloc(l1.length);
      for (let i = 0; i < l1.length / 8; i++) {
        const so = entryOffset(wordHi(l1, i * 8), wordLo(l1, i * 8));
        const d = so ? l2Dest.get(so) : undefined;
        if (d !== undefined) n.writeBigUInt64BE(BigInt(d) | (l2Refs.get(so) === 1 ? L.QCOW_OFLAG_COPIED : 0n), i * 8);
      }
      if (n.length === 0) { newL1Offsets.push(0); continue; }
      await o.padTo(cs);
      const at = await o.append(n);
      await o.padTo(cs);
      inc(at, n.length);
      newL1Offsets.push(at);
    }

    // ── snapshot table ──
    let snapOffset = 0;
    if (img.snapshots.length) {
      const table = Buffer.concat(img.snapshots.map((sn, i) => encodeSnapshot({ ...sn, l1TableOffset: newL1Offsets[i + 1] })));
      snapOffset = await o.append(table);
      await o.padTo(cs);
      inc(snapOffset, table.length);
    }

    // ── bitmaps: data clusters, tables, directory ──
    let bitmapDir: { offset: number; size: number } | null = null;
    if (img.bitmaps.length) {
      const dirParts: Buffer[] = [];
      const rawDir = await img.file.read(h.bitmaps!.bitmapDirectoryOffset, h.bitmaps!.bitmapDirectorySize, 'bitmap directory');
      for (let b = 0; b < img.bitmaps.length; b++) {
        const bm = img.bitmaps[b];
        const entries = bitmapTables[b];
        const tbl = Buffer.alloc(bm.bitmapTableSize * 8);
        for (const e of entries) {
          if (e.hostOffset) {
            const data = await img.file.read(e.hostOffset, cs, `bitmap "${bm.name}" data`);
            progress(cs);
            if (data.equals(zero)) continue;
            const at = await o.append(data);
            inc(at);
            tbl.writeBigUInt64BE(BigInt(at), e.index * 8);
          } else if (e.allOnes) tbl.writeBigUInt64BE(1n, e.index * 8);
        }
        let tOff = 0;
        if (tbl.length) { tOff = await o.append(tbl); await o.padTo(cs); inc(tOff, tbl.length); }
        const ent = Buffer.from(rawDir.subarray(bm.hostOffset - h.bitmaps!.bitmapDirectoryOffset, bm.hostOffset - h.bitmaps!.bitmapDirectoryOffset + bm.entrySize));
        ent.writeBigUInt64BE(BigInt(tOff), 0);
        dirParts.push(ent);
      }
      const dir = Buffer.concat(dirParts);
      const at = await o.append(dir);
      await o.padTo(cs);
      inc(at, dir.length);
      bitmapDir = { offset: at, size: dir.length };
    }

    // ── refcounts: blocks and table placed after everything, covering themselves ──
    const rg = refcountGeometry(h.clusterBits, h.refcountOrder);
    const metaStart = o.pos / cs;
    counts[0] = (counts[0] ?? 0) + 1; // header
    let nBlocks = 0, nTable = 0;
    for (;;) {
      const total = metaStart + nBlocks + nTable;
      const b = Math.ceil(total / rg.blockEntries);
      const t = Math.ceil((b * 8) / cs);
      if (b === nBlocks && t === nTable) break;
      nBlocks = b; nTable = t;
    }
    const blocksAt = metaStart * cs;
    const tableAt = blocksAt + nBlocks * cs;
    for (let i = 0; i < nBlocks + nTable; i++) counts[metaStart + i] = 1;
    const blocks = Buffer.alloc(nBlocks * cs);
    for (let c = 0; c < counts.length; c++) {
      const v = counts[c];
      if (!v) continue;
      if (v > maxRefcount(rg.order)) {
        throw new Qcow2Error(src, 'refcount', c * cs, `cluster would need refcount ${v}, more than ${2 ** rg.order}-bit refcounts hold`, 'unsupported');
      }
      const bi = Math.floor(c / rg.blockEntries);
      setRefcountAt(blocks.subarray(bi * cs, (bi + 1) * cs), c % rg.blockEntries, rg.order, v);
    }
    await o.append(blocks);
    const table = Buffer.alloc(nTable * cs);
    for (let i = 0; i < nBlocks; i++) table.writeBigUInt64BE(BigInt(blocksAt + i * cs), i * 8);
    await o.append(table);
    await o.flush();

    // ── header, last ──
    const hdr = Buffer.alloc(cs);
    const first = await img.file.read(0, Math.min(cs, img.file.size), 'header');
    first.copy(hdr, 0, 0, Math.min(first.length, h.headerEnd));
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
    fs.chmodSync(tmp, st.mode & 0o7777);
    fs.renameSync(tmp, dest);
    const dfd = fs.openSync(path.dirname(path.resolve(dest)), 'r');
    try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
    return { bytesBefore, bytesAfter, output: dest };
  } catch (e) {
    if (out) await out.close().catch(() => undefined);
    fs.rmSync(tmp, { force: true });
    throw e;
  } finally {
    await pool?.close();
    await img.close();
  }
}
