/**
 * `qemu-img rebase [-u] -b BACKING [-F FMT] FILE` (QEMU 7.2 img_rebase), in place.
 *
 * Safe mode: wherever FILE does not allocate a range itself, the old backing chain and the new
 * backing file are read and compared sector by sector; each FILE cluster holding a difference is
 * written into FILE with what the guest sees now (clusterWrite.ts), so the switch changes nothing
 * the guest reads. When the new backing file is already in FILE's chain, only the ranges allocated
 * above it are compared (img_rebase's prefix_chain_bs). `-b ""` flattens: the new view is all
 * zeros, so everything non-zero the old chain holds is copied and FILE is left standalone.
 * Ranges that no layer of either chain allocates read zeros on both sides and are not read at all;
 * a piece is compared whole first (one memcmp), cluster by cluster only when it differs, and a
 * differing cluster the overlay leaves wholly to the old chain is written from the bytes just
 * compared (the others are read again through the overlay).
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
import type { KeyLookup } from '../../image/encryption';
import { Qcow2Image } from '../../image/image';
import { findInChain, rangesAllocatedAbove, writeClusterContents } from '../commit';
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
  /** Passphrases of FILE's chain's encrypted layers (reads decrypt; an encrypted FILE is written encrypted). */
  keys?: KeyLookup;
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
/** Compared this much at a time (at least a cluster; the pieces after a range's first end on cluster boundaries). */
const PIECE = 1024 * 1024;

/** Zeros shared by every view without a layer (only ever read: compared, or found zero and written as zeros). */
let zeros = Buffer.alloc(0);

/** `[start, len)` of `layer`'s guest view, zeros past its end (or everywhere without a layer). */
async function viewOf(layer: BlockLayer | null, start: number, len: number): Promise<Buffer> {
  if (!layer) {
    if (zeros.length < len) zeros = Buffer.alloc(len);
    return zeros.subarray(0, len);
  }
  const end = Math.min(start + len, layer.virtualSize);
  if (end === start + len) return layer.readGuest(start, len); // no copy when the layer covers it all
  const out = Buffer.alloc(len);
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

/** Ranges of [from, to) some layer of `layer`'s chain allocates (or past a shorter layer's end); none without a layer. */
async function allocatedIn(layer: BlockLayer | null, from: number, to: number): Promise<[number, number][]> {
  return layer ? rangesAllocatedAbove(layer, null, from, to) : [];
}

function union(a: [number, number][], b: [number, number][]): [number, number][] {
  const all = [...a, ...b].sort((x, y) => x[0] - y[0]);
  const out: [number, number][] = [];
  for (const r of all) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else out.push([r[0], r[1]]);
  }
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
    const img = await Qcow2Image.open(path, { keys: opts.keys });
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
      const w = await Qcow2ClusterWriter.open(path, opts.signal, img.masterKey ? img : opts.keys?.({ path, depth: 0 }));
      try {
        const size = img.virtualSize, cs = w.cs;
        for (let from = 0; from < size; from += WINDOW) {
          throwIfCancelled(opts.signal, path, 'rebase');
          const to = Math.min(size, from + WINDOW);
          const unalloc = await unallocatedRanges(img, from, to);
          let todo = unalloc;
          // a new backing file from the old chain: only what lies above it can differ
          if (prefix && oldBacking) todo = intersect(todo, await rangesAllocatedAbove(oldBacking, prefix, from, to));
          // where neither the old chain nor the new one allocates anything, both read zeros: nothing to compare
          todo = intersect(todo, union(await allocatedIn(oldBacking, from, to), await allocatedIn(newBacking, from, to)));
          const clusters: number[] = [];
          // the overlay's unallocated range at or after the cluster being looked at (clusters come in ascending order)
          let u = 0;
          const within = (cs0: number, ce: number) => {
            while (u < unalloc.length && unalloc[u][1] <= cs0) u++;
            return u < unalloc.length && unalloc[u][0] <= cs0 && ce <= unalloc[u][1];
          };
          // the pieces compared, the next one read while this one is compared and written (reads of the backing files only)
          const pieces: Array<[number, number]> = [];
          // (a piece ends on a cluster boundary, so each cluster lies in one piece and can be written from it)
          for (const [s, e] of todo) {
            for (let at = s; at < e;) {
              const end = Math.min(e, Math.ceil((at + Math.max(PIECE, cs)) / cs) * cs);
              pieces.push([at, end - at]);
              at = end;
            }
          }
          const views = ([at, n]: [number, number]) => Promise.all([viewOf(oldBacking, at, n), viewOf(newBacking, at, n)]);
          let next = pieces.length ? views(pieces[0]) : null;
          for (let p = 0; p < pieces.length; p++) {
            const [at, n] = pieces[p];
            const [a, b] = await next!;
            next = p + 1 < pieces.length ? views(pieces[p + 1]) : null;
            next?.catch(() => undefined); // thrown where it is awaited
            if (a.equals(b)) continue; // one memcmp for the common case
            // the clusters holding a difference: compared a cluster (or the piece's part of one) at a time
            for (let i = 0; i < n;) {
              const c = Math.floor((at + i) / cs) * cs;
              const k = Math.min(n, c + cs - at);
              if (a.compare(b, i, k, i, k) !== 0) {
                // the cluster's guest bytes (the last cluster of a disk not a whole number of clusters ends at its size)
                const ce = Math.min(c + cs, size);
                if (c >= at && ce <= at + n && within(c, ce)) {
                  // the overlay leaves this whole cluster to the old chain: what the guest reads is `a` (a view of it: the
                  // writer issues it at once, joined with the clusters beside it; a copy padded with zeros past the disk's end)
                  let data = a.subarray(c - at, c - at + cs);
                  if (ce < c + cs) { data = Buffer.alloc(cs); a.copy(data, 0, c - at, ce - at); }
                  await w.writeCluster(c, isZero(data) ? null : data);
                  written += cs;
                } else if (clusters[clusters.length - 1] !== c) clusters.push(c);
              }
              i = k;
            }
          }
          // what the guest reads now: the overlay's own data where it has any, the old chain elsewhere
          written += await writeClusterContents(w, img, size, img, clusters);
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
