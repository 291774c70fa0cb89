/**
 * A FAT12/16/32 file system inside the guest, read by the guest lens itself (README, Dependencies:
 * why no FAT library): boot sector, FAT, directories and cluster chains, so listing, reading, the
 * file ↔ guest byte maps and free space all come from the same bounded code.
 */
import { Readable } from 'node:stream';
import { GuestDisk, readStructure } from '../disk';
import { guestError, GuestPath, GuestPathError } from '../errors';
import { coalesceRanges, FileRange, GuestFileSystem, GuestStat, joinGuestPath, splitGuestPath, Usage, Whose } from '../fs';
import { Bpb, decodeBpb } from './bpb';
import { ATTR_DIRECTORY, ATTR_READ_ONLY, FatDirEntry, parseFatDir } from './dir';
import { FatTable } from './table';

/** The FAT specification's limit on entries in one directory (65,536 × 32 bytes). */
const MAX_DIR_BYTES = 65536 * 32;
const READ_CHUNK = 1024 * 1024;

interface Node {
  path: string;
  entry?: FatDirEntry;
  isDir: boolean;
}

export class FatFileSystem implements GuestFileSystem {
  readonly kind = 'vfat' as const;
  readonly readOnly = true;
  readonly warnings: string[] = [];
  readonly table: FatTable;
  private readonly path: GuestPath;

  private constructor(private readonly disk: GuestDisk, readonly start: number, readonly bpb: Bpb, pathPrefix: GuestPath) {
    this.path = [...pathPrefix, 'vfat'];
    this.table = new FatTable(disk, start, bpb, this.path);
  }

  get size(): number {
    return this.bpb.totalSectors * this.bpb.bytesPerSector;
  }
  get label(): string | undefined {
    return this.bpb.label;
  }
  get fatType(): string {
    return this.bpb.fatType;
  }

  static async open(disk: GuestDisk, start: number, size: number, pathPrefix: GuestPath = []): Promise<FatFileSystem> {
    const path = [...pathPrefix, 'vfat'];
    const boot = await readStructure(disk, start, 512, [...path, 'boot sector']);
    const bpb = decodeBpb(boot, disk.name ?? 'disk', path, start, size);
    const fs = new FatFileSystem(disk, start, bpb, pathPrefix);
    await fs.readState();
    return fs;
  }

  /** Dirty flags: Linux's boot-sector state bit, and the ClnShutBit of FAT[1] that Windows clears while mounted. */
  private async readState(): Promise<void> {
    if (this.bpb.bootDirty) this.warnings.push('the dirty bit is set in the boot sector: the volume is mounted by a running guest or was not unmounted cleanly');
    if (this.bpb.fatType === 'FAT12') return;
    const fat1 = await this.table.entry(1);
    const clean = this.bpb.fatType === 'FAT16' ? 0x8000 : 0x08000000;
    if (!(fat1 & clean)) this.warnings.push('FAT[1] says the volume was not shut down cleanly (ClnShutBit clear)');
  }

  /** The raw bytes of a directory: the fixed root region (FAT12/16) or its cluster chain. */
  private async dirData(first: number | 'root', what: string): Promise<Buffer> {
    if (first === 'root' && this.bpb.fatType !== 'FAT32') {
      return readStructure(this.disk, this.start + this.bpb.rootDirOffset, this.bpb.rootDirBytes, [...this.path, 'root directory']);
    }
    const c = first === 'root' ? this.bpb.rootCluster : first;
    if (c === 0) return Buffer.alloc(0);
    const runs = await this.table.chain(c, what, Math.ceil(MAX_DIR_BYTES / this.bpb.clusterBytes));
    const parts: Buffer[] = [];
    for (const r of runs) parts.push(await readStructure(this.disk, this.table.clusterOffset(r.start), r.count * this.bpb.clusterBytes, [...this.path, what]));
    return Buffer.concat(parts);
  }

  private async entriesOf(node: Node): Promise<FatDirEntry[]> {
    return parseFatDir(await this.dirData(node.entry ? node.entry.firstCluster : 'root', `directory ${node.path}`));
  }

