/**
 * The ext2/3/4 superblock (1024 bytes at byte 1024 of the file system) and the feature bits the
 * guest lens needs, named as e2fsprogs' lib/ext2fs/ext2_fs.h names them.
 */
import { guestError, GuestPath } from '../errors';

export const SUPERBLOCK_OFFSET = 1024;
export const EXT2_MAGIC = 0xef53;

export const COMPAT_HAS_JOURNAL = 0x0004;
export const COMPAT_RESIZE_INODE = 0x0010;
export const COMPAT_SPARSE_SUPER2 = 0x0200;
export const RO_COMPAT_SPARSE_SUPER = 0x0001;
export const RO_COMPAT_GDT_CSUM = 0x0010;
export const RO_COMPAT_METADATA_CSUM = 0x0400;
export const INCOMPAT_FILETYPE = 0x0002;
export const INCOMPAT_RECOVER = 0x0004;
export const INCOMPAT_JOURNAL_DEV = 0x0008;
export const INCOMPAT_META_BG = 0x0010;
export const INCOMPAT_EXTENTS = 0x0040;
export const INCOMPAT_64BIT = 0x0080;
export const INCOMPAT_FLEX_BG = 0x0200;
export const INCOMPAT_INLINE_DATA = 0x8000;

/** s_state bits. */
export const STATE_VALID = 0x0001;
export const STATE_ERROR = 0x0002;
export const STATE_ORPHAN = 0x0004;

export interface Superblock {
  inodesCount: number;
  blocksCount: number;
  freeBlocksCount: number;
  freeInodesCount: number;
  firstDataBlock: number;
  blockSize: number;
  blocksPerGroup: number;
  inodesPerGroup: number;
  state: number;
  revLevel: number;
  firstIno: number;
  inodeSize: number;
  featureCompat: number;
  featureIncompat: number;
  featureRoCompat: number;
  volumeName: string;
  lastMounted: string;
  reservedGdtBlocks: number;
  journalInum: number;
  descSize: number;
  firstMetaBg: number;
  backupBgs: [number, number];
  /** Special inodes whose blocks are file-system metadata (quota files, orphan file). */
  quotaInums: number[];
  orphanFileInum: number;
  groupCount: number;
}

