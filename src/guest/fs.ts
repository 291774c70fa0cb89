/**
 * What every browsable guest file system offers (ext2/3/4 in ext/, FAT in fat/): a read-only,
 * fs-like view plus the maps between files and guest byte ranges. Paths are absolute inside the
 * file system ("/etc/fstab"); offsets are guest-disk offsets (the partition's start included).
 */
import type { Readable } from 'node:stream';
import type { FsKind } from './identify';

export type EntryType = 'file' | 'dir' | 'symlink' | 'other';

export interface GuestStat {
  name: string;
  type: EntryType;
  size: number;
  /** st_mode: type and permission bits. */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch (UTC). FAT keeps local time without a zone; it is read as UTC, as mtools does. */
  mtime: number;
  atime?: number;
  ctime?: number;
  /** ext inode number; FAT: the first cluster. */
  inode?: number;
  /** Symlink target. */
  target?: string;
  links?: number;
}

/** One piece of a file on the guest disk. */
export interface FileRange {
  guestOffset: number;
  length: number;
  /** Offset inside the file for data; absent for the file's own metadata blocks. */
  fileOffset?: number;
  /** 'data', or the metadata kind ('extent tree', 'indirect block', 'extended attributes'). */
  kind: string;
  /** ext4 unwritten (preallocated) extent: reads as zeros. */
  unwritten?: boolean;
}

export type WhoseKind = 'file' | 'free' | 'metadata' | 'unused' | 'partition table' | 'unpartitioned' | 'not browsable';

export interface Whose {
  guestOffset: number;
  kind: WhoseKind;
  /** kind 'file': the owning file's full path (the first name found for a hard-linked inode). */
  path?: string;
  /** kind 'file': offset inside the file, when the byte is file data. */
  fileOffset?: number;
  /** kind 'file': 'data', 'extent tree', 'indirect block', … */
  role?: string;
  /** kind 'metadata' / 'partition table' / 'not browsable': what it is (superblock, inode table, journal, FAT, boot sector, …). */
  metadata?: string;
  inode?: number;
  partition?: number;
  fs?: FsKind | string;
}

export interface Usage {
  /** Bytes the file system spans. */
  size: number;
  free: number;
  used: number;
  /** Allocation unit (block or cluster) in bytes. */
  blockSize: number;
}

export interface GuestFileSystem {
  readonly kind: FsKind;
  /** Guest offset of the file system's first byte. */
  readonly start: number;
  readonly size: number;
  readonly label?: string;
  /** Always true today; a dirty or recovering file system also has a warning saying why it matters. */
  readonly readOnly: boolean;
  /** e.g. "the journal needs recovery: the guest was not shut down cleanly; what is shown may be stale". */
  readonly warnings: readonly string[];
  stat(path: string): Promise<GuestStat>;
  /** The entries of a directory (without "." and ".."), sorted by name. */
  readdir(path: string): Promise<GuestStat[]>;
  readFile(path: string): Promise<Buffer>;
  createReadStream(path: string): Promise<Readable>;
  /** The guest byte ranges of a file: its data in file order, then its own metadata blocks. */
  fileRanges(path: string): Promise<FileRange[]>;
  /** Which file, metadata structure or free space owns a guest byte inside this file system. */
  whose(guestOffset: number): Promise<Whose>;
  /** The file system's free space as [start, length) guest byte runs, ascending, streamed. */
  freeRanges(): AsyncIterable<[number, number]>;
  usage(): Promise<Usage>;
  close(): Promise<void>;
}

/** Splits "/a/b/c" into ["a","b","c"]; rejects empty names and "." / ".." games by resolving them. */
export function splitGuestPath(path: string): string[] {
  const parts: string[] = [];
  for (const p of path.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') parts.pop();
    else parts.push(p);
  }
  return parts;
}

export function joinGuestPath(dir: string, name: string): string {
  return dir === '/' || dir === '' ? `/${name}` : `${dir.replace(/\/+$/, '')}/${name}`;
}

/** Coalesces adjacent ranges of the same kind and contiguous file offsets. */
export function coalesceRanges(ranges: FileRange[]): FileRange[] {
  const out: FileRange[] = [];
  for (const r of ranges) {
    const last = out[out.length - 1];
    if (last && last.kind === r.kind && !!last.unwritten === !!r.unwritten && last.guestOffset + last.length === r.guestOffset &&
      (last.fileOffset === undefined) === (r.fileOffset === undefined) && (last.fileOffset === undefined || last.fileOffset + last.length === r.fileOffset)) {
      last.length += r.length;
    } else out.push({ ...r });
  }
  return out;
}
