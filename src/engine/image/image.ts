/**
 * Qcow2Image: one image opened once (header, L1 table, refcount table, snapshot table, bitmap
 * directory, external data file, backing chain) and passed to every other module, so no module
 * re-parses the header (STYLE.md).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Bitmap, readBitmapDirectory } from '../qcow2/bitmap';
import { BlockLayer, RawImage, resolveBackingPath, StatusExtent } from './backing';
import { entryOffset, L2Geometry, l2Geometry, SubclusterType, subclusterType, wordHi, wordLo, decodeCompressed } from '../qcow2/cluster';
import { decompressCluster, DecompressError } from '../qcow2/compress';
import { Qcow2Error, hex } from '../errors';
import { Qcow2Header, readHeader, SUPPORTED_INCOMPATIBLE } from '../qcow2/header';
import { forEachHostPiece, HoleSeeker, holeSeeker } from '../io/holes';
import { ImageFile, readMany } from '../io/reader';
import * as L from '../qcow2/layout';
import { readAllRefcounts, readRefcountTable, RefcountGeometry, refcountGeometry } from '../qcow2/refcount';
import { readSnapshotTable, Snapshot } from '../qcow2/snapshot';

export interface OpenOptions {
  writable?: boolean;
  /** Open the backing chain (default true). Without it, unallocated ranges read as zero. */
  openBacking?: boolean;
  /** Open the external data file (default true). */
  openDataFile?: boolean;
  /**
   * Read the L1 and refcount tables even when the file was truncated inside them, with the
   * missing bytes as zeros — QEMU's block layer reads past EOF as zeros, and the check (usage.ts)
   * judges truncated images the way `qemu-img check` does. Default false.
   */
  zeroPastEof?: boolean;
  /** Internal: paths already open above this image, to refuse loops. */
  chain?: string[];
}

/** True on little-endian hosts (all Node targets in practice): enables byte-swapped 32-bit loads. */
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** The most guest bytes one readGuest call returns (callers page through larger ranges). */
export const MAX_GUEST_READ = 64 * 1024 * 1024;
/** Maximum backing chain depth before we call it a loop or abuse. */
export const MAX_CHAIN_DEPTH = 64;

/** One run of (sub)clusters of the same type, contiguous in guest space (and in host space for data). */
export interface MappingRun {
  guestOffset: number;
  length: number;
  type: SubclusterType;
  /** Host offset of the first byte (normal, zero-alloc and unallocated-alloc only). */
  hostOffset: number;
  l1Index: number;
  l2Index: number;
  /** Compressed runs are one cluster each: their descriptor. */
  compressedOffset?: number;
  compressedSize?: number;
}

/** Refcount table entries (offset bits only) from raw big-endian bytes. */
function refcountTableFromBytes(buf: Buffer): Float64Array {
  const out = new Float64Array(buf.length / 8);
  for (let i = 0; i < out.length; i++) out[i] = wordHi(buf, i * 8) * 0x100000000 + ((wordLo(buf, i * 8) & 0xfffffe00) >>> 0);
  return out;
}

export class Qcow2Image implements BlockLayer {
  readonly format = 'qcow2' as const;
  readonly g: L2Geometry;
  readonly rg: RefcountGeometry;
  backing: BlockLayer | null = null;
  /** The backing file name resolved the way QEMU resolves it (full-backing-filename). */
  backingPath?: string;
  dataFile: ImageFile | null = null;
  dataFilePath?: string;
  private l2Cache = new Map<number, Buffer>();
  private static readonly L2_CACHE_ENTRIES = 128;

  private constructor(
    readonly path: string,
    readonly file: ImageFile,
    readonly header: Qcow2Header,
    /** The active L1 table, raw big-endian bytes. */
    public l1: Buffer,
    public refcountTable: Float64Array,
    public snapshots: Snapshot[],
    public bitmaps: Bitmap[],
  ) {
    this.g = l2Geometry(header.clusterBits, header.extendedL2, (header.incompatibleFeatures & L.INCOMPAT_DATA_FILE) !== 0n);
    this.rg = refcountGeometry(header.clusterBits, header.refcountOrder);
  }

