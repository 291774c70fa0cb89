/**
 * From an inode to the blocks it uses: ext4 extent trees (ext4_extent_header / ext4_extent_idx /
 * ext4_extent) and the classic ext2/3 block map (12 direct pointers, then single, double and triple
 * indirect blocks). Both are untrusted: tree depth, entry counts and the total number of pointers
 * visited are bounded, and every block number must lie inside the file system.
 */
import { GuestDisk, readStructure } from '../disk';
import { guestError, GuestPath } from '../errors';
import { EXTENTS_FL, Inode, INLINE_DATA_FL, S_IFLNK, S_IFMT } from './inode';
import type { Superblock } from './superblock';

const EXTENT_MAGIC = 0xf30a;
const MAX_EXTENT_DEPTH = 5;
/** ee_len above this marks an unwritten (preallocated) extent. */
const EXT_INIT_MAX_LEN = 32768;

/** A run of a file's blocks: logical block → physical block. fileBlock is absent for the file's own metadata blocks. */
export interface InodeRun {
  fileBlock?: number;
  physBlock: number;
  count: number;
  kind: 'data' | 'extent tree' | 'indirect block' | 'extended attributes';
  unwritten?: boolean;
}

interface Ctx {
  disk: GuestDisk;
  fsStart: number;
  sb: Superblock;
  path: GuestPath;
  visit(run: InodeRun): void;
  /** Pointers and extents seen so far, against a budget of the file system's block count. */
  budget: number;
}

function checkBlock(ctx: Ctx, blk: number, count: number, what: string, at: number | undefined): void {
  if (blk < ctx.sb.firstDataBlock || count < 0 || blk + count > ctx.sb.blocksCount) {
    throw guestError(ctx.disk.name ?? 'disk', [...ctx.path, what], at, `block ${blk}${count > 1 ? `+${count}` : ''} lies outside the file system (${ctx.sb.blocksCount} blocks)`);
  }
}

function spend(ctx: Ctx, n: number, at: number | undefined): void {
  ctx.budget -= n;
  if (ctx.budget < 0) throw guestError(ctx.disk.name ?? 'disk', ctx.path, at, 'the block map references more blocks than the file system has (a loop or damage)');
}

/** True when the inode's i_block holds data, not block numbers (fast symlinks, inline data). */
export function hasNoBlocks(inode: Inode, _sb: Superblock): boolean {
  if (inode.flags & INLINE_DATA_FL) return true;
  if ((inode.mode & S_IFMT) === S_IFLNK) {
    // A fast symlink keeps its target in i_block: no data blocks (an xattr block may still count in i_blocks).
    if (inode.flags & EXTENTS_FL) return false;
    return inode.size < 60;
  }
  return false;
}

async function walkExtentNode(ctx: Ctx, node: Buffer, at: number | undefined, depthLeft: number, expectDepth: number | undefined): Promise<void> {
  const file = ctx.disk.name ?? 'disk';
  if (node.readUInt16LE(0) !== EXTENT_MAGIC) throw guestError(file, [...ctx.path, 'extent header'], at, 'no extent header magic (0xF30A)');
  const entries = node.readUInt16LE(2), max = node.readUInt16LE(4), depth = node.readUInt16LE(6);
  const cap = Math.floor((node.length - 12) / 12);
  if (entries > max || max > cap) throw guestError(file, [...ctx.path, 'extent header'], at, `${entries} entries (max ${max}) do not fit a ${node.length}-byte node`);
  if (depth > MAX_EXTENT_DEPTH || depth > depthLeft || (expectDepth !== undefined && depth !== expectDepth)) {
    throw guestError(file, [...ctx.path, 'extent header'], at, `extent tree depth ${depth} is inconsistent (at most ${Math.min(depthLeft, MAX_EXTENT_DEPTH)})`);
  }
  spend(ctx, entries, at);
  for (let i = 0; i < entries; i++) {
    const o = 12 + i * 12;
    const entryAt = at === undefined ? undefined : at + o;
    if (depth === 0) {
      const lblk = node.readUInt32LE(o);
      let len = node.readUInt16LE(o + 4);
      const unwritten = len > EXT_INIT_MAX_LEN;
      if (unwritten) len -= EXT_INIT_MAX_LEN;
      const pblk = node.readUInt16LE(o + 6) * 2 ** 32 + node.readUInt32LE(o + 8);
      if (len === 0) continue;
      checkBlock(ctx, pblk, len, `extent ${i}`, entryAt);
      ctx.visit({ fileBlock: lblk, physBlock: pblk, count: len, kind: 'data', unwritten: unwritten || undefined });
    } else {
      const leaf = node.readUInt16LE(o + 8) * 2 ** 32 + node.readUInt32LE(o + 4);
      checkBlock(ctx, leaf, 1, `extent index ${i}`, entryAt);
      ctx.visit({ physBlock: leaf, count: 1, kind: 'extent tree' });
      const childAt = ctx.fsStart + leaf * ctx.sb.blockSize;
      const child = await readStructure(ctx.disk, childAt, ctx.sb.blockSize, [...ctx.path, `extent tree block ${leaf}`]);
      await walkExtentNode(ctx, child, childAt, depth - 1, depth - 1);
    }
  }
}

