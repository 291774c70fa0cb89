/**
 * `qemu-img commit [-b BASE] [-d] FILE` (QEMU 7.2 img_commit, the active commit of block/mirror.c):
 * every guest range allocated in FILE or in the layers between it and BASE (the immediate backing
 * file without -b) is written into BASE, in place; then, unless -d (which -b implies), FILE is
 * emptied (bdrv_make_empty), so it reads everything from BASE again. A BASE smaller than FILE is
 * grown first (as the mirror job truncates its target), with resize's crash-safe order.
 *
 * Order: 1. BASE grown (ops/resize.ts)  2. BASE's clusters written (clusterWrite.ts: data,
 * refcounts, L2, L1, frees — each phase synced; a raw BASE is written in place and synced)
 * 3. only once BASE is complete and synced, FILE emptied (empty.ts: L1 zeroed, then the
 * refcounts). FILE's guest content never changes: until step 3 it shadows every range written
 * into BASE, and after it BASE holds the same bytes. A crash anywhere leaves FILE with its content
 * and BASE with at most leaked clusters (its content partly committed: commit again).
 */
import * as fs from 'node:fs';
import { Qcow2Error } from '../../errors';
import { throwIfCancelled } from '../../cancel';
import type { BlockLayer } from '../../formats';
import { isZero } from '../../formats/copy';
import { resolveBackingPath } from '../../image/backing';
import type { KeyLookup } from '../../image/encryption';
import { Qcow2Image } from '../../image/image';
import { FileDisk } from '../create/disk';
import { resizeQcow2, resizeRaw } from '../resize';
import { assertNotLocked } from '../writable';
import { Qcow2ClusterWriter } from './clusterWrite';
import { makeEmpty } from './empty';

export interface CommitOptions {
  /** -f: FILE's format (qcow2; other formats have no backing file). */
  format?: string;
  /** -b: commit into this image of the chain (a name as the chain names it, or a path); implies drop. */
  base?: string;
  /** -d: leave FILE as it is (not emptied). */
  drop?: boolean;
  /** Passphrases of the chain's encrypted layers (reads decrypt; an encrypted qcow2 base is written encrypted). */
  keys?: KeyLookup;
  signal?: AbortSignal;
  onProgress?(done: number, total: number): void;
}

export interface CommitResult {
  base: string;
  /** Guest bytes copied into the base (whole clusters for a qcow2 base). */
  bytesWritten: number;
  /** The base's virtual size before and after (grown when FILE was larger). */
  baseSize: { before: number; after: number };
  emptied: boolean;
}

/** How much guest space is looked at (block status, then reads) per step. */
const WINDOW = 64 * 1024 * 1024;
/** The largest guest read. */
const READ = 1024 * 1024;

function realpath(p: string): string | undefined {
  try { return fs.realpathSync(p); } catch { return undefined; }
}

/**
 * bdrv_find_backing_image: the layer below some layer of the chain whose backing file is `name`
 * (resolved against that layer's own directory, as QEMU does, and compared as real paths).
 */
export function findInChain(top: BlockLayer, name: string): BlockLayer | undefined {
  for (let cur: BlockLayer | null = top; cur && cur.backing; cur = cur.backing) {
    const want = realpath(resolveBackingPath(cur.path, name));
    if (want !== undefined && want === realpath(cur.backing.path)) return cur.backing;
  }
  return undefined;
}

/** [start, end) ranges of [from, to) that a layer from `top` down to (not including) `base` allocates; sorted, merged. */
export async function rangesAllocatedAbove(top: BlockLayer, base: BlockLayer | null, from: number, to: number): Promise<[number, number][]> {
  const out: [number, number][] = [];
  for (let p: BlockLayer | null = top; p && p !== base; p = p.backing) {
    const end = Math.min(to, p.virtualSize);
    if (end > from) await p.layerStatus(from, end, e => { if (e.present && e.length > 0) out.push([e.start, e.start + e.length]); });
    // a layer shorter than the one above reads as zeros past its end: allocated at that layer (block/io.c)
    if (p !== top && end < to) out.push([Math.max(from, p.virtualSize), to]);
  }
  out.sort((a, b) => a[0] - b[0]);
  const merged: [number, number][] = [];
  for (const r of out) {
    const last = merged[merged.length - 1];
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else merged.push([r[0], r[1]]);
  }
  return merged;
}

/**
 * The new content of whole clusters `clusters` (ascending, cluster-aligned) of a layer being
 * written: `view` (what the guest sees above it) up to `viewEnd`, `own` (the layer itself, through
 * its backing) past it. Runs of adjacent clusters are read together, up to READ bytes, the next run
 * read while the clusters of this one are visited (written): each read ends before the clusters
 * it covers are visited, and a visit writes only clusters of runs already read.
 */
