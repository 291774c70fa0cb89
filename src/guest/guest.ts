/**
 * openGuest: a guest disk's partition table, what each partition holds (identified by signature,
 * sized), and the browsable file systems opened over one block cache — the entry point for the
 * CLI, and later the editor's Guest tree, the FileSystemProvider, `space` and `sparsify`.
 */
import { BlockCache, GuestDisk } from './disk';
import { GuestPathError } from './errors';
import { ExtFileSystem } from './ext/extfs';
import { FatFileSystem } from './fat/fatfs';
import type { GuestFileSystem, Whose } from './fs';
import { BROWSABLE, FsKind, identify, Identified } from './identify';
import { readPartitionTable } from './partition/partitions';
import type { Partition, PartitionTable } from './partition/types';
import { DiskSlice } from './disk';

export interface GuestPartition extends Partition {
  /** The file system found in it (null: nothing known; the extended container: 'extended'). */
  fs: FsKind | 'extended' | null;
  fsInfo?: Identified;
  browsable: boolean;
  /** Why a browsable kind could not be opened (damaged superblock …). */
  error?: string;
  fileSystem?: GuestFileSystem;
}

export interface Guest {
  disk: BlockCache;
  table: PartitionTable;
  partitions: GuestPartition[];
  fileSystems: GuestFileSystem[];
  warnings: string[];
  /** The file system of partition `number`, or (undefined) the only or first browsable one. */
  fileSystem(number?: number): GuestFileSystem;
  whose(guestOffset: number): Promise<Whose>;
  close(): Promise<void>;
}

export interface OpenGuestOptions {
  /** Opening a browsable partition that fails: throw (default) or keep the error on the partition. */
  strict?: boolean;
}

function partLabel(p: Partition): string {
  return p.number === 0 ? 'whole disk' : `partition ${p.number}`;
}

export async function openGuest(raw: GuestDisk, opts: OpenGuestOptions = {}): Promise<Guest> {
  const disk = raw instanceof BlockCache ? raw : new BlockCache(raw);
  const table = await readPartitionTable(disk);
  const partitions: GuestPartition[] = [];
  const fileSystems: GuestFileSystem[] = [];
  for (const p of table.partitions) {
    if (p.extended) {
      partitions.push({ ...p, fs: 'extended', browsable: false });
      continue;
    }
    const end = Math.min(p.start + p.size, disk.size);
    const gp: GuestPartition = { ...p, fs: null, browsable: false };
    partitions.push(gp);
    if (end <= p.start) continue;
    const slice = new DiskSlice(disk, p.start, end - p.start);
    const found = await identify(slice);
    if (!found) continue;
    gp.fs = found.fs;
    gp.fsInfo = found;
    if (!BROWSABLE.has(found.fs)) continue;
    try {
      const prefix = [partLabel(p)];
      const fs = found.fs === 'vfat'
        ? await FatFileSystem.open(disk, p.start, end - p.start, prefix)
        : await ExtFileSystem.open(disk, found.fs, p.start, end - p.start, prefix);
      gp.fileSystem = fs;
      gp.browsable = true;
      fileSystems.push(fs);
    } catch (e) {
      if (opts.strict !== false) {
        for (const f of fileSystems) await f.close();
        throw e;
      }
      gp.error = (e as Error).message;
    }
  }

  const guest: Guest = {
    disk, table, partitions, fileSystems, warnings: table.warnings,
    fileSystem(number?: number): GuestFileSystem {
      if (number === undefined) {
        if (fileSystems.length === 0) throw new GuestPathError('ENOENT', disk.name ?? 'guest disk', partitions.length ? `no browsable file system (found: ${partitions.map(x => `${partLabel(x)} ${x.fs ?? 'unknown'}`).join(', ')})` : 'the disk has no partitions');
        return fileSystems[0];
      }
      const p = partitions.find(x => x.number === number);
      if (!p) throw new GuestPathError('ENOENT', `${number}:`, `no partition ${number} (the disk has ${partitions.map(x => x.number).join(', ') || 'none'})`);
      if (!p.fileSystem) throw new GuestPathError('EINVAL', `${number}:`, p.error ?? `partition ${number} holds ${p.fs ?? 'no known file system'}, which is not browsable`);
      return p.fileSystem;
    },
    async whose(guestOffset: number): Promise<Whose> {
      if (!Number.isSafeInteger(guestOffset) || guestOffset < 0 || guestOffset >= disk.size) {
        throw new GuestPathError('EINVAL', String(guestOffset), `guest offset is outside the ${disk.size}-byte disk`);
      }
      const t = table.tableRanges.find(r => guestOffset >= r.start && guestOffset < r.start + r.length);
      if (t) return { guestOffset, kind: 'partition table', metadata: t.kind };
      // Logical partitions lie inside the extended one: look at the real partitions first.
      const inside = partitions.filter(x => guestOffset >= x.start && guestOffset < x.start + x.size).sort((a, b) => Number(!!a.extended) - Number(!!b.extended));
      const p = inside[0];
      if (!p || p.extended) return { guestOffset, kind: 'unpartitioned' };
      if (p.fileSystem) return { ...(await p.fileSystem.whose(guestOffset)), partition: p.number };
      if (p.fs === 'swap') return { guestOffset, kind: 'not browsable', partition: p.number, fs: 'swap', metadata: 'swap space' };
      return { guestOffset, kind: 'not browsable', partition: p.number, fs: p.fs ?? undefined, metadata: p.fs ? `${p.fs} (not browsable)` : 'unknown contents' };
    },
    async close(): Promise<void> {
      for (const f of fileSystems) await f.close();
    },
  };
  return guest;
}

/** Splits "[PARTITION:]PATH": "2:/etc" → {2, "/etc"}; "/etc" → {undefined, "/etc"}. */
export function parsePartitionPath(spec: string): { partition?: number; path: string } {
  const m = /^(\d+):(.*)$/.exec(spec);
  if (m) return { partition: Number(m[1]), path: m[2] || '/' };
  return { path: spec || '/' };
}
