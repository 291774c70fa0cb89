/**
 * The image's tables entry by entry, for a structure view: each entry decoded, with the check's
 * own rules (usageL1.ts, usageTables.ts) naming what is wrong with it, and each host cluster's role
 * from the check's state (usage walk and stored refcounts). Reads only the slice of a table asked
 * for, so a view can page through tables of millions of entries.
 */
import type { Qcow2Image } from '../image/image';
import { formatPath, join, step, type StructurePath } from '../path';
import { decodeL2Entry, wordHi, wordLo } from '../qcow2/cluster';
import * as L from '../qcow2/layout';
import { type RefcountArray, refcountAt } from '../qcow2/refcount';
import type { CheckState } from './findings';
import { CLUSTER_ROLES, type ClusterRole, ROLE_CONFLICT, ROLE_MASK, USAGE_CLUSTER_ROLE } from './roles';
import { readStoredRefcounts } from './storedRefcounts';
import { type ClusterUsage, clusterUsage } from './usage';
import type { UsageIssueKind } from './usageCounter';
import { L2_FLAW_KINDS, l1EntryFlaws, l2EntryFlaws } from './usageL1';
import { bitmapEntryFlaws, reftableEntryFlaws } from './usageTables';

/** The table index of the active L1 table; snapshots' tables are numbered by snapshot index. */
export const ACTIVE_L1 = -1;

export interface L1TableInfo {
  offset: number;
  size: number;
  /** The path its entries hang under: empty for the active table, `snapshot[k] "name"` for a snapshot's. */
  owner: StructurePath;
}

export interface L1EntryInfo {
  index: number;
  /** Where the entry is in the file. */
  hostOffset: number;
  l2Offset: number;
  copied: boolean;
  /** The check's rules the entry breaks (empty when sound). */
  flaws: UsageIssueKind[];
}

export interface L2EntryInfo {
  index: number;
  hostOffset: number;
  guestOffset: number;
  kind: 'unallocated' | 'zero' | 'data' | 'compressed';
  /** Data: the host cluster (in the external data file when `inDataFile`); compressed: the compressed bytes; 0 = none. */
  dataOffset: number;
  compressedSize: number;
  /** A preallocated cluster that reads as zero. */
  readsAsZero: boolean;
  inDataFile: boolean;
  /** Extended L2: the subcluster bitmap. */
  subclusters?: bigint;
  flaws: UsageIssueKind[];
}

export interface ReftableEntryInfo { index: number; hostOffset: number; blockOffset: number; flaws: UsageIssueKind[] }
export interface RefcountEntryInfo { cluster: number; hostOffset: number; length: number; refcount: number }
export interface BitmapEntryInfo { index: number; hostOffset: number; dataOffset: number; allOnes: boolean; flaws: UsageIssueKind[] }

export function l1Table(img: Qcow2Image, table: number): L1TableInfo {
  if (table === ACTIVE_L1) return { offset: img.header.l1TableOffset, size: img.l1Size, owner: [] };
  const s = img.snapshots[table];
  if (!s) throw new Error(`no snapshot ${table}`);
  return { offset: s.l1TableOffset, size: s.l1Size, owner: [step('snapshot', table, { label: s.name })] };
}

/** L1 entries [s, e) of a table; the active table is in memory, a snapshot's is read as a slice. */
async function l1Slice(img: Qcow2Image, table: number, s: number, e: number): Promise<Buffer> {
  if (table === ACTIVE_L1) return img.l1.subarray(s * 8, e * 8);
  const t = l1Table(img, table);
  return img.file.read(t.offset + s * 8, (e - s) * 8, formatPath(join(t.owner, step('L1 table'))));
}

export async function l1Entries(img: Qcow2Image, table: number, s: number, e: number): Promise<L1EntryInfo[]> {
  const t = l1Table(img, table), cs = img.clusterSize;
  const slice = await l1Slice(img, table, s, e);
  const out: L1EntryInfo[] = [];
  for (let i = s; i < e; i++) {
    const hi = wordHi(slice, (i - s) * 8), lo = wordLo(slice, (i - s) * 8);
    const ent = img.l1Entry(i - s, slice);
    out.push({ index: i, hostOffset: t.offset + i * 8, l2Offset: ent.l2Offset, copied: ent.copied, flaws: hi === 0 && lo === 0 ? [] : l1EntryFlaws(hi, lo, cs) });
  }
  return out;
}