  /** Resolves a path, case-insensitively as FAT names are, by long or short name. */
  private async lookup(path: string): Promise<Node> {
    const parts = splitGuestPath(path);
    let node: Node = { path: '/', isDir: true };
    for (const part of parts) {
      if (!node.isDir) throw new GuestPathError('ENOTDIR', node.path, 'not a directory');
      const want = part.toLowerCase();
      const e = (await this.entriesOf(node)).find(x => x.name.toLowerCase() === want || x.shortName.toLowerCase() === want);
      const p = joinGuestPath(node.path, part);
      if (!e) throw new GuestPathError('ENOENT', p, 'no such file or directory');
      node = { path: joinGuestPath(node.path, e.name), entry: e, isDir: (e.attr & ATTR_DIRECTORY) !== 0 };
    }
    return node;
  }

  private toStat(name: string, e: FatDirEntry | undefined): GuestStat {
    if (!e) return { name, type: 'dir', size: 0, mode: 0o40755, uid: 0, gid: 0, mtime: 0, inode: this.bpb.rootCluster || undefined };
    const dir = (e.attr & ATTR_DIRECTORY) !== 0;
    const perm = e.attr & ATTR_READ_ONLY ? 0o555 : 0o755;
    return { name, type: dir ? 'dir' : 'file', size: dir ? 0 : e.size, mode: (dir ? 0o40000 : 0o100000) | perm, uid: 0, gid: 0, mtime: e.mtime, atime: e.atime, ctime: e.ctime, inode: e.firstCluster };
  }

  async stat(path: string): Promise<GuestStat> {
    const n = await this.lookup(path);
    return this.toStat(n.entry ? n.entry.name : '/', n.entry);
  }

  async readdir(path: string): Promise<GuestStat[]> {
    const n = await this.lookup(path);
    if (!n.isDir) throw new GuestPathError('ENOTDIR', n.path, 'not a directory');
    return (await this.entriesOf(n)).map(e => this.toStat(e.name, e)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  private async fileRuns(n: Node): Promise<Array<{ start: number; count: number }>> {
    const e = n.entry!;
    if (e.firstCluster === 0) return [];
    const need = n.isDir ? Math.ceil(MAX_DIR_BYTES / this.bpb.clusterBytes) : Math.ceil(e.size / this.bpb.clusterBytes);
    if (need === 0) return [];
    const runs = await this.table.chain(e.firstCluster, n.path, need);
    const have = runs.reduce((s, r) => s + r.count, 0);
    if (!n.isDir && have < need) {
      throw guestError(this.disk.name ?? 'disk', [...this.path, n.path], this.table.clusterOffset(e.firstCluster), `the cluster chain holds ${have} clusters, the file's size needs ${need}`);
    }
    return runs;
  }

  async createReadStream(path: string): Promise<Readable> {
    const n = await this.lookup(path);
    if (n.isDir) throw new GuestPathError('EISDIR', n.path, 'is a directory');
    const runs = await this.fileRuns(n);
    const size = n.entry!.size, cb = this.bpb.clusterBytes;
    const { disk, table } = this;
    async function* chunks(): AsyncGenerator<Buffer> {
      let left = size;
      for (const r of runs) {
        for (let k = 0; k < r.count && left > 0;) {
          const clusters = Math.min(r.count - k, Math.max(1, Math.floor(READ_CHUNK / cb)));
          const len = Math.min(clusters * cb, left);
          yield await disk.read(table.clusterOffset(r.start + k), len);
          left -= len;
          k += clusters;
        }
      }
    }
    return Readable.from(chunks(), { objectMode: false });
  }

  async readFile(path: string): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const c of await this.createReadStream(path)) parts.push(c as Buffer);
    return Buffer.concat(parts);
  }

  async fileRanges(path: string): Promise<FileRange[]> {
    const n = await this.lookup(path);
    if (!n.entry) {
      if (this.bpb.fatType !== 'FAT32') return [{ guestOffset: this.start + this.bpb.rootDirOffset, length: this.bpb.rootDirBytes, fileOffset: 0, kind: 'data' }];
      n.entry = { name: '/', shortName: '/', attr: ATTR_DIRECTORY, firstCluster: this.bpb.rootCluster, size: 0, mtime: 0, atime: 0, ctime: 0, entryOffset: 0 };
    }
    const cb = this.bpb.clusterBytes;
    const out: FileRange[] = [];
    let fileOffset = 0;
    for (const r of await this.fileRuns(n)) {
      out.push({ guestOffset: this.table.clusterOffset(r.start), length: r.count * cb, fileOffset, kind: 'data' });
      fileOffset += r.count * cb;
    }
    return coalesceRanges(out);
  }

