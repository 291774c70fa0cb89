/**
 * What the check reports: findings with their severity, the qemu-img-shaped result, the state
 * repair acts on, and the plain-language explanation of every kind of finding.
 */
import type { ExactRefcounts, RefcountArray } from '../qcow2/refcount';
import type { ClusterUsage } from './usage';

export type Severity = 'error' | 'warning' | 'info';

export interface Finding {
  /** Machine-readable kind, e.g. 'leak', 'refcount-too-low', 'copied-flag-mismatch'. */
  kind: string;
  severity: Severity;
  hostOffset?: number;
  /** Where: a structure path like 'L1[3] → L2[0x1f0]'. */
  structure: string;
  /** One sentence: what is wrong. */
  message: string;
  /** One sentence: what it means for the data and what repair would do. */
  explanation: string;
  /** For grouped findings (runs of leaked clusters): how many clusters or entries. */
  count?: number;
}

/** The keys of `qemu-img check --output=json`, plus our findings. Optional keys are absent when 0, as in QEMU. */
export interface CheckResult {
  filename: string;
  format: 'qcow2';
  'check-errors': number;
  'image-end-offset'?: number;
  corruptions?: number;
  leaks?: number;
  'corruptions-fixed'?: number;
  'leaks-fixed'?: number;
  'total-clusters'?: number;
  'allocated-clusters'?: number;
  'fragmented-clusters'?: number;
  'compressed-clusters'?: number;
  findings: Finding[];
}

export interface CheckOptions {
  signal?: AbortSignal;
  onProgress?(done: number, total: number): void;
  /** Findings listed at most (default 1000); the rest are counted in a final 'findings-truncated' finding. */
  maxFindings?: number;
  /**
   * Walk with every cluster's first owner recorded (12 bytes a cluster). By default the check walks
   * without them and walks again with them only when a finding has to name an owner.
   */
  owners?: boolean;
}

/** Everything the check learned, for the result and for repair. */
export interface CheckState {
  usage: ClusterUsage;
  /** Stored refcount per cluster (0..nbClusters-1), as wide as the image's; NaN (in a Float64Array) where the refcount block cannot be read. */
  stored: RefcountArray;
  /** The stored refcounts of 2^53 or more (64-bit refcounts), exact; `stored` holds them rounded. */
  storedExact: ExactRefcounts;
  checkErrors: number;
  corruptions: number;
  leaks: number;
  /** QEMU's "rebuild": a used cluster is counted as free, or a refcount block is unusable. */
  rebuild: boolean;
  highestCluster: number;
  /** Active L1 entries whose COPIED flag disagrees with the L2 table's refcount. */
  copiedL1: { l1Index: number; want: boolean }[];
  /** Active L2 entries whose COPIED flag disagrees with the data cluster's refcount. */
  copiedL2: { l2Offset: number; l2Index: number; l1Index: number; want: boolean }[];
  /** Number of refcount mismatches in each direction (before grouping). */
  leakedClusters: number[];
  lowClusters: number[];
  findings: Finding[];
  findingsDropped: number;
  /** The check stopped before the refcounts, as QEMU's does (an unreadable snapshot table): nothing to repair. */
  incomplete?: boolean;
}

