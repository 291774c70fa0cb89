// Over 400 lines on purpose: the one entry codec — decoders, the walker that is their hot path (decoding the same bits inline), and the encoders.
/**
 * The one L1/L2 entry codec and the one guest → host walker: L1 → L2 → entry, standard, zero,
 * compressed and extended-L2 (subcluster) entries. Entries are decoded from big-endian words with
 * 32-bit arithmetic on the masks in layout.ts (no BigInt on the hot path), so walking millions of
 * entries stays fast.
 */
import { throwIfCancelled } from '../cancel';
import { hex, Qcow2Error } from '../errors';
import { formatStep, PATH_SEPARATOR, step } from '../path';
import * as L from './layout';

/** QEMU's QCow2SubclusterType, one value per (sub)cluster. */
export const enum SubclusterType {
  UnallocatedPlain = 0, // no host cluster, reads through to the backing file
  UnallocatedAlloc = 1, // extended L2: host cluster reserved, this subcluster unallocated
  ZeroPlain = 2, // reads as zero, no host cluster
  ZeroAlloc = 3, // reads as zero, host cluster reserved
  Normal = 4, // data at hostOffset
  Compressed = 5, // compressed data
  Invalid = 6, // contradictory bits (extended L2)
}

export const SUBCLUSTER_TYPE_NAMES = ['unallocated', 'unallocated (cluster reserved)', 'zero', 'zero (cluster reserved)', 'data', 'compressed', 'invalid'];

/** The high and low 32-bit halves of the 64-bit big-endian word at byte `pos`. */
export function wordHi(buf: Uint8Array, pos: number): number {
  return ((buf[pos] << 24) | (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]) >>> 0;
}
export function wordLo(buf: Uint8Array, pos: number): number {
  return ((buf[pos + 4] << 24) | (buf[pos + 5] << 16) | (buf[pos + 6] << 8) | buf[pos + 7]) >>> 0;
}

// ── entry bits, on the two 32-bit halves of an entry ──

/** Bits 9-55 of a 64-bit word as a number: the host offset of L1/L2/bitmap-table entries. */
export function entryOffset(hi: number, lo: number): number {
  return (hi & L.ENTRY_OFFSET_HI_MASK) * 0x100000000 + ((lo & L.ENTRY_OFFSET_LO_MASK) >>> 0);
}
/** True when bits 9-55 are not all zero (the entry names a host cluster). */
export function hasEntryOffset(hi: number, lo: number): boolean {
  return (hi & L.ENTRY_OFFSET_HI_MASK) !== 0 || (lo & L.ENTRY_OFFSET_LO_MASK) !== 0;
}
/** Bits 9-63 of a refcount table entry: the refcount block's host offset. */
export function reftableEntryOffset(hi: number, lo: number): number {
  return hi * 0x100000000 + ((lo & L.REFT_OFFSET_LO_MASK) >>> 0);
}
export function isCompressed(hi: number): boolean {
  return (hi & L.OFLAG_COMPRESSED_HI) !== 0;
}
export function isCopied(hi: number): boolean {
  return (hi & L.OFLAG_COPIED_HI) !== 0;
}
/** The high half with the copied flag (bit 63) set or cleared. */
export function withCopied(hi: number, on: boolean): number {
  return on ? (hi | L.OFLAG_COPIED_HI) >>> 0 : (hi & ~L.OFLAG_COPIED_HI) >>> 0;
}
/** Bit 0 of a standard L2 entry: the cluster reads as zeros. */
export function hasZeroFlag(lo: number): boolean {
  return (lo & L.OFLAG_ZERO_LO) !== 0;
}
/** L1 bits 0-8 and 56-62, which must be zero. */
export function l1ReservedBits(hi: number, lo: number): boolean {
  return (hi & L.L1E_RESERVED_HI) !== 0 || (lo & L.L1E_RESERVED_LO) !== 0;
}
/** Standard L2 bits 1-8 and 56-61, which must be zero. */
export function l2ReservedBits(hi: number, lo: number): boolean {
  return (hi & L.L2E_STD_RESERVED_HI) !== 0 || (lo & L.L2E_STD_RESERVED_LO) !== 0;
}
/** The L1 entry at index `i` of a raw table: its L2 table's offset (0 = none). */
export function l1EntryOffset(l1: Uint8Array, i: number): number {
  return entryOffset(wordHi(l1, i * 8), wordLo(l1, i * 8));
}