  get virtualSize(): number {
    return this.header.size;
  }
  get clusterSize(): number {
    return this.header.clusterSize;
  }
  get encrypted(): boolean {
    return this.header.cryptMethod !== L.CRYPT_NONE;
  }
  get l1Size(): number {
    return this.header.l1Size;
  }

  static async open(path: string, opts: OpenOptions = {}): Promise<Qcow2Image> {
    const file = await ImageFile.open(path, opts.writable ?? false);
    try {
      const img = await Qcow2Image.load(path, file, opts.zeroPastEof ?? false);
      if (opts.openDataFile !== false) await img.openDataFile(opts.writable ?? false);
      if (opts.openBacking !== false) await img.openBacking(opts.chain ?? []);
      return img;
    } catch (e) {
      await file.close().catch(() => undefined);
      throw e;
    }
  }

  private static async load(path: string, file: ImageFile, zeroPastEof = false): Promise<Qcow2Image> {
    const h = await readHeader(file);
    const unknown = h.incompatibleFeatures & ~SUPPORTED_INCOMPATIBLE;
    if (unknown !== 0n) {
      const bits: string[] = [];
      for (let b = 0; b < 64; b++) if ((unknown >> BigInt(b)) & 1n) bits.push(h.featureNames.get(`0:${b}`) ?? `bit ${b}`);
      throw new Qcow2Error(path, 'header.incompatible_features', 72, `unknown incompatible features: ${bits.join(', ')}`, 'unsupported');
    }
    const g = l2Geometry(h.clusterBits, h.extendedL2);
    if (h.l1Size > L.QCOW_MAX_L1_SIZE / 8) {
      throw new Qcow2Error(path, 'header.l1_size', 36, `L1 table of ${h.l1Size} entries (${h.l1Size * 8} bytes) exceeds QEMU's limit of ${L.QCOW_MAX_L1_SIZE / 8} entries`);
    }
    const needL1 = Math.ceil(h.size / (g.clusterSize * g.l2Size));
    if (h.l1Size < needL1) {
      throw new Qcow2Error(path, 'header.l1_size', 36, `L1 table of ${h.l1Size} entries is too small for a ${h.size}-byte disk (needs ${needL1})`);
    }
    if (h.l1Size > 0 && h.l1TableOffset % h.clusterSize !== 0) {
      throw new Qcow2Error(path, 'L1 table', h.l1TableOffset, 'offset is not cluster-aligned');
    }
    const l1 = h.l1Size <= 0 ? Buffer.alloc(0)
      : zeroPastEof ? await file.readPadded(h.l1TableOffset, h.l1Size * 8, 'L1 table')
        : await file.read(h.l1TableOffset, h.l1Size * 8, 'L1 table');
    const reftableBytes = h.refcountTableClusters * h.clusterSize;
    const reftable = zeroPastEof && h.refcountTableOffset + reftableBytes > file.size && reftableBytes <= L.QCOW_MAX_REFTABLE_SIZE && h.refcountTableOffset % h.clusterSize === 0
      ? refcountTableFromBytes(await file.readPadded(h.refcountTableOffset, reftableBytes, 'refcount table'))
      : await readRefcountTable(file, h.refcountTableOffset, h.refcountTableClusters, h.clusterSize);
    const snapshots = await readSnapshotTable(file, h.nbSnapshots, h.snapshotsOffset, h.clusterSize);
    let bitmaps: Bitmap[] = [];
    if (h.bitmaps && (h.autoclearFeatures & L.AUTOCLEAR_BITMAPS) !== 0n) {
      bitmaps = await readBitmapDirectory(file, h.bitmaps.nbBitmaps, h.bitmaps.bitmapDirectoryOffset, h.bitmaps.bitmapDirectorySize, h.clusterSize);
    }
    return new Qcow2Image(path, file, h, l1, reftable, snapshots, bitmaps);
  }