/** Decodes and sanity-checks a superblock; every value that later sizes a read or a loop is bounded here. */
export function decodeSuperblock(b: Buffer, file: string, path: GuestPath, at: number, fsBytes: number): Superblock {
  const bad = (detail: string): never => { throw guestError(file, path, at, detail); };
  if (b.readUInt16LE(56) !== EXT2_MAGIC) bad('no ext2/3/4 magic (0xEF53)');
  const logBs = b.readUInt32LE(24);
  if (logBs > 6) bad(`s_log_block_size ${logBs} gives a block size above 64 KiB`);
  const blockSize = 1024 << logBs;
  const featureIncompat = b.readUInt32LE(96);
  const is64 = (featureIncompat & INCOMPAT_64BIT) !== 0;
  const hi = (o: number): number => (is64 ? b.readUInt32LE(o) * 2 ** 32 : 0);
  const blocksCount = b.readUInt32LE(4) + hi(0x150);
  const blocksPerGroup = b.readUInt32LE(32), inodesPerGroup = b.readUInt32LE(40);
  const revLevel = b.readUInt32LE(76);
  const inodeSize = revLevel === 0 ? 128 : b.readUInt16LE(88);
  const firstDataBlock = b.readUInt32LE(20);
  if (blocksPerGroup === 0 || blocksPerGroup > blockSize * 8) bad(`s_blocks_per_group ${blocksPerGroup} is outside 1…${blockSize * 8}`);
  if (inodesPerGroup === 0 || inodesPerGroup > blockSize * 8) bad(`s_inodes_per_group ${inodesPerGroup} is outside 1…${blockSize * 8}`);
  if (inodeSize < 128 || inodeSize > blockSize || (inodeSize & (inodeSize - 1)) !== 0) bad(`s_inode_size ${inodeSize} is not a power of two between 128 and the block size`);
  if (blocksCount === 0 || firstDataBlock >= blocksCount) bad(`s_blocks_count ${blocksCount} / s_first_data_block ${firstDataBlock} are inconsistent`);
  if (blocksCount * blockSize > fsBytes) {
    bad(`the superblock says ${blocksCount} blocks of ${blockSize} bytes, but the partition holds only ${Math.floor(fsBytes / blockSize)}`);
  }
  const groupCount = Math.ceil((blocksCount - firstDataBlock) / blocksPerGroup);
  const inodesCount = b.readUInt32LE(0);
  if (inodesCount > groupCount * inodesPerGroup) bad(`s_inodes_count ${inodesCount} exceeds ${groupCount} groups × ${inodesPerGroup} inodes`);
  const descSize = is64 ? b.readUInt16LE(0xfe) : 32;
  if (descSize < 32 || descSize > 1024 || (descSize & (descSize - 1)) !== 0) bad(`s_desc_size ${descSize} is not a power of two between 32 and 1024`);
  const str = (from: number, to: number): string => b.toString('utf8', from, to).replace(/\0.*$/s, '');
  return {
    inodesCount,
    blocksCount,
    freeBlocksCount: b.readUInt32LE(12) + hi(0x158),
    freeInodesCount: b.readUInt32LE(16),
    firstDataBlock,
    blockSize,
    blocksPerGroup,
    inodesPerGroup,
    state: b.readUInt16LE(58),
    revLevel,
    firstIno: revLevel === 0 ? 11 : b.readUInt32LE(84),
    inodeSize,
    featureCompat: b.readUInt32LE(92),
    featureIncompat,
    featureRoCompat: b.readUInt32LE(100),
    volumeName: str(120, 136),
    lastMounted: str(136, 200),
    reservedGdtBlocks: b.readUInt16LE(0xce),
    journalInum: b.readUInt32LE(0xe0),
    descSize,
    firstMetaBg: b.readUInt32LE(0x104),
    backupBgs: [b.readUInt32LE(0x24c), b.readUInt32LE(0x250)],
    quotaInums: [b.readUInt32LE(0x240), b.readUInt32LE(0x244), b.readUInt32LE(0x26c)].filter(n => n !== 0),
    orphanFileInum: b.readUInt32LE(0x290),
    groupCount,
  };
}

/** Problems a reader of this file system must be told about (the guest lens never writes; these say how far to trust what it shows). */
export function stateWarnings(sb: Superblock): string[] {
  const w: string[] = [];
  if (sb.featureIncompat & INCOMPAT_RECOVER) w.push('the journal needs recovery (needs_recovery): the file system is mounted by a running guest or was not shut down cleanly; recent changes may be missing');
  if (!(sb.state & STATE_VALID)) w.push('the file system was not cleanly unmounted (mounted, or the guest crashed)');
  if (sb.state & STATE_ERROR) w.push('the kernel recorded errors on this file system; run e2fsck on it');
  if (sb.state & STATE_ORPHAN) w.push('orphan inodes are being recovered');
  return w;
}

/** Whether group g holds a superblock backup (sparse_super: groups 0, 1 and powers of 3, 5, 7). */
export function groupHasSuper(sb: Superblock, g: number): boolean {
  if (g === 0) return true;
  if (sb.featureCompat & COMPAT_SPARSE_SUPER2) return g === sb.backupBgs[0] || g === sb.backupBgs[1];
  if (g <= 1 || !(sb.featureRoCompat & RO_COMPAT_SPARSE_SUPER)) return true;
  if (!(g & 1)) return false;
  const isPow = (n: number, base: number): boolean => { while (n % base === 0) n /= base; return n === 1; };
  return isPow(g, 3) || isPow(g, 5) || isPow(g, 7);
}