export interface L2Geometry {
  clusterBits: number;
  clusterSize: number;
  extendedL2: boolean;
  /** Bytes per L2 entry: 8, or 16 with extended L2. */
  l2EntrySize: number;
  /** Entries per L2 table. */
  l2Size: number;
  l2Bits: number;
  subclusterSize: number;
  subclustersPerCluster: number;
  /** Bit position separating a compressed entry's host offset from its sector count. */
  compressedOffsetBits: number;
  /** With an external data file, offset 0 with the copied flag set is an allocated cluster. */
  externalData: boolean;
}

export function l2Geometry(clusterBits: number, extendedL2: boolean, externalData = false): L2Geometry {
  const clusterSize = 2 ** clusterBits;
  const l2EntrySize = extendedL2 ? 16 : 8;
  const l2Size = clusterSize / l2EntrySize;
  const sc = extendedL2 ? L.SUBCLUSTERS_PER_CLUSTER : 1;
  return {
    clusterBits, clusterSize, extendedL2, l2EntrySize, l2Size, l2Bits: Math.log2(l2Size),
    subclusterSize: clusterSize / sc, subclustersPerCluster: sc,
    compressedOffsetBits: 62 - (clusterBits - 8),
    externalData,
  };
}

export interface DecodedL2Entry {
  raw: bigint;
  bitmap?: bigint;
  copied: boolean;
  compressed: boolean;
  /** Standard entry: host cluster offset (0 = none). Compressed: byte offset of the compressed data. */
  hostOffset: number;
  /** Compressed: bytes occupied on disk (from the sector count, as the spec defines). */
  compressedSize: number;
  zeroFlag: boolean;
  reservedBitsSet: boolean;
}

export function decodeL2Entry(g: L2Geometry, table: Uint8Array, index: number): DecodedL2Entry {
  const pos = index * g.l2EntrySize;
  const hi = wordHi(table, pos), lo = wordLo(table, pos);
  const raw = (BigInt(hi) << 32n) | BigInt(lo);
  const copied = isCopied(hi);
  const compressed = isCompressed(hi);
  const bitmap = g.extendedL2 ? (BigInt(wordHi(table, pos + 8)) << 32n) | BigInt(wordLo(table, pos + 8)) : undefined;
  if (compressed) {
    return { raw, bitmap, copied, compressed, hostOffset: compressedOffset(g, hi, lo), compressedSize: compressedLength(g, hi, lo), zeroFlag: false, reservedBitsSet: false };
  }
  return {
    raw, bitmap, copied, compressed,
    hostOffset: entryOffset(hi, lo),
    compressedSize: 0,
    zeroFlag: hasZeroFlag(lo),
    reservedBitsSet: l2ReservedBits(hi, lo),
  };
}

// Compressed cluster descriptor: host offset in bits 0..x-1, additional 512-byte sectors in x..61,
// where x = 62 - (cluster_bits - 8) lies in 49..61, so both parts split at bit 32 of the high half.

/** A compressed entry's byte offset of the compressed data. */
export function compressedOffset(g: L2Geometry, hi: number, lo: number): number {
  const hiBits = g.compressedOffsetBits - 32;
  return (hi & ((1 << hiBits) - 1)) * 0x100000000 + lo;
}
/** A compressed entry's bytes on disk, from its offset to the end of its last 512-byte sector. */
export function compressedLength(g: L2Geometry, hi: number, lo: number): number {
  const nbSectors = (hi & L.COMPRESSED_DESC_HI_MASK) >>> (g.compressedOffsetBits - 32);
  return (nbSectors + 1) * L.COMPRESSED_SECTOR_SIZE - (compressedOffset(g, hi, lo) & (L.COMPRESSED_SECTOR_SIZE - 1));
}
/** The compressed entry's host range: where its data starts and how many bytes it occupies. */
export function decodeCompressed(g: L2Geometry, hi: number, lo: number): { hostOffset: number; compressedSize: number } {
  return { hostOffset: compressedOffset(g, hi, lo), compressedSize: compressedLength(g, hi, lo) };
}

