/**
 * Cluster usage: who uses each host cluster of the image file, and how many references each one
 * should have. This is the first half of QEMU's check (block/qcow2-refcount.c,
 * calculate_refcounts): walk every structure that owns clusters in the same order QEMU does —
 * header cluster, active L1 and its L2 tables and data, each snapshot's L1/L2/data, the snapshot
 * table, the refcount table, the LUKS header, the bitmap directory/tables/data, then the refcount
 * blocks — counting one reference per use. The check compares these counts with the stored ones;
 * the editor's cluster map paints the roles.
 *
 * The state lives in UsageCounter (usageCounter.ts); the scans of each table are beside it
 * (usageL1.ts: check_refcounts_l1/_l2, usageTables.ts: snapshots, bitmaps, refcount blocks).
 * Reads beyond the end of the file return zeros, as QEMU's block layer does, so a truncated image
 * is walked (and judged) the way `qemu-img check` judges it.
 */
import type { Qcow2Image } from '../image/image';
import { formatPath, join, step, type StructurePath } from '../path';
import {
  ROLE_BITMAP, ROLE_BITMAP_DIRECTORY, ROLE_BITMAP_TABLE, ROLE_COMPRESSED, ROLE_CRYPTO, ROLE_DATA, ROLE_FREE, ROLE_HEADER, ROLE_L1, ROLE_L2, ROLE_MASK,
  ROLE_NAMES, ROLE_REFCOUNT_BLOCK, ROLE_REFCOUNT_TABLE, ROLE_SNAPSHOT_L1, ROLE_SNAPSHOT_L2, ROLE_SNAPSHOT_ONLY, ROLE_SNAPSHOT_TABLE,
} from './roles';
import { NO_OWNER, type RefCounts, UsageCounter, type UsageIssue, type UsageIssueKind } from './usageCounter';
import { type ActiveL2Listener, checkRefcountsL1 } from './usageL1';
import { checkBitmapsRefcounts, checkRefblocks, checkSnapshotsRefcounts } from './usageTables';

export * from './roles';
export { MAX_STORED_ISSUES, MAX_USAGE_CLUSTERS, type RefCounts, type UsageIssue, type UsageIssueKind } from './usageCounter';

export interface ClusterUsage {
  clusterSize: number;
  clusterBits: number;
  fileSize: number;
  /** Host clusters covered: the file's clusters, plus one if a structure ends in a partial cluster past EOF. */
  nbClusters: number;
  /** Expected reference count per host cluster (as wide as the image's refcounts). */
  refs: RefCounts;
  /** Role per host cluster (ROLE_*), with ROLE_SHARED / ROLE_CONFLICT / ROLE_IN_TABLE flags. */
  role: Uint8Array;
  /** Whether ownerA/B/C and ownerPath are there (ClusterUsageOptions.owners); without them the arrays are empty. */
  owners: boolean;
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
  /** The structure path of the first owner of `cluster`, e.g. `L1[3] → L2[0x1f0]` (throws NoOwnersError without owners). */
  ownerPath(cluster: number): string;
}

export interface ClusterUsageOptions {
  signal?: AbortSignal;
  /** Called with each L2 table of the active L1 as it is walked (lets the check avoid a second read). */
  onActiveL2?: ActiveL2Listener;
  /** Record each cluster's first owner (12 bytes a cluster more; default true). */
  owners?: boolean;
}

/** ownerPath of a walk made without owners: the caller walks again with them. */
export class NoOwnersError extends Error {
  constructor() { super('the cluster usage was walked without owners'); }
}

