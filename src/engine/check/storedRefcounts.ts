/**
 * The refcounts the image stores, as the check reads them: every refcount block, a bounded window
 * at a time, into one array as wide as the image's refcounts (2 bytes a cluster for the usual
 * 16-bit ones), and single lookups past it. Blocks past the end of the file read as zeros, as QEMU
 * reads them.
 */
import { hex } from '../errors';
import type { Qcow2Image } from '../image/image';
import { decodeRefcountBlock, type ExactRefcounts, type RefcountArray, refcountArray, refcountAt } from '../qcow2/refcount';
import { readTablePadded, TableWindow } from './paddedReads';

/** Bytes of refcount blocks held at once while decoding them. */
const WINDOW_BYTES = 1024 * 1024;

/**
 * Stored refcounts of clusters [0, nb). Refcount blocks past the end of the file read as zeros (as
 * QEMU reads them); misaligned block offsets, and blocks past QEMU's largest readable offset,
 * make their clusters unreadable (NaN, so an image with such a block gets a Float64Array), which QEMU
 * counts as one check error per cluster. 64-bit refcounts of 2^53 or more go to `exact` as well.
 */
/**
 * QEMU's block layer refuses reads reaching past BDRV_MAX_LENGTH (INT64_MAX aligned down to 1 GiB)
 * with EIO: a refcount block there is unreadable ("Can't get refcount"), not zeros.
 */
const BDRV_MAX_LENGTH = 2 ** 63 - 2 ** 30;
const unreadable = (off: number, cs: number): boolean => off % cs !== 0 || off + cs > BDRV_MAX_LENGTH;

export async function readStoredRefcounts(img: Qcow2Image, nb: number, exact?: ExactRefcounts): Promise<RefcountArray> {
  const rg = img.rg;
  const cs = img.clusterSize;
  const table = img.refcountTable;
  const nBlocks = Math.min(table.length, Math.ceil(nb / rg.blockEntries));
  const want: number[] = [];
  const lost: number[] = [];
  for (let i = 0; i < nBlocks; i++) {
    const off = table[i];
    if (off === 0) continue;
    (unreadable(off, cs) ? lost : want).push(i);
  }
  const out = lost.length ? new Float64Array(nb) : refcountArray(rg.order, nb);
  for (const i of lost) out.fill(NaN, i * rg.blockEntries, Math.min(nb, (i + 1) * rg.blockEntries));
  // the blocks are decoded window by window, never all held
  const win = new TableWindow(img.file, cs, WINDOW_BYTES);
  for (let w = 0; w < want.length; w += win.capacity) {
    const part = want.slice(w, w + win.capacity);
    const blocks = await win.read(part.map(i => table[i]));
    for (const i of part) {
      const base = i * rg.blockEntries;
      decodeRefcountBlock(blocks.get(table[i])!, rg.order, out, base, Math.min(rg.blockEntries, nb - base), exact);
    }
  }
  return out;
}

/** One stored refcount, also for clusters past the array (reads the block); undefined when unreadable. */
export async function storedRefcountOf(img: Qcow2Image, stored: RefcountArray, k: number, cache: Map<number, Buffer>): Promise<number | undefined> {
  if (k < stored.length) {
    const s = stored[k];
    return s === s ? s : undefined;
  }
  const rg = img.rg;
  const ti = Math.floor(k / rg.blockEntries);
  if (ti >= img.refcountTable.length) return 0;
  const off = img.refcountTable[ti];
  if (off === 0) return 0;
  if (unreadable(off, img.clusterSize)) return undefined;
  let blk = cache.get(off);
  if (!blk) {
    blk = await readTablePadded(img.file, off, img.clusterSize, `refcount block at ${hex(off)}`);
    cache.set(off, blk);
  }
  return refcountAt(blk, k % rg.blockEntries, rg.order);
}