  private async openDataFile(writable: boolean): Promise<void> {
    if ((this.header.incompatibleFeatures & L.INCOMPAT_DATA_FILE) === 0n) return;
    if (!this.header.dataFile) {
      throw new Qcow2Error(this.path, 'header extension external data file name', undefined, 'the image uses an external data file but does not name it');
    }
    // QEMU opens a relative data file name relative to its working directory (bdrv_open_child
    // with the bare name), unlike backing files; we try that first so we read what QEMU reads, then
    // fall back to the image's own directory, where the file almost always is.
    const name = this.header.dataFile;
    const candidates = [...new Set([path.resolve(name), resolveBackingPath(this.path, name)])];
    for (const candidate of candidates) {
      try {
        this.dataFile = await ImageFile.open(candidate, writable);
        this.dataFilePath = candidate;
        return;
      } catch {
        // try the next candidate
      }
    }
    this.dataFilePath = resolveBackingPath(this.path, name);
    throw new Qcow2Error(this.path, 'external data file', undefined, `cannot open "${name}" (tried ${candidates.map(c => `"${c}"`).join(' and ')})`, 'missing-backing');
  }

  private async openBacking(chain: string[]): Promise<void> {
    const name = this.header.backingFile;
    if (!name) return;
    const p = resolveBackingPath(this.path, name);
    this.backingPath = p;
    let real: string;
    try {
      real = fs.realpathSync(p);
    } catch {
      throw new Qcow2Error(this.path, 'backing file', this.header.backingFileOffset, `backing file "${p}" cannot be opened (named "${name}")`, 'missing-backing');
    }
    const here = fs.realpathSync(this.path);
    if ([...chain, here].includes(real)) {
      throw new Qcow2Error(this.path, 'backing file', this.header.backingFileOffset, `backing chain loops back to "${p}"`);
    }
    if (chain.length + 1 >= MAX_CHAIN_DEPTH) {
      throw new Qcow2Error(this.path, 'backing file', this.header.backingFileOffset, `backing chain is deeper than ${MAX_CHAIN_DEPTH}`);
    }
    let fmt = this.header.backingFormat;
    if (!fmt) {
      const probe = await ImageFile.open(p);
      try {
        fmt = probe.size >= 4 && (await probe.read(0, 4, 'magic')).readUInt32BE(0) === L.QCOW_MAGIC ? 'qcow2' : 'raw';
      } finally {
        await probe.close();
      }
    }
    if (fmt === 'qcow2') {
      this.backing = await Qcow2Image.open(p, { chain: [...chain, here] });
    } else if (fmt === 'raw' || fmt === 'file') {
      this.backing = await RawImage.open(p);
    } else {
      throw new Qcow2Error(this.path, 'header extension backing format', undefined, `backing format "${fmt}" is not supported (qcow2 and raw are)`, 'unsupported');
    }
  }

  /** All layers from this image down to the bottom of the chain. */
  chain(): BlockLayer[] {
    const out: BlockLayer[] = [];
    for (let l: BlockLayer | null = this; l; l = l.backing) out.push(l);
    return out;
  }

  async close(): Promise<void> {
    await this.backing?.close();
    await this.dataFile?.close();
    await this.file.close();
  }

  /** L1 entry i: the L2 table's host offset (0 = none) and the copied flag. */
  l1Entry(i: number, table: Uint8Array = this.l1): { l2Offset: number; copied: boolean; reservedBitsSet: boolean } {
    const hi = wordHi(table, i * 8), lo = wordLo(table, i * 8);
    return { l2Offset: entryOffset(hi, lo), copied: (hi & 0x80000000) !== 0, reservedBitsSet: (hi & 0x7f000000) !== 0 || (lo & 0x1fe) !== 0 };
  }

