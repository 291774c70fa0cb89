/**
 * Guest → host cluster mapping: L1 → L2 → entry, standard, zero, compressed and extended-L2
 * (subcluster) entries. Entries are decoded from big-endian words with 32-bit arithmetic (no BigInt
 * on the hot path), so walking millions of entries stays fast.
 */
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

/** Bits 9-55 of a 64-bit word as a number: the host offset of L1/L2/bitmap-table entries. */
export function entryOffset(hi: number, lo: number): number {
  return (hi & 0x00ffffff) * 0x100000000 + ((lo & 0xfffffe00) >>> 0);
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
  const copied = (hi & 0x80000000) !== 0;
  const compressed = (hi & 0x40000000) !== 0;
  const bitmap = g.extendedL2 ? (BigInt(wordHi(table, pos + 8)) << 32n) | BigInt(wordLo(table, pos + 8)) : undefined;
  if (compressed) {
    const { hostOffset, compressedSize } = decodeCompressed(g, hi, lo);
    return { raw, bitmap, copied, compressed, hostOffset, compressedSize, zeroFlag: false, reservedBitsSet: false };
  }
  return {
    raw, bitmap, copied, compressed,
    hostOffset: entryOffset(hi, lo),
    compressedSize: 0,
    zeroFlag: (lo & 1) === 1,
    reservedBitsSet: (raw & L.L2E_STD_RESERVED_MASK) !== 0n,
  };
}

/** Compressed cluster descriptor: host offset in bits 0..x-1, additional 512-byte sectors in x..61. */
export function decodeCompressed(g: L2Geometry, hi: number, lo: number): { hostOffset: number; compressedSize: number } {
  const x = g.compressedOffsetBits;
  const big = (BigInt(hi & 0x3fffffff) << 32n) | BigInt(lo);
  const hostOffset = Number(big & ((1n << BigInt(x)) - 1n));
  const nbSectors = Number(big >> BigInt(x));
  const compressedSize = (nbSectors + 1) * L.COMPRESSED_SECTOR_SIZE - (hostOffset & (L.COMPRESSED_SECTOR_SIZE - 1));
  return { hostOffset, compressedSize };
}

/**
 * The type of subcluster `sc` of the L2 entry at `index` (QEMU's qcow2_get_subcluster_type).
 * QEMU honours the zero flag (bit 0) in version 2 images too, so we do the same.
 */
export function subclusterType(g: L2Geometry, table: Uint8Array, index: number, sc: number): SubclusterType {
  const pos = index * g.l2EntrySize;
  const hi = wordHi(table, pos), lo = wordLo(table, pos);
  if (hi & 0x40000000) {
    if (g.extendedL2 && (wordHi(table, pos + 8) | wordLo(table, pos + 8)) !== 0) return SubclusterType.Invalid;
    return SubclusterType.Compressed;
  }
  const hasOffset = (hi & 0x00ffffff) !== 0 || (lo & 0xfffffe00) !== 0 || (g.externalData && (hi & 0x80000000) !== 0);
  if (!g.extendedL2) {
    if (lo & 1) return hasOffset ? SubclusterType.ZeroAlloc : SubclusterType.ZeroPlain;
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