/** QEMU's calculate_refcounts: every structure's clusters, in QEMU's order. */
export async function clusterUsage(img: Qcow2Image, opts: ClusterUsageOptions = {}): Promise<ClusterUsage> {
  const h = img.header;
  const u = new UsageCounter(img, opts.owners ?? true);
  const cs = u.clusterSize;
  const none = NO_OWNER;
  // header cluster (header, extensions and backing file name all live in cluster 0)
  u.inc(0, cs, ROLE_HEADER, none, none, none, () => 'header');
  await checkRefcountsL1(u, img.l1, h.l1TableOffset, h.l1Size, none, opts.signal, opts.onActiveL2);
  await checkSnapshotsRefcounts(u, opts.signal);
  u.inc(h.snapshotsOffset, img.snapshotTable.size, ROLE_SNAPSHOT_TABLE, none, none, none, () => 'snapshot table');
  const reftableBytes = h.refcountTableClusters * cs;
  u.inc(h.refcountTableOffset, reftableBytes, ROLE_REFCOUNT_TABLE, none, none, none, () => 'refcount table');
  if (h.crypto && h.crypto.length > 0) {
    u.inc(h.crypto.offset, h.crypto.length, ROLE_CRYPTO, none, none, none, () => 'encryption header');
  }
  await checkBitmapsRefcounts(u);
  await checkRefblocks(u);
  return usageResult(u, Math.ceil(h.size / cs), reftableBytes / 8);
}

function usageResult(u: UsageCounter, totalClusters: number, reftableEntries: number): ClusterUsage {
  const nb = u.nbClusters;
  const trimmed = {
    refs: u.refs.subarray(0, nb), role: u.role.subarray(0, nb),
    ownerA: u.ownerA.subarray(0, nb), ownerB: u.ownerB.subarray(0, nb), ownerC: u.ownerC.subarray(0, nb),
  };
  return {
    clusterSize: u.clusterSize, clusterBits: u.clusterBits, fileSize: u.fileSize, nbClusters: nb,
    ...trimmed, owners: u.owners,
    issues: u.issues, issueCount: u.issueCount, issueCounts: u.issueCounts,
    allocatedClusters: u.allocated, fragmentedClusters: u.fragmented, compressedClusters: u.compressed,
    totalClusters, reftableEntries,
    secondOwner: u.secondOwner,
    snapshotNames: u.snapshotNames, bitmapNames: u.bitmapNames,
    ownerPath: k => {
      if (k < 0 || k >= nb) return 'outside the file';
      if ((trimmed.role[k] & ROLE_MASK) === ROLE_FREE) return 'unused';
      if (!u.owners) throw new NoOwnersError();
      const p = ownerSteps(u, k);
      return p ? formatPath(p) : ROLE_NAMES[trimmed.role[k] & ROLE_MASK] ?? 'unknown';
    },
  };
}

/** The first owner of cluster k as a structure path; undefined for a role without one. */
function ownerSteps(u: UsageCounter, k: number): StructurePath | undefined {
  const r = u.role[k] & ROLE_MASK, a = u.ownerA[k], b = u.ownerB[k], c = u.ownerC[k];
  switch (r) {
    case ROLE_FREE: return undefined;
    case ROLE_HEADER: return [step('header')];
    case ROLE_L1: return [step('L1 table')];
    case ROLE_SNAPSHOT_L1: return join(u.snapshotPath(c), step('L1 table'));
    case ROLE_L2: case ROLE_SNAPSHOT_L2: return join(u.snapshotPath(c), step('L1', a), step('L2 table'));
    case ROLE_DATA: case ROLE_COMPRESSED: case ROLE_SNAPSHOT_ONLY: return join(u.snapshotPath(c), step('L1', a), step('L2', b));
    case ROLE_REFCOUNT_TABLE: return [step('refcount table')];
    case ROLE_REFCOUNT_BLOCK: return [step('refcount table', a), step('refcount block')];
    case ROLE_SNAPSHOT_TABLE: return [step('snapshot table')];
    case ROLE_BITMAP_DIRECTORY: return [step('bitmap directory')];
    case ROLE_BITMAP_TABLE: return join(u.bitmapPath(c), step('bitmap table'));
    case ROLE_BITMAP: return join(u.bitmapPath(c), step('bitmap table', a), step('data'));
    case ROLE_CRYPTO: return [step('encryption header')];
    default: return undefined;
  }
}