  /** Validates an L2 table's host offset before it is read. */
  checkL2Offset(l2Offset: number, l1Index: number, what = 'L1'): void {
    if (l2Offset % this.clusterSize !== 0) {
      throw new Qcow2Error(this.path, `${what}[${l1Index}] → L2 table`, l2Offset, 'L2 table offset is not cluster-aligned');
    }
    if (l2Offset < this.clusterSize) {
      throw new Qcow2Error(this.path, `${what}[${l1Index}] → L2 table`, l2Offset, 'L2 table would overlap the image header');
    }
    if (l2Offset + this.clusterSize > this.file.size) {
      throw new Qcow2Error(this.path, `${what}[${l1Index}] → L2 table`, l2Offset, `L2 table lies past the end of the file (0x${this.file.size.toString(16)})`);
    }
  }

  async l2Table(l2Offset: number, l1Index: number): Promise<Buffer> {
    const hit = this.l2Cache.get(l2Offset);
    if (hit) {
      this.l2Cache.delete(l2Offset);
      this.l2Cache.set(l2Offset, hit);
      return hit;
    }
    this.checkL2Offset(l2Offset, l1Index);
    const t = await this.file.read(l2Offset, this.clusterSize, `L1[${l1Index}] → L2 table`);
    this.cacheL2(l2Offset, t);
    return t;
  }

  private cacheL2(off: number, t: Buffer): void {
    this.l2Cache.set(off, t);
    if (this.l2Cache.size > Qcow2Image.L2_CACHE_ENTRIES) this.l2Cache.delete(this.l2Cache.keys().next().value!);
  }

  /** Drops cached metadata (after a write, or when the file changed on disk). */
  invalidateCaches(): void {
    this.l2Cache.clear();
  }

