/**
 * What `qemu-img commit` does to the overlay after committing it (bdrv_make_empty): the active L1
 * stops reaching anything, so every guest read goes to the backing file, which now holds the same
 * data. QEMU 7.2's qcow2_make_empty either rebuilds a fresh image in place (version 3 without
 * snapshots or bitmaps, under the dirty bit) or discards every cluster; we keep to an order that
 * needs no dirty bit:
 *  1. the active L1 table zeroed (one write), synced — from here the overlay reads through
 *  2. refcounts -1 for every L2 table and data cluster it reached, flushed (a crash before: leaks)
 *  3. the file truncated after its last used cluster
 * Snapshots keep what they reach (the counts only lose the active L1's references).
 */
import { Qcow2Error } from '../../errors';
import { Qcow2Image } from '../../image/image';
import { readMany } from '../../io/reader';
import { compressedLength, compressedOffset, entryOffset, isCompressed, l1EntryOffset, wordHi, wordLo } from '../../qcow2/cluster';
import * as L from '../../qcow2/layout';
import { RefcountWriter, writeAt } from '../refcountWrite';
import { assertNotLocked, assertWritable, beforeWrite } from '../writable';

export async function makeEmpty(path: string): Promise<void> {
  assertNotLocked(path);
  const img = await Qcow2Image.open(path, { writable: true, openBacking: false, openDataFile: false });
  try {
    assertWritable(img);
    const h = img.header, cs = img.clusterSize, g = img.g;
    const externalData = (h.incompatibleFeatures & L.INCOMPAT_DATA_FILE) !== 0n;
    const rc = await RefcountWriter.load({ file: img.file, clusterBits: h.clusterBits, refcountOrder: h.refcountOrder, tableOffset: h.refcountTableOffset, tableClusters: h.refcountTableClusters, table: img.refcountTable });
    const l2s: number[] = [];
    for (let i = 0; i < h.l1Size; i++) {
      const o = l1EntryOffset(img.l1, i);
      if (o === 0) continue;
      img.checkL2Offset(o, i);
      l2s.push(o);
    }
    if (l2s.length === 0) return;
    // the decrements are computed (and refused on underflow) before anything is written
    const WINDOW = 256;
    for (let w = 0; w < l2s.length; w += WINDOW) {
      const tables = await readMany(img.file, l2s.slice(w, w + WINDOW), cs, o => `L2 table at 0x${o.toString(16)}`);
      for (const [off, t] of tables) {
        for (let p = 0; p < cs; p += g.l2EntrySize) {
          const hi = wordHi(t, p), lo = wordLo(t, p);
          if (isCompressed(hi)) {
            rc.addRange(compressedOffset(g, hi, lo), compressedLength(g, hi, lo), -1, 'compressed data');
            continue;
          }
          const host = entryOffset(hi, lo);
          if (host === 0 || externalData) continue;
          if (host % cs !== 0) throw new Qcow2Error(path, 'L2 entry', off + p, `data cluster offset 0x${host.toString(16)} is not cluster-aligned`);
          rc.add(host / cs, -1, 'data cluster');
        }
      }
    }
    for (const o of new Set(l2s)) rc.add(o / cs, -1, 'L2 table');
    // 1. the switch: nothing reached any more
    await writeAt(img.file, h.l1TableOffset, Buffer.alloc(h.l1Size * 8), 'L1 table');
    await img.file.sync();
    // 2. the references gone
    await rc.flush();
    // 3. the tail given back
    const end = rc.endOffset;
    if (end < img.file.size) {
      beforeWrite();
      await img.file.truncate(end);
      await img.file.sync();
    }
  } finally {
    await img.close();
  }
}
