/**
 * The output's tables, built from the source's and the placement: L2 tables (entries re-pointed at
 * the copies), L1 tables, the snapshot table, the bitmap tables and directory, and the refcount
 * table. Refcount blocks: refcounts.ts.
 */
import type { Qcow2Image } from '../../image/image';
import type { BitmapTableEntry } from '../../qcow2/bitmap';
import { compressedEntryHi, decodeCompressed, entryOffset, type L2Geometry, offsetHi, putEntry, putOffset, wordHi, wordLo } from '../../qcow2/cluster';
import * as L from '../../qcow2/layout';
import { encodeSnapshot } from '../../qcow2/snapshot';
import { ZERO, type Placement } from './copy';
import type { L1Source, L2Window, SourceTables } from './plan';

/**
 * Source L2 table `t` with every entry pointed at its copy (compressed ones at `streamBase` plus
 * their place in the stream), or null when no entry is left. Clusters that read as zero become a
 * zero flag in an overlay and unallocated otherwise.
 */
export function buildL2(t: Buffer, g: L2Geometry, hasBacking: boolean, placed: Placement, streamBase: number): Buffer | null {
  const n = Buffer.alloc(g.clusterSize);
  const zeroLo = hasBacking ? L.OFLAG_ZERO_LO : 0;
  let any = false;
  for (let j = 0; j < g.l2Size; j++) {
    const p = j * g.l2EntrySize;
    const hi = wordHi(t, p), lo = wordLo(t, p);
    let nhi = 0, nlo = 0;
    if (hi & L.OFLAG_COMPRESSED_HI) {
      const d = placed.compressed.get(decodeCompressed(g, hi, lo).hostOffset)!;
      if (d.kind === 'compressed') { nhi = compressedEntryHi(g, streamBase + d.host, d.len); nlo = (streamBase + d.host) >>> 0; }
      else if (d.kind === 'data') { nhi = offsetHi(d.host); nlo = d.host >>> 0; }
      else nlo = zeroLo;
    } else {
      const host = entryOffset(hi, lo);
      const zeroFlag = !g.extendedL2 && (lo & L.OFLAG_ZERO_LO) !== 0;
      if (zeroFlag) nlo = zeroLo; // zero, with or without a reserved cluster: the cluster is dropped
      else if (host) {
        const viaComp = placed.data.stream(host);
        const d = placed.data.get(host)!;
        if (viaComp) { nhi = compressedEntryHi(g, streamBase + viaComp.host, viaComp.len); nlo = (streamBase + viaComp.host) >>> 0; }
        else if (d === ZERO) nlo = zeroLo;
        else { nhi = offsetHi(d); nlo = d >>> 0; }
      }
    }
    if (g.extendedL2 && !(nhi & L.OFLAG_COMPRESSED_HI)) {
      const bhi = wordHi(t, p + 8), blo = wordLo(t, p + 8);
      putEntry(n, p + 8, bhi, blo);
      if (bhi || blo) any = true;
    }
    if (nhi || nlo) any = true;
    putEntry(n, p, nhi, nlo);
  }
  return any ? n : null;
}

/**
 * Each source L2 table of `offsets` (ascending), in order: from `tables.l2` where it is held,
 * otherwise re-read through `win`. `t` is valid only during the call.
 */
export async function forEachL2(win: L2Window, tables: SourceTables, offsets: readonly number[], fn: (so: number, t: Buffer) => void | Promise<void>): Promise<void> {
  const unheld: number[] = [];
  const flush = async () => {
    if (unheld.length) await win.forEach(unheld, o => `L2 table at 0x${o.toString(16)}`, fn);
    unheld.length = 0;
  };
  for (const so of offsets) {
    const t = tables.l2.get(so);
    if (!t) { unheld.push(so); continue; }
    await flush();
    await fn(so, t);
    await win.pause?.();
  }
  await flush();
}

/**
 * The L2 tables that keep an entry, each with the number of L1 references to it: every reference
 * counts the table and its entries once.
 */
export async function countL2Refs(win: L2Window, tables: SourceTables, g: L2Geometry, hasBacking: boolean, placed: Placement): Promise<Map<number, number>> {
  const refs = new Map<number, number>();
  await forEachL2(win, tables, tables.l2Offsets, (so, t) => { if (buildL2(t, g, hasBacking, placed, 0)) refs.set(so, 0); });
  for (const { l1 } of tables.l1Tables) {
    for (let i = 0; i < l1.length / 8; i++) {
      const so = entryOffset(wordHi(l1, i * 8), wordLo(l1, i * 8));
      if (so && refs.has(so)) refs.set(so, refs.get(so)! + 1);
    }
  }
  return refs;
}

