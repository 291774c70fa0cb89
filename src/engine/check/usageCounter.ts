/**
 * The usage walk's state (QEMU's in-memory refcount table of qcow2_check_refcounts, plus who owns
 * each cluster): one expected count (as wide as the image's refcounts, at most 32 bits) and a role
 * byte per host cluster and, when the caller asks for them, three integers naming the first owner:
 * 3 bytes a cluster for a 16-bit image without owners, 15 with them. The check walks without owners
 * and walks again with them only when a finding has to name one (check.ts); the editor's map keeps
 * them. The per-table scans (usageL1.ts, usageTables.ts) count into it; usage.ts runs them in
 * QEMU's order.
 */
import { hex, Qcow2Error } from '../errors';
import type { Qcow2Image } from '../image/image';
import { join, step, type StructurePath } from '../path';
import { maxRefcount } from '../qcow2/refcount';
import type { TableWindow } from './paddedReads';
import { ROLE_CONFLICT, ROLE_IN_TABLE, ROLE_MASK, ROLE_NAMES, ROLE_SHARED, shareGroup } from './roles';

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

export const MAX_STORED_ISSUES = 10000;
/** Up to 17 bytes are kept per host cluster; beyond 2^27 clusters (8 TiB of 64 KiB clusters) we refuse rather than exhaust memory. */
export const MAX_USAGE_CLUSTERS = 2 ** 27;

/** An owner index meaning "the active image" (no snapshot) or "none". */
export const NO_OWNER = -1;

/** Expected reference counts, one per host cluster, as wide as the image's refcounts need (capped at 32 bits). */
export type RefCounts = Uint8Array | Uint16Array | Uint32Array;

const NO_OWNERS = new Int32Array(0);

export class UsageCounter {
  readonly clusterSize: number;
  readonly clusterBits: number;
  readonly fileSize: number;
  /** The highest count the image's refcount width holds (capped to the Uint32Array's range). */
  readonly refMax: number;
  readonly refs: RefCounts;
  readonly role: Uint8Array;
  /** Whether the first owners are recorded (ownerA/B/C); without them the arrays are empty. */
  readonly owners: boolean;
  /** First owner: L1 index / refcount table index / bitmap table index (-1 = none). */
  readonly ownerA: Int32Array;
  /** First owner: L2 index (-1 = none). */
  readonly ownerB: Int32Array;
  /** First owner: snapshot index or bitmap index (-1 = the active image / none). */
  readonly ownerC: Int32Array;
  /** Clusters covered: the file's, plus one when a structure ends in a partial cluster past EOF. */
  nbClusters: number;
  readonly issues: UsageIssue[] = [];
  issueCount = 0;
  readonly issueCounts = new Map<UsageIssueKind, number>();
  /** The second owner's path of clusters owners share that must not (capped at MAX_STORED_ISSUES). */
  readonly secondOwner = new Map<number, string>();
  /** QEMU's CHECK_FRAG_INFO over the active L1. */
  allocated = 0;
  fragmented = 0;
  compressed = 0;
  readonly snapshotNames: string[];
  readonly bitmapNames: string[];
  /** The one window the L1 walks read their L2 tables through (usageL1.ts), made on first use. */
  l2Window?: TableWindow;

