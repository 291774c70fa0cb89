/**
 * Cluster usage: who uses each host cluster of the image file, and how many references each one
 * should have. This is the first half of QEMU's check (block/qcow2-refcount.c,
 * calculate_refcounts): walk every structure that owns clusters in the same order QEMU does —
 * header cluster, active L1 and its L2 tables and data, each snapshot's L1/L2/data, the snapshot
 * table, the refcount table, the LUKS header, the bitmap directory/tables/data, then the refcount
 * blocks — counting one reference per use. The check compares these counts with the stored ones;
 * the editor's cluster map paints the roles.
 *
 * Everything is kept in typed arrays indexed by host cluster (about 17 bytes per cluster): the
 * expected count, a role byte, and three integers naming the first owner, from which
 * `ownerPath(cluster)` builds a path like `L1[3] → L2[0x1f0]` on demand.
 *
 * Reads beyond the end of the file return zeros, as QEMU's block layer does, so a truncated image
 * is walked (and judged) the way `qemu-img check` judges it.
 */
import { decodeCompressed, entryOffset, wordHi, wordLo } from '../qcow2/cluster';
import { hex, Qcow2Error } from '../errors';
import type { Qcow2Image } from '../image/image';
import { ImageFile, readMany } from '../io/reader';
import * as L from '../qcow2/layout';
import { maxRefcount } from '../qcow2/refcount';

// ---- roles (low 6 bits of `role`), plus two flag bits ----
export const ROLE_FREE = 0;
export const ROLE_HEADER = 1;
export const ROLE_L1 = 2;
export const ROLE_L2 = 3;
export const ROLE_REFCOUNT_TABLE = 4;
export const ROLE_REFCOUNT_BLOCK = 5;
export const ROLE_SNAPSHOT_TABLE = 6;
/** A snapshot's L1 table. */
export const ROLE_SNAPSHOT_L1 = 7;
/** An L2 table referenced only by snapshots' L1 tables. */
export const ROLE_SNAPSHOT_L2 = 8;
export const ROLE_DATA = 9;
export const ROLE_COMPRESSED = 10;
/** A data cluster referenced only by snapshots (the active disk no longer uses it). */
export const ROLE_SNAPSHOT_ONLY = 11;
export const ROLE_BITMAP_DIRECTORY = 12;
export const ROLE_BITMAP_TABLE = 13;
/** A persistent bitmap's data cluster. */
export const ROLE_BITMAP = 14;
/** The LUKS header and key material of an encrypted image. */
export const ROLE_CRYPTO = 15;
export const ROLE_MASK = 0x3f;
/** Flag: the cluster has more than one reference (legitimate for snapshots and compressed data). */
export const ROLE_SHARED = 0x40;
/** Flag: owners that must never share a cluster do (metadata with anything, an L2 table with data). */
export const ROLE_CONFLICT = 0x80;

export const ROLE_NAMES: readonly string[] = [
  'free', 'header', 'L1 table', 'L2 table', 'refcount table', 'refcount block', 'snapshot table',
  'snapshot L1 table', 'snapshot L2 table', 'data', 'compressed data', 'snapshot-only data',
  'bitmap directory', 'bitmap table', 'bitmap data', 'encryption header',
];

/** Legitimately shareable roles fall in the same group; any other pair of owners is a conflict. */
function shareGroup(role: number): number {
  switch (role) {
    case ROLE_L2: case ROLE_SNAPSHOT_L2: return 1;
    case ROLE_DATA: case ROLE_COMPRESSED: case ROLE_SNAPSHOT_ONLY: return 2;
    default: return 0; // metadata: never shared
  }
}