async function walkIndirect(ctx: Ctx, blk: number, level: number, firstFileBlock: number, at: number | undefined): Promise<void> {
  checkBlock(ctx, blk, 1, `indirect block (level ${level})`, at);
  spend(ctx, 1, at);
  ctx.visit({ physBlock: blk, count: 1, kind: 'indirect block' });
  const bs = ctx.sb.blockSize, per = bs / 4;
  const blockAt = ctx.fsStart + blk * bs;
  const b = await readStructure(ctx.disk, blockAt, bs, [...ctx.path, `indirect block ${blk}`]);
  const span = per ** (level - 1);
  for (let i = 0; i < per; i++) {
    const p = b.readUInt32LE(i * 4);
    if (p === 0) continue;
    if (level === 1) {
      checkBlock(ctx, p, 1, `block pointer ${i}`, blockAt + i * 4);
      spend(ctx, 1, blockAt + i * 4);
      ctx.visit({ fileBlock: firstFileBlock + i, physBlock: p, count: 1, kind: 'data' });
    } else {
      await walkIndirect(ctx, p, level - 1, firstFileBlock + i * span, blockAt + i * 4);
    }
  }
}

/**
 * Visits every block an inode uses (data in logical order, and its extent-tree / indirect /
 * xattr blocks). inodeAt is the inode's guest offset, for error messages.
 */
export async function walkInodeBlocks(disk: GuestDisk, fsStart: number, sb: Superblock, inode: Inode, inodeAt: number | undefined, path: GuestPath, visit: (r: InodeRun) => void): Promise<void> {
  const ctx: Ctx = { disk, fsStart, sb, path, visit, budget: sb.blocksCount + 16 };
  if (inode.fileAcl !== 0) {
    checkBlock(ctx, inode.fileAcl, 1, 'i_file_acl', inodeAt);
    visit({ physBlock: inode.fileAcl, count: 1, kind: 'extended attributes' });
  }
  if (hasNoBlocks(inode, sb)) return;
  const iBlockAt = inodeAt === undefined ? undefined : inodeAt + 0x28;
  if (inode.flags & EXTENTS_FL) {
    await walkExtentNode(ctx, inode.iBlock, iBlockAt, MAX_EXTENT_DEPTH, undefined);
    return;
  }
  const per = sb.blockSize / 4;
  for (let i = 0; i < 12; i++) {
    const p = inode.iBlock.readUInt32LE(i * 4);
    if (p === 0) continue;
    checkBlock(ctx, p, 1, `i_block[${i}]`, iBlockAt);
    visit({ fileBlock: i, physBlock: p, count: 1, kind: 'data' });
  }
  const starts = [12, 12 + per, 12 + per + per * per];
  for (let level = 1; level <= 3; level++) {
    const p = inode.iBlock.readUInt32LE((11 + level) * 4);
    if (p !== 0) await walkIndirect(ctx, p, level, starts[level - 1], iBlockAt);
  }
}

/** Collects an inode's runs, merging physically and logically contiguous blocks. */
export async function inodeRuns(disk: GuestDisk, fsStart: number, sb: Superblock, inode: Inode, inodeAt: number | undefined, path: GuestPath): Promise<InodeRun[]> {
  const runs: InodeRun[] = [];
  await walkInodeBlocks(disk, fsStart, sb, inode, inodeAt, path, r => {
    const last = runs[runs.length - 1];
    if (last && last.kind === r.kind && !!last.unwritten === !!r.unwritten && last.physBlock + last.count === r.physBlock &&
      (last.fileBlock === undefined) === (r.fileBlock === undefined) && (last.fileBlock === undefined || last.fileBlock + last.count === r.fileBlock)) {
      last.count += r.count;
    } else runs.push({ ...r });
  });
  return runs;
}
