/**
 * ext block groups: the group descriptor table (where each group's bitmaps and inode table are,
 * its flags) and the fixed metadata every group may carry (superblock backup, descriptor blocks,
 * reserved GDT blocks) — the layout e2fsprogs computes in ext2fs_super_and_bgd_loc2.
 */
import { GuestDisk, readStructure } from '../disk';
import { guestError, GuestPath } from '../errors';
import { groupHasSuper, INCOMPAT_META_BG, Superblock } from './superblock';

export const BG_INODE_UNINIT = 0x0001;
export const BG_BLOCK_UNINIT = 0x0002;

export interface GroupDesc {
  blockBitmap: number;
  inodeBitmap: number;
  inodeTable: number;
  freeBlocks: number;
  freeInodes: number;
  flags: number;
  itableUnused: number;
}

/** A run of blocks [start, start + count) with what it is. */
export interface BlockRun {
  start: number;
  count: number;
  kind: string;
}

export function groupFirstBlock(sb: Superblock, g: number): number {
  return sb.firstDataBlock + g * sb.blocksPerGroup;
}

export function groupBlockCount(sb: Superblock, g: number): number {
  return Math.min(sb.blocksPerGroup, sb.blocksCount - groupFirstBlock(sb, g));
}

export function inodeTableBlocks(sb: Superblock): number {
  return Math.ceil((sb.inodesPerGroup * sb.inodeSize) / sb.blockSize);
}

function descBlocks(sb: Superblock): number {
  return Math.ceil((sb.groupCount * sb.descSize) / sb.blockSize);
}

/** The superblock, descriptor and reserved-GDT blocks of group g (ext2fs_super_and_bgd_loc2). */
export function groupFixedMetadata(sb: Superblock, g: number): BlockRun[] {
  const out: BlockRun[] = [];
  const first = groupFirstBlock(sb, g);
  const hasSuper = groupHasSuper(sb, g);
  // With 1 KiB blocks group 0 starts at block 1 (block 0 is the boot block); otherwise the superblock shares block 0 with it.
  if (hasSuper) out.push({ start: first, count: 1, kind: g === 0 ? 'superblock' : 'superblock (backup)' });
  const perBlock = sb.blockSize / sb.descSize;
  const metaBg = (sb.featureIncompat & INCOMPAT_META_BG) !== 0;
  const oldDescBlocks = metaBg ? sb.firstMetaBg : descBlocks(sb);
  if (!metaBg || Math.floor(g / perBlock) < sb.firstMetaBg) {
    if (hasSuper) {
      if (oldDescBlocks > 0) out.push({ start: first + 1, count: oldDescBlocks, kind: g === 0 ? 'group descriptors' : 'group descriptors (backup)' });
      if (sb.reservedGdtBlocks > 0) out.push({ start: first + 1 + oldDescBlocks, count: sb.reservedGdtBlocks, kind: 'reserved GDT blocks' });
    }
  } else {
    const r = g % perBlock;
    if (r === 0 || r === 1 || r === perBlock - 1) out.push({ start: first + (hasSuper ? 1 : 0), count: 1, kind: r === 0 ? 'group descriptors' : 'group descriptors (backup)' });
  }
  return out;
}

/** Where descriptor block i lives (meta_bg puts them in the first group of each meta group). */
function descBlockLocation(sb: Superblock, i: number): number {
  const metaBg = (sb.featureIncompat & INCOMPAT_META_BG) !== 0;
  if (!metaBg || i < sb.firstMetaBg) return sb.firstDataBlock + 1 + i;
  const g = i * (sb.blockSize / sb.descSize);
  return groupFirstBlock(sb, g) + (groupHasSuper(sb, g) ? 1 : 0);
}

export async function readGroupDescriptors(disk: GuestDisk, fsStart: number, sb: Superblock, path: GuestPath): Promise<GroupDesc[]> {
  const file = disk.name ?? 'disk';
  const n = descBlocks(sb), bs = sb.blockSize, perBlock = bs / sb.descSize;
  const is64 = sb.descSize >= 64;
  const out: GroupDesc[] = [];
  const metaBg = (sb.featureIncompat & INCOMPAT_META_BG) !== 0;
  // Without meta_bg the table is contiguous: one read (bounded by readStructure's ceiling).
  const contiguous = !metaBg ? await readStructure(disk, fsStart + descBlockLocation(sb, 0) * bs, n * bs, [...path, 'group descriptors']) : undefined;
  for (let i = 0; i < n; i++) {
    const blk = descBlockLocation(sb, i);
    const b = contiguous ? contiguous.subarray(i * bs, (i + 1) * bs) : await readStructure(disk, fsStart + blk * bs, bs, [...path, `group descriptor block ${i}`]);
    for (let j = 0; j < perBlock && out.length < sb.groupCount; j++) {
      const o = j * sb.descSize;
      const hi = (off: number): number => (is64 ? b.readUInt32LE(o + off) * 2 ** 32 : 0);
      const hi16 = (off: number): number => (is64 ? b.readUInt16LE(o + off) * 65536 : 0);
      const d: GroupDesc = {
        blockBitmap: b.readUInt32LE(o) + hi(0x20),
        inodeBitmap: b.readUInt32LE(o + 4) + hi(0x24),
        inodeTable: b.readUInt32LE(o + 8) + hi(0x28),
        freeBlocks: b.readUInt16LE(o + 0xc) + hi16(0x2c),
        freeInodes: b.readUInt16LE(o + 0xe) + hi16(0x2e),
        flags: b.readUInt16LE(o + 0x12),
        itableUnused: b.readUInt16LE(o + 0x1c) + hi16(0x32),
      };
      const g = out.length;
      const itb = inodeTableBlocks(sb);
      for (const [what, blkNo, count] of [['block bitmap', d.blockBitmap, 1], ['inode bitmap', d.inodeBitmap, 1], ['inode table', d.inodeTable, itb]] as const) {
        if (blkNo < sb.firstDataBlock || blkNo + count > sb.blocksCount) {
          throw guestError(file, [...path, `group descriptor ${g}`], fsStart + blk * bs + o, `${what} at block ${blkNo} lies outside the file system (${sb.blocksCount} blocks)`);
        }
      }
      out.push(d);
    }
  }
  return out;
}