export async function forEachClusterContent(
  view: BlockLayer, viewEnd: number, own: BlockLayer, clusters: readonly number[], cs: number,
  visit: (at: number, data: Buffer) => Promise<void>,
): Promise<void> {
  const runs: Array<[number, number]> = [];
  for (let k = 0; k < clusters.length;) {
    let j = k + 1;
    while (j < clusters.length && clusters[j] === clusters[j - 1] + cs && (j - k) * cs < READ) j++;
    runs.push([k, j]);
    k = j;
  }
  const read = async ([k, j]: [number, number]): Promise<Buffer> => {
    const start = clusters[k], end = clusters[j - 1] + cs;
    const v = Math.max(start, Math.min(end, viewEnd));
    // the whole run from the view: its buffer as it is (no copy)
    if (v === end) return view.readGuest(start, end - start);
    const run = Buffer.alloc(end - start);
    if (v > start) (await view.readGuest(start, v - start)).copy(run, 0);
    const o = Math.min(end, own.virtualSize);
    if (o > v) (await own.readGuest(v, o - v)).copy(run, v - start);
    return run;
  };
  let next: Promise<Buffer> | null = runs.length ? read(runs[0]) : null;
  for (let r = 0; r < runs.length; r++) {
    const run = await next!;
    next = r + 1 < runs.length ? read(runs[r + 1]) : null;
    next?.catch(() => undefined); // a failure is thrown where it is awaited, not as an unhandled rejection
    const [k, j] = runs[r], start = clusters[k];
    for (let i = k; i < j; i++) await visit(clusters[i], run.subarray(clusters[i] - start, clusters[i] - start + cs));
  }
}

/** Writes clusters `clusters` of `w`'s image with their content from forEachClusterContent (all-zero ones as zeros); the bytes written. */
export async function writeClusterContents(w: Qcow2ClusterWriter, view: BlockLayer, viewEnd: number, own: BlockLayer, clusters: readonly number[]): Promise<number> {
  let written = 0;
  await forEachClusterContent(view, viewEnd, own, clusters, w.cs, async (c, data) => {
    await w.writeCluster(c, isZero(data) ? null : data);
    written += w.cs;
  });
  return written;
}

export async function commitImage(path: string, opts: CommitOptions = {}): Promise<CommitResult> {
  const drop = opts.drop || opts.base !== undefined;
  if (opts.format && opts.format !== 'qcow2') throw new Qcow2Error(path, 'backing file', undefined, 'Image does not have a backing file', 'unsupported');
  assertNotLocked(path);
  const top = await Qcow2Image.open(path, { keys: opts.keys });
  let result: CommitResult;
  try {
    let base: BlockLayer | undefined;
    if (opts.base !== undefined) {
      base = findInChain(top, opts.base);
      if (!base) throw new Qcow2Error(path, 'backing chain', undefined, `Did not find '${opts.base}' in the backing chain of '${path}'`, 'not-found');
    } else {
      base = top.backing ?? undefined;
      if (!base) throw new Qcow2Error(path, 'backing file', undefined, 'Image does not have a backing file', 'not-found');
    }
    assertNotLocked(base.path);
    const topSize = top.virtualSize, before = base.virtualSize;
    // 1. a base smaller than the overlay grows first
    if (before < topSize) {
      if (base.format === 'qcow2') await resizeQcow2(base.path, { absolute: topSize });
      else await resizeRaw(base.path, { absolute: topSize });
    }
    // 2. the data
    let written = 0;
    if (base.format === 'qcow2') {
      let depth = 0;
      for (let l: BlockLayer | null | undefined = top; l && l !== base; l = l.backing) depth++;
      // the chain unlocked the base already: its master key, not the passphrase again
      const w = await Qcow2ClusterWriter.open(base.path, opts.signal, base instanceof Qcow2Image && base.masterKey ? base : opts.keys?.({ path: base.path, depth }));
      try {
        const cs = w.cs;
        for (let from = 0; from < topSize; from += WINDOW) {
          throwIfCancelled(opts.signal, path, 'commit');
          const to = Math.min(topSize, from + WINDOW);
          const ranges = await rangesAllocatedAbove(top, base, from, to);
          // the base clusters those ranges touch, in runs read together
          const clusters: number[] = [];
          for (const [s, e] of ranges) {
            for (let c = Math.floor(s / cs) * cs; c < e; c += cs) if (clusters[clusters.length - 1] !== c) clusters.push(c);
          }
          written += await writeClusterContents(w, top, topSize, base, clusters);
          opts.onProgress?.(to, topSize);
        }
        await w.flush();
      } finally {
        await w.close();
      }
    } else if (base.format === 'raw') {
      const disk = FileDisk.open(base.path, 'r+', opts.signal);
      try {
        for (let from = 0; from < topSize; from += WINDOW) {
          const to = Math.min(topSize, from + WINDOW);
          for (const [s, e] of await rangesAllocatedAbove(top, base, from, to)) {
            for (let at = s; at < e; at += READ) {
              const n = Math.min(READ, e - at);
              await disk.write(at, await top.readGuest(at, n), 'raw data');
              written += n;
            }
          }
          opts.onProgress?.(to, topSize);
        }
        await disk.sync();
      } finally {
        disk.close();
      }
    } else {
      throw new Qcow2Error(base.path, 'format', undefined, `committing into a ${base.format} image is not supported`, 'unsupported');
    }
    result = { base: base.path, bytesWritten: written, baseSize: { before, after: Math.max(before, topSize) }, emptied: false };
  } finally {
    await top.close();
  }
  // 3. the overlay emptied, once the base holds everything
  if (!drop) {
    await makeEmpty(path);
    result.emptied = true;
  }
  return result;
}
