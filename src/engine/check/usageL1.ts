/**
 * QEMU's check_refcounts_l1 and check_refcounts_l2 (block/qcow2-refcount.c): an L1 table, its L2
 * tables and every cluster they map, counted into the usage walk. The L2 scan runs once per L2
 * entry (1.6 M times for 100 GiB), so it decodes 32-bit words into locals and allocates nothing
 * per entry.
 */
import { hex } from '../errors';
import { decodeCompressed, entryOffset, type L2Geometry, wordHi, wordLo } from '../qcow2/cluster';
import * as L from '../qcow2/layout';
import { formatPath, join, step, type StructurePath } from '../path';
import { pacer } from '../cancel';
import { TableWindow } from './paddedReads';
import { ROLE_COMPRESSED, ROLE_DATA, ROLE_IN_TABLE, ROLE_L1, ROLE_L2, ROLE_MASK, ROLE_SHARED, ROLE_SNAPSHOT_L1, ROLE_SNAPSHOT_L2, ROLE_SNAPSHOT_ONLY, shareGroup } from './roles';
import { NO_OWNER, type UsageCounter, type UsageIssueKind } from './usageCounter';

/** Bytes of L2 tables held at once: one reused window, whatever the number of tables. */
const WINDOW_BYTES = 2 * 1024 * 1024;

/**
 * Called with each L2 table of the active L1 as it is walked (lets the check avoid a second read);
 * the bytes are a view into the walk's reused window, valid only during the call.
 */
export type ActiveL2Listener = (l2: Uint8Array, l1Index: number, l2Offset: number) => void;

/** Which of the check's rules a non-zero L1 entry breaks (in the order the check reports them). */
export function l1EntryFlaws(hi: number, lo: number, clusterSize: number): UsageIssueKind[] {
  const out: UsageIssueKind[] = [];
  if ((hi & L.L1E_RESERVED_HI) !== 0 || (lo & L.L1E_RESERVED_LO) !== 0) out.push('l1-reserved-bits');
  if (entryOffset(hi, lo) % clusterSize !== 0) out.push('l2-table-unaligned');
  return out;
}

// The check's rules for one L2 entry, as bits: the scan runs them on every entry, so no array.
export const L2_COMPRESSED_COPIED = 1;
export const L2_COMPRESSED_WITH_DATA_FILE = 2;
export const L2_COMPRESSED_WITH_SUBCLUSTERS = 4;
export const L2_RESERVED_BITS = 8;
/** Extended L2: an unallocated cluster with subclusters marked allocated. */
export const L2_UNALLOCATED_SUBCLUSTERS = 16;
/** Extended L2: subclusters marked both allocated and zero. */
export const L2_SUBCLUSTERS_ALLOCATED_AND_ZERO = 32;
export const L2_UNALIGNED = 64;

/** The issue kind each L2 flaw bit is reported as. */
export const L2_FLAW_KINDS: readonly [number, UsageIssueKind][] = [
  [L2_COMPRESSED_COPIED, 'compressed-copied'], [L2_COMPRESSED_WITH_DATA_FILE, 'compressed-with-data-file'],
  [L2_COMPRESSED_WITH_SUBCLUSTERS, 'compressed-with-subclusters'], [L2_RESERVED_BITS, 'l2-reserved-bits'],
  [L2_UNALLOCATED_SUBCLUSTERS, 'subcluster-bitmap-invalid'], [L2_SUBCLUSTERS_ALLOCATED_AND_ZERO, 'subcluster-bitmap-invalid'],
  [L2_UNALIGNED, 'l2-entry-unaligned'],
];

/**
 * The rules of QEMU's check_refcounts_l2 one entry (words hi, lo; subcluster bitmap bmHi, bmLo with
 * extended L2) breaks, as L2_* bits; 0 for a sound entry.
 */
