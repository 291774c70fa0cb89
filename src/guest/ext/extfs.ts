/**
 * An ext2/3/4 file system inside the guest. Browsing (directories, stat, symlinks, file contents)
 * goes through libext2fs (lib.ts); the maps between files and guest bytes, free space and state
 * flags come from the on-disk structures read here (superblock, group descriptors, bitmaps,
 * inodes, extent trees / block maps), which the library does not expose.
 *
 * whose(offset) answers in the order debugfs would reason: fixed group metadata, bitmaps and
 * inode tables, then the block bitmap (free?), then the special inodes (journal, resize inode,
 * quota), then an icheck-style scan of in-use inodes and an ncheck-style walk for the path.
 */
import { Readable } from 'node:stream';
import { GuestDisk, readStructure } from '../disk';
import { guestError, GuestPath, GuestPathError } from '../errors';
import { coalesceRanges, EntryType, FileRange, GuestFileSystem, GuestStat, joinGuestPath, splitGuestPath, Usage, Whose } from '../fs';
import type { FsKind } from '../identify';
import { inodeRuns, InodeRun } from './blockmap';
import { FT_DIR, parseDirBlock } from './dir';
import { BG_BLOCK_UNINIT, BG_INODE_UNINIT, BlockRun, groupBlockCount, groupFirstBlock, GroupDesc, groupFixedMetadata, inodeTableBlocks, readGroupDescriptors } from './groups';
import { decodeInode, Inode, inodeLocation, readInode, ROOT_INO, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from './inode';
import { ExtLibStat, MountedExt, mountExt, O_NOATIME, O_NOFOLLOW, O_RDONLY } from './lib';
import { decodeSuperblock, RO_COMPAT_GDT_CSUM, RO_COMPAT_METADATA_CSUM, stateWarnings, Superblock, SUPERBLOCK_OFFSET } from './superblock';

const READ_CHUNK = 1024 * 1024;

const SPECIAL_INODES: Record<number, string> = {
  1: 'bad blocks inode',
  5: 'boot loader inode',
  7: 'reserved GDT blocks (resize inode)',
  8: 'journal',
};

function typeOf(mode: number): EntryType {
  switch (mode & S_IFMT) {
    case S_IFREG: return 'file';
    case S_IFDIR: return 'dir';
    case S_IFLNK: return 'symlink';
    default: return 'other';
  }
}

export class ExtFileSystem implements GuestFileSystem {
  readonly readOnly = true;
  readonly warnings: string[];
  private mounted?: Promise<MountedExt>;
  private metaRuns?: BlockRun[];
  private readonly path: GuestPath;

  private constructor(
    private readonly disk: GuestDisk,
    readonly kind: FsKind,
    readonly start: number,
    readonly size: number,
    readonly sb: Superblock,
    readonly groups: GroupDesc[],
    pathPrefix: GuestPath,
  ) {
    this.path = [...pathPrefix, kind];
    this.warnings = stateWarnings(sb);
  }

  get label(): string | undefined {
    return this.sb.volumeName || undefined;
  }

  /** Reads the superblock and group descriptors of the ext file system at [start, start + size). */
  static async open(disk: GuestDisk, kind: FsKind, start: number, size: number, pathPrefix: GuestPath = []): Promise<ExtFileSystem> {
    const path = [...pathPrefix, kind];
    const sbAt = start + SUPERBLOCK_OFFSET;
    const sb = decodeSuperblock(await readStructure(disk, sbAt, 1024, [...path, 'superblock']), disk.name ?? 'disk', [...path, 'superblock'], sbAt, size);
    const groups = await readGroupDescriptors(disk, start, sb, path);
    return new ExtFileSystem(disk, kind, start, sb.blocksCount * sb.blockSize, sb, groups, pathPrefix);
  }

  private get csumGroups(): boolean {
    return (this.sb.featureRoCompat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM)) !== 0;
  }

  private lib(): Promise<MountedExt> {
    this.mounted ??= mountExt(this.disk, this.start, this.size);
    return this.mounted;
  }

  private async libCall<T>(guestPath: string, fn: (m: MountedExt) => Promise<T>): Promise<T> {
    const m = await this.lib();
    try {
      return await fn(m);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'ENOENT') throw new GuestPathError('ENOENT', guestPath, 'no such file or directory');
      if (code === 'ENOTDIR') throw new GuestPathError('ENOTDIR', guestPath, 'not a directory');
      if (code === 'EISDIR') throw new GuestPathError('EISDIR', guestPath, 'is a directory');
      if (code === 'ELOOP') throw new GuestPathError('ELOOP', guestPath, 'too many levels of symbolic links');
      const errno = e as { errno?: number; syscall?: string };
      if (typeof errno.errno === 'number' && typeof errno.syscall === 'string') {
        // libext2fs refused (a damaged structure it checks itself): one line naming the path, not the glue's arguments.
        throw guestError(this.disk.name ?? 'disk', [...this.path, guestPath], undefined, `libext2fs ${errno.syscall.replace(/^node_ext2fs_/, '')} failed: ${code ?? `error ${errno.errno}`} (the file system is damaged here; e2fsck -n says more)`);
      }
      throw e;
    }
  }

  private static normal(path: string): string {
    return '/' + splitGuestPath(path).join('/');
  }

  private toStat(name: string, s: ExtLibStat, target?: string): GuestStat {
    const st: GuestStat = {
      name, type: typeOf(s.mode), size: s.size, mode: s.mode, uid: s.uid, gid: s.gid,
      mtime: s.mtime, atime: s.atime, ctime: s.ctime, inode: s.ino, links: s.links,
    };
    if (target !== undefined) st.target = target;
    return st;
  }

  async stat(path: string): Promise<GuestStat> {
    const p = ExtFileSystem.normal(path);
    return this.libCall(p, async m => {
      const s = await m.lstat(p);
      const target = typeOf(s.mode) === 'symlink' ? await m.readlink(p) : undefined;
      return this.toStat(p === '/' ? '/' : p.slice(p.lastIndexOf('/') + 1), s, target);
    });
  }

  async readdir(path: string): Promise<GuestStat[]> {
    const p = ExtFileSystem.normal(path);
    const names = await this.libCall(p, async m => {
      const s = await m.lstat(p);
      if (typeOf(s.mode) !== 'dir') throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
      return m.readdir(p);
    });
    names.sort();
    const out: GuestStat[] = [];
    for (const n of names) out.push(await this.stat(joinGuestPath(p, n)));
    return out;
  }

  async readFile(path: string): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const c of await this.createReadStream(path)) parts.push(c as Buffer);
    return Buffer.concat(parts);
  }

  async createReadStream(path: string): Promise<Readable> {
    const p = ExtFileSystem.normal(path);
    const st = await this.stat(p);
    if (st.type === 'dir') throw new GuestPathError('EISDIR', p, 'is a directory');
    if (st.type !== 'file') throw new GuestPathError('EINVAL', p, `is a ${st.type}, not a regular file`);
    const m = await this.lib();
    const flags = O_RDONLY | O_NOATIME | O_NOFOLLOW;
    const fd = await this.libCall(p, () => m.open(p, flags));
    const size = st.size;
    const call = <R>(f: () => Promise<R>) => this.libCall(p, f);
    async function* chunks(): AsyncGenerator<Buffer> {
      try {
        for (let pos = 0; pos < size;) {
          const want = Math.min(READ_CHUNK, size - pos);
          const buf = await call(() => m.read(fd, flags, want, pos));
          if (buf.length === 0) break;
          pos += buf.length;
          yield buf;
        }
      } finally {
        await m.closeFile(fd).catch(() => undefined);
      }
    }
    return Readable.from(chunks(), { objectMode: false });
  }

  private inodeAt(ino: number): number {
    return this.start + inodeLocation(this.sb, this.groups, ino);
  }

  private async inode(ino: number): Promise<Inode> {
    return readInode(this.disk, this.start, this.sb, this.groups, ino, this.path);
  }

  private async runsOf(inode: Inode): Promise<InodeRun[]> {
    return inodeRuns(this.disk, this.start, this.sb, inode, this.inodeAt(inode.ino), [...this.path, `inode ${inode.ino}`]);
  }

  private runToRange(r: InodeRun): FileRange {
    const bs = this.sb.blockSize;
    const fr: FileRange = { guestOffset: this.start + r.physBlock * bs, length: r.count * bs, kind: r.kind };
    if (r.fileBlock !== undefined) fr.fileOffset = r.fileBlock * bs;
    if (r.unwritten) fr.unwritten = true;
    return fr;
  }

  async fileRanges(path: string): Promise<FileRange[]> {
    const st = await this.stat(path);
    const runs = await this.runsOf(await this.inode(st.inode!));
    const data = runs.filter(r => r.kind === 'data').sort((a, b) => a.fileBlock! - b.fileBlock!);
    const meta = runs.filter(r => r.kind !== 'data');
    return coalesceRanges([...data, ...meta].map(r => this.runToRange(r)));
  }

  /** Every group's bitmaps and inode table, sorted by block (flex_bg packs them anywhere). */
  private tableRuns(): BlockRun[] {
    if (!this.metaRuns) {
      const itb = inodeTableBlocks(this.sb);
      const runs: BlockRun[] = [];
      this.groups.forEach(d => {
        runs.push({ start: d.blockBitmap, count: 1, kind: 'block bitmap' });
        runs.push({ start: d.inodeBitmap, count: 1, kind: 'inode bitmap' });
        runs.push({ start: d.inodeTable, count: itb, kind: 'inode table' });
      });
      runs.sort((a, b) => a.start - b.start);
      this.metaRuns = runs;
    }
    return this.metaRuns;
  }

  private findTableRun(blk: number): BlockRun | undefined {
    const runs = this.tableRuns();
    let lo = 0, hi = runs.length - 1, best = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (runs[mid].start <= blk) { best = mid; lo = mid + 1; } else hi = mid - 1;
    }
    // Runs may overlap only in damaged file systems; look back a little for a covering one.
    for (let i = best; i >= 0 && i > best - 4; i--) if (blk < runs[i].start + runs[i].count) return runs[i];
    return undefined;
  }

  /** The used blocks of a BLOCK_UNINIT group: its fixed metadata and any group's tables that lie in it (as libext2fs marks them). */
  private uninitGroupUsed(g: number): BlockRun[] {
    const first = groupFirstBlock(this.sb, g), end = first + groupBlockCount(this.sb, g);
    const used = groupFixedMetadata(this.sb, g);
    for (const r of this.tableRuns()) if (r.start < end && r.start + r.count > first) used.push(r);
    return used;
  }

  /** The block bitmap of group g, one bit per block of the group (1 = in use). */
  private async blockBitmap(g: number): Promise<Uint8Array> {
    const d = this.groups[g], bs = this.sb.blockSize;
    if (this.csumGroups && (d.flags & BG_BLOCK_UNINIT)) {
      const bits = new Uint8Array(bs);
      const first = groupFirstBlock(this.sb, g), count = groupBlockCount(this.sb, g);
      for (const r of this.uninitGroupUsed(g)) {
        for (let b = Math.max(r.start, first); b < Math.min(r.start + r.count, first + count); b++) bits[(b - first) >> 3] |= 1 << ((b - first) & 7);
      }
      return bits;
    }
    return readStructure(this.disk, this.start + d.blockBitmap * bs, bs, [...this.path, `group ${g}`, 'block bitmap']);
  }

  private async inodeBitmap(g: number): Promise<Uint8Array | undefined> {
    const d = this.groups[g], bs = this.sb.blockSize;
    if (this.csumGroups && (d.flags & BG_INODE_UNINIT)) return undefined;
    return readStructure(this.disk, this.start + d.inodeBitmap * bs, bs, [...this.path, `group ${g}`, 'inode bitmap']);
  }

  async *freeRanges(): AsyncGenerator<[number, number]> {
    const bs = this.sb.blockSize;
    let runStart = -1, runEnd = -1;
    for (let g = 0; g < this.groups.length; g++) {
      const bits = await this.blockBitmap(g);
      const first = groupFirstBlock(this.sb, g), count = groupBlockCount(this.sb, g);
      for (let i = 0; i < count; i++) {
        const used = (bits[i >> 3] >> (i & 7)) & 1;
        if (used) continue;
        const blk = first + i;
        if (blk === runEnd) runEnd++;
        else {
          if (runStart >= 0) yield [this.start + runStart * bs, (runEnd - runStart) * bs];
          runStart = blk;
          runEnd = blk + 1;
        }
      }
    }
    if (runStart >= 0) yield [this.start + runStart * bs, (runEnd - runStart) * bs];
  }

  async usage(): Promise<Usage> {
    const bs = this.sb.blockSize;
    const free = this.sb.freeBlocksCount * bs;
    return { size: this.size, free, used: this.size - free, blockSize: bs };
  }

  private specialInodes(): Map<number, string> {
    const m = new Map<number, string>();
    for (const [ino, what] of Object.entries(SPECIAL_INODES)) m.set(Number(ino), what);
    if (this.sb.journalInum) m.set(this.sb.journalInum, 'journal');
    for (const q of this.sb.quotaInums) m.set(q, 'quota file');
    if (this.sb.orphanFileInum) m.set(this.sb.orphanFileInum, 'orphan file');
    return m;
  }

  async whose(guestOffset: number): Promise<Whose> {
    const sb = this.sb, bs = sb.blockSize;
    const rel = guestOffset - this.start;
    const base: Whose = { guestOffset, kind: 'metadata', fs: this.kind };
    if (rel < 0 || rel >= this.size) return { ...base, kind: 'unused', metadata: 'past the end of the file system' };
    if (rel < 1024) return { ...base, metadata: 'boot block' };
    if (rel < 2048) return { ...base, metadata: 'superblock' };
    const blk = Math.floor(rel / bs);
    if (blk < sb.firstDataBlock) return { ...base, metadata: 'boot block' };
    const g = Math.floor((blk - sb.firstDataBlock) / sb.blocksPerGroup);
    for (const r of groupFixedMetadata(sb, g)) if (blk >= r.start && blk < r.start + r.count) return { ...base, metadata: r.kind };
    const t = this.findTableRun(blk);
    if (t) return { ...base, metadata: t.kind };
    const bits = await this.blockBitmap(g);
    const i = blk - groupFirstBlock(sb, g);
    if (!((bits[i >> 3] >> (i & 7)) & 1)) return { ...base, kind: 'free' };

    const special = this.specialInodes();
    for (const [ino, what] of special) {
      if (ino > sb.inodesCount) continue;
      const inode = await this.inode(ino);
      if (inode.mode === 0 && inode.links === 0 && ino !== 7 && ino !== 1) continue;
      const hit = (await this.runsOf(inode)).find(r => blk >= r.physBlock && blk < r.physBlock + r.count);
      if (hit) return { ...base, metadata: what, inode: ino };
    }
    const owner = await this.findOwner(blk, special);
    if (!owner) return { ...base, metadata: 'in use, but no inode references it' };
    const { inode, run } = owner;
    const out: Whose = { guestOffset, kind: 'file', fs: this.kind, inode: inode.ino, role: run.kind, path: (await this.pathOf(inode.ino)) ?? `<inode ${inode.ino}>` };
    if (run.fileBlock !== undefined) out.fileOffset = (run.fileBlock + (blk - run.physBlock)) * bs + (rel % bs);
    return out;
  }

  /** icheck: the in-use inode whose blocks include blk. Reads only the in-use part of each inode table. */
  private async findOwner(blk: number, skip: Map<number, string>): Promise<{ inode: Inode; run: InodeRun } | undefined> {
    const sb = this.sb, ipg = sb.inodesPerGroup;
    for (let g = 0; g < this.groups.length; g++) {
      const bitmap = await this.inodeBitmap(g);
      if (!bitmap) continue;
      const used = this.csumGroups ? ipg - Math.min(ipg, this.groups[g].itableUnused) : ipg;
      if (used === 0) continue;
      const tableAt = this.start + this.groups[g].inodeTable * sb.blockSize;
      const table = await readStructure(this.disk, tableAt, used * sb.inodeSize, [...this.path, `group ${g}`, 'inode table']);
      for (let i = 0; i < used; i++) {
        if (!((bitmap[i >> 3] >> (i & 7)) & 1)) continue;
        const ino = g * ipg + i + 1;
        if (skip.has(ino) || (ino < sb.firstIno && ino !== ROOT_INO)) continue;
        const inode = decodeInode(table.subarray(i * sb.inodeSize, i * sb.inodeSize + Math.min(sb.inodeSize, 256)), ino);
        if (inode.links === 0 || inode.dtime !== 0) continue;
        const runs = await this.runsOf(inode);
        const run = runs.find(r => blk >= r.physBlock && blk < r.physBlock + r.count);
        if (run) return { inode, run };
      }
    }
    return undefined;
  }

  /** ncheck: a path naming inode ino, found by walking directories from the root (each directory once). */
  async pathOf(ino: number): Promise<string | undefined> {
    if (ino === ROOT_INO) return '/';
    const seen = new Set<number>([ROOT_INO]);
    const queue: Array<[number, string]> = [[ROOT_INO, '']];
    const bs = this.sb.blockSize, file = this.disk.name ?? 'disk';
    while (queue.length) {
      const [dirIno, dirPath] = queue.shift()!;
      const dir = await this.inode(dirIno);
      if ((dir.mode & S_IFMT) !== S_IFDIR) continue;
      for (const r of await this.runsOf(dir)) {
        if (r.kind !== 'data' || r.unwritten) continue;
        for (let k = 0; k < r.count; k++) {
          const at = this.start + (r.physBlock + k) * bs;
          const entries = parseDirBlock(await readStructure(this.disk, at, bs, [...this.path, `directory inode ${dirIno}`]), this.sb, file, [...this.path, `directory inode ${dirIno}`], at);
          for (const e of entries) {
            const p = `${dirPath}/${e.name}`;
            if (e.ino === ino) return p;
            if (e.ino <= this.sb.inodesCount && !seen.has(e.ino) && (e.fileType === undefined || e.fileType === FT_DIR)) {
              seen.add(e.ino);
              queue.push([e.ino, p]);
            }
          }
        }
      }
    }
    return undefined;
  }

  async close(): Promise<void> {
    if (this.mounted) {
      const m = await this.mounted.catch(() => undefined);
      this.mounted = undefined;
      await m?.close();
    }
  }
}
