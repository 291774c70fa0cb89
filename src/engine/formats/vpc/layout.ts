/**
 * VHD (Virtual PC / Hyper-V "vpc") on-disk structures, as QEMU 7.2's block/vpc.c reads and writes
 * them: the 512-byte hard disk footer (at the end of every image, and copied at offset 0 of a
 * dynamic one), the 1024-byte dynamic disk header, and the block allocation table (BAT). All
 * fields are big-endian. This file is the only place that knows their offsets.
 */

export const FOOTER_SIZE = 512;
export const DYNAMIC_HEADER_SIZE = 1024;
export const FOOTER_COOKIE = 'conectix';
export const DYNAMIC_COOKIE = 'cxsparse';

export const DISK_FIXED = 2;
export const DISK_DYNAMIC = 3;
export const DISK_DIFFERENCING = 4;

/** VHD timestamps count seconds from 2000-01-01 00:00:00 UTC. */
export const VHD_EPOCH = 946684800;

/** The largest disk QEMU accepts: 2040 GiB, in 512-byte sectors. */
export const VHD_MAX_SECTORS = 0xff000000;
export const CHS_MAX_CYLINDERS = 65535;
export const CHS_MAX_HEADS = 16;
export const CHS_MAX_SECTORS_PER_TRACK = 255;
/** The largest CHS product: a disk of that geometry takes its size from `currentSize` instead. */
export const VHD_MAX_GEOMETRY = CHS_MAX_CYLINDERS * CHS_MAX_HEADS * CHS_MAX_SECTORS_PER_TRACK;

/** The block size QEMU (and Hyper-V) create dynamic disks with. */
export const DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024;
/** A BAT entry of a block that is not allocated. */
export const BAT_UNUSED = 0xffffffff;
/** The dynamic header's "next structure" and a fixed disk's data offset: all 64 bits set (MS tools want all of them). */
export const NO_OFFSET = 0xffffffffffffffffn;

/** Footer field offsets. */
const F = {
  cookie: 0, features: 8, version: 12, dataOffset: 16, timestamp: 24, creatorApp: 28, creatorVersion: 32,
  creatorOs: 36, originalSize: 40, currentSize: 48, cylinders: 56, heads: 58, sectorsPerTrack: 59, diskType: 60,
  checksum: 64, uuid: 68, savedState: 84,
} as const;

/** Dynamic disk header field offsets. */
const D = {
  cookie: 0, dataOffset: 8, tableOffset: 16, version: 24, maxTableEntries: 28, blockSize: 32, checksum: 36,
  parentUuid: 40, parentTimestamp: 56, parentName: 64,
} as const;

export interface VhdFooter {
  cookie: string;
  features: number;
  version: number;
  dataOffset: bigint;
  timestamp: number;
  /** Four bytes, e.g. "qemu", "qem2", "win ", "vpc ", "tap\0". */
  creatorApp: string;
  creatorVersion: number;
  creatorOs: string;
  originalSize: bigint;
  currentSize: bigint;
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
  diskType: number;
  checksum: number;
  uuid: Buffer;
  savedState: number;
}

export interface VhdDynamicHeader {
  cookie: string;
  dataOffset: bigint;
  tableOffset: bigint;
  version: number;
  maxTableEntries: number;
  blockSize: number;
  checksum: number;
}

/** The VHD checksum: the one's complement of the byte sum, the checksum field itself counted as zero. */
export function vhdChecksum(buf: Uint8Array, checksumAt: number): number {
  let sum = 0;
  for (let i = 0; i < buf.length; i++) {
    if (i >= checksumAt && i < checksumAt + 4) continue;
    sum = (sum + buf[i]) >>> 0;
  }
  return (~sum) >>> 0;
}

export function footerChecksumOk(buf: Uint8Array): boolean {
  return vhdChecksum(buf, F.checksum) === Buffer.from(buf.buffer, buf.byteOffset, buf.length).readUInt32BE(F.checksum);
}

