/**
 * The new file's refcounts, counted from the laid-out tables: each cluster once per reference to
 * it (an L2 table shared by several L1 tables counts its entries once per reference). The final L2
 * tables' COPIED flags follow from the counts, so their builder (`finalL2`) comes from here too;
 * the tables are counted while streamed past once and built again as they are written, never all
 * held.
 */
import { Qcow2Error } from '../../errors';
import { decodeCompressed, entryOffset, type L2Geometry, wordHi, wordLo } from '../../qcow2/cluster';
import * as L from '../../qcow2/layout';
import { maxRefcount, setRefcountAt } from '../../qcow2/refcount';
import type { Placement } from './copy';
import type { Layout } from './layout';
import type { L2Window, SourceTables } from './plan';
import { type BitmapData, buildL2, forEachL2 } from './tables';

export interface RefcountInput {
  /** For errors. */
  file: string;
  g: L2Geometry;
  hasBacking: boolean;
  tables: SourceTables;
  l2Refs: Map<number, number>;
  placed: Placement;
  layout: Layout;
  bitmaps: BitmapData[];
  /** An encrypted image's LUKS area in the output. */
  crypto?: { offset: number; length: number };
}

export interface Refcounted {
  /** The final new table for source L2 table bytes `t`: entries re-pointed, COPIED where the refcount is 1. */
  finalL2(t: Buffer): Buffer;
  /** The refcount blocks, back to back. */
  blocks: Buffer;
}

export async function buildRefcounts(x: RefcountInput, win: L2Window): Promise<Refcounted> {
  const { g, layout: lay } = x;
  const cs = g.clusterSize;
  const counts = new Float64Array(Math.ceil(lay.streamBase / cs) + Math.ceil(x.placed.streamLen / cs));
  const inc = (host: number, len = cs, times = 1) => {
    for (let c = Math.floor(host / cs); c <= Math.floor((host + len - 1) / cs); c++) counts[c] += times;
  };
  inc(0); // header
  if (x.crypto) inc(x.crypto.offset, x.crypto.length);
  await forEachL2(win, x.tables, lay.l2Order, (so, src) => {
    const refs = x.l2Refs.get(so)!;
    const t = buildL2(src, g, x.hasBacking, x.placed, lay.streamBase)!;
    inc(lay.l2Dest.get(so)!, cs, refs);
    for (let j = 0; j < g.l2Size; j++) {
      const p = j * g.l2EntrySize;
      const hi = wordHi(t, p), lo = wordLo(t, p);
      if (hi & L.OFLAG_COMPRESSED_HI) {
        const c = decodeCompressed(g, hi, lo);
        inc(c.hostOffset, c.compressedSize, refs);
      } else {
        const host = entryOffset(hi, lo);
        if (host) inc(host, cs, refs);
      }
    }
  });
  // COPIED flags: refcount exactly 1
  const finalL2 = (src: Buffer): Buffer => {
    const t = buildL2(src, g, x.hasBacking, x.placed, lay.streamBase)!;
    for (let j = 0; j < g.l2Size; j++) {
      const p = j * g.l2EntrySize;
      const hi = wordHi(t, p), lo = wordLo(t, p);
      if (hi & L.OFLAG_COMPRESSED_HI) continue;
      const host = entryOffset(hi, lo);
      if (host && counts[host / cs] === 1) t.writeUInt32BE((hi | L.OFLAG_COPIED_HI) >>> 0, p);
    }
    return t;
  };
  x.tables.l1Tables.forEach(({ l1 }, i) => { if (l1.length) inc(lay.l1Offsets[i], l1.length); });
  if (lay.snapshotTable) inc(lay.snapshotsAt, lay.snapshotTable.length);
  x.bitmaps.forEach((bd, b) => {
    lay.bitmaps[b].dataAt.forEach(a => inc(a));
    if (bd.tbl.length) inc(lay.bitmaps[b].tableAt, bd.tbl.length);
  });
  if (lay.bitmapDir) inc(lay.bitmapDir.offset, lay.bitmapDir.size);
  inc(lay.blocksAt, (lay.nBlocks + lay.nTable) * cs);
  const rg = lay.rg;
  const maxRc = maxRefcount(rg.order);
  const blocks = Buffer.alloc(lay.nBlocks * cs);
  for (let c = 0; c < counts.length; c++) {
    const v = counts[c];
    if (!v) continue;
    if (v > maxRc) throw new Qcow2Error(x.file, 'refcount', c * cs, `cluster would need refcount ${v}, more than ${2 ** rg.order}-bit refcounts hold`, 'unsupported');
    const bi = Math.floor(c / rg.blockEntries);
    setRefcountAt(blocks.subarray(bi * cs, (bi + 1) * cs), c % rg.blockEntries, rg.order, v);
  }
  return { finalL2, blocks };
}
