/**
 * The per-table scans of QEMU's calculate_refcounts besides the L1/L2 tables (usageL1.ts): the
 * snapshots' L1 tables (its loop over s->snapshots), the persistent bitmaps
 * (qcow2_check_bitmaps_refcounts) and the refcount blocks (check_refblocks).
 */
import { hex } from '../errors';
import { entryOffset, wordHi, wordLo } from '../qcow2/cluster';
import * as L from '../qcow2/layout';
import { formatPath, join, step } from '../path';
import { throwIfCancelled } from '../cancel';
import { readTablePadded } from './paddedReads';
import { ROLE_BITMAP, ROLE_BITMAP_DIRECTORY, ROLE_BITMAP_TABLE, ROLE_MASK, ROLE_NAMES, ROLE_REFCOUNT_BLOCK } from './roles';
import { NO_OWNER, type UsageCounter, type UsageIssueKind } from './usageCounter';
import { checkRefcountsL1 } from './usageL1';

/** A bitmap table entry's reserved bits: all but the offset and the all-ones flag (bit 0). */
const BME_ALL_ONES_LO = Number(L.BME_TABLE_ENTRY_FLAG_ALL_ONES);
const BME_RESERVED_HI = ~L.ENTRY_OFFSET_HI_MASK >>> 0;
const BME_RESERVED_LO = (~L.ENTRY_OFFSET_LO_MASK & ~BME_ALL_ONES_LO) >>> 0;
/** A refcount table entry's low 9 bits are reserved (the offset is cluster-aligned, up to bit 63). */
const REFT_RESERVED_LO = ~L.ENTRY_OFFSET_LO_MASK >>> 0;

/** Which of the check's rules a non-zero bitmap table entry breaks (QEMU's check_table_entry). */
export function bitmapEntryFlaws(hi: number, lo: number, clusterSize: number): UsageIssueKind[] {
  const off = entryOffset(hi, lo);
  const bad = (hi & BME_RESERVED_HI) !== 0 || (lo & BME_RESERVED_LO) !== 0 || (off !== 0 && ((lo & BME_ALL_ONES_LO) !== 0 || off % clusterSize !== 0));
  return bad ? ['bitmap-table-entry-invalid'] : [];
}

/** Which of check_refblocks' rules a non-zero refcount table entry breaks, for an image of nbClusters clusters. */
export function reftableEntryFlaws(hi: number, lo: number, clusterSize: number, nbClusters: number): UsageIssueKind[] {
  if ((lo & REFT_RESERVED_LO) !== 0) return ['reftable-reserved-bits'];
  const off = hi * 0x100000000 + lo;
  if (off % clusterSize !== 0) return ['refblock-unaligned'];
  if (off / clusterSize >= nbClusters) return ['refblock-past-eof'];
  return [];
}

/** Each internal snapshot's L1 table and what it maps. */
export async function checkSnapshotsRefcounts(u: UsageCounter, signal?: AbortSignal): Promise<void> {
  const img = u.img, h = img.header, cs = u.clusterSize;
  if (img.g.externalData && img.snapshots.length) {
    u.issue({ kind: 'snapshots-with-data-file', structure: formatPath([step('snapshot table')]), hostOffset: h.snapshotsOffset, message: `${img.snapshots.length} snapshots in an image with an external data file` });
  }
  for (const sn of img.snapshots) {
    throwIfCancelled(signal, img.path, 'cluster usage');
    const label = formatPath([step('snapshot', sn.index, { label: sn.name })]);
    if (sn.l1TableOffset % cs !== 0) {
      u.issue({ kind: 'snapshot-l1-unaligned', hostOffset: sn.hostOffset, structure: label, message: `snapshot L1 table offset ${hex(sn.l1TableOffset)} is not cluster-aligned` });
      continue;
    }
    if (sn.l1Size > L.QCOW_MAX_L1_SIZE / 8) {
      u.issue({ kind: 'snapshot-l1-too-large', hostOffset: sn.hostOffset, structure: label, message: `snapshot L1 table of ${sn.l1Size} entries is too large` });
      continue;
    }
    if (sn.l1Size === 0) continue;
    const l1 = await readTablePadded(img.file, sn.l1TableOffset, sn.l1Size * 8, formatPath(join(u.snapshotPath(sn.index), step('L1 table'))));
    await checkRefcountsL1(u, l1, sn.l1TableOffset, sn.l1Size, sn.index, signal);
  }
}

