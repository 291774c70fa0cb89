/**
 * QEMU's check_refcounts_l1 and check_refcounts_l2 (block/qcow2-refcount.c): an L1 table, its L2
 * tables and every cluster they map, counted into the usage walk. The L2 scan runs once per L2
 * entry (1.6 M times for 100 GiB), so it decodes 32-bit words into locals and allocates nothing
 * per entry.
 */
import { hex } from '../errors';
import { decodeCompressed, entryOffset, wordHi, wordLo } from '../qcow2/cluster';
import * as L from '../qcow2/layout';
import { formatPath, join, step, type StructurePath } from '../path';
import { throwIfCancelled } from '../cancel';
import { readTablesPadded } from './paddedReads';
import { ROLE_COMPRESSED, ROLE_DATA, ROLE_L1, ROLE_L2, ROLE_MASK, ROLE_SHARED, ROLE_SNAPSHOT_L1, ROLE_SNAPSHOT_L2, ROLE_SNAPSHOT_ONLY, shareGroup } from './roles';
import { NO_OWNER, type UsageCounter } from './usageCounter';

/** Bytes of L2 tables read per batch. */
const WINDOW_BYTES = 32 * 1024 * 1024;

/** Called with each L2 table of the active L1 as it is walked (lets the check avoid a second read). */
export type ActiveL2Listener = (l2: Uint8Array, l1Index: number, l2Offset: number) => void;

/** `snapshot[s] "name" → L1[i] → L2[0x…]`, the path of an L2 entry. */
export function l2EntryPath(snap: StructurePath, l1Index: number, l2Index: number): string {
  return formatPath(join(snap, step('L1', l1Index), step('L2', l2Index)));
}

/** QEMU's check_refcounts_l1: the L1 table (snapshot `snap`, or -1 for the active one), its L2 tables, and what they reference. */
export async function checkRefcountsL1(u: UsageCounter, l1: Uint8Array, l1Offset: number, l1Count: number, snap: number, signal?: AbortSignal, onActiveL2?: ActiveL2Listener): Promise<void> {
  if (l1Count === 0) return;
  const img = u.img, cs = u.clusterSize;
  const sp = u.snapshotPath(snap);
  u.inc(l1Offset, l1Count * 8, snap < 0 ? ROLE_L1 : ROLE_SNAPSHOT_L1, NO_OWNER, NO_OWNER, snap, () => formatPath(join(sp, step('L1 table'))));
  const frag = snap < 0;
  const perWindow = Math.max(1, Math.floor(WINDOW_BYTES / cs));
  let i = 0;
  while (i < l1Count) {
    throwIfCancelled(signal, img.path, 'cluster usage');
    const batch: { i: number; l2Offset: number }[] = [];
    for (; i < l1Count && batch.length < perWindow; i++) {
      const hi = wordHi(l1, i * 8), lo = wordLo(l1, i * 8);
      if (hi === 0 && lo === 0) continue;
      batch.push({ i, l2Offset: entryOffset(hi, lo) });
    }
    const tables = await readTablesPadded(img.file, batch.map(b => b.l2Offset), cs, o => `${formatPath(join(sp, step('L2 table')))} at ${hex(o)}`);
    for (const { i: li, l2Offset } of batch) {
      const hi = wordHi(l1, li * 8), lo = wordLo(l1, li * 8);
      const entry = () => formatPath(join(sp, step('L1', li)));
      if ((hi & L.L1E_RESERVED_HI) !== 0 || (lo & L.L1E_RESERVED_LO) !== 0) {
        u.issue({ kind: 'l1-reserved-bits', hostOffset: l1Offset + li * 8, structure: entry(), message: `L1 entry ${hex((BigInt(hi) << 32n) | BigInt(lo))} has reserved bits set` });
      }
      u.inc(l2Offset, cs, snap < 0 ? ROLE_L2 : ROLE_SNAPSHOT_L2, li, NO_OWNER, snap, () => formatPath(join(sp, step('L1', li), step('L2 table'))));
      if (l2Offset % cs !== 0) {
        u.issue({ kind: 'l2-table-unaligned', hostOffset: l1Offset + li * 8, structure: entry(), message: `L2 table offset ${hex(l2Offset)} is not cluster-aligned` });
      }
      const t = tables.get(l2Offset)!;
      checkRefcountsL2(u, t, li, l2Offset, snap, frag);
      if (snap < 0) onActiveL2?.(t, li, l2Offset);
    }
  }
}