export function l2EntryFlaws(g: L2Geometry, hi: number, lo: number, bmHi: number, bmLo: number): number {
  let f = 0;
  if (hi & L.OFLAG_COMPRESSED_HI) {
    if (hi & L.OFLAG_COPIED_HI) f |= L2_COMPRESSED_COPIED;
    if (g.externalData) return f | L2_COMPRESSED_WITH_DATA_FILE;
    if (bmHi !== 0 || bmLo !== 0) f |= L2_COMPRESSED_WITH_SUBCLUSTERS;
    return f;
  }
  if ((hi & L.L2E_STD_RESERVED_HI) !== 0 || (lo & L.L2E_STD_RESERVED_LO) !== 0) f |= L2_RESERVED_BITS;
  const ext = g.extendedL2;
  if ((hi & L.ENTRY_OFFSET_HI_MASK) === 0 && (lo & L.ENTRY_OFFSET_LO_MASK) === 0 && !(g.externalData && (hi & L.OFLAG_COPIED_HI) !== 0)) {
    // ZERO_PLAIN or UNALLOCATED
    if (ext && bmLo !== 0) f |= L2_UNALLOCATED_SUBCLUSTERS;
    return f;
  }
  // NORMAL or ZERO_ALLOC; cluster bits are at most 21, so alignment is decided by the low word alone
  if (ext && (bmHi & bmLo) !== 0) f |= L2_SUBCLUSTERS_ALLOCATED_AND_ZERO;
  if ((lo & (g.clusterSize - 1) & L.ENTRY_OFFSET_LO_MASK) !== 0) f |= L2_UNALIGNED;
  return f;
}

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
  const win = u.l2Window ??= new TableWindow(img.file, cs, WINDOW_BYTES);
  const perWindow = win.capacity;
  const tick = pacer(signal, img.path, 'cluster usage');
  let i = 0;
  while (i < l1Count) {
    await tick();
    const batch: { i: number; l2Offset: number }[] = [];
    for (; i < l1Count && batch.length < perWindow; i++) {
      const hi = wordHi(l1, i * 8), lo = wordLo(l1, i * 8);
      if (hi === 0 && lo === 0) continue;
      batch.push({ i, l2Offset: entryOffset(hi, lo) });
    }
    const tables = await win.read(batch.map(b => b.l2Offset));
    for (const { i: li, l2Offset } of batch) {
      const hi = wordHi(l1, li * 8), lo = wordLo(l1, li * 8);
      const entry = () => formatPath(join(sp, step('L1', li)));
      const flaws = l1EntryFlaws(hi, lo, cs);
      if (flaws.includes('l1-reserved-bits')) {
        u.issue({ kind: 'l1-reserved-bits', hostOffset: l1Offset + li * 8, structure: entry(), message: `L1 entry ${hex((BigInt(hi) << 32n) | BigInt(lo))} has reserved bits set` });
      }
      u.inc(l2Offset, cs, snap < 0 ? ROLE_L2 : ROLE_SNAPSHOT_L2, li, NO_OWNER, snap, () => formatPath(join(sp, step('L1', li), step('L2 table'))));
      if (flaws.includes('l2-table-unaligned')) {
        u.issue({ kind: 'l2-table-unaligned', hostOffset: l1Offset + li * 8, structure: entry(), message: `L2 table offset ${hex(l2Offset)} is not cluster-aligned` });
      }
      const t = tables.get(l2Offset)!;
      checkRefcountsL2(u, t, li, l2Offset, snap, frag);
      if (snap < 0) onActiveL2?.(t, li, l2Offset);
      await tick();
    }
  }
}