/** QEMU's qcow2_check_bitmaps_refcounts: the bitmap directory, each bitmap's table and its data clusters. */
export async function checkBitmapsRefcounts(u: UsageCounter): Promise<void> {
  const img = u.img, h = img.header, cs = u.clusterSize;
  if (!img.bitmaps.length || !h.bitmaps) return;
  u.inc(h.bitmaps.bitmapDirectoryOffset, h.bitmaps.bitmapDirectorySize, ROLE_BITMAP_DIRECTORY, NO_OWNER, NO_OWNER, NO_OWNER, () => 'bitmap directory');
  for (const bm of img.bitmaps) {
    const bp = u.bitmapPath(bm.index);
    const tablePath = formatPath(join(bp, step('bitmap table')));
    u.inc(bm.bitmapTableOffset, bm.bitmapTableSize * 8, ROLE_BITMAP_TABLE, NO_OWNER, NO_OWNER, bm.index, () => tablePath);
    if (bm.bitmapTableSize === 0) continue;
    const t = await readTablePadded(img.file, bm.bitmapTableOffset, bm.bitmapTableSize * 8, tablePath);
    for (let i = 0; i < bm.bitmapTableSize; i++) {
      const hi = wordHi(t, i * 8), lo = wordLo(t, i * 8);
      const off = entryOffset(hi, lo);
      if (bitmapEntryFlaws(hi, lo, cs).length) {
        u.issue({ kind: 'bitmap-table-entry-invalid', hostOffset: bm.bitmapTableOffset + i * 8, structure: formatPath(join(bp, step('bitmap table', i))), message: `bitmap table entry ${hex((BigInt(hi) << 32n) | BigInt(lo))} is invalid` });
        continue;
      }
      if (off === 0) continue;
      u.inc(off, cs, ROLE_BITMAP, i, NO_OWNER, bm.index, () => formatPath(join(bp, step('bitmap table', i), step('data'))));
    }
  }
}

/** QEMU's check_refblocks; the raw table is re-read to see reserved bits the parsed one drops. */
export async function checkRefblocks(u: UsageCounter): Promise<void> {
  const img = u.img, h = img.header, cs = u.clusterSize;
  const reftableBytes = h.refcountTableClusters * cs;
  const rt = await img.file.readPadded(h.refcountTableOffset, reftableBytes, 'refcount table');
  for (let i = 0; i < reftableBytes / 8; i++) {
    const hi = wordHi(rt, i * 8), lo = wordLo(rt, i * 8);
    if (hi === 0 && lo === 0) continue;
    const where = h.refcountTableOffset + i * 8;
    const entry = [step('refcount table', i)];
    const structure = formatPath(entry);
    const flaw = reftableEntryFlaws(hi, lo, cs, u.nbClusters)[0];
    const off = hi * 0x100000000 + lo;
    if (flaw === 'reftable-reserved-bits') {
      u.issue({ kind: 'reftable-reserved-bits', hostOffset: where, structure, message: `refcount table entry ${i} has reserved bits set`, rebuild: true, reftableIndex: i });
      continue;
    }
    if (flaw === 'refblock-unaligned') {
      u.issue({ kind: 'refblock-unaligned', hostOffset: where, structure, message: `refcount block offset ${hex(off)} is not cluster-aligned`, rebuild: true, reftableIndex: i });
      continue;
    }
    const k = off / cs;
    if (flaw === 'refblock-past-eof') {
      u.issue({ kind: 'refblock-past-eof', hostOffset: where, structure, message: `refcount block at ${hex(off)} lies outside the image (file ends at ${hex(u.fileSize)})`, reftableIndex: i });
      continue;
    }
    const blockPath = formatPath(join(entry, step('refcount block')));
    u.inc(off, cs, ROLE_REFCOUNT_BLOCK, i, NO_OWNER, NO_OWNER, () => blockPath);
    if (u.refs[k] !== 1) {
      u.issue({ kind: 'refblock-refcount', hostOffset: off, structure: blockPath, message: `refcount block at ${hex(off)} is referenced ${u.refs[k]} times (also used as ${ROLE_NAMES[u.role[k] & ROLE_MASK]})`, rebuild: true, reftableIndex: i });
    }
  }
}
