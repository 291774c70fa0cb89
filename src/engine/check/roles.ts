/**
 * What a host cluster is used for, in two grains: the usage walk's role byte (one value per kind
 * of owner, as QEMU's check tells them apart) and the cluster map's role (the owner's kind with the
 * refcount comparison folded in: leaked, conflict). Imports nothing, so the webview bundle can take
 * the map roles from here too.
 */

// ---- usage roles: the low 5 bits of the usage walk's role byte, plus three flag bits ----
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
export const ROLE_MASK = 0x1f;
/**
 * Flag: the first owner belongs to a table of its own (a snapshot's L1 tree, a bitmap), not to the
 * active image or the image as a whole. Kept in the role byte so a walk that records no owners
 * still tells an active image's second claim apart.
 */
export const ROLE_IN_TABLE = 0x20;
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
export function shareGroup(role: number): number {
  switch (role) {
    case ROLE_L2: case ROLE_SNAPSHOT_L2: return 1;
    case ROLE_DATA: case ROLE_COMPRESSED: case ROLE_SNAPSHOT_ONLY: return 2;
    default: return 0; // metadata: never shared
  }
}

/** The cluster map's roles. The order is the wire encoding of cluster map cells. */
export const CLUSTER_ROLES = [
  'free', // refcount 0, nothing points at it
  'header', // cluster 0: header, extensions, backing file name
  'l1', // active L1 table
  'l2', // an L2 table (active or snapshot)
  'refcountTable',
  'refcountBlock',
  'data', // a guest data cluster (standard L2 entry)
  'compressed', // holds (part of) compressed guest data
  'snapshotTable',
  'snapshotL1', // an internal snapshot's L1 table
  'bitmapDirectory',
  'bitmapTable',
  'bitmapData',
  'crypto', // LUKS header (full disk encryption extension)
  'leaked', // refcount > 0 but nothing points at it
  'conflict', // used by more than one structure, or used with refcount 0
  'beyondEnd', // past the end of the file (only in maps of a file that shrank)
  'mixed', // a zoomed-out cell spanning clusters of different roles
] as const;
export type ClusterRole = (typeof CLUSTER_ROLES)[number];

/** Each usage role as the map shows its owner (snapshot L2 tables and snapshot-only data as their kind). */
export const USAGE_CLUSTER_ROLE: readonly ClusterRole[] = [
  'free', 'header', 'l1', 'l2', 'refcountTable', 'refcountBlock', 'snapshotTable',
  'snapshotL1', 'l2', 'data', 'compressed', 'data',
  'bitmapDirectory', 'bitmapTable', 'bitmapData', 'crypto',
];