  /**
   * Walks the mapping of guest range [start, end) in runs of equal type (and contiguous host
   * offsets), reading L2 tables in batched, coalesced reads of up to `window` tables at a time.
   */
  async walk(start: number, end: number, visit: (r: MappingRun, l2: Buffer | null) => void | Promise<void>, opts: { signal?: AbortSignal; window?: number; l1?: Buffer; l1Label?: string } = {}): Promise<void> {
    const g = this.g;
    const l1 = opts.l1 ?? this.l1;
    const l1Label = opts.l1Label ?? 'L1';
    const l1Count = l1.length / 8;
    const perL2 = g.clusterSize * g.l2Size;
    end = Math.min(end, this.virtualSize);
    if (start >= end) return;
    const firstL1 = Math.floor(start / perL2);
    const lastL1 = Math.floor((end - 1) / perL2);
    // at most 256 tables and 64 MiB of them in memory per batch (2 MiB clusters: 32 tables)
    const window = opts.window ?? Math.max(1, Math.min(256, Math.floor((64 * 1024 * 1024) / g.clusterSize)));
    let pending = null as MappingRun | null;
    const flush = async (l2: Buffer | null) => {
      if (pending) {
        const r = pending;
        pending = null;
        await visit(r, l2);
      }
    };
    for (let w = firstL1; w <= lastL1; w += window) {
      if (opts.signal?.aborted) throw new Qcow2Error(this.path, 'walk', undefined, 'cancelled', 'cancelled');
      const wEnd = Math.min(lastL1 + 1, w + window);
      const offs: number[] = [];
      for (let i = w; i < wEnd; i++) {
        if (i >= l1Count) break;
        const { l2Offset } = this.l1Entry(i, l1);
        if (l2Offset === 0 || this.l2Cache.has(l2Offset)) continue;
        this.checkL2Offset(l2Offset, i, l1Label);
        offs.push(l2Offset);
      }
      const tables = offs.length > 1 ? await readMany(this.file, offs, g.clusterSize, o => `${l1Label} → L2 table at ${hex(o)}`) : new Map<number, Buffer>();
      for (let i = w; i < wEnd; i++) {
        const base = i * perL2;
        const s = Math.max(start, base), e = Math.min(end, base + perL2);
        const l2Offset = i < l1Count ? this.l1Entry(i, l1).l2Offset : 0;
        if (l2Offset === 0) {
          const pp = pending as MappingRun | null;
          if (pp && pp.type === SubclusterType.UnallocatedPlain && pp.guestOffset + pp.length === s) {
            pp.length += e - s;
          } else {
            await flush(null);
            pending = { guestOffset: s, length: e - s, type: SubclusterType.UnallocatedPlain, hostOffset: 0, l1Index: i, l2Index: Math.floor((s - base) / g.clusterSize) };
          }
          continue;
        }
        let l2 = tables.get(l2Offset) ?? this.l2Cache.get(l2Offset);
        if (!l2) l2 = await this.l2Table(l2Offset, i);
        if (!g.extendedL2) {
          await this.walkStandardTable(l2, l2Offset, i, l1Label, base, s, e, run => {
            const p = pending as MappingRun | null;
            if (p && p.type === run.type && p.guestOffset + p.length === run.guestOffset && run.type !== SubclusterType.Compressed
              && (run.type === SubclusterType.UnallocatedPlain || run.type === SubclusterType.ZeroPlain || p.hostOffset + p.length === run.hostOffset)) {
              p.length += run.length;
              return undefined;
            }
            const prev = pending;
            pending = run.type === SubclusterType.Compressed ? null : run;
            if (run.type === SubclusterType.Compressed) {
              // compressed runs are never merged: emit the pending run, then this one
              if (prev) {
                const r1 = visit(prev, l2!);
                if (r1) return r1.then(() => visit(run, l2!));
              }
              return visit(run, l2!);
            }
            return prev ? visit(prev, l2!) : undefined;
          });
          continue;
        }
        let pos = s;
        while (pos < e) {
          const idx = Math.floor((pos - base) / g.clusterSize);
          const clusterStart = base + idx * g.clusterSize;
          const sc = Math.floor((pos - clusterStart) / g.subclusterSize);
          const type = subclusterType(g, l2, idx, sc);
          const runEnd = Math.min(e, clusterStart + (sc + 1) * g.subclusterSize);
          const len = runEnd - pos;
          let host = 0;
          if (type === SubclusterType.Invalid) {
            throw new Qcow2Error(this.path, `${l1Label}[${i}] → L2[${hex(idx)}]`, l2Offset + idx * g.l2EntrySize, 'extended L2 entry has contradictory allocation and zero bits');
          }
          if (type === SubclusterType.Compressed) {
            await flush(l2);
            const { hostOffset, compressedSize } = decodeCompressed(g, wordHi(l2, idx * g.l2EntrySize), wordLo(l2, idx * g.l2EntrySize));
            const cEnd = Math.min(e, clusterStart + g.clusterSize);
            await visit({ guestOffset: pos, length: cEnd - pos, type, hostOffset: 0, l1Index: i, l2Index: idx, compressedOffset: hostOffset, compressedSize }, l2);
            pos = cEnd;
            continue;
          }
          if (type === SubclusterType.Normal || type === SubclusterType.ZeroAlloc || type === SubclusterType.UnallocatedAlloc) {
            const clusterHost = entryOffset(wordHi(l2, idx * g.l2EntrySize), wordLo(l2, idx * g.l2EntrySize));
            if (clusterHost % g.clusterSize !== 0) {
              throw new Qcow2Error(this.path, `${l1Label}[${i}] → L2[${hex(idx)}]`, l2Offset + idx * g.l2EntrySize, `data cluster offset ${hex(clusterHost)} is not cluster-aligned`);
            }
            host = clusterHost + (pos - clusterStart);
          }
          const p = pending as MappingRun | null;
          if (p && p.type === type && p.guestOffset + p.length === pos && (type === SubclusterType.UnallocatedPlain || type === SubclusterType.ZeroPlain || p.hostOffset + p.length === host)) {
            p.length += len;
          } else {
            await flush(l2);
            pending = { guestOffset: pos, length: len, type, hostOffset: host, l1Index: i, l2Index: idx };
          }
          pos = runEnd;
        }
      }
    }
    await flush(null);
  }