  async *freeRanges(): AsyncGenerator<[number, number]> {
    for await (const [c, n] of this.table.freeClusterRuns()) yield [this.table.clusterOffset(c), n * this.bpb.clusterBytes];
  }

  async usage(): Promise<Usage> {
    let free = 0;
    for await (const [, len] of this.freeRanges()) free += len;
    const size = this.size;
    return { size, free, used: size - free, blockSize: this.bpb.clusterBytes };
  }

  async whose(guestOffset: number): Promise<Whose> {
    const b = this.bpb, rel = guestOffset - this.start;
    const base: Whose = { guestOffset, kind: 'metadata', fs: 'vfat' };
    if (rel < 0 || rel >= this.size) return { ...base, kind: 'unused', metadata: 'past the end of the file system' };
    const sector = Math.floor(rel / b.bytesPerSector);
    if (rel < b.fatOffset) {
      if (sector === 0) return { ...base, metadata: 'boot sector' };
      if (b.fatType === 'FAT32' && sector === b.fsInfoSector) return { ...base, metadata: 'FSInfo sector' };
      if (b.fatType === 'FAT32' && b.backupBootSector && sector >= b.backupBootSector && sector < b.backupBootSector + 3) return { ...base, metadata: 'boot sector (backup)' };
      return { ...base, metadata: 'reserved sectors' };
    }
    if (rel < b.rootDirOffset) {
      const copy = Math.floor((rel - b.fatOffset) / (b.fatSectors * b.bytesPerSector));
      return { ...base, metadata: copy === 0 ? 'FAT' : `FAT (copy ${copy + 1})` };
    }
    if (rel < b.dataOffset) return { ...base, metadata: 'root directory' };
    const c = 2 + Math.floor((rel - b.dataOffset) / b.clusterBytes);
    if (c > b.clusterCount + 1) return { ...base, kind: 'unused', metadata: 'after the last cluster' };
    const k = this.table.kindOf(await this.table.entry(c));
    if (k === 'free') return { ...base, kind: 'free' };
    if (k === 'bad') return { ...base, metadata: 'bad cluster' };
    const owner = await this.findOwner(c);
    if (!owner) return { ...base, metadata: 'allocated, but no file references it (lost cluster)' };
    return { guestOffset, kind: 'file', fs: 'vfat', path: owner.path, role: owner.isDir ? 'directory' : 'data', fileOffset: owner.index * b.clusterBytes + ((rel - b.dataOffset) % b.clusterBytes) };
  }

  /** The file or directory whose chain holds cluster c: a walk of the tree, each directory once. */
  private async findOwner(c: number): Promise<{ path: string; isDir: boolean; index: number } | undefined> {
    const root: Node = { path: '/', isDir: true };
    if (this.bpb.fatType === 'FAT32') {
      const idx = indexIn(await this.table.chain(this.bpb.rootCluster, 'root directory', Math.ceil(MAX_DIR_BYTES / this.bpb.clusterBytes)), c);
      if (idx >= 0) return { path: '/', isDir: true, index: idx };
    }
    const seen = new Set<number>();
    const queue: Node[] = [root];
    while (queue.length) {
      const dir = queue.shift()!;
      for (const e of await this.entriesOf(dir)) {
        if (e.firstCluster < 2 || e.firstCluster > this.bpb.clusterCount + 1) continue;
        const node: Node = { path: joinGuestPath(dir.path, e.name), entry: e, isDir: (e.attr & ATTR_DIRECTORY) !== 0 };
        if (node.isDir) {
          if (seen.has(e.firstCluster)) continue;
          seen.add(e.firstCluster);
        }
        const idx = indexIn(await this.fileRuns(node), c);
        if (idx >= 0) return { path: node.path, isDir: node.isDir, index: idx };
        if (node.isDir) queue.push(node);
      }
    }
    return undefined;
  }

  async close(): Promise<void> {}
}

function indexIn(runs: Array<{ start: number; count: number }>, c: number): number {
  let idx = 0;
  for (const r of runs) {
    if (c >= r.start && c < r.start + r.count) return idx + (c - r.start);
    idx += r.count;
  }
  return -1;
}