export const EXPLAIN: Record<string, string> = {
  leak: 'Leaked clusters only waste disk space and no data is at risk; repairing leaks lowers their refcounts so QEMU can reuse the space.',
  'refcount-too-low': 'A cluster in use is counted with fewer references than it has users, so QEMU could free and reuse it while it still holds data; `--repair all` raises the refcount to the number of users.',
  'refcount-zero-but-used': 'A cluster in use is counted as free, so QEMU could allocate it for something else and overwrite its contents; `--repair all` rebuilds the refcount structure from the clusters actually in use.',
  'metadata-overlap': 'Two structures claim the same cluster, so writing one of them damages the other; repair corrects the counts but cannot tell which owner\'s contents are right.',
  'double-reference': 'Two entries of the active disk point at the same cluster, so a write through one changes what the other reads; repair corrects the refcount (and the COPIED flags), the guest keeps seeing the same bytes.',
  'copied-flag-mismatch': 'The COPIED flag tells QEMU whether it may write in place; a wrong flag can make it overwrite data a snapshot still shares or copy clusters needlessly; `--repair all` sets the flag from the refcount.',
  'l2-entry-unaligned': 'The entry points into the middle of a cluster, which no valid image does; QEMU refuses to use it, and repair cannot tell where the data really is.',
  'l2-entry-unaligned-zero': 'The entry is a preallocated zero cluster with a misaligned offset; `--repair all` turns it into a plain zero cluster, so the guest still reads zeros.',
  'offset-past-eof': 'The structure points at least one cluster past the end of the file, so what it refers to is lost (reads return zeros or fail); repair cannot bring it back.',
  'l1-reserved-bits': 'Reserved bits are set in an L1 entry, which QEMU treats as corruption; the table it points to may not be what was intended.',
  'l2-reserved-bits': 'Reserved bits are set in an L2 entry, which QEMU treats as corruption; the cluster it maps may not be what was intended.',
  'l2-table-unaligned': 'An L1 entry points at an L2 table that is not on a cluster boundary, so the guest range it covers cannot be read; repair cannot recover that range.',
  'refcount-overflow': 'The cluster has more users than the refcount width can count; QEMU cannot safely share it further — `qemu-img amend -o refcount_bits=…` widens the refcounts.',
  'compressed-copied': 'Compressed clusters are never written in place, so the COPIED flag is meaningless here; the data still reads correctly.',
  'compressed-with-data-file': 'Images with an external data file cannot contain compressed clusters; the cluster cannot be read.',
  'compressed-with-subclusters': 'A compressed cluster must have an all-zero subcluster bitmap; the entry is inconsistent and its data may not read back.',
  'subcluster-bitmap-invalid': 'The subcluster bitmap contradicts itself, so QEMU refuses to read the affected range; repair does not guess the intended state.',
  'snapshot-l1-unaligned': 'The snapshot table entry points at a misaligned L1 table, so that snapshot cannot be used or reverted to.',
  'snapshot-l1-too-large': 'The snapshot table entry claims an impossibly large L1 table, so that snapshot cannot be used.',
  'snapshot-incomplete': 'Version 3 images need the VM state size and disk size in every snapshot table entry; without them QEMU guesses the disk size; `--repair all` rewrites the table with them filled in (the snapshot\'s data is not touched).',
  'snapshot-extra-data-too-large': 'QEMU refuses to open an image whose snapshot entry carries more than 1024 bytes of extra data; `--repair all` cuts it to 1024 bytes and rewrites the table, as `qemu-img check -r all` does.',
  'snapshot-table-overlong': 'QEMU refuses to open an image with more snapshots, or a bigger snapshot table, than it allows; `--repair all` drops the overhanging entries at the end of the table (their clusters become leaks, which it frees).',
  'snapshot-table-unreadable': 'QEMU cannot read this snapshot table, so it cannot open the image and its check stops here; `--repair all` drops or cuts the entries beyond QEMU\'s limits where it can.',
  'backing-chain-broken': 'The image\'s backing file cannot be opened, so the guest cannot be read through this image (QEMU refuses to open it); the image file alone was judged.',
  'snapshots-with-data-file': 'Internal snapshots are not possible with an external data file; the snapshot entries are unusable.',
  'bitmap-table-entry-invalid': 'A persistent bitmap\'s table entry is invalid, so that bitmap\'s contents cannot be trusted (the guest data is not affected).',
  'reftable-reserved-bits': 'The refcount table entry is unusable, so refcounts of the clusters it covers are unknown; `--repair all` rebuilds the refcount structure.',
  'refblock-unaligned': 'The refcount table entry points at a misaligned refcount block, so the refcounts it covers are unknown; `--repair all` rebuilds the refcount structure.',
  'refblock-past-eof': 'A refcount block lies past the end of the file (it was probably truncated), so the refcounts it held are lost; `--repair all` restores it.',
  'refblock-refcount': 'A refcount block shares its cluster with another structure, so updating refcounts would damage that structure; `--repair all` rebuilds the refcount structure elsewhere.',
  'refcount-unreadable': 'The refcount of the cluster cannot be read, so the check could not finish for it.',
  'dirty-bit': 'The image was not closed cleanly while lazy refcounts were on, so refcounts may lag behind; QEMU repairs them the next time it opens the image read-write, and leaks are expected until then.',
  'corrupt-bit': 'QEMU marked the image corrupt and will refuse to open it read-write until it is repaired; `--repair all` clears the bit once no corruption remains.',
  'findings-truncated': 'Only the first findings are listed; the counters include all of them.',
};