/** Entries [s, e) of the L2 table under L1 entry `l1Index`; none when the entry maps no table. Throws when the table cannot be read. */
export async function l2Entries(img: Qcow2Image, table: number, l1Index: number, s: number, e: number): Promise<L2EntryInfo[]> {
  const g = img.g, cs = img.clusterSize;
  const t = l1Table(img, table);
  const [l1e] = await l1Entries(img, table, l1Index, l1Index + 1);
  if (!l1e?.l2Offset) return [];
  const l2Offset = l1e.l2Offset;
  img.checkL2Offset(l2Offset, l1Index, formatPath(join(t.owner, step('L1'))));
  const buf = await img.file.read(l2Offset, cs, formatPath(join(t.owner, step('L1', l1Index), step('L2 table'))));
  const out: L2EntryInfo[] = [];
  for (let j = s; j < e; j++) {
    const d = decodeL2Entry(g, buf, j);
    const p = j * g.l2EntrySize;
    const hi = wordHi(buf, p), lo = wordLo(buf, p);
    const bmHi = g.extendedL2 ? wordHi(buf, p + 8) : 0, bmLo = g.extendedL2 ? wordLo(buf, p + 8) : 0;
    const flawBits = hi === 0 && lo === 0 && bmHi === 0 && bmLo === 0 ? 0 : l2EntryFlaws(g, hi, lo, bmHi, bmLo);
    const flaws = [...new Set(L2_FLAW_KINDS.filter(([bit]) => flawBits & bit).map(([, kind]) => kind))];
    const inDataFile = !d.compressed && g.externalData && (d.hostOffset !== 0 || d.copied);
    const kind: L2EntryInfo['kind'] = d.compressed ? 'compressed' : inDataFile || d.hostOffset ? 'data' : d.zeroFlag ? 'zero' : 'unallocated';
    out.push({
      index: j, hostOffset: l2Offset + p, guestOffset: (l1Index * g.l2Size + j) * cs, kind,
      dataOffset: d.hostOffset, compressedSize: d.compressedSize, readsAsZero: kind === 'data' && d.zeroFlag, inDataFile,
      subclusters: d.bitmap, flaws,
    });
  }
  return out;
}

/** Entries of the refcount table up to the last one naming a block. */
export function reftableLength(img: Qcow2Image): number {
  let last = -1;
  for (let i = 0; i < img.refcountTable.length; i++) if (img.refcountTable[i] !== 0) last = i;
  return last + 1;
}

export async function reftableEntries(img: Qcow2Image, s: number, e: number): Promise<ReftableEntryInfo[]> {
  const h = img.header, cs = img.clusterSize;
  // the raw entries: the parsed table drops the reserved bits the check judges
  const raw = await img.file.read(h.refcountTableOffset + s * 8, (e - s) * 8, 'refcount table');
  const fileClusters = Math.ceil(img.file.size / cs);
  const out: ReftableEntryInfo[] = [];
  for (let i = s; i < e; i++) {
    const hi = wordHi(raw, (i - s) * 8), lo = wordLo(raw, (i - s) * 8);
    out.push({ index: i, hostOffset: h.refcountTableOffset + i * 8, blockOffset: img.refcountTable[i], flaws: hi === 0 && lo === 0 ? [] : reftableEntryFlaws(hi, lo, cs, fileClusters) });
  }
  return out;
}

/** Refcounts [s, e) of refcount block `i` (none when the table names no block). */
export async function refcountEntries(img: Qcow2Image, i: number, s: number, e: number): Promise<RefcountEntryInfo[]> {
  const off = img.refcountTable[i];
  if (!off) return [];
  const block = await img.file.read(off, img.clusterSize, formatPath([step('refcount table', i), step('refcount block')]));
  const bits = img.header.refcountBits;
  const out: RefcountEntryInfo[] = [];
  for (let k = s; k < e; k++) {
    out.push({ cluster: i * img.rg.blockEntries + k, hostOffset: off + Math.floor((k * bits) / 8), length: Math.max(1, bits / 8), refcount: refcountAt(block, k, img.rg.order) });
  }
  return out;
}