/**
 * Source L1 table `l1` pointed at the new L2 tables (COPIED where one L1 entry alone refers to the
 * table); `padded` rounds it up to whole clusters.
 */
export function encodeL1(l1: Buffer, padded: boolean, cs: number, l2Dest: Map<number, number>, l2Refs: Map<number, number>): Buffer {
  const n = Buffer.alloc(padded ? Math.ceil(l1.length / cs) * cs : l1.length);
  for (let e = 0; e < l1.length / 8; e++) {
    const so = entryOffset(wordHi(l1, e * 8), wordLo(l1, e * 8));
    const d = so ? l2Dest.get(so) : undefined;
    if (d !== undefined) putOffset(n, e * 8, d, l2Refs.get(so) === 1 ? L.OFLAG_COPIED_HI : 0);
  }
  return n;
}

/** The snapshot table with each entry pointed at its new L1 table, or null without snapshots. */
export function encodeSnapshotTable(img: Qcow2Image, l1Tables: L1Source[], l1Offsets: number[]): Buffer | null {
  if (!img.snapshots.length) return null;
  return Buffer.concat(img.snapshots.map((sn, i) => encodeSnapshot({ ...sn, l1TableOffset: l1Offsets[i + 1], l1Size: l1Tables[i + 1].l1.length / 8 })));
}

/** One bitmap's new table (entries for the kept data clusters filled in by `fillBitmapTable`). */
export interface BitmapData {
  tbl: Buffer;
  /** Its data clusters that are not all zero (all-zero ones are dropped: the entry reads as zero). */
  clusters: { index: number; data: Buffer }[];
}

/** Reads each bitmap's data clusters; all-ones entries are carried over as they are. */
export async function readBitmapData(img: Qcow2Image, tables: BitmapTableEntry[][], cs: number, progress: (bytes: number) => void): Promise<BitmapData[]> {
  const zero = Buffer.alloc(cs);
  const out: BitmapData[] = [];
  for (let b = 0; b < img.bitmaps.length; b++) {
    const bm = img.bitmaps[b];
    const tbl = Buffer.alloc(bm.bitmapTableSize * 8);
    const clusters: { index: number; data: Buffer }[] = [];
    for (const e of tables[b]) {
      if (e.hostOffset) {
        const data = await img.file.read(e.hostOffset, cs, `bitmap "${bm.name}" data`);
        progress(cs);
        if (!data.equals(zero)) clusters.push({ index: e.index, data });
      } else if (e.allOnes) putEntry(tbl, e.index * 8, 0, Number(L.BME_TABLE_ENTRY_FLAG_ALL_ONES));
    }
    out.push({ tbl, clusters });
  }
  return out;
}

/** Points a bitmap table's entries at its data clusters' new places. */
export function fillBitmapTable(bd: BitmapData, dataAt: number[]): void {
  bd.clusters.forEach((c, k) => putOffset(bd.tbl, c.index * 8, dataAt[k]));
}

/** bitmap_table_offset within a bitmap directory entry. */
const BME_TABLE_OFFSET = 0;

/**
 * The bitmap directory with each entry pointed at its bitmap's new table. `rawDir` is the source
 * directory; each entry keeps its bytes (name, extra data) but the table offset.
 */
export function encodeBitmapDirectory(img: Qcow2Image, rawDir: Buffer, tableAt: number[]): Buffer {
  const dirOffset = img.header.bitmaps!.bitmapDirectoryOffset;
  return Buffer.concat(img.bitmaps.map((bm, b) => {
    const rel = bm.hostOffset - dirOffset;
    const ent = Buffer.from(rawDir.subarray(rel, rel + bm.entrySize));
    putOffset(ent, BME_TABLE_OFFSET, tableAt[b]);
    return ent;
  }));
}

/** The refcount table: `nBlocks` blocks from `blocksAt` on, in `nTable` clusters. */
export function encodeRefcountTable(nTable: number, nBlocks: number, blocksAt: number, cs: number): Buffer {
  const table = Buffer.alloc(nTable * cs);
  for (let i = 0; i < nBlocks; i++) putOffset(table, i * 8, blocksAt + i * cs);
  return table;
}
