/**
 * ext directory blocks (struct ext2_dir_entry_2), read by the guest lens itself only to name the
 * inode that owns a block (`whose`, as debugfs ncheck): listing goes through libext2fs. Hash-tree
 * index blocks parse as one empty entry covering the block, and metadata_csum tails have inode 0,
 * so a linear parse of every block sees each name exactly once.
 */
import { guestError, GuestPath } from '../errors';
import { INCOMPAT_FILETYPE, Superblock } from './superblock';

export interface DirEntry {
  ino: number;
  name: string;
  /** ext2 file type byte (2 = directory) when the filetype feature is on; undefined otherwise. */
  fileType?: number;
}

export const FT_DIR = 2;

export function parseDirBlock(b: Buffer, sb: Superblock, file: string, path: GuestPath, at: number): DirEntry[] {
  const out: DirEntry[] = [];
  const filetype = (sb.featureIncompat & INCOMPAT_FILETYPE) !== 0;
  let o = 0;
  while (o + 8 <= b.length) {
    const ino = b.readUInt32LE(o), recLen = b.readUInt16LE(o + 4);
    const nameLen = filetype ? b[o + 6] : b.readUInt16LE(o + 6);
    if (recLen < 8 || recLen % 4 !== 0 || o + recLen > b.length || 8 + nameLen > recLen) {
      throw guestError(file, [...path, 'directory entry'], at + o, `rec_len ${recLen} / name_len ${nameLen} do not fit the block`);
    }
    if (ino !== 0 && nameLen > 0) {
      const name = b.toString('utf8', o + 8, o + 8 + nameLen);
      if (name !== '.' && name !== '..') out.push({ ino, name, fileType: filetype ? b[o + 7] : undefined });
    }
    o += recLen;
  }
  return out;
}
