/**
 * VMDK hosted sparse extent ("KDMV", version 1-3) on-disk structures, as QEMU 7.2's block/vmdk.c
 * and VMware's Virtual Disk Format 5.0 define them: the sparse extent header, grain directory
 * (GD) and grain tables (GT) of 32-bit sector numbers, and the stream-optimized markers. All
 * fields are little-endian. This file is the only place that knows their offsets.
 */

export const SECTOR = 512;
/** "KDMV" read as a big-endian word: the magic of a hosted sparse extent. */
export const VMDK4_MAGIC = 0x4b444d56;
/** "COWD": the older ESX sparse extent (vmfsSparse), which we do not read. */
export const VMDK3_MAGIC = 0x434f5744;

export const FLAG_NL_DETECT = 1 << 0;
export const FLAG_RGD = 1 << 1;
export const FLAG_ZERO_GRAIN = 1 << 2;
export const FLAG_COMPRESS = 1 << 16;
export const FLAG_MARKER = 1 << 17;
export const COMPRESSION_DEFLATE = 1;
/** gd_offset of a stream-optimized extent whose grain directory follows the grains (see the footer). */
export const GD_AT_END = 0xffffffffffffffffn;

/** A grain table entry of a grain that reads as zero (with FLAG_ZERO_GRAIN). */
export const GTE_ZEROED = 1;

/** What QEMU creates: 64 KiB grains, 512 entries per grain table, a 20-sector descriptor at sector 1. */
export const DEFAULT_GRAIN_SECTORS = 128;
export const DEFAULT_GTES_PER_GT = 512;
export const DESCRIPTOR_OFFSET = 1;
export const DESCRIPTOR_SECTORS = 20;

/** Stream-optimized marker types (the marker's `size` is 0 for all of them; grain markers have size > 0). */
export const MARKER_EOS = 0;
export const MARKER_GT = 1;
export const MARKER_GD = 2;
export const MARKER_FOOTER = 3;

/** Header field offsets (the magic at 0, then QEMU's packed VMDK4Header). */
const H = {
  magic: 0, version: 4, flags: 8, capacity: 12, granularity: 20, descOffset: 28, descSize: 36, gtesPerGt: 44,
  rgdOffset: 48, gdOffset: 56, grainOffset: 64, filler: 72, checkBytes: 73, compressAlgorithm: 77,
} as const;
/** The end of the header fields QEMU reads (magic included). */
export const HEADER_BYTES = 79;
/** The newline-detection bytes: "\n \r\n". */
const CHECK_BYTES = [0x0a, 0x20, 0x0d, 0x0a];

export interface SparseHeader {
  magic: number;
  version: number;
  flags: number;
  /** Sectors. */
  capacity: bigint;
  /** Sectors per grain. */
  granularity: bigint;
  descOffset: bigint;
  descSize: bigint;
  gtesPerGt: number;
  rgdOffset: bigint;
  gdOffset: bigint;
  grainOffset: bigint;
  compressAlgorithm: number;
}

export function decodeHeader(buf: Buffer, at = 0): SparseHeader {
  return {
    magic: buf.readUInt32BE(at + H.magic),
    version: buf.readUInt32LE(at + H.version),
    flags: buf.readUInt32LE(at + H.flags),
    capacity: buf.readBigUInt64LE(at + H.capacity),
    granularity: buf.readBigUInt64LE(at + H.granularity),
    descOffset: buf.readBigUInt64LE(at + H.descOffset),
    descSize: buf.readBigUInt64LE(at + H.descSize),
    gtesPerGt: buf.readUInt32LE(at + H.gtesPerGt),
    rgdOffset: buf.readBigUInt64LE(at + H.rgdOffset),
    gdOffset: buf.readBigUInt64LE(at + H.gdOffset),
    grainOffset: buf.readBigUInt64LE(at + H.grainOffset),
    compressAlgorithm: buf.readUInt16LE(at + H.compressAlgorithm),
  };
}

/** One 512-byte sector holding the header (the rest zero), as QEMU writes it. */
export function encodeHeader(h: Omit<SparseHeader, 'magic'>): Buffer {
  const buf = Buffer.alloc(SECTOR);
  buf.writeUInt32BE(VMDK4_MAGIC, H.magic);
  buf.writeUInt32LE(h.version, H.version);
  buf.writeUInt32LE(h.flags >>> 0, H.flags);
  buf.writeBigUInt64LE(h.capacity, H.capacity);
  buf.writeBigUInt64LE(h.granularity, H.granularity);
  buf.writeBigUInt64LE(h.descOffset, H.descOffset);
  buf.writeBigUInt64LE(h.descSize, H.descSize);
  buf.writeUInt32LE(h.gtesPerGt, H.gtesPerGt);
  buf.writeBigUInt64LE(h.rgdOffset, H.rgdOffset);
  buf.writeBigUInt64LE(h.gdOffset, H.gdOffset);
  buf.writeBigUInt64LE(h.grainOffset, H.grainOffset);
  Buffer.from(CHECK_BYTES).copy(buf, H.checkBytes);
  buf.writeUInt16LE(h.compressAlgorithm, H.compressAlgorithm);
  return buf;
}

/** A metadata marker sector: `value` (sectors that follow, 0 for end-of-stream), size 0, `type`. */
export function encodeMarker(value: number, type: number): Buffer {
  const buf = Buffer.alloc(SECTOR);
  buf.writeBigUInt64LE(BigInt(value), 0);
  buf.writeUInt32LE(0, 8);
  buf.writeUInt32LE(type, 12);
  return buf;
}

export interface Marker {
  value: bigint;
  size: number;
  type: number;
}

export function decodeMarker(buf: Buffer, at = 0): Marker {
  return { value: buf.readBigUInt64LE(at), size: buf.readUInt32LE(at + 8), type: buf.readUInt32LE(at + 12) };
}

/** A grain marker's header: the grain's first guest sector and the compressed length that follows. */
export const GRAIN_MARKER_BYTES = 12;

export function encodeGrainMarker(lba: number, compressed: Uint8Array): Buffer {
  const padded = Math.ceil((GRAIN_MARKER_BYTES + compressed.length) / SECTOR) * SECTOR;
  const buf = Buffer.alloc(padded);
  buf.writeBigUInt64LE(BigInt(lba), 0);
  buf.writeUInt32LE(compressed.length, 8);
  buf.set(compressed, GRAIN_MARKER_BYTES);
  return buf;
}

/** A grain directory or grain table: 32-bit little-endian sector numbers, padded to whole sectors. */
export function encodeTable(entries: Uint32Array): Buffer {
  const buf = Buffer.alloc(Math.ceil((entries.length * 4) / SECTOR) * SECTOR);
  for (let i = 0; i < entries.length; i++) buf.writeUInt32LE(entries[i], i * 4);
  return buf;
}