/**
 * The type of subcluster `sc` of the L2 entry at `index` (QEMU's qcow2_get_subcluster_type).
 * QEMU honours the zero flag (bit 0) in version 2 images too, so we do the same.
 */
export function subclusterType(g: L2Geometry, table: Uint8Array, index: number, sc: number): SubclusterType {
  const pos = index * g.l2EntrySize;
  const hi = wordHi(table, pos), lo = wordLo(table, pos);
  if (isCompressed(hi)) {
    if (g.extendedL2 && (wordHi(table, pos + 8) | wordLo(table, pos + 8)) !== 0) return SubclusterType.Invalid;
    return SubclusterType.Compressed;
  }
  const hasOffset = hasEntryOffset(hi, lo) || (g.externalData && isCopied(hi));
  if (!g.extendedL2) {
    if (hasZeroFlag(lo)) return hasOffset ? SubclusterType.ZeroAlloc : SubclusterType.ZeroPlain;
    return hasOffset ? SubclusterType.Normal : SubclusterType.UnallocatedPlain;
  }
  const zeroBits = wordHi(table, pos + 8);
  const allocBits = wordLo(table, pos + 8);
  const zero = (zeroBits >>> sc) & 1;
  const alloc = (allocBits >>> sc) & 1;
  if (!hasOffset) {
    if (zero) return SubclusterType.ZeroPlain;
    if (alloc) return SubclusterType.Invalid;
    return SubclusterType.UnallocatedPlain;
  }
  if (zero && alloc) return SubclusterType.Invalid;
  if (zero) return SubclusterType.ZeroAlloc;
  if (alloc) return SubclusterType.Normal;
  return SubclusterType.UnallocatedAlloc;
}

/** `L1[3] → L2[0x1f]`, under the L1 table `l1Label` names ('L1', `snapshot "s1" L1`). */
export function l2EntryPath(l1Label: string, l1Index: number, l2Index: number): string {
  return `${l1Label}[${l1Index}]${PATH_SEPARATOR}${formatStep(step('L2', l2Index))}`;
}

// ── the guest → host walker ──

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

/**
 * Where the walker gets L2 tables: called once per window of L1 entries with the L1 indexes and
 * L2 offsets (non-zero) the window reaches, in L1 order; it validates and reads them (in as few
 * reads as it can) and returns the lookup the walker then calls for each of them.
 */
export type L2WindowReader = (l1Indexes: readonly number[], l2Offsets: readonly number[])
  => Promise<(l2Offset: number, l1Index: number) => Buffer | Promise<Buffer>>;

export type MappingVisitor = (r: MappingRun, l2: Buffer | null) => void | Promise<void>;

export interface WalkOptions {
  signal?: AbortSignal;
  /** L1 entries whose L2 tables are read per batch. */
  window?: number;
  /** The L1 table's name in error messages ('L1', `snapshot "s1" L1`). */
  l1Label?: string;
}

/** True on little-endian hosts (all Node targets in practice): enables byte-swapped 32-bit loads. */
const LITTLE_ENDIAN_HOST = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * Walks the mapping of guest range [start, end) of a disk of `virtualSize` bytes through the raw
 * L1 table `l1`, in runs of equal type (and contiguous host offsets), reading L2 tables through
 * `readWindow` up to `window` tables at a time. `file` names the image in errors.
 */