  /**
   * The mapping of one standard (non-extended) L2 table over guest range [s, e), as runs of equal
   * type and contiguous host offsets, found with tight loops over the entries (no per-entry
   * allocation or BigInt): runs of all-zero entries and of host-contiguous clusters are skipped
   * over in one pass. Each run is handed to `emit`, which merges or forwards it.
   */
  private async walkStandardTable(
    l2: Buffer, l2Offset: number, l1Index: number, l1Label: string, base: number, s: number, e: number,
    emit: (r: MappingRun) => void | Promise<void>,
  ): Promise<void> {
    const g = this.g;
    const cs = g.clusterSize;
    const externalData = g.externalData;
    const w32 = (l2.byteOffset & 3) === 0 ? new Int32Array(l2.buffer, l2.byteOffset, l2.length >> 2) : null;
    let idx = Math.floor((s - base) / cs);
    const idxEnd = Math.ceil((e - base) / cs);
    while (idx < idxEnd) {
      const p = idx * 8;
      const hi = ((l2[p] << 24) | (l2[p + 1] << 16) | (l2[p + 2] << 8) | l2[p + 3]) >>> 0;
      const lo = ((l2[p + 4] << 24) | (l2[p + 5] << 16) | (l2[p + 6] << 8) | l2[p + 7]) >>> 0;
      const clusterStart = base + idx * cs;
      const pos = clusterStart > s ? clusterStart : s;
      if (hi & 0x40000000) {
        const { hostOffset, compressedSize } = decodeCompressed(g, hi, lo);
        const cEnd = Math.min(e, clusterStart + cs);
        const r = emit({ guestOffset: pos, length: cEnd - pos, type: SubclusterType.Compressed, hostOffset: 0, l1Index, l2Index: idx, compressedOffset: hostOffset, compressedSize });
        if (r) await r;
        idx++;
        continue;
      }
      const hasOffset = (hi & 0x00ffffff) !== 0 || (lo & 0xfffffe00) !== 0 || (externalData && (hi & 0x80000000) !== 0);
      const zeroFlag = lo & 1;
      let type: SubclusterType;
      let host = 0;
      let j = idx + 1;
      if (!hasOffset) {
        type = zeroFlag ? SubclusterType.ZeroPlain : SubclusterType.UnallocatedPlain;
        if (hi === 0 && lo === 0 && w32) {
          while (j < idxEnd && w32[2 * j] === 0 && w32[2 * j + 1] === 0) j++;
        } else {
          // same type: no offset, not compressed, same zero flag (flags such as "copied" may differ)
          while (j < idxEnd) {
            const q = j * 8;
            const h2 = ((l2[q] << 24) | (l2[q + 1] << 16) | (l2[q + 2] << 8) | l2[q + 3]) >>> 0;
            const l2w = ((l2[q + 4] << 24) | (l2[q + 5] << 16) | (l2[q + 6] << 8) | l2[q + 7]) >>> 0;
            if ((h2 & 0x40000000) || (h2 & 0x00ffffff) || (l2w & 0xfffffe00) || (externalData && (h2 & 0x80000000)) || (l2w & 1) !== zeroFlag) break;
            j++;
          }
        }
      } else {
        type = zeroFlag ? SubclusterType.ZeroAlloc : SubclusterType.Normal;
        const clusterHost = (hi & 0x00ffffff) * 0x100000000 + ((lo & 0xfffffe00) >>> 0);
        if (clusterHost % cs !== 0) {
          throw new Qcow2Error(this.path, `${l1Label}[${l1Index}] → L2[${hex(idx)}]`, l2Offset + idx * 8, `data cluster offset ${hex(clusterHost)} is not cluster-aligned`);
        }
        host = clusterHost + (pos - clusterStart);
        let expect = clusterHost + cs;
        if (w32 && LITTLE_ENDIAN_HOST) {
          // the hottest loop (preallocated and sequentially written images): two 32-bit loads and a
          // byte swap per entry instead of eight byte loads
          while (j < idxEnd) {
            const a = w32[2 * j], b = w32[2 * j + 1];
            const h2 = ((a << 24) | ((a & 0xff00) << 8) | ((a >>> 8) & 0xff00) | (a >>> 24)) >>> 0;
            const l2w = ((b << 24) | ((b & 0xff00) << 8) | ((b >>> 8) & 0xff00) | (b >>> 24)) >>> 0;
            if ((h2 & 0x40000000) || (l2w & 1) !== zeroFlag) break;
            if ((h2 & 0x00ffffff) * 0x100000000 + ((l2w & 0xfffffe00) >>> 0) !== expect) break;
            expect += cs;
            j++;
          }
        } else {
          while (j < idxEnd) {
            const q = j * 8;
            const h2 = ((l2[q] << 24) | (l2[q + 1] << 16) | (l2[q + 2] << 8) | l2[q + 3]) >>> 0;
            const l2w = ((l2[q + 4] << 24) | (l2[q + 5] << 16) | (l2[q + 6] << 8) | l2[q + 7]) >>> 0;
            if ((h2 & 0x40000000) || (l2w & 1) !== zeroFlag) break;
            if ((h2 & 0x00ffffff) * 0x100000000 + ((l2w & 0xfffffe00) >>> 0) !== expect) break;
            expect += cs;
            j++;
          }
        }
      }
      const runEnd = Math.min(e, base + j * cs);
      const r = emit({ guestOffset: pos, length: runEnd - pos, type, hostOffset: host, l1Index, l2Index: idx });
      if (r) await r;
      idx = j;
    }
  }