/** QEMU's check_refcounts_l2: one L2 table's entries; `frag` counts CHECK_FRAG_INFO (active L1 only). */
export function checkRefcountsL2(u: UsageCounter, t: Uint8Array, l1Index: number, l2Offset: number, snap: number, frag: boolean): void {
  const g = u.img.g, cs = u.clusterSize, cb = u.clusterBits, fileSize = u.fileSize, refMax = u.refMax;
  const es = g.l2EntrySize, n = g.l2Size, ext = g.extendedL2, hasDataFile = g.externalData;
  const dataRole = snap < 0 ? ROLE_DATA : ROLE_SNAPSHOT_ONLY;
  const firstRole = snap < 0 ? ROLE_DATA : ROLE_SNAPSHOT_ONLY | ROLE_IN_TABLE;
  const sp = u.snapshotPath(snap);
  const path = (j: number) => l2EntryPath(sp, l1Index, j);
  const hiScale = 2 ** (32 - cb);
  let nextContiguous = 0;
  // counters and arrays in locals: the loop runs once per L2 entry
  let nAlloc = 0, nFrag = 0, nComp = 0;
  const refsL = u.refs, roleL = u.role, owners = u.owners, oA = u.ownerA, oB = u.ownerB, oC = u.ownerC;
  for (let j = 0; j < n; j++) {
    const p = j * es;
    const hi = wordHi(t, p), lo = wordLo(t, p);
    let bmHi = 0, bmLo = 0;
    if (ext) { bmHi = wordHi(t, p + 8); bmLo = wordLo(t, p + 8); }
    if (hi === 0 && lo === 0 && bmHi === 0 && bmLo === 0) continue;
    const flaws = l2EntryFlaws(g, hi, lo, bmHi, bmLo);
    if (flaws !== 0) reportL2Flaws(u, flaws, g, hi, lo, bmLo, l2Offset + p, path(j));
    if (hi & L.OFLAG_COMPRESSED_HI) {
      if (flaws & (L2_COMPRESSED_WITH_DATA_FILE | L2_COMPRESSED_WITH_SUBCLUSTERS)) continue;
      const { hostOffset, compressedSize } = decodeCompressed(g, hi, lo);
      u.inc(hostOffset, compressedSize, ROLE_COMPRESSED, l1Index, j, snap, () => path(j));
      if (frag) { nAlloc++; nComp++; nFrag++; }
      continue;
    }
    const offset = entryOffset(hi, lo);
    if (offset === 0 && !(hasDataFile && (hi & L.OFLAG_COPIED_HI) !== 0)) continue; // ZERO_PLAIN or UNALLOCATED
    const aligned = (flaws & L2_UNALIGNED) === 0;
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
      if (c === 0) {
        refsL[k] = 1; roleL[k] = firstRole;
        if (owners) { oA[k] = l1Index; oB[k] = j; oC[k] = snap; }
        continue;
      }
      // a snapshot sharing a data cluster: the usual, legitimate case, without the general path
      if (snap >= 0 && c < refMax && shareGroup(roleL[k] & ROLE_MASK) === 2) { refsL[k] = c + 1; roleL[k] |= ROLE_SHARED; continue; }
      u.claim(k, dataRole, l1Index, j, snap, () => path(j));
    } else {
      u.inc(offset, cs, dataRole, l1Index, j, snap, () => path(j));
    }
  }
  u.allocated += nAlloc; u.fragmented += nFrag; u.compressed += nComp;
}

/** Reports each flaw of one L2 entry as the check words it, in the check's order. */
function reportL2Flaws(u: UsageCounter, flaws: number, g: L2Geometry, hi: number, lo: number, bmLo: number, entryAt: number, structure: string): void {
  const at = { hostOffset: entryAt, structure };
  if (flaws & L2_COMPRESSED_COPIED) u.issue({ kind: 'compressed-copied', ...at, message: 'compressed cluster entry has the COPIED flag set, which must never be set for compressed clusters' });
  if (flaws & L2_COMPRESSED_WITH_DATA_FILE) u.issue({ kind: 'compressed-with-data-file', ...at, message: 'compressed cluster in an image with an external data file' });
  if (flaws & L2_COMPRESSED_WITH_SUBCLUSTERS) u.issue({ kind: 'compressed-with-subclusters', ...at, message: 'compressed cluster with a non-zero subcluster bitmap' });
  if (flaws & L2_RESERVED_BITS) u.issue({ kind: 'l2-reserved-bits', ...at, message: `L2 entry ${hex((BigInt(hi) << 32n) | BigInt(lo))} has reserved bits set` });
  if (flaws & L2_UNALLOCATED_SUBCLUSTERS) u.issue({ kind: 'subcluster-bitmap-invalid', ...at, message: 'unallocated cluster has subclusters marked allocated' });
  const offset = entryOffset(hi, lo);
  if (flaws & L2_SUBCLUSTERS_ALLOCATED_AND_ZERO) u.issue({ kind: 'subcluster-bitmap-invalid', ...at, message: `allocated cluster at ${hex(offset)} has subclusters marked both allocated and zero` });
  if (flaws & L2_UNALIGNED) {
    const containsData = g.extendedL2 ? bmLo !== 0 : (lo & L.OFLAG_ZERO_LO) === 0;
    u.issue({
      kind: 'l2-entry-unaligned', ...at,
      message: `${containsData ? 'data' : 'preallocated zero'} cluster offset ${hex(offset)} is not cluster-aligned`,
      l2EntryFix: containsData ? undefined : { hostOffset: entryAt, entrySize: g.l2EntrySize, extendedL2: g.extendedL2 },
    });
  }
}