export type UsageIssueKind =
  | 'l1-reserved-bits'
  | 'l2-table-unaligned'
  | 'offset-past-eof'
  | 'refcount-overflow'
  | 'l2-reserved-bits'
  | 'compressed-copied'
  | 'compressed-with-data-file'
  | 'compressed-with-subclusters'
  | 'subcluster-bitmap-invalid'
  | 'l2-entry-unaligned'
  | 'snapshot-l1-unaligned'
  | 'snapshot-l1-too-large'
  | 'snapshots-with-data-file'
  | 'bitmap-table-entry-invalid'
  | 'reftable-reserved-bits'
  | 'refblock-unaligned'
  | 'refblock-past-eof'
  | 'refblock-refcount';

/** Something the walk found wrong; each one is one corruption in QEMU's count. */
export interface UsageIssue {
  kind: UsageIssueKind;
  /** Where the faulty entry or region is (host offset). */
  hostOffset?: number;
  structure: string;
  message: string;
  /** QEMU sets "rebuild" for it: only rebuilding the refcount structure repairs it. */
  rebuild?: boolean;
  /** For `l2-entry-unaligned` on a preallocated zero cluster: the entry `-r all` rewrites. */
  l2EntryFix?: { hostOffset: number; entrySize: number; extendedL2: boolean };
  /** For refcount-table issues: the refcount table index. */
  reftableIndex?: number;
}

export interface ClusterUsage {
  clusterSize: number;
  clusterBits: number;
  fileSize: number;
  /** Host clusters covered: the file's clusters, plus one if a structure ends in a partial cluster past EOF. */
  nbClusters: number;
  /** Expected reference count per host cluster. */
  refs: Uint32Array;
  /** Role per host cluster (ROLE_*), with ROLE_SHARED / ROLE_CONFLICT flags. */
  role: Uint8Array;
  /** First owner: L1 index / refcount table index / bitmap table index (-1 = none). */
  ownerA: Int32Array;
  /** First owner: L2 index (-1 = none). */
  ownerB: Int32Array;
  /** First owner: snapshot index or bitmap index (-1 = the active image / none). */
  ownerC: Int32Array;
  /** Issues found (at most MAX_STORED_ISSUES stored; `issueCount` counts all). */
  issues: UsageIssue[];
  issueCount: number;
  /** Per kind, how many of the issues exist (stored or not). */
  issueCounts: Map<UsageIssueKind, number>;
  /** QEMU's fragmentation info over the active L1 (CHECK_FRAG_INFO). */
  allocatedClusters: number;
  fragmentedClusters: number;
  compressedClusters: number;
  /** Guest clusters: virtual size / cluster size, rounded up. */
  totalClusters: number;
  /** Entries in the refcount table (refcount_table_clusters * cluster_size / 8). */
  reftableEntries: number;
  /**
   * For clusters claimed by owners that must not share them (a conflict, or two references from
   * the active image's own L2 tables): the path of the second owner. Capped at MAX_STORED_ISSUES.
   */
  secondOwner: Map<number, string>;
  /** Snapshot names and bitmap names for paths. */
  snapshotNames: string[];
  bitmapNames: string[];
  /** The structure path of the first owner of `cluster`, e.g. `L1[3] → L2[0x1f0]`. */
  ownerPath(cluster: number): string;
}

export const MAX_STORED_ISSUES = 10000;
/** About 17 bytes are kept per host cluster; beyond 2^27 clusters (8 TiB of 64 KiB clusters) we refuse rather than exhaust memory. */
export const MAX_USAGE_CLUSTERS = 2 ** 27;
/** Bytes of L2 tables read per batch. */
const WINDOW_BYTES = 32 * 1024 * 1024;

function cancelled(path: string): Qcow2Error {
  return new Qcow2Error(path, 'cluster usage', undefined, 'cancelled', 'cancelled');
}

/** Reads same-sized tables by host offset; bytes past the end of the file read as zero (QEMU's rule). */
export async function readTablesPadded(file: ImageFile, offsets: number[], size: number, structure: (o: number) => string): Promise<Map<number, Buffer>> {
  const inside: number[] = [];
  const out = new Map<number, Buffer>();
  for (const o of offsets) {
    if (o + size <= file.size) inside.push(o);
    else if (o >= file.size || !Number.isSafeInteger(o)) out.set(o, Buffer.alloc(size));
    else out.set(o, await file.readPadded(o, size, structure(o)));
  }
  if (inside.length) for (const [o, b] of await readMany(file, inside, size, structure)) out.set(o, b);
  return out;
}