/** Entries [s, e) of bitmap k's table. */
export async function bitmapEntries(img: Qcow2Image, k: number, s: number, e: number): Promise<BitmapEntryInfo[]> {
  const b = img.bitmaps[k];
  if (!b) return [];
  const buf = await img.file.read(b.bitmapTableOffset + s * 8, (e - s) * 8, formatPath([step('bitmap', k, { label: b.name }), step('bitmap table')]));
  const out: BitmapEntryInfo[] = [];
  for (let i = s; i < e; i++) {
    const hi = wordHi(buf, (i - s) * 8), lo = wordLo(buf, (i - s) * 8);
    const raw = buf.readBigUInt64BE((i - s) * 8);
    out.push({
      index: i, hostOffset: b.bitmapTableOffset + i * 8, dataOffset: Number(raw & L.BME_TABLE_ENTRY_OFFSET_MASK),
      allOnes: (raw & L.BME_TABLE_ENTRY_FLAG_ALL_ONES) !== 0n, flaws: bitmapEntryFlaws(hi, lo, img.clusterSize),
    });
  }
  return out;
}

// ---- cluster roles ----

/** Per host cluster of the file: the map role (CLUSTER_ROLES index) and what it rests on. */
export interface ClusterRoles {
  /** Role shown in a map: leaked and conflict override the owner's role. */
  role: Uint8Array;
  /** The first owner's role, before the refcount comparison. */
  ownerRole: Uint8Array;
  /** References, capped at 255. */
  users: Uint8Array;
  /** Stored refcounts (NaN where unreadable). */
  refcounts: RefcountArray;
  usage: ClusterUsage;
}

const MAP_ROLE = Object.fromEntries(CLUSTER_ROLES.map((r, i) => [r, i])) as Record<ClusterRole, number>;

/**
 * The map's roles of clusters [0, n) from the check's state: a cluster nobody uses with a refcount
 * is leaked; one whose owners may not share it, or whose refcount is below its references, is a
 * conflict.
 */
export function clusterRolesOf(st: Pick<CheckState, 'usage' | 'stored'>, n: number): ClusterRoles {
  const u = st.usage, stored = st.stored;
  const r: ClusterRoles = { role: new Uint8Array(n), ownerRole: new Uint8Array(n), users: new Uint8Array(n), refcounts: stored.subarray(0, n), usage: u };
  for (let c = 0; c < n; c++) {
    const raw = u.role[c];
    const own = MAP_ROLE[USAGE_CLUSTER_ROLE[raw & ROLE_MASK]] ?? MAP_ROLE.conflict;
    r.ownerRole[c] = own;
    r.users[c] = Math.min(255, u.refs[c]);
    const refcount = stored[c];
    if (raw & ROLE_CONFLICT) r.role[c] = MAP_ROLE.conflict;
    else if (u.refs[c] === 0) r.role[c] = refcount > 0 ? MAP_ROLE.leaked : MAP_ROLE.free;
    else if (!(refcount >= u.refs[c])) r.role[c] = MAP_ROLE.conflict; // below its references (or unreadable): corruption
    else if (refcount > u.refs[c]) r.role[c] = MAP_ROLE.leaked;
    else r.role[c] = own;
  }
  return r;
}

/** The roles of the file's clusters: the check's usage walk and stored refcounts, without the comparison's findings. */
export async function clusterRoles(img: Qcow2Image): Promise<ClusterRoles> {
  const n = Math.ceil(img.file.size / img.clusterSize);
  const usage = await clusterUsage(img);
  const stored = await readStoredRefcounts(img, n);
  return clusterRolesOf({ usage, stored }, n);
}

export interface ClusterOwnerInfo {
  role: ClusterRole;
  /** The owner's structure path, as the check's findings print it. */
  structure: string;
  /** The owner's table: ACTIVE_L1 or a snapshot index (L1/L2 owners), a bitmap index (bitmap owners). */
  table: number;
  /** Index in that table: L1 index, refcount table index, bitmap table index. */
  a: number;
  /** L2 index for data clusters. */
  b: number;
  snapshot?: string;
  guestOffset?: number;
}

/** The first owner of host cluster c; undefined when nothing uses it. */
export function clusterOwner(img: Qcow2Image, r: ClusterRoles, c: number): ClusterOwnerInfo | undefined {
  if (r.users[c] === 0) return undefined;
  const u = r.usage;
  const role = CLUSTER_ROLES[r.ownerRole[c]];
  const table = u.ownerC[c], a = u.ownerA[c], b = u.ownerB[c];
  const inSnapshot = table >= 0 && (role === 'l2' || role === 'data' || role === 'compressed' || role === 'snapshotL1');
  const perL2 = img.g.l2Size;
  const guestOffset = role === 'l2' ? a * perL2 * img.clusterSize : role === 'data' || role === 'compressed' ? (a * perL2 + b) * img.clusterSize : undefined;
  return { role, structure: u.ownerPath(c), table, a, b, snapshot: inSnapshot ? img.snapshots[table]?.name : undefined, guestOffset };
}