export async function walkMapping(
  g: L2Geometry, file: string, l1: Uint8Array, virtualSize: number, start: number, end: number,
  readWindow: L2WindowReader, visit: MappingVisitor, opts: WalkOptions = {},
): Promise<void> {
  const l1Label = opts.l1Label ?? 'L1';
  const l1Count = l1.length / 8;
  const perL2 = g.clusterSize * g.l2Size;
  end = Math.min(end, virtualSize);
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
    throwIfCancelled(opts.signal, file, 'walk');
    const wEnd = Math.min(lastL1 + 1, w + window);
    const idxs: number[] = [], offs: number[] = [];
    for (let i = w; i < wEnd && i < l1Count; i++) {
      const l2Offset = l1EntryOffset(l1, i);
      if (l2Offset !== 0) { idxs.push(i); offs.push(l2Offset); }
    }
    const tableOf = await readWindow(idxs, offs);
    for (let i = w; i < wEnd; i++) {
      const base = i * perL2;
      const s = Math.max(start, base), e = Math.min(end, base + perL2);
      const l2Offset = i < l1Count ? l1EntryOffset(l1, i) : 0;
      if (l2Offset === 0) {
        const pp = pending;
        if (pp && pp.type === SubclusterType.UnallocatedPlain && pp.guestOffset + pp.length === s) {
          pp.length += e - s;
        } else {
          await flush(null);
          pending = { guestOffset: s, length: e - s, type: SubclusterType.UnallocatedPlain, hostOffset: 0, l1Index: i, l2Index: Math.floor((s - base) / g.clusterSize) };
        }
        continue;
      }
      const l2 = await tableOf(l2Offset, i);
      if (!g.extendedL2) {
        await walkStandardTable(g, file, l2, l2Offset, i, l1Label, base, s, e, run => {
          const p = pending;
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
              const r1 = visit(prev, l2);
              if (r1) return r1.then(() => visit(run, l2));
            }
            return visit(run, l2);
          }
          return prev ? visit(prev, l2) : undefined;
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
          throw new Qcow2Error(file, l2EntryPath(l1Label, i, idx), l2Offset + idx * g.l2EntrySize, 'extended L2 entry has contradictory allocation and zero bits');
        }
        const hi = wordHi(l2, idx * g.l2EntrySize), lo = wordLo(l2, idx * g.l2EntrySize);
        if (type === SubclusterType.Compressed) {
          await flush(l2);
          const cEnd = Math.min(e, clusterStart + g.clusterSize);
          await visit({ guestOffset: pos, length: cEnd - pos, type, hostOffset: 0, l1Index: i, l2Index: idx, compressedOffset: compressedOffset(g, hi, lo), compressedSize: compressedLength(g, hi, lo) }, l2);
          pos = cEnd;
          continue;
        }
        if (type === SubclusterType.Normal || type === SubclusterType.ZeroAlloc || type === SubclusterType.UnallocatedAlloc) {
          const clusterHost = entryOffset(hi, lo);
          if (clusterHost % g.clusterSize !== 0) {
            throw new Qcow2Error(file, l2EntryPath(l1Label, i, idx), l2Offset + idx * g.l2EntrySize, `data cluster offset ${hex(clusterHost)} is not cluster-aligned`);
          }
          host = clusterHost + (pos - clusterStart);
        }
        const p = pending;
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
async function walkStandardTable(
  g: L2Geometry, file: string, l2: Buffer, l2Offset: number, l1Index: number, l1Label: string, base: number, s: number, e: number,
  emit: (r: MappingRun) => void | Promise<void>,
): Promise<void> {
  // the masks as locals: the loops below run once per entry
  const COMPRESSED = L.OFLAG_COMPRESSED_HI, COPIED = L.OFLAG_COPIED_HI, ZERO = L.OFLAG_ZERO_LO;
  const OFF_HI = L.ENTRY_OFFSET_HI_MASK, OFF_LO = L.ENTRY_OFFSET_LO_MASK;
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
    if (hi & COMPRESSED) {
      const cEnd = Math.min(e, clusterStart + cs);
      const r = emit({ guestOffset: pos, length: cEnd - pos, type: SubclusterType.Compressed, hostOffset: 0, l1Index, l2Index: idx, compressedOffset: compressedOffset(g, hi, lo), compressedSize: compressedLength(g, hi, lo) });
      if (r) await r;
      idx++;
      continue;
    }
    const hasOffset = (hi & OFF_HI) !== 0 || (lo & OFF_LO) !== 0 || (externalData && (hi & COPIED) !== 0);
    const zeroFlag = lo & ZERO;
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
          if ((h2 & COMPRESSED) || (h2 & OFF_HI) || (l2w & OFF_LO) || (externalData && (h2 & COPIED)) || (l2w & ZERO) !== zeroFlag) break;
          j++;
        }
      }
    } else {
      type = zeroFlag ? SubclusterType.ZeroAlloc : SubclusterType.Normal;
      const clusterHost = (hi & OFF_HI) * 0x100000000 + ((lo & OFF_LO) >>> 0);
      if (clusterHost % cs !== 0) {
        throw new Qcow2Error(file, l2EntryPath(l1Label, l1Index, idx), l2Offset + idx * 8, `data cluster offset ${hex(clusterHost)} is not cluster-aligned`);
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
          if ((h2 & COMPRESSED) || (l2w & ZERO) !== zeroFlag) break;
          if ((h2 & OFF_HI) * 0x100000000 + ((l2w & OFF_LO) >>> 0) !== expect) break;
          expect += cs;
          j++;
        }
      } else {
        while (j < idxEnd) {
          const q = j * 8;
          const h2 = ((l2[q] << 24) | (l2[q + 1] << 16) | (l2[q + 2] << 8) | l2[q + 3]) >>> 0;
          const l2w = ((l2[q + 4] << 24) | (l2[q + 5] << 16) | (l2[q + 6] << 8) | l2[q + 7]) >>> 0;
          if ((h2 & COMPRESSED) || (l2w & ZERO) !== zeroFlag) break;
          if ((h2 & OFF_HI) * 0x100000000 + ((l2w & OFF_LO) >>> 0) !== expect) break;
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

// ── Encoders: 64-bit big-endian entries written from 32-bit words (no BigInt on the hot path) ──

const TWO_32 = 0x100000000;

/** The high 32-bit word of a host offset (the low word is `offset >>> 0`). */
export function offsetHi(offset: number): number {
  return Math.floor(offset / TWO_32);
}

/** Writes a 64-bit entry from its high and low 32-bit words. */
export function putEntry(t: Uint8Array, pos: number, hi: number, lo: number): void {
  t[pos] = hi >>> 24; t[pos + 1] = hi >>> 16; t[pos + 2] = hi >>> 8; t[pos + 3] = hi;
  t[pos + 4] = lo >>> 24; t[pos + 5] = lo >>> 16; t[pos + 6] = lo >>> 8; t[pos + 7] = lo;
}

/** Writes a 64-bit entry (or header field) holding `offset`, with `flagsHi` (e.g. OFLAG_COPIED_HI) in its high word. */
export function putOffset(t: Uint8Array, pos: number, offset: number, flagsHi = 0): void {
  putEntry(t, pos, offsetHi(offset) | flagsHi, offset >>> 0);
}

/**
 * The high word of a compressed L2 entry for `len` bytes at `host`: the compressed flag, the
 * additional 512-byte sectors at bit `compressedOffsetBits` (49 or higher, so within the high
 * word) and the offset's top bits. The low word is `host >>> 0`.
 */
export function compressedEntryHi(g: L2Geometry, host: number, len: number): number {
  const nb = Math.floor((host + len - 1) / L.COMPRESSED_SECTOR_SIZE) - Math.floor(host / L.COMPRESSED_SECTOR_SIZE);
  return (L.OFLAG_COMPRESSED_HI | (nb << (g.compressedOffsetBits - 32)) | offsetHi(host)) >>> 0;
}