export interface ClusterUsageOptions {
  signal?: AbortSignal;
  /** Called with each L2 table of the active L1 as it is walked (lets the check avoid a second read). */
  onActiveL2?(l2: Uint8Array, l1Index: number, l2Offset: number): void;
}

export async function clusterUsage(img: Qcow2Image, opts: ClusterUsageOptions = {}): Promise<ClusterUsage> {
  const h = img.header;
  const file = img.file;
  const g = img.g;
  const cs = g.clusterSize;
  const cb = g.clusterBits;
  const fileSize = file.size;
  const fileClusters = Math.ceil(fileSize / cs);
  if (fileClusters > MAX_USAGE_CLUSTERS) {
    throw new Qcow2Error(img.path, 'file', undefined, `${fileClusters} host clusters are more than the ${MAX_USAGE_CLUSTERS} the cluster usage map can hold in memory`, 'unsupported');
  }
  // A structure may end less than one cluster past EOF (QEMU allows that), so one spare entry.
  const cap = fileClusters + 1;
  const refs = new Uint32Array(cap);
  const role = new Uint8Array(cap);
  const ownerA = new Int32Array(cap).fill(-1);
  const ownerB = new Int32Array(cap).fill(-1);
  const ownerC = new Int32Array(cap).fill(-1);
  let nbClusters = fileClusters;
  const refMax = Math.min(maxRefcount(h.refcountOrder), 0xffffffff);
  const hasDataFile = g.externalData;
  const issues: UsageIssue[] = [];
  const issueCounts = new Map<UsageIssueKind, number>();
  let issueCount = 0;
  const issue = (i: UsageIssue) => {
    issueCount++;
    issueCounts.set(i.kind, (issueCounts.get(i.kind) ?? 0) + 1);
    if (issues.length < MAX_STORED_ISSUES) issues.push(i);
  };
  const secondOwner = new Map<number, string>();
  const snapshotNames = img.snapshots.map(s => s.name);
  const bitmapNames = img.bitmaps.map(b => b.name);

  const claim = (k: number, r: number, a: number, b: number, c: number, what: () => string) => {
    const n = refs[k];
    if (n >= refMax) {
      issue({ kind: 'refcount-overflow', hostOffset: k * cs, structure: what(), message: `cluster at ${hex(k * cs)} has more references than ${h.refcountBits}-bit refcounts can count` });
      return;
    }
    refs[k] = n + 1;
    if (n === 0) {
      role[k] = r; ownerA[k] = a; ownerB[k] = b; ownerC[k] = c;
    } else {
      const old = role[k] & ROLE_MASK;
      const g0 = shareGroup(old);
      role[k] |= ROLE_SHARED;
      const conflict = g0 === 0 || g0 !== shareGroup(r);
      if (conflict) role[k] |= ROLE_CONFLICT;
      // two references from the active image's own tables are never legitimate either
      if ((conflict || (c < 0 && ownerC[k] < 0)) && !secondOwner.has(k) && secondOwner.size < MAX_STORED_ISSUES) secondOwner.set(k, what());
    }
    if (k >= nbClusters) nbClusters = k + 1;
  };

  /** QEMU's qcow2_inc_refcounts_imrt: one reference for each cluster of [offset, offset+size). */
  const inc = (offset: number, size: number, r: number, a: number, b: number, c: number, what: () => string): void => {
    if (size <= 0) return;
    if (offset + size - fileSize >= cs) {
      issue({ kind: 'offset-past-eof', hostOffset: offset, structure: what(), message: `${ROLE_NAMES[r]} at ${hex(offset)} (${size} bytes) lies past the end of the file (${hex(fileSize)})` });
      return;
    }
    const first = Math.floor(offset / cs), last = Math.floor((offset + size - 1) / cs);
    for (let k = first; k <= last; k++) claim(k, r, a, b, c, what);
  };

  const snapLabel = (s: number) => (s < 0 ? '' : `snapshot[${s}] "${snapshotNames[s]}" → `);

  // header cluster (header, extensions and backing file name all live in cluster 0)
  inc(0, cs, ROLE_HEADER, -1, -1, -1, () => 'header');

  let allocated = 0, fragmented = 0, compressed = 0;

  const inClusterMask = (cs - 1) & 0xfffffe00;
  const hiScale = 2 ** (32 - cb);
  const scanL2 = (t: Uint8Array, l1Index: number, l2Offset: number, snap: number, frag: boolean) => {
    const es = g.l2EntrySize, n = g.l2Size, ext = g.extendedL2;
    const dataRole = snap < 0 ? ROLE_DATA : ROLE_SNAPSHOT_ONLY;
    const path = (j: number) => `${snapLabel(snap)}L1[${l1Index}] → L2[${hex(j)}]`;
    let nextContiguous = 0;
    // counters and arrays in locals: the loop runs once per L2 entry (1.6 M times for 100 GiB)
    let nAlloc = 0, nFrag = 0, nComp = 0;
    const refsL = refs, roleL = role, oA = ownerA, oB = ownerB, oC = ownerC;
    for (let j = 0; j < n; j++) {
      const p = j * es;
      const hi = (t[p] << 24 | t[p + 1] << 16 | t[p + 2] << 8 | t[p + 3]) >>> 0;
      const lo = (t[p + 4] << 24 | t[p + 5] << 16 | t[p + 6] << 8 | t[p + 7]) >>> 0;
      let bmHi = 0, bmLo = 0;
      if (ext) { bmHi = wordHi(t, p + 8); bmLo = wordLo(t, p + 8); }
      if (hi === 0 && lo === 0 && bmHi === 0 && bmLo === 0) continue;
      const entryAt = l2Offset + p;
      if (hi & 0x40000000) {
        if (hi & 0x80000000) {
          issue({ kind: 'compressed-copied', hostOffset: entryAt, structure: path(j), message: 'compressed cluster entry has the COPIED flag set, which must never be set for compressed clusters' });
        }
        if (hasDataFile) {
          issue({ kind: 'compressed-with-data-file', hostOffset: entryAt, structure: path(j), message: 'compressed cluster in an image with an external data file' });
          continue;
        }
        if (bmHi !== 0 || bmLo !== 0) {
          issue({ kind: 'compressed-with-subclusters', hostOffset: entryAt, structure: path(j), message: 'compressed cluster with a non-zero subcluster bitmap' });
          continue;
        }
        const { hostOffset, compressedSize } = decodeCompressed(g, hi, lo);
        inc(hostOffset, compressedSize, ROLE_COMPRESSED, l1Index, j, snap, () => path(j));
        if (frag) { nAlloc++; nComp++; nFrag++; }
        continue;
      }
      if ((hi & 0x3f000000) !== 0 || (lo & 0x1fe) !== 0) {
        issue({ kind: 'l2-reserved-bits', hostOffset: entryAt, structure: path(j), message: `L2 entry ${hex((BigInt(hi) << 32n) | BigInt(lo))} has reserved bits set` });
      }
      const zeroFlag = !ext && (lo & 1) !== 0;
      const offset = (hi & 0x00ffffff) * 0x100000000 + ((lo & 0xfffffe00) >>> 0);
      // cluster bits are at most 21, so alignment is decided by the low word alone (no float modulo)
      const aligned = (lo & inClusterMask) === 0;
      if (offset === 0 && !(hasDataFile && (hi & 0x80000000) !== 0)) {
        // ZERO_PLAIN or UNALLOCATED
        if (!zeroFlag && ext && bmLo !== 0) {
          issue({ kind: 'subcluster-bitmap-invalid', hostOffset: entryAt, structure: path(j), message: 'unallocated cluster has subclusters marked allocated' });
        }
        continue;
      }
      // NORMAL or ZERO_ALLOC
      if (ext && (bmHi & bmLo) !== 0) {
        issue({ kind: 'subcluster-bitmap-invalid', hostOffset: entryAt, structure: path(j), message: `allocated cluster at ${hex(offset)} has subclusters marked both allocated and zero` });
      }
      if (!aligned) {
        const containsData = ext ? bmLo !== 0 : !zeroFlag;
        issue({
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
      if (!hasDataFile) {
        // inlined inc() for the common aligned single-cluster case
        if (aligned && offset + cs <= fileSize) {
          const k = (hi & 0x00ffffff) * hiScale + (lo >>> cb);
          const c = refsL[k];
          if (c === 0) { refsL[k] = 1; roleL[k] = dataRole; oA[k] = l1Index; oB[k] = j; oC[k] = snap; continue; }
          // a snapshot sharing a data cluster: the usual, legitimate case, without the general path
          if (snap >= 0 && c < refMax && shareGroup(roleL[k] & ROLE_MASK) === 2) { refsL[k] = c + 1; roleL[k] |= ROLE_SHARED; continue; }
          claim(k, dataRole, l1Index, j, snap, () => path(j));
        } else {
          inc(offset, cs, dataRole, l1Index, j, snap, () => path(j));
        }
      }
    }
    allocated += nAlloc; fragmented += nFrag; compressed += nComp;
  };

  /** QEMU's check_refcounts_l1: the L1 table, its L2 tables, and what they reference. */
  const scanL1 = async (l1: Uint8Array, l1Offset: number, l1Count: number, snap: number) => {
    if (l1Count === 0) return;
    const label = snapLabel(snap);
    inc(l1Offset, l1Count * 8, snap < 0 ? ROLE_L1 : ROLE_SNAPSHOT_L1, -1, -1, snap, () => `${label}L1 table`);
    const frag = snap < 0;
    const perWindow = Math.max(1, Math.floor(WINDOW_BYTES / cs));
    let i = 0;
    while (i < l1Count) {
      if (opts.signal?.aborted) throw cancelled(img.path);
      const batch: { i: number; l2Offset: number }[] = [];
      for (; i < l1Count && batch.length < perWindow; i++) {
        const hi = wordHi(l1, i * 8), lo = wordLo(l1, i * 8);
        if (hi === 0 && lo === 0) continue;
        batch.push({ i, l2Offset: entryOffset(hi, lo) });
      }
      const tables = await readTablesPadded(file, batch.map(b => b.l2Offset), cs, o => `${label}L2 table at ${hex(o)}`);
      for (const { i: li, l2Offset } of batch) {
        const hi = wordHi(l1, li * 8), lo = wordLo(l1, li * 8);
        if ((hi & 0x7f000000) !== 0 || (lo & 0x1fe) !== 0) {
          issue({ kind: 'l1-reserved-bits', hostOffset: l1Offset + li * 8, structure: `${label}L1[${li}]`, message: `L1 entry ${hex((BigInt(hi) << 32n) | BigInt(lo))} has reserved bits set` });
        }
        inc(l2Offset, cs, snap < 0 ? ROLE_L2 : ROLE_SNAPSHOT_L2, li, -1, snap, () => `${label}L1[${li}] → L2 table`);
        if (l2Offset % cs !== 0) {
          issue({ kind: 'l2-table-unaligned', hostOffset: l1Offset + li * 8, structure: `${label}L1[${li}]`, message: `L2 table offset ${hex(l2Offset)} is not cluster-aligned` });
        }
        const t = tables.get(l2Offset)!;
        scanL2(t, li, l2Offset, snap, frag);
        if (snap < 0) opts.onActiveL2?.(t, li, l2Offset);
      }
    }
  };

  // active L1
  await scanL1(img.l1, h.l1TableOffset, h.l1Size, -1);

  // snapshots
  if (hasDataFile && img.snapshots.length) {
    issue({ kind: 'snapshots-with-data-file', structure: 'snapshot table', hostOffset: h.snapshotsOffset, message: `${img.snapshots.length} snapshots in an image with an external data file` });
  }
  for (const sn of img.snapshots) {
    if (opts.signal?.aborted) throw cancelled(img.path);
    const label = `snapshot[${sn.index}] "${sn.name}"`;
    if (sn.l1TableOffset % cs !== 0) {
      issue({ kind: 'snapshot-l1-unaligned', hostOffset: sn.hostOffset, structure: label, message: `snapshot L1 table offset ${hex(sn.l1TableOffset)} is not cluster-aligned` });
      continue;
    }
    if (sn.l1Size > L.QCOW_MAX_L1_SIZE / 8) {
      issue({ kind: 'snapshot-l1-too-large', hostOffset: sn.hostOffset, structure: label, message: `snapshot L1 table of ${sn.l1Size} entries is too large` });
      continue;
    }
    if (sn.l1Size === 0) continue;
    const l1 = (await readTablesPadded(file, [sn.l1TableOffset], sn.l1Size * 8, () => `${label} → L1 table`)).get(sn.l1TableOffset)!;
    await scanL1(l1, sn.l1TableOffset, sn.l1Size, sn.index);
  }
  const snapshotsSize = img.snapshots.reduce((s, x) => s + x.entrySize, 0);
  inc(h.snapshotsOffset, snapshotsSize, ROLE_SNAPSHOT_TABLE, -1, -1, -1, () => 'snapshot table');

  // refcount table
  const reftableBytes = h.refcountTableClusters * cs;
  inc(h.refcountTableOffset, reftableBytes, ROLE_REFCOUNT_TABLE, -1, -1, -1, () => 'refcount table');

  // encryption header
  if (h.crypto && h.crypto.length > 0) {
    inc(h.crypto.offset, h.crypto.length, ROLE_CRYPTO, -1, -1, -1, () => 'encryption header');
  }

  // bitmaps
  if (img.bitmaps.length && h.bitmaps) {
    inc(h.bitmaps.bitmapDirectoryOffset, h.bitmaps.bitmapDirectorySize, ROLE_BITMAP_DIRECTORY, -1, -1, -1, () => 'bitmap directory');
    for (const bm of img.bitmaps) {
      const label = `bitmap[${bm.index}] "${bm.name}"`;
      inc(bm.bitmapTableOffset, bm.bitmapTableSize * 8, ROLE_BITMAP_TABLE, -1, -1, bm.index, () => `${label} → bitmap table`);
      if (bm.bitmapTableSize === 0) continue;
      const t = (await readTablesPadded(file, [bm.bitmapTableOffset], bm.bitmapTableSize * 8, () => `${label} → bitmap table`)).get(bm.bitmapTableOffset)!;
      for (let i = 0; i < bm.bitmapTableSize; i++) {
        const hi = wordHi(t, i * 8), lo = wordLo(t, i * 8);
        const off = entryOffset(hi, lo);
        // QEMU's check_table_entry: reserved bits, or an offset that is unaligned or carries the all-ones flag
        if ((hi & 0xff000000) !== 0 || (lo & 0x1fe) !== 0 || (off !== 0 && ((lo & 1) !== 0 || off % cs !== 0))) {
          issue({ kind: 'bitmap-table-entry-invalid', hostOffset: bm.bitmapTableOffset + i * 8, structure: `${label} → bitmap table[${i}]`, message: `bitmap table entry ${hex((BigInt(hi) << 32n) | BigInt(lo))} is invalid` });
          continue;
        }
        if (off === 0) continue;
        inc(off, cs, ROLE_BITMAP, i, -1, bm.index, () => `${label} → bitmap table[${i}] → data`);
      }
    }
  }

  // refcount blocks (QEMU's check_refblocks); the raw table is re-read to see reserved bits
  const reftableEntries = reftableBytes / 8;
  const rt = await file.readPadded(h.refcountTableOffset, reftableBytes, 'refcount table');
  for (let i = 0; i < reftableEntries; i++) {
    const hi = wordHi(rt, i * 8), lo = wordLo(rt, i * 8);
    if (hi === 0 && lo === 0) continue;
    const where = h.refcountTableOffset + i * 8;
    const structure = `refcount table[${i}]`;
    if ((lo & 0x1ff) !== 0) {
      issue({ kind: 'reftable-reserved-bits', hostOffset: where, structure, message: `refcount table entry ${i} has reserved bits set`, rebuild: true, reftableIndex: i });
      continue;
    }
    const off = hi * 0x100000000 + lo;
    if (off % cs !== 0) {
      issue({ kind: 'refblock-unaligned', hostOffset: where, structure, message: `refcount block offset ${hex(off)} is not cluster-aligned`, rebuild: true, reftableIndex: i });
      continue;
    }
    const k = off / cs;
    if (k >= nbClusters) {
      issue({ kind: 'refblock-past-eof', hostOffset: where, structure, message: `refcount block at ${hex(off)} lies outside the image (file ends at ${hex(fileSize)})`, reftableIndex: i });
      continue;
    }
    inc(off, cs, ROLE_REFCOUNT_BLOCK, i, -1, -1, () => `${structure} → refcount block`);
    if (refs[k] !== 1) {
      issue({ kind: 'refblock-refcount', hostOffset: off, structure: `${structure} → refcount block`, message: `refcount block at ${hex(off)} is referenced ${refs[k]} times (also used as ${ROLE_NAMES[role[k] & ROLE_MASK]})`, rebuild: true, reftableIndex: i });
    }
  }

  const ownerPath = (k: number): string => {
    if (k < 0 || k >= nbClusters) return 'outside the file';
    const r = role[k] & ROLE_MASK, a = ownerA[k], b = ownerB[k], c = ownerC[k];
    switch (r) {
      case ROLE_FREE: return 'unused';
      case ROLE_HEADER: return 'header';
      case ROLE_L1: return 'L1 table';
      case ROLE_SNAPSHOT_L1: return `${snapLabel(c)}L1 table`;
      case ROLE_L2: case ROLE_SNAPSHOT_L2: return `${snapLabel(c)}L1[${a}] → L2 table`;
      case ROLE_DATA: case ROLE_COMPRESSED: case ROLE_SNAPSHOT_ONLY: return `${snapLabel(c)}L1[${a}] → L2[${hex(b)}]`;
      case ROLE_REFCOUNT_TABLE: return 'refcount table';
      case ROLE_REFCOUNT_BLOCK: return `refcount table[${a}] → refcount block`;
      case ROLE_SNAPSHOT_TABLE: return 'snapshot table';
      case ROLE_BITMAP_DIRECTORY: return 'bitmap directory';
      case ROLE_BITMAP_TABLE: return `bitmap[${c}] "${bitmapNames[c]}" → bitmap table`;
      case ROLE_BITMAP: return `bitmap[${c}] "${bitmapNames[c]}" → bitmap table[${a}] → data`;
      case ROLE_CRYPTO: return 'encryption header';
      default: return ROLE_NAMES[r] ?? 'unknown';
    }
  };

  return {
    clusterSize: cs, clusterBits: cb, fileSize, nbClusters,
    refs: refs.subarray(0, nbClusters), role: role.subarray(0, nbClusters),
    ownerA: ownerA.subarray(0, nbClusters), ownerB: ownerB.subarray(0, nbClusters), ownerC: ownerC.subarray(0, nbClusters),
    issues, issueCount, issueCounts,
    allocatedClusters: allocated, fragmentedClusters: fragmented, compressedClusters: compressed,
    totalClusters: Math.ceil(h.size / cs),
    reftableEntries,
    secondOwner,
    snapshotNames, bitmapNames,
    ownerPath,
  };
}