/** QEMU's check_refcounts_l2: one L2 table's entries; `frag` counts CHECK_FRAG_INFO (active L1 only). */
export function checkRefcountsL2(u: UsageCounter, t: Uint8Array, l1Index: number, l2Offset: number, snap: number, frag: boolean): void {
  const g = u.img.g, cs = u.clusterSize, cb = u.clusterBits, fileSize = u.fileSize, refMax = u.refMax;
  const es = g.l2EntrySize, n = g.l2Size, ext = g.extendedL2, hasDataFile = g.externalData;
  const dataRole = snap < 0 ? ROLE_DATA : ROLE_SNAPSHOT_ONLY;
  const sp = u.snapshotPath(snap);
  const path = (j: number) => l2EntryPath(sp, l1Index, j);
  const inClusterMask = (cs - 1) & L.ENTRY_OFFSET_LO_MASK;
  const hiScale = 2 ** (32 - cb);
  let nextContiguous = 0;
  // counters and arrays in locals: the loop runs once per L2 entry
  let nAlloc = 0, nFrag = 0, nComp = 0;
  const refsL = u.refs, roleL = u.role, oA = u.ownerA, oB = u.ownerB, oC = u.ownerC;
  for (let j = 0; j < n; j++) {
    const p = j * es;
    const hi = wordHi(t, p), lo = wordLo(t, p);
    let bmHi = 0, bmLo = 0;
    if (ext) { bmHi = wordHi(t, p + 8); bmLo = wordLo(t, p + 8); }
    if (hi === 0 && lo === 0 && bmHi === 0 && bmLo === 0) continue;
    const entryAt = l2Offset + p;
    if (hi & L.OFLAG_COMPRESSED_HI) {
      if (hi & L.OFLAG_COPIED_HI) {
        u.issue({ kind: 'compressed-copied', hostOffset: entryAt, structure: path(j), message: 'compressed cluster entry has the COPIED flag set, which must never be set for compressed clusters' });
      }
      if (hasDataFile) {
        u.issue({ kind: 'compressed-with-data-file', hostOffset: entryAt, structure: path(j), message: 'compressed cluster in an image with an external data file' });
        continue;
      }
      if (bmHi !== 0 || bmLo !== 0) {
        u.issue({ kind: 'compressed-with-subclusters', hostOffset: entryAt, structure: path(j), message: 'compressed cluster with a non-zero subcluster bitmap' });
        continue;
      }
      const { hostOffset, compressedSize } = decodeCompressed(g, hi, lo);
      u.inc(hostOffset, compressedSize, ROLE_COMPRESSED, l1Index, j, snap, () => path(j));
      if (frag) { nAlloc++; nComp++; nFrag++; }
      continue;
    }
    if ((hi & L.L2E_STD_RESERVED_HI) !== 0 || (lo & L.L2E_STD_RESERVED_LO) !== 0) {
      u.issue({ kind: 'l2-reserved-bits', hostOffset: entryAt, structure: path(j), message: `L2 entry ${hex((BigInt(hi) << 32n) | BigInt(lo))} has reserved bits set` });
    }
    const zeroFlag = !ext && (lo & L.OFLAG_ZERO_LO) !== 0;
    const offset = entryOffset(hi, lo);
    // cluster bits are at most 21, so alignment is decided by the low word alone (no float modulo)
    const aligned = (lo & inClusterMask) === 0;
    if (offset === 0 && !(hasDataFile && (hi & L.OFLAG_COPIED_HI) !== 0)) {
      // ZERO_PLAIN or UNALLOCATED
      if (!zeroFlag && ext && bmLo !== 0) {
        u.issue({ kind: 'subcluster-bitmap-invalid', hostOffset: entryAt, structure: path(j), message: 'unallocated cluster has subclusters marked allocated' });
      }
      continue;
    }
    // NORMAL or ZERO_ALLOC
    if (ext && (bmHi & bmLo) !== 0) {
      u.issue({ kind: 'subcluster-bitmap-invalid', hostOffset: entryAt, structure: path(j), message: `allocated cluster at ${hex(offset)} has subclusters marked both allocated and zero` });
    }
    if (!aligned) {
      const containsData = ext ? bmLo !== 0 : !zeroFlag;
      u.issue({
        kind: 'l2-entry-unaligned', hostOffset: entryAt, structure: path(j),
        message: `${containsData ? 'data' : 'preallocated zero'} cluster offset ${hex(offset)} is not cluster-aligned`,
        l2EntryFix: containsData ? undefined : { hostOffset: entryAt, entrySize: es, extendedL2: ext },
      });
    }
    if (frag) {
      nAlloc++;
      if (nextContiguous !== 0 && offset !== nextContiguous) nFrag++;
      nextContiguous = offset + cs;
    }
    if (hasDataFile) continue;
    // inlined inc() for the common aligned single-cluster case
    if (aligned && offset + cs <= fileSize) {
      const k = (hi & L.ENTRY_OFFSET_HI_MASK) * hiScale + (lo >>> cb);
      const c = refsL[k];
      if (c === 0) { refsL[k] = 1; roleL[k] = dataRole; oA[k] = l1Index; oB[k] = j; oC[k] = snap; continue; }
      // a snapshot sharing a data cluster: the usual, legitimate case, without the general path
      if (snap >= 0 && c < refMax && shareGroup(roleL[k] & ROLE_MASK) === 2) { refsL[k] = c + 1; roleL[k] |= ROLE_SHARED; continue; }
      u.claim(k, dataRole, l1Index, j, snap, () => path(j));
    } else {
      u.inc(offset, cs, dataRole, l1Index, j, snap, () => path(j));
    }
  }
  u.allocated += nAlloc; u.fragmented += nFrag; u.compressed += nComp;
}
