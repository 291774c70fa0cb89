/**
 * Where the metadata goes in the new file, after the data clusters: L2 tables, L1 tables, the
 * snapshot table, each bitmap's data and table, the bitmap directory, the refcount blocks and the
 * refcount table, then the compressed stream. With no compressed stream the active L1 table goes
 * last instead, so the file ends where it ends (as qemu-img's output does) rather than padding.
 */
import type { Qcow2Image } from '../../image/image';
import { refcountGeometry, type RefcountGeometry } from '../../qcow2/refcount';
import type { L1Source } from './plan';
import { type BitmapData, encodeBitmapDirectory, encodeSnapshotTable } from './tables';

export interface LayoutInput {
  img: Qcow2Image;
  cs: number;
  /** The end of the data clusters (cluster-aligned). */
  start: number;
  l1Tables: L1Source[];
  /** Source L2 table offset → L1 references to it (the tables to write). */
  l2Refs: Map<number, number>;
  bitmaps: BitmapData[];
  /** The source's bitmap directory, when there are bitmaps. */
  rawBitmapDir: Buffer | null;
  streamLen: number;
}

export interface Layout {
  /** Source L2 table offsets in the order their copies are written. */
  l2Order: number[];
  /** Source L2 table offset → the new table's offset. */
  l2Dest: Map<number, number>;
  /** Each L1 table's new offset (0: empty), the active one first. */
  l1Offsets: number[];
  /** The active L1 table is written last, after the refcount table. */
  l1Last: boolean;
  snapshotTable: Buffer | null;
  snapshotsAt: number;
  /** Per bitmap: its table's offset (0: empty) and its kept data clusters' offsets. */
  bitmaps: { tableAt: number; dataAt: number[] }[];
  bitmapDir: { offset: number; size: number; data: Buffer } | null;
  rg: RefcountGeometry;
  blocksAt: number;
  nBlocks: number;
  tableAt: number;
  nTable: number;
  /** Where the compressed stream begins: the end of the metadata. */
  streamBase: number;
}

export function layoutMetadata(x: LayoutInput): Layout {
  const { cs, l1Tables } = x;
  const clustersOf = (bytes: number) => Math.ceil(bytes / cs);
  let pos = x.start;
  const l2Order = [...x.l2Refs.keys()].sort((a, b) => a - b);
  const l2Dest = new Map<number, number>();
  for (const so of l2Order) { l2Dest.set(so, pos); pos += cs; }
  const l1Last = x.streamLen === 0 && l1Tables[0].l1.length > 0;
  const l1Offsets: number[] = [];
  for (const [ti, { l1 }] of l1Tables.entries()) {
    if (l1.length === 0 || (ti === 0 && l1Last)) { l1Offsets.push(0); continue; }
    l1Offsets.push(pos);
    pos += clustersOf(l1.length) * cs;
  }
  const snapshotTable = encodeSnapshotTable(x.img, l1Tables, l1Offsets);
  const snapshotsAt = snapshotTable ? pos : 0;
  if (snapshotTable) pos += clustersOf(snapshotTable.length) * cs;
  const bitmaps: { tableAt: number; dataAt: number[] }[] = [];
  for (const bd of x.bitmaps) {
    const dataAt = bd.clusters.map(() => { const a = pos; pos += cs; return a; });
    const tableAt = bd.tbl.length ? pos : 0;
    pos += clustersOf(bd.tbl.length) * cs;
    bitmaps.push({ tableAt, dataAt });
  }
  let bitmapDir: Layout['bitmapDir'] = null;
  if (x.rawBitmapDir) {
    const data = encodeBitmapDirectory(x.img, x.rawBitmapDir, bitmaps.map(b => b.tableAt));
    bitmapDir = { offset: pos, size: data.length, data };
    pos += clustersOf(data.length) * cs;
  }
  // the refcount blocks cover themselves and the table: grow both until they cover everything
  const rg = refcountGeometry(Math.log2(cs), x.img.header.refcountOrder);
  const metaStart = pos / cs;
  const streamClusters = clustersOf(x.streamLen);
  let nBlocks = 0, nTable = 0;
  for (;;) {
    const total = metaStart + nBlocks + nTable + streamClusters + (l1Last ? clustersOf(l1Tables[0].l1.length) : 0);
    const b = Math.ceil(total / rg.blockEntries);
    const t = Math.max(1, Math.ceil((b * 8) / cs));
    if (b === nBlocks && t === nTable) break;
    nBlocks = b; nTable = t;
  }
  const blocksAt = pos;
  const tableAt = blocksAt + nBlocks * cs;
  if (l1Last) l1Offsets[0] = tableAt + nTable * cs;
  const streamBase = l1Last ? l1Offsets[0] + l1Tables[0].l1.length : tableAt + nTable * cs;
  return { l2Order, l2Dest, l1Offsets, l1Last, snapshotTable, snapshotsAt, bitmaps, bitmapDir, rg, blocksAt, nBlocks, tableAt, nTable, streamBase };
}
