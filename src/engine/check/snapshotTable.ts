/**
 * The snapshot table as `qemu-img check` judges it (QEMU 7.2, block/qcow2-snapshot.c
 * qcow2_check_read_snapshot_table and qcow2_check_fix_snapshot_table), beside the refcount check:
 *
 *  - a table QEMU's check cannot read (too much extra data in an entry, a table beyond 64 MiB,
 *    more than 65536 snapshots, an invalid offset) fails the check (one check error, exit 1)
 *    without `-r all`; with it, the overhanging entries are dropped and extra data cut to 1024 bytes;
 *  - a v3 entry with less than the 16 bytes of extra data v3 requires is a corruption;
 *  - `-r all` (repair.ts) writes the reduced count into the header first, then — once the
 *    refcounts are right — rewrites the whole table as QEMU's qcow2_write_snapshots does.
 *
 * Rewrite order (a crash between any two writes leaves at most leaked clusters):
 *  1. clusters for the new table allocated (never the old table's, nor clusters past the end of
 *     the file that the refcount blocks count as used): their refcounts written first, fsync;
 *  2. the new table written into them, fsync;
 *  3. the header's nb_snapshots + snapshots_offset switched in one 12-byte write, fsync;
 *  4. the old table's clusters freed (refcounts written), fsync.
 */
import { hex, Qcow2Error } from '../errors';
import type { Qcow2Image } from '../image/image';
import { formatPath, step } from '../path';
import { headerPath } from '../qcow2/header';
import * as L from '../qcow2/layout';
import { refcountAt } from '../qcow2/refcount';
import { encodeSnapshot, NO_ICOUNT, type Snapshot } from '../qcow2/snapshot';
import { RefcountWriter, writeAt } from '../ops/refcountWrite';
import { assertNotLocked } from '../ops/writable';
import { EXPLAIN, type Finding } from './findings';
import { readTablePadded } from './paddedReads';

const X = L.SNAPSHOT_EXTRA;
/** QEMU 7.2's QCowSnapshotExtraData: vm_state_size_large, disk_size, icount. */
const EXTRA_SIZE = X.icount + 8;

/** v3 entries whose extra data lacks vm_state_size_large and disk_size (QEMU: "snapshot table entry N is incomplete"). */
export function incompleteSnapshots(img: Qcow2Image): Snapshot[] {
  return img.header.version >= 3 ? img.snapshots.filter(sn => sn.extraDataSize < L.SNAPSHOT_EXTRA_DATA_V3) : [];
}

/** The snapshot-table findings and how many corruptions they are (QEMU's counts). */
export function snapshotTableFindings(img: Qcow2Image): { findings: Finding[]; corruptions: number } {
  const t = img.snapshotTable;
  const findings: Finding[] = [];
  let corruptions = 0;
  if (t.dropped) {
    corruptions += t.dropped;
    findings.push({
      kind: 'snapshot-table-overlong', severity: 'error', hostOffset: L.HEADER_FIELD.nb_snapshots.offset, structure: headerPath('nb_snapshots'),
      message: `${t.dropped} snapshot${t.dropped === 1 ? '' : 's'} at the end of the table lie beyond QEMU's limits (${L.QCOW_MAX_SNAPSHOTS} snapshots, ${L.QCOW_MAX_SNAPSHOTS_SIZE} bytes of table).`,
      explanation: EXPLAIN['snapshot-table-overlong'], count: t.dropped,
    });
  }
  for (const { index: i, hostOffset, extraDataSize } of t.extraTruncated) {
    corruptions++;
    findings.push({
      kind: 'snapshot-extra-data-too-large', severity: 'error', hostOffset: hostOffset + L.SNAPSHOT_ENTRY.extra_data_size, structure: formatPath([step('snapshot', i, { field: 'extra_data_size' })]),
      message: `Snapshot table entry ${i} has ${extraDataSize} bytes of extra data, more than QEMU's limit of ${L.SNAPSHOT_MAX_EXTRA_DATA}.`,
      explanation: EXPLAIN['snapshot-extra-data-too-large'],
    });
  }
  for (const sn of incompleteSnapshots(img)) {
    corruptions++;
    findings.push({
      kind: 'snapshot-incomplete', severity: 'error', hostOffset: sn.hostOffset + L.SNAPSHOT_ENTRY.extra_data_size, structure: formatPath([step('snapshot', sn.index, { field: 'extra_data_size' })]),
      message: `Snapshot table entry ${sn.index} has ${sn.extraDataSize} bytes of extra data; version 3 images need at least ${L.SNAPSHOT_EXTRA_DATA_V3} (the VM state size and disk size).`,
      explanation: EXPLAIN['snapshot-incomplete'],
    });
  }
  return { findings, corruptions };
}

/** The finding for a snapshot table QEMU's check cannot read (the check stops there, as QEMU's does). */
export function unreadableSnapshotTableFinding(img: Qcow2Image): Finding | undefined {
  const e = img.snapshotTable.error;
  if (!e) return undefined;
  return {
    kind: 'snapshot-table-unreadable', severity: 'error', hostOffset: e.hostOffset ?? img.header.snapshotsOffset, structure: e.structure || 'snapshot table',
    message: `The snapshot table cannot be read: ${e.detail}.`, explanation: EXPLAIN['snapshot-table-unreadable'],
  };
}

