/**
 * `qemu-img amend -o refcount_bits=N`: the refcount structures rewritten for another entry width
 * (QEMU 7.2's qcow2_change_refcount_order, in its effect: every cluster keeps its count, the old
 * table and blocks are free afterwards). The old structures are read whole; the new ones are laid
 * out after the end of the file — refcount blocks, then the table — with counts for themselves
 * included (sized until the layout covers itself) and the old table and blocks counted 0.
 *
 * Order: 1. the new refcount blocks and table written after the end of the file, then synced; the
 * header still points at the old ones, which say those clusters are unused: a crash leaves the old
 * image, at most longer  2. (amend.ts) the header with the new refcount_order, table offset and
 * size, one write, synced. From then on the old structures are unused clusters the new refcounts
 * count 0. Every write passes the crash hook (FileDisk).
 */
import { Qcow2Error } from '../errors';
import type { Qcow2Image } from '../image/image';
import * as L from '../qcow2/layout';
import { type ExactRefcounts, maxRefcount, readAllRefcounts, REFCOUNT_MAX_64, refcountGeometry, setRefcountAt } from '../qcow2/refcount';
import { FileDisk } from './create/disk';
import { OptionError } from './options';

/** refcount_bits as qemu-img amend reads it: a power of two from 1 to 64. */
export function parseRefcountOrder(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 64 || (n & (n - 1)) !== 0) throw new OptionError('Refcount width must be a power of two and may not exceed 64 bits');
  return Math.log2(n);
}

export interface NewRefcounts { tableOffset: number; tableClusters: number }

/** Writes refcount structures of width 2^order for `img` (open read-only) after the end of its file, synced; returns where the table is. */
export async function writeRefcountsOfOrder(path: string, img: Qcow2Image, order: number): Promise<NewRefcounts> {
  const h = img.header, cs = h.clusterSize;
  if (h.incompatibleFeatures & L.INCOMPAT_DIRTY) {
    throw new Qcow2Error(path, 'header', undefined, 'the image is marked dirty (lazy refcounts after a crash): repair it first (qemu-img check -r all), then change refcount_bits', 'unsupported');
  }
  const start = Math.ceil(img.file.size / cs);
  const exact: ExactRefcounts = new Map();
  const old = await readAllRefcounts(img.file, img.refcountTable, refcountGeometry(h.clusterBits, h.refcountOrder), start, undefined, exact);
  // the layout covers the file, the new blocks and the new table: grow until it covers itself
  const perBlock = refcountGeometry(h.clusterBits, order).blockEntries;
  let blocks = 0, tableClusters = 0;
  for (;;) {
    const total = start + blocks + tableClusters;
    const b = Math.ceil(total / perBlock), t = Math.max(1, Math.ceil((b * 8) / cs));
    if (b === blocks && t === tableClusters) break;
    blocks = b; tableClusters = t;
  }
  const total = start + blocks + tableClusters;
  const counts = new Float64Array(total);
  counts.set(old.subarray(0, start));
  // the old table and blocks are unused once the header points at the new ones
  const oldTable = h.refcountTableOffset / cs;
  for (let c = oldTable; c < oldTable + h.refcountTableClusters && c < start; c++) { counts[c] = 0; exact.delete(c); }
  for (const off of img.refcountTable) {
    if (off && off % cs === 0 && off / cs < start) { counts[off / cs] = 0; exact.delete(off / cs); }
  }
  for (let c = start; c < total; c++) counts[c] = 1;
  const max = maxRefcount(order);
  for (let c = 0; c < start; c++) {
    const big = exact.get(c);
    if ((big !== undefined && order < 6) || counts[c] > max) {
      throw new Qcow2Error(path, 'refcounts', c * cs, `Cannot decrease refcount entry width to ${2 ** order} bits: Cluster at offset 0x${(c * cs).toString(16)} has a refcount of ${big ?? counts[c]}`, 'unsupported');
    }
  }
  const table = Buffer.alloc(tableClusters * cs);
  const disk = FileDisk.open(path, 'r+');
  try {
    for (let b = 0; b < blocks; b++) {
      const blk = Buffer.alloc(cs);
      const base = b * perBlock;
      for (let k = 0; k < perBlock && base + k < total; k++) {
        const big = exact.get(base + k);
        const v = big !== undefined && big <= REFCOUNT_MAX_64 ? big : counts[base + k];
        if (v) setRefcountAt(blk, k, order, v);
      }
      const at = (start + b) * cs;
      await disk.write(at, blk, `refcount block at 0x${at.toString(16)}`);
      table.writeBigUInt64BE(BigInt(at), b * 8);
    }
    const tableOffset = (start + blocks) * cs;
    await disk.write(tableOffset, table, 'refcount table');
    await disk.sync();
    return { tableOffset, tableClusters };
  } finally {
    disk.close();
  }
}
