/** ext inodes: location in the inode tables and the fields the guest lens uses (ext2_fs.h struct ext2_inode). */
import { GuestDisk, readStructure } from '../disk';
import { guestError, GuestPath } from '../errors';
import type { GroupDesc } from './groups';
import type { Superblock } from './superblock';

export const EXTENTS_FL = 0x80000;
export const INLINE_DATA_FL = 0x10000000;
export const HUGE_FILE_FL = 0x40000;

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;

export const ROOT_INO = 2;

export interface Inode {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  atime: number;
  ctime: number;
  mtime: number;
  dtime: number;
  links: number;
  flags: number;
  /** i_block: 60 bytes — extent tree root, block pointers, inline data or a fast symlink's target. */
  iBlock: Buffer;
  fileAcl: number;
}

export function inodeLocation(sb: Superblock, groups: GroupDesc[], ino: number): number {
  const g = Math.floor((ino - 1) / sb.inodesPerGroup), idx = (ino - 1) % sb.inodesPerGroup;
  return groups[g].inodeTable * sb.blockSize + idx * sb.inodeSize;
}

export function decodeInode(b: Buffer, ino: number): Inode {
  return {
    ino,
    mode: b.readUInt16LE(0),
    uid: b.readUInt16LE(2) | (b.readUInt16LE(0x78) << 16),
    size: b.readUInt32LE(4) + b.readUInt32LE(0x6c) * 2 ** 32,
    atime: b.readInt32LE(8),
    ctime: b.readInt32LE(0xc),
    mtime: b.readInt32LE(0x10),
    dtime: b.readUInt32LE(0x14),
    gid: b.readUInt16LE(0x18) | (b.readUInt16LE(0x7a) << 16),
    links: b.readUInt16LE(0x1a),
    flags: b.readUInt32LE(0x20),
    iBlock: Buffer.from(b.subarray(0x28, 0x28 + 60)),
    fileAcl: b.readUInt32LE(0x68) + b.readUInt16LE(0x76) * 2 ** 32,
  };
}

export async function readInode(disk: GuestDisk, fsStart: number, sb: Superblock, groups: GroupDesc[], ino: number, path: GuestPath): Promise<Inode> {
  if (!Number.isInteger(ino) || ino < 1 || ino > sb.inodesCount) {
    throw guestError(disk.name ?? 'disk', [...path, `inode ${ino}`], undefined, `inode number is outside 1…${sb.inodesCount}`);
  }
  const at = fsStart + inodeLocation(sb, groups, ino);
  return decodeInode(await readStructure(disk, at, Math.min(sb.inodeSize, 256), [...path, `inode ${ino}`]), ino);
}
