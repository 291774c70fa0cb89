/**
 * Disk usage of a guest file system, as `du` counts it: every file's, folder's and symlink's
 * allocated bytes (its data blocks and its own metadata blocks — extent tree, indirect blocks —
 * from fileRanges, so a sparse file counts what it holds, not its length), a folder's total
 * including its own blocks, a hard-linked inode once. The answer keeps the `top` largest entries
 * of each folder down to `depth` levels (the rest summed as "others"), so it stays small however
 * big the file system is. Reads metadata only (directories, inodes, extent trees), never file data.
 * Bounded: at most `maxEntries` entries are walked (the answer then says `partial`).
 */
import type { EntryType, GuestFileSystem } from '../fs';
import { joinGuestPath } from '../fs';

export interface UsageNode {
  name: string;
  path: string;
  type: EntryType;
  /** Allocated bytes (for a folder: itself and everything under it). */
  bytes: number;
  /** Entries under a folder (files, folders, links), itself not counted. */
  entries: number;
  /** The largest children (folders only, down to the depth asked). */
  children?: UsageNode[];
  /** Bytes and count of the children not listed. */
  others?: { bytes: number; entries: number };
}

export interface UsageOptions {
  /** Children kept per folder (default 10). */
  top?: number;
  /** Levels of children kept under the root (default 6). */
  depth?: number;
  /** Entries walked at most (default 200000). */
  maxEntries?: number;
  signal?: AbortSignal;
}

export interface UsageReport {
  root: UsageNode;
  /** The walk stopped at maxEntries, or some entries could not be read: the figures are lower bounds. */
  partial: boolean;
  errors: string[];
}

/** Folders nested deeper than this are not walked (a hostile image's loop guard; Linux paths are far shallower). */
const MAX_WALK_DEPTH = 256;

export async function diskUsage(gfs: GuestFileSystem, opts: UsageOptions = {}): Promise<UsageReport> {
  const top = Math.max(1, Math.floor(opts.top ?? 10));
  const keepDepth = Math.max(0, Math.floor(opts.depth ?? 6));
  const maxEntries = Math.max(1, Math.floor(opts.maxEntries ?? 200_000));
  const seenInodes = new Set<number>();
  const errors: string[] = [];
  let walked = 0, partial = false;

  const allocated = async (path: string, inode: number | undefined, links: number | undefined): Promise<number> => {
    if (inode !== undefined && (links ?? 1) > 1) {
      if (seenInodes.has(inode)) return 0;
      seenInodes.add(inode);
    }
    try {
      let n = 0;
      for (const r of await gfs.fileRanges(path)) n += r.length;
      return n;
    } catch (e) {
      partial = true;
      if (errors.length < 20) errors.push(`${path}: ${(e as Error).message}`);
      return 0;
    }
  };

  const walk = async (path: string, name: string, level: number, inode: number | undefined): Promise<UsageNode> => {
    opts.signal?.throwIfAborted();
    const node: UsageNode = { name, path, type: 'dir', bytes: await allocated(path, inode, 1), entries: 0 }; // a folder has one name
    if (level >= MAX_WALK_DEPTH) { partial = true; return node; }
    let list;
    try {
      list = await gfs.readdir(path);
    } catch (e) {
      partial = true;
      if (errors.length < 20) errors.push(`${path}: ${(e as Error).message}`);
      return node;
    }
    const kids: UsageNode[] = [];
    for (const st of list) {
      if (walked >= maxEntries) { partial = true; break; }
      walked++;
      const p = joinGuestPath(path, st.name);
      let kid: UsageNode;
      if (st.type === 'dir') kid = await walk(p, st.name, level + 1, st.inode);
      else kid = { name: st.name, path: p, type: st.type, bytes: await allocated(p, st.inode, st.links), entries: 0 };
      node.bytes += kid.bytes;
      node.entries += 1 + kid.entries;
      kids.push(kid);
    }
    if (level < keepDepth && kids.length) {
      kids.sort((a, b) => b.bytes - a.bytes || a.name.localeCompare(b.name));
      node.children = kids.slice(0, top);
      const rest = kids.slice(top);
      if (rest.length) node.others = { bytes: rest.reduce((s, k) => s + k.bytes, 0), entries: rest.reduce((s, k) => s + 1 + k.entries, 0) };
    }
    return node;
  };

  const rootStat = await gfs.stat('/');
  const root = await walk('/', '/', 0, rootStat.inode);
  return { root, partial, errors };
}
