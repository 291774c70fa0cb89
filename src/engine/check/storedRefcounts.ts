/**
 * The refcounts the image stores, as the check reads them: every refcount block at once into one
 * array, and single lookups past it. Blocks past the end of the file read as zeros, as QEMU reads
 * them.
 */
import { hex } from '../errors';
import type { Qcow2Image } from '../image/image';
import { decodeRefcountBlock, type ExactRefcounts, refcountAt } from '../qcow2/refcount';
import { readTablePadded, readTablesPadded } from './paddedReads';

/**
 * Stored refcounts of clusters [0, nb). Refcount blocks past the end of the file read as zeros (as
 * QEMU reads them); misaligned block offsets, and blocks past QEMU's largest readable offset,
 * make their clusters unreadable (NaN), which QEMU
 * counts as one check error per cluster. 64-bit refcounts of 2^53 or more go to `exact` as well.
 */
/**
 * QEMU's block layer refuses reads reaching past BDRV_MAX_LENGTH (INT64_MAX aligned down to 1 GiB)
 * with EIO: a refcount block there is unreadable ("Can't get refcount"), not zeros.
 */
const BDRV_MAX_LENGTH = 2 ** 63 - 2 ** 30;
const unreadable = (off: number, cs: number): boolean => off % cs !== 0 || off + cs > BDRV_MAX_LENGTH;

export async function readStoredRefcounts(img: Qcow2Image, nb: number, exact?: ExactRefcounts): Promise<Float64Array> {
  const rg = img.rg;
  const cs = img.clusterSize;
  const table = img.refcountTable;
  const out = new Float64Array(nb);
  const nBlocks = Math.min(table.length, Math.ceil(nb / rg.blockEntries));
  const want: number[] = [];
  for (let i = 0; i < nBlocks; i++) {
    const off = table[i];
    if (off === 0) continue;
    if (unreadable(off, cs)) {
      out.fill(NaN, i * rg.blockEntries, Math.min(nb, (i + 1) * rg.blockEntries));
      continue;
    }
    want.push(off);
  }
  const blocks = await readTablesPadded(img.file, want, cs, o => `refcount block at ${hex(o)}`);
  for (let i = 0; i < nBlocks; i++) {
    const off = table[i];
    if (off === 0 || unreadable(off, cs)) continue;
    const blk = blocks.get(off)!;
    const base = i * rg.blockEntries;
    decodeRefcountBlock(blk, rg.order, out, base, Math.min(rg.blockEntries, nb - base), exact);
  }
  return out;
}

/** One stored refcount, also for clusters past the array (reads the block); undefined when unreadable. */
export async function storedRefcountOf(img: Qcow2Image, stored: Float64Array, k: number, cache: Map<number, Buffer>): Promise<number | undefined> {
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