export function decodeFooter(buf: Buffer): VhdFooter {
  return {
    cookie: buf.toString('latin1', F.cookie, F.cookie + 8),
    features: buf.readUInt32BE(F.features),
    version: buf.readUInt32BE(F.version),
    dataOffset: buf.readBigUInt64BE(F.dataOffset),
    timestamp: buf.readUInt32BE(F.timestamp),
    creatorApp: buf.toString('latin1', F.creatorApp, F.creatorApp + 4),
    creatorVersion: buf.readUInt32BE(F.creatorVersion),
    creatorOs: buf.toString('latin1', F.creatorOs, F.creatorOs + 4),
    originalSize: buf.readBigUInt64BE(F.originalSize),
    currentSize: buf.readBigUInt64BE(F.currentSize),
    cylinders: buf.readUInt16BE(F.cylinders),
    heads: buf.readUInt8(F.heads),
    sectorsPerTrack: buf.readUInt8(F.sectorsPerTrack),
    diskType: buf.readUInt32BE(F.diskType),
    checksum: buf.readUInt32BE(F.checksum),
    uuid: Buffer.from(buf.subarray(F.uuid, F.uuid + 16)),
    savedState: buf.readUInt8(F.savedState),
  };
}

/** The 512-byte footer, its checksum computed. */
export function encodeFooter(f: Omit<VhdFooter, 'checksum'>): Buffer {
  const buf = Buffer.alloc(FOOTER_SIZE);
  buf.write(f.cookie, F.cookie, 8, 'latin1');
  buf.writeUInt32BE(f.features, F.features);
  buf.writeUInt32BE(f.version, F.version);
  buf.writeBigUInt64BE(f.dataOffset, F.dataOffset);
  buf.writeUInt32BE(f.timestamp, F.timestamp);
  buf.write(f.creatorApp, F.creatorApp, 4, 'latin1');
  buf.writeUInt32BE(f.creatorVersion, F.creatorVersion);
  buf.write(f.creatorOs, F.creatorOs, 4, 'latin1');
  buf.writeBigUInt64BE(f.originalSize, F.originalSize);
  buf.writeBigUInt64BE(f.currentSize, F.currentSize);
  buf.writeUInt16BE(f.cylinders, F.cylinders);
  buf.writeUInt8(f.heads, F.heads);
  buf.writeUInt8(f.sectorsPerTrack, F.sectorsPerTrack);
  buf.writeUInt32BE(f.diskType, F.diskType);
  f.uuid.copy(buf, F.uuid, 0, 16);
  buf.writeUInt8(f.savedState, F.savedState);
  buf.writeUInt32BE(vhdChecksum(buf, F.checksum), F.checksum);
  return buf;
}

export function decodeDynamicHeader(buf: Buffer): VhdDynamicHeader {
  return {
    cookie: buf.toString('latin1', D.cookie, D.cookie + 8),
    dataOffset: buf.readBigUInt64BE(D.dataOffset),
    tableOffset: buf.readBigUInt64BE(D.tableOffset),
    version: buf.readUInt32BE(D.version),
    maxTableEntries: buf.readUInt32BE(D.maxTableEntries),
    blockSize: buf.readUInt32BE(D.blockSize),
    checksum: buf.readUInt32BE(D.checksum),
  };
}

/** The 1024-byte dynamic disk header as QEMU writes it (no parent: the parent fields stay zero). */
export function encodeDynamicHeader(h: { tableOffset: bigint; maxTableEntries: number; blockSize: number }): Buffer {
  const buf = Buffer.alloc(DYNAMIC_HEADER_SIZE);
  buf.write(DYNAMIC_COOKIE, D.cookie, 8, 'latin1');
  buf.writeBigUInt64BE(NO_OFFSET, D.dataOffset);
  buf.writeBigUInt64BE(h.tableOffset, D.tableOffset);
  buf.writeUInt32BE(0x00010000, D.version);
  buf.writeUInt32BE(h.maxTableEntries, D.maxTableEntries);
  buf.writeUInt32BE(h.blockSize, D.blockSize);
  buf.writeUInt32BE(vhdChecksum(buf, D.checksum), D.checksum);
  return buf;
}

/**
 * The sector bitmap in front of each block: one bit per 512-byte sector, padded to whole sectors
 * (computed as QEMU does, so blocks under 4 KiB get none).
 */
export function bitmapSize(blockSize: number): number {
  return Math.ceil(Math.floor(blockSize / (8 * 512)) / 512) * 512;
}

/** Creator apps whose disks take their size from `currentSize` rather than from the CHS geometry (QEMU's table). */
export function usesCurrentSize(creatorApp: string): boolean {
  return creatorApp === 'win ' || creatorApp === 'qem2' || creatorApp === 'd2v ' || creatorApp === 'CTXS' || creatorApp === 'tap\0';
}
