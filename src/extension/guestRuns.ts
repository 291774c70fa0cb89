/**
 * The guest-disk map's answers (no `vscode` import): a guest range summarised in a bounded number of
 * equal cells, each naming what matters most in it (data in this file, compressed, encrypted, a
 * backing layer by depth, zero, unallocated), plus the range's byte counts and how many runs of
 * this file's own data it holds.
 *
 * The mapping is read through the engine's block status (src/engine/image/map.ts, the same walk and
 * merging as `qemu-img map`), streamed entry by entry: nothing per cluster is kept. The work is the
 * map entries in the range plus the cells, and the I/O is the L2 tables the range's L1 entries point
 * at; a sparse 1 TiB disk with a few used clusters costs a few L1 lookups and L2 reads for the whole
 * disk. The reply is at most MAX_GUEST_BUCKETS cells, whatever the zoom.
 */
import type { Qcow2Image } from '../engine/image/image';
import { forEachMapEntry, type MapEntry } from '../engine/image/map';
import { GUEST_RUN_KINDS, MAX_GUEST_BUCKETS, type GuestBucket, type GuestRunKind, type GuestRunsReply } from '../protocol';

/** Cells never cover less than a sector. */
const MIN_BUCKET_BYTES = 512;

/** What one map entry (as qemu-img map prints it) reads from. */
export function classify(img: Qcow2Image, e: MapEntry): GuestRunKind {
  if (!e.present) return 'unallocated';
  if (e.zero) return 'zero';
  const layer = img.chain()[e.depth] as (Qcow2Image | undefined);
  const qcow2 = layer?.format === 'qcow2';
  if (qcow2 && layer.encrypted) return 'encrypted';
  if (e.depth > 0) return 'backing';
  return qcow2 && e.offset === undefined ? 'compressed' : 'data';
}

/** Lower is shown first when a cell holds several kinds; a shallower backing layer before a deeper one. */
function rank(kind: GuestRunKind, depth: number): number {
  return GUEST_RUN_KINDS.indexOf(kind) * 1024 + (kind === 'backing' ? depth : 0);
}

type GuestRuns = Omit<GuestRunsReply, 'type' | 'requestId'>;
/**
 * The last few answers per open image (the whole-disk summary and the fitted view are asked for
 * again on every refresh of the tab and zoom back out). A changed file is a new Qcow2Image (the view
 * model re-opens it), so nothing stale is kept.
 */
const recent = new WeakMap<Qcow2Image, Map<string, Promise<GuestRuns>>>();
const RECENT = 8;

export function guestRuns(img: Qcow2Image, start: number, length: number, buckets: number): Promise<GuestRuns> {
  let cache = recent.get(img);
  if (!cache) recent.set(img, (cache = new Map()));
  const key = `${start}:${length}:${buckets}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const p = computeGuestRuns(img, start, length, buckets);
  cache.set(key, p);
  p.catch(() => cache.delete(key));
  while (cache.size > RECENT) cache.delete(cache.keys().next().value!);
  return p;
}

async function computeGuestRuns(img: Qcow2Image, start: number, length: number, buckets: number): Promise<GuestRuns> {
  const size = img.virtualSize;
  const num = (x: number) => (Number.isSafeInteger(x) && x >= 0 ? x : 0);
  start = Math.min(num(Math.floor(start)), size);
  buckets = Math.max(1, Math.min(MAX_GUEST_BUCKETS, num(Math.floor(buckets)) || 1));
  // the cell size comes from the range asked, before it is cut at the disk's end: the last cells of
  // a disk that is not a whole number of cells keep the size of the others
  const bucketBytes = Math.max(MIN_BUCKET_BYTES, Math.ceil(num(Math.floor(length)) / buckets));
  length = Math.min(num(Math.floor(length)), size - start);
  const count = length === 0 ? 0 : Math.ceil(length / bucketBytes);
  const cells: GuestBucket[] = [];
  const ranks: number[] = [];
  for (let i = 0; i < count; i++) {
    cells.push({ kind: 'unallocated', depth: 0, at: start + i * bucketBytes, used: 0 });
    ranks.push(rank('unallocated', 0));
  }
  const bytes: Record<GuestRunKind, number> = { data: 0, compressed: 0, zero: 0, backing: 0, encrypted: 0, unallocated: 0 };
  const backingByDepth: number[] = [];
  let allocatedRuns = 0, allocatedBytes = 0, runEnd = -1;
  const end = start + length;
  if (count > 0) {
    await forEachMapEntry(img, e => {
      const s = Math.max(start, e.start), t = Math.min(end, e.start + e.length);
      if (t <= s) return;
      const kind = classify(img, e);
      bytes[kind] += t - s;
      if (kind === 'backing') backingByDepth[e.depth] = (backingByDepth[e.depth] ?? 0) + (t - s);
      if (e.depth === 0 && (kind === 'data' || kind === 'compressed' || kind === 'encrypted')) {
        if (s !== runEnd) allocatedRuns++;
        runEnd = t;
        allocatedBytes += t - s;
      }
      const r = rank(kind, e.depth);
      const last = Math.min(count - 1, Math.floor((t - 1 - start) / bucketBytes));
      for (let b = Math.floor((s - start) / bucketBytes); b <= last; b++) {
        const c = cells[b];
        const bs = Math.max(s, start + b * bucketBytes), be = Math.min(t, start + (b + 1) * bucketBytes);
        if (kind !== 'unallocated') c.used += be - bs;
        if (r < ranks[b]) { ranks[b] = r; c.kind = kind; c.depth = e.depth; c.at = bs; }
      }
    }, { start, end });
  }
  for (let d = 0; d < backingByDepth.length; d++) backingByDepth[d] ??= 0;
  return { start, length, bucketBytes, buckets: cells, bytes, backingByDepth, allocatedRuns, allocatedBytes, chainDepth: img.chain().length - 1 };
}
