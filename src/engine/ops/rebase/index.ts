/**
 * `qemu-img rebase [-u] -b BACKING [-F FMT] FILE` (QEMU 7.2 img_rebase), in place.
 *
 * Safe mode: wherever FILE does not allocate a range itself, the old backing chain and the new
 * backing file are read and compared sector by sector; each FILE cluster holding a difference is
 * written into FILE with what the guest sees now (clusterWrite.ts), so the switch changes nothing
 * the guest reads. When the new backing file is already in FILE's chain, only the ranges allocated
 * above it are compared (img_rebase's prefix_chain_bs). `-b ""` flattens: the new view is all
 * zeros, so everything non-zero the old chain holds is copied and FILE is left standalone.
 * Unsafe mode (-u) only rewrites the name and format, without opening any backing file.
 *
 * Order: 1. the clusters (data, refcounts, L2, L1, frees — each phase synced), while the header
 * still names the old backing file: a crash leaves the old chain with the same guest content and at
 * most leaked clusters  2. the header with the new name and format, one write, synced (header.ts).
 * A new name without a format is refused before anything is written (qemu-img 7.2 copies first and
 * then fails with the same message).
 */
import { throwIfCancelled } from '../../cancel';
import { Qcow2Error } from '../../errors';
import type { BlockLayer } from '../../formats';
import { isZero } from '../../formats/copy';
import { resolveBackingPath } from '../../image/backing';
import { Qcow2Image } from '../../image/image';
import { findInChain, forEachClusterContent, rangesAllocatedAbove } from '../commit';
import { Qcow2ClusterWriter } from '../commit/clusterWrite';
import { IMAGE_FORMATS, openImageLayer } from '../compare/open';
import { assertNotLocked } from '../writable';
import { changeBackingFile } from './header';

export interface RebaseOptions {
  /** -f: FILE's format (qcow2 only: other formats have no backing file to change). */
  format?: string;
  /** -b: the new backing file, as it will be written in the header ("" flattens); undefined only with `unsafe` (the backing file is dropped). */
  backing?: string;
  /** -F: the new backing file's format. */
  backingFormat?: string;
  /** -u: only the name and format change. */
  unsafe?: boolean;
  signal?: AbortSignal;
  onProgress?(done: number, total: number): void;
}

export interface RebaseResult {
  /** Guest bytes copied into FILE (whole clusters). */
  bytesWritten: number;
  backingFile?: string;
  backingFormat?: string;
}

const WINDOW = 64 * 1024 * 1024;
const PIECE = 2 * 1024 * 1024;
const SECTOR = 512;

/** `[start, len)` of `layer`'s guest view, zeros past its end (or everywhere without a layer). */
async function viewOf(layer: BlockLayer | null, start: number, len: number): Promise<Buffer> {
  const out = Buffer.alloc(len);
  if (!layer) return out;
  const end = Math.min(start + len, layer.virtualSize);
  if (end > start) (await layer.readGuest(start, end - start)).copy(out, 0);
  return out;
}

/** Ranges of [from, to) the overlay leaves to its backing file. */
async function unallocatedRanges(img: Qcow2Image, from: number, to: number): Promise<[number, number][]> {
  const own = await rangesAllocatedAbove(img, img.backing, from, to);
  const out: [number, number][] = [];
  let at = from;
  for (const [s, e] of own) { if (s > at) out.push([at, s]); at = Math.max(at, e); }
  if (at < to) out.push([at, to]);
  return out;
}

function intersect(a: [number, number][], b: [number, number][]): [number, number][] {
  const out: [number, number][] = [];
  let i = 0, j = 0;
  while (i < a.length && j < b.length) {
    const s = Math.max(a[i][0], b[j][0]), e = Math.min(a[i][1], b[j][1]);
    if (s < e) out.push([s, e]);
    if (a[i][1] < b[j][1]) i++; else j++;
  }
  return out;
}

export async function rebaseImage(path: string, opts: RebaseOptions): Promise<RebaseResult> {
  const backing = opts.backing;
  if (!opts.unsafe && backing === undefined) throw new Qcow2Error(path, 'backing file', undefined, 'Must specify backing file (-b) or use unsafe mode (-u)', 'unsupported');
  if (opts.format && opts.format !== 'qcow2') throw new Qcow2Error(path, 'backing file', undefined, `Could not change the backing file to '${backing ?? ''}': Operation not supported`, 'unsupported');
  if (opts.backingFormat !== undefined && !IMAGE_FORMATS.includes(opts.backingFormat as never)) {
    throw new Qcow2Error(path, 'backing format', undefined, `Invalid format name: '${opts.backingFormat}'`, 'unsupported');
  }
  const newName = backing === '' ? undefined : backing;
  if (newName !== undefined && opts.backingFormat === undefined) {
    throw new Qcow2Error(path, 'header extension backing format', undefined, `Could not change the backing file to '${newName}': backing format must be specified`, 'unsupported');
  }
  assertNotLocked(path);
  let written = 0;
  if (!opts.unsafe) {
    const img = await Qcow2Image.open(path);
    let opened: BlockLayer | null = null;
    try {
      const oldBacking = img.backing;
      let newBacking: BlockLayer | null = null, prefix: BlockLayer | undefined;
      if (newName !== undefined) {
        const full = resolveBackingPath(path, newName);
        prefix = findInChain(img, full);
        if (prefix) newBacking = prefix;
        else {
          try {
            newBacking = opened = await openImageLayer(full, opts.backingFormat);
          } catch (e) {
            throw new Qcow2Error(path, 'new backing file', undefined, `Could not open new backing file '${newName}': ${e instanceof Error ? e.message : String(e)}`, 'missing-backing');
          }
        }
      }
      const w = await Qcow2ClusterWriter.open(path, opts.signal);
      try {
        const size = img.virtualSize, cs = w.cs;
        for (let from = 0; from < size; from += WINDOW) {
          throwIfCancelled(opts.signal, path, 'rebase');
          const to = Math.min(size, from + WINDOW);
          let todo = await unallocatedRanges(img, from, to);
          // a new backing file from the old chain: only what lies above it can differ
          if (prefix && oldBacking) todo = intersect(todo, await rangesAllocatedAbove(oldBacking, prefix, from, to));
          const clusters: number[] = [];
          for (const [s, e] of todo) {
            for (let at = s; at < e; at += PIECE) {
              const n = Math.min(PIECE, e - at);
              const [a, b] = await Promise.all([viewOf(oldBacking, at, n), viewOf(newBacking, at, n)]);
              for (let i = 0; i < n; i += SECTOR) {
                const k = Math.min(SECTOR, n - i);
                if (a.compare(b, i, i + k, i, i + k) === 0) continue;
                const c = Math.floor((at + i) / cs) * cs;
                if (clusters[clusters.length - 1] !== c) clusters.push(c);
              }
            }
          }
          // what the guest reads now: the overlay's own data where it has any, the old chain elsewhere
          await forEachClusterContent(img, size, img, clusters, cs, async (c, data) => {
            await w.writeCluster(c, isZero(data) ? null : data);
            written += cs;
          });
          opts.onProgress?.(to, size);
        }
        await w.flush();
      } finally {
        await w.close();
      }
    } finally {
      await opened?.close();
      await img.close();
    }
  }
  await changeBackingFile(path, newName, newName !== undefined ? opts.backingFormat : undefined);
  return { bytesWritten: written, backingFile: newName, backingFormat: newName !== undefined ? opts.backingFormat : undefined };
}