  /**
   * QEMU's qcow2_detect_metadata_preallocation, exactly: true when at least
   * max(allocated/cluster × 10/9, allocated/cluster + 2) clusters have a non-zero refcount, where
   * "allocated" is what the host file system has really allocated (stat blocks). QEMU then asks the
   * file system for holes (SEEK_HOLE) inside data clusters and reports them as zero in `map`,
   * which Node cannot do (README, Known differences): callers use this to say so.
   */
  async detectMetadataPreallocation(): Promise<boolean> {
    const st = await this.file.handle.stat();
    const cs = this.clusterSize;
    const realClusters = Math.floor((st.blocks * 512) / cs);
    const threshold = Math.max(Math.floor((realClusters * 10) / 9), realClusters + 2);
    const endCluster = Math.ceil(st.size / cs);
    const refcounts = await readAllRefcounts(this.file, this.refcountTable, this.rg, endCluster);
    let count = 0;
    for (let i = 0; i < endCluster && count < threshold; i++) if (refcounts[i] !== 0) count++;
    return count >= threshold;
  }

  /**
   * As QEMU's block status does, once per image: when metadata preallocation is detected, data
   * clusters are looked up in the host file (SEEK_DATA/SEEK_HOLE) and holes report as zero.
   * Undefined when not detected or when the hole seeker addon is unavailable.
   */
  private async holeLookup(): Promise<{ seeker: HoleSeeker; fd: number } | undefined> {
    if (this.holeLookupState === undefined) {
      const seeker = this.encrypted ? undefined : holeSeeker();
      this.holeLookupState = seeker && (await this.detectMetadataPreallocation().catch(() => false))
        ? { seeker, fd: (this.dataFile ?? this.file).handle.fd }
        : null;
    }
    return this.holeLookupState ?? undefined;
  }
  private holeLookupState: { seeker: HoleSeeker; fd: number } | null | undefined;

  async layerStatus(start: number, end: number, visit: (e: StatusExtent) => void, signal?: AbortSignal): Promise<void> {
    const enc = this.encrypted;
    const holes = await this.holeLookup();
    await this.walk(start, end, r => {
      if (holes && r.type === SubclusterType.Normal) {
        forEachHostPiece(holes.seeker, holes.fd, r.hostOffset, r.length, (host, length, hole) => {
          visit({ start: r.guestOffset + (host - r.hostOffset), length, present: true, zero: hole, data: true, offset: host, depth: 0 });
        });
        return;
      }
      const e: StatusExtent = { start: r.guestOffset, length: r.length, present: false, zero: false, data: false, depth: 0 };
      switch (r.type) {
        case SubclusterType.Normal: e.present = true; e.data = true; if (!enc) e.offset = r.hostOffset; break;
        case SubclusterType.Compressed: e.present = true; e.data = true; break;
        case SubclusterType.ZeroPlain: e.present = true; e.zero = true; break;
        case SubclusterType.ZeroAlloc: e.present = true; e.zero = true; if (!enc) e.offset = r.hostOffset; break;
        case SubclusterType.UnallocatedAlloc: if (!enc) e.offset = r.hostOffset; break;
        default: break;
      }
      visit(e);
    }, { signal });
  }