  constructor(readonly img: Qcow2Image, owners = true) {
    const cs = img.g.clusterSize;
    this.clusterSize = cs;
    this.clusterBits = img.g.clusterBits;
    // QEMU measures the file in whole 512-byte sectors (bdrv_getlength), so a structure reaching into
    // the last partial sector is inside the file
    this.fileSize = Math.ceil(img.file.size / 512) * 512;
    const fileClusters = Math.ceil(this.fileSize / cs);
    if (fileClusters > MAX_USAGE_CLUSTERS) {
      throw new Qcow2Error(img.path, 'file', undefined, `${fileClusters} host clusters are more than the ${MAX_USAGE_CLUSTERS} the cluster usage map can hold in memory`, 'unsupported');
    }
    // a structure may end less than one cluster past EOF (QEMU allows that), so one spare entry
    const cap = fileClusters + 1;
    // claim() never counts past refMax, so the count fits the image's own refcount width
    this.refMax = Math.min(maxRefcount(img.header.refcountOrder), 0xffffffff);
    this.refs = this.refMax <= 0xff ? new Uint8Array(cap) : this.refMax <= 0xffff ? new Uint16Array(cap) : new Uint32Array(cap);
    this.role = new Uint8Array(cap);
    this.owners = owners;
    this.ownerA = owners ? new Int32Array(cap).fill(NO_OWNER) : NO_OWNERS;
    this.ownerB = owners ? new Int32Array(cap).fill(NO_OWNER) : NO_OWNERS;
    this.ownerC = owners ? new Int32Array(cap).fill(NO_OWNER) : NO_OWNERS;
    this.nbClusters = fileClusters;
    this.snapshotNames = img.snapshots.map(s => s.name);
    this.bitmapNames = img.bitmaps.map(b => b.name);
  }

  issue(i: UsageIssue): void {
    this.issueCount++;
    this.issueCounts.set(i.kind, (this.issueCounts.get(i.kind) ?? 0) + 1);
    if (this.issues.length < MAX_STORED_ISSUES) this.issues.push(i);
  }

  /** One more reference to cluster k by an owner of role r named (a, b, c); `what` is its path, built only when needed. */
  claim(k: number, r: number, a: number, b: number, c: number, what: () => string): void {
    const n = this.refs[k];
    if (n >= this.refMax) {
      this.issue({ kind: 'refcount-overflow', hostOffset: k * this.clusterSize, structure: what(), message: `cluster at ${hex(k * this.clusterSize)} has more references than ${this.img.header.refcountBits}-bit refcounts can count` });
      return;
    }
    this.refs[k] = n + 1;
    if (n === 0) {
      this.role[k] = c < 0 ? r : r | ROLE_IN_TABLE;
      if (this.owners) { this.ownerA[k] = a; this.ownerB[k] = b; this.ownerC[k] = c; }
    } else {
      const g0 = shareGroup(this.role[k] & ROLE_MASK);
      this.role[k] |= ROLE_SHARED;
      const conflict = g0 === 0 || g0 !== shareGroup(r);
      if (conflict) this.role[k] |= ROLE_CONFLICT;
      // two references from the active image's own tables are never legitimate either
      if ((conflict || (c < 0 && !(this.role[k] & ROLE_IN_TABLE))) && !this.secondOwner.has(k) && this.secondOwner.size < MAX_STORED_ISSUES) this.secondOwner.set(k, what());
    }
    if (k >= this.nbClusters) this.nbClusters = k + 1;
  }

  /** QEMU's qcow2_inc_refcounts_imrt: one reference for each cluster of [offset, offset+size). */
  inc(offset: number, size: number, r: number, a: number, b: number, c: number, what: () => string): void {
    if (size <= 0) return;
    const cs = this.clusterSize;
    if (offset + size - this.fileSize >= cs) {
      this.issue({ kind: 'offset-past-eof', hostOffset: offset, structure: what(), message: `${ROLE_NAMES[r]} at ${hex(offset)} (${size} bytes) lies past the end of the file (${hex(this.fileSize)})` });
      return;
    }
    const first = Math.floor(offset / cs), last = Math.floor((offset + size - 1) / cs);
    for (let k = first; k <= last; k++) this.claim(k, r, a, b, c, what);
  }

  /** The path of snapshot s (empty for the active image), for paths under its tables. */
  snapshotPath(s: number): StructurePath {
    return s < 0 ? [] : [step('snapshot', s, { label: this.snapshotNames[s] })];
  }

  /** `bitmap[i] "name"`. */
  bitmapPath(i: number): StructurePath {
    return join(step('bitmap', i, { label: this.bitmapNames[i] }));
  }
}