/** -r all, first step: the header's nb_snapshots without the dropped entries (one 4-byte write), fsync. */
export async function writeReducedSnapshotCount(img: Qcow2Image): Promise<number> {
  const n = img.snapshotTable.dropped;
  if (!n) return 0;
  assertNotLocked(img.path);
  await writeAt(img.file, L.HEADER_FIELD.nb_snapshots.offset, L.encodeHeaderField('nb_snapshots', img.snapshots.length), headerPath('nb_snapshots'));
  await img.file.sync();
  return n;
}

/** An entry as qcow2_write_snapshots writes it: at least QEMU's 24 bytes of extra data, the known fields filled in. */
function rewritten(img: Qcow2Image, sn: Snapshot): Snapshot {
  const extra = Buffer.alloc(Math.max(EXTRA_SIZE, sn.extraData.length));
  sn.extraData.copy(extra);
  const have = sn.extraData.length;
  const vmState = sn.vmStateSizeLarge ?? BigInt(sn.vmStateSize);
  return {
    ...sn, extraData: extra, extraDataSize: extra.length,
    vmStateSize: vmState <= 0xffffffffn ? Number(vmState) : 0,
    vmStateSizeLarge: vmState,
    diskSize: have >= X.disk_size + 8 ? sn.diskSize : BigInt(Math.floor(img.virtualSize / 512) * 512),
    icount: have >= X.icount + 8 ? sn.icount : NO_ICOUNT,
  };
}

/**
 * How many snapshot corruptions -r all fixes by rewriting the table (QEMU's snapshot corruptions
 * left after the dropped entries): extra data cut (counted on the image as first read, before the
 * dropped entries left the header's count) and incomplete v3 entries.
 */
export function snapshotTableRewrites(img: Qcow2Image, cutAtFirstRead: number): number {
  return cutAtFirstRead + incompleteSnapshots(img).length;
}

/** At most this many clusters past the end of the file are kept from allocation (a damaged refcount block could claim millions). */
const MAX_HELD = 1 << 20;

/** Clusters past the end of the file with a non-zero stored refcount, from the refcount blocks inside the file. */
async function usedPastEof(img: Qcow2Image): Promise<[cluster: number, refcount: number][]> {
  const rg = img.rg, cs = img.clusterSize;
  const fileClusters = Math.ceil(img.file.size / cs);
  const out: [number, number][] = [];
  for (let i = 0; i < img.refcountTable.length; i++) {
    const off = img.refcountTable[i];
    const base = i * rg.blockEntries;
    if (off === 0 || off % cs !== 0 || off >= img.file.size || base + rg.blockEntries <= fileClusters) continue; // a block the end of the file cuts is read padded
    const blk = await readTablePadded(img.file, off, cs, `refcount block at ${hex(off)}`);
    for (let j = Math.max(0, fileClusters - base); j < rg.blockEntries; j++) {
      const v = refcountAt(blk, j, rg.order);
      if (v === 0) continue;
      if (out.length >= MAX_HELD) throw new Qcow2Error(img.path, formatPath([step('refcount table', i), step('refcount block')]), off, `more than ${MAX_HELD} clusters past the end of the file are counted as used; the snapshot table cannot be placed safely`, 'unsupported');
      out.push([base + j, v]);
    }
  }
  return out;
}

/** -r all, last step: the whole table rewritten in new clusters, the header switched, the old clusters freed. */
export async function rewriteSnapshotTable(img: Qcow2Image, actions: string[]): Promise<void> {
  const h = img.header, cs = img.clusterSize;
  const entries = img.snapshots.map(sn => encodeSnapshot(rewritten(img, sn)));
  const size = entries.reduce((a, b) => a + b.length, 0);
  const rc = await RefcountWriter.load({ file: img.file, clusterBits: h.clusterBits, refcountOrder: h.refcountOrder, tableOffset: h.refcountTableOffset, tableClusters: h.refcountTableClusters, table: img.refcountTable });
  assertNotLocked(img.path);
  // clusters past the end of the file that the refcount blocks count as used are never allocated
  // (a truncated file's tables still point there; QEMU's allocator skips them by their refcounts
  // too): the writer tracks refcounts up to the end of the file, so these get their stored values
  let tracked = Math.ceil(img.file.size / cs);
  for (const [k, v] of await usedPastEof(img)) {
    if (rc.get(k) === 0) rc.add(k, v, 'cluster past the end of the file');
    tracked = Math.max(tracked, k + 1);
  }
  // nor the old table's, even where the check counted them free (a table reaching past the end of
  // the file is not counted, as in QEMU): held while allocating. Its clusters beyond every tracked
  // one have no refcount to hold or free (a damaged offset may point far past the end)
  const first = Math.floor(h.snapshotsOffset / cs);
  const last = Math.min(Math.ceil((h.snapshotsOffset + img.snapshotTable.size) / cs), tracked);
  for (let k = first; k < last; k++) if (rc.get(k) === 0) rc.add(k, 1, 'old snapshot table');
  const offset = rc.allocate(Math.ceil(size / cs), 'snapshot table');
  await rc.flush();
  await writeAt(img.file, offset, Buffer.concat(entries), 'new snapshot table');
  await img.file.sync();
  const sw = L.encodeHeaderRun([['nb_snapshots', entries.length], ['snapshots_offset', offset]]);
  await writeAt(img.file, sw.offset, sw.bytes, headerPath('nb_snapshots'));
  await img.file.sync();
  // then the old table's clusters lose their reference (the held ones are back to free)
  for (let k = first; k < last; k++) if (rc.get(k) > 0) rc.add(k, -1, 'old snapshot table');
  await rc.flush();
  actions.push(`rewrote the snapshot table (${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}) at ${hex(offset)}`);
}