  /** Reads guest bytes through the mapping and the backing chain; zeros where nothing is allocated. */
  async readGuest(guestOffset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(guestOffset) || !Number.isSafeInteger(length) || guestOffset < 0 || length < 0 || guestOffset + length > this.virtualSize) {
      throw new Qcow2Error(this.path, 'guest read', guestOffset, `range of ${length} bytes is outside the ${this.virtualSize}-byte disk`);
    }
    if (length > MAX_GUEST_READ) {
      throw new Qcow2Error(this.path, 'guest read', guestOffset, `${length} bytes in one read exceed the ${MAX_GUEST_READ}-byte limit`);
    }
    const out = Buffer.alloc(length);
    const dataFile = this.dataFile ?? this.file;
    await this.walk(guestOffset, guestOffset + length, async r => {
      const at = r.guestOffset - guestOffset;
      switch (r.type) {
        case SubclusterType.ZeroPlain:
        case SubclusterType.ZeroAlloc:
          return; // already zero
        case SubclusterType.UnallocatedPlain:
        case SubclusterType.UnallocatedAlloc: {
          if (!this.backing) return;
          const bEnd = Math.min(r.guestOffset + r.length, this.backing.virtualSize);
          if (bEnd > r.guestOffset) (await this.backing.readGuest(r.guestOffset, bEnd - r.guestOffset)).copy(out, at);
          return;
        }
        case SubclusterType.Normal: {
          if (this.encrypted) throw this.encryptedError(r);
          if (r.hostOffset >= dataFile.size && !this.dataFile) {
            throw new Qcow2Error(this.path, `L1[${r.l1Index}] → L2[${hex(r.l2Index)}] → data`, r.hostOffset, `data cluster lies past the end of the file (0x${dataFile.size.toString(16)})`);
          }
          (await dataFile.readPadded(r.hostOffset, r.length, `L1[${r.l1Index}] → L2[${hex(r.l2Index)}] → data`)).copy(out, at);
          return;
        }
        case SubclusterType.Compressed: {
          if (this.encrypted) throw this.encryptedError(r);
          const cluster = await this.readCompressedCluster(r.compressedOffset!, r.compressedSize!, `L1[${r.l1Index}] → L2[${hex(r.l2Index)}] → compressed data`);
          const within = r.guestOffset % this.clusterSize;
          cluster.copy(out, at, within, within + r.length);
          return;
        }
      }
    });
    return out;
  }

  async readCompressedCluster(hostOffset: number, compressedSize: number, structure: string): Promise<Buffer> {
    if (hostOffset >= this.file.size) {
      throw new Qcow2Error(this.path, structure, hostOffset, `compressed data lies past the end of the file (0x${this.file.size.toString(16)})`);
    }
    const raw = await this.file.readPadded(hostOffset, Math.min(compressedSize, 2 * this.clusterSize + 512), structure);
    try {
      return decompressCluster(this.header.compressionType, raw, this.clusterSize);
    } catch (e) {
      if (e instanceof DecompressError) throw new Qcow2Error(this.path, structure, hostOffset, e.message);
      throw e;
    }
  }

  private encryptedError(r: MappingRun): Qcow2Error {
    const method = this.header.cryptMethod === L.CRYPT_AES ? 'AES' : 'LUKS';
    return new Qcow2Error(this.path, `L1[${r.l1Index}] → L2[${hex(r.l2Index)}] → data`, r.hostOffset || r.compressedOffset, `guest data is encrypted (${method}); reading it needs the key, which QCOW2 Lens does not handle`, 'encrypted');
  }
}
