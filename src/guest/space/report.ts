/**
 * "Where did the space go": every byte of the image file in one part — qcow2 metadata; data the
 * active L1 maps (in use by guest files, outside browsable file systems, in guest free space, all
 * zero); data only snapshots map (per snapshot, and what deleting it would free); leaked clusters;
 * unused clusters and the tail — each with what `compact` and `sparsify` would reclaim from it.
 *
 * Host clusters are classified by the check's usage walk (clusterUsage: the role and first owner
 * of every cluster) and the stored refcounts (leaks); data clusters by who maps them and where
 * (references.ts over the compaction's own tables) against the guest's free-space map
 * (freeMap.ts). The reclaim figures come from forecasts of both compactions (the compaction's own
 * layout code, compact/forecast.ts): the output's size is known exactly, every data cluster's fate
 * too, so each part's figure is its bytes minus what the output keeps of it, and the metadata part
 * takes the rest — the parts add up to the file size and the figures to the forecast savings.
 * Only metadata is read, except with `zeroScan` (zeros.ts).
 */
import { pacer } from '../../engine/cancel';
import { clusterUsage, ROLE_COMPRESSED, ROLE_DATA, ROLE_FREE, ROLE_IN_TABLE, ROLE_MASK, ROLE_NAMES, ROLE_SNAPSHOT_ONLY } from '../../engine/check/usage';
import { readStoredRefcounts } from '../../engine/check/storedRefcounts';
import type { KeyLookup } from '../../engine/image/encryption';
import { Qcow2Image } from '../../engine/image/image';
import { ZERO } from '../../engine/ops/compact/copy';
import { type Forecast, forecastCompaction } from '../../engine/ops/compact/forecast';
import { checkCompactable, type DropSet, readSourceTables, type Settings } from '../../engine/ops/compact/plan';
import { CRYPT_LUKS } from '../../engine/qcow2/layout';
import { guestFreeMap } from '../sparsify';
import type { FreeMap } from './freeMap';
import { AT_FREE, AT_INSIDE, AT_USED, AT_ZERO_FLAG, findReferences, OWNER_SEVERAL, sparsifyDrop } from './references';
import { findZeroClusters } from './zeros';

export interface SpacePart {
  name: string;
  bytes: number;
  /** Bytes `compact -o` would reclaim of this part (absent for metadata's sub-parts: the new metadata is laid out as a whole). */
  compact?: number;
  sparsify?: number;
  parts?: SpacePart[];
  /** Snapshot sub-parts: the snapshot's name and id, and what deleting it would free (its exclusive data, L1 and L2 tables). */
  snapshot?: string;
  id?: string;
  deleteFrees?: number;
}

export interface SpaceReport {
  image: string;
  fileSize: number;
  /** What the host file system has allocated for the file (st_blocks × 512). */
  allocatedBytes: number;
  clusterSize: number;
  virtualSize: number;
  /** Whether data clusters were read to find all-zero ones. */
  zeroScan: boolean;
  swap: boolean;
  parts: SpacePart[];
  reclaim: { compact: number; sparsify: number };
  guest: { freeBytes: number; fileSystems: FreeMap['sources'] };
  /** Why a figure is 0 or partial (compact or sparsify would refuse; an unreadable guest; no zero scan). */
  notes: string[];
  /** Data bytes read (the zero scan). */
  dataBytesRead: number;
  /** Guest bytes read for the free-space map (file-system metadata only). */
  guestBytesRead: number;
}

export interface SpaceOptions {
  /** Read every data cluster to find all-zero ones (what compact drops); otherwise only host holes count. */
  zeroScan?: boolean;
  /** Count swap partitions as free space (as `sparsify --swap`). */
  swap?: boolean;
  /**
   * Passphrases of the chain's encrypted layers (the CLI's --image-opts secrets, the editor's
   * keyring). Without the top layer's, an encrypted image's guest is unreadable: no guest split,
   * and compact and sparsify (which need it too) get figures of 0, with a note saying so.
   */
  keys?: KeyLookup;
  signal?: AbortSignal;
}

/** What to tell the user of an encrypted image opened without its passphrase. */
export const LOCKED_NOTE = 'compact would refuse: the image is encrypted (LUKS) and its passphrase was not given (--object secret,id=ID,file=PATH --image-opts driver=qcow2,file.filename=PATH,encrypt.key-secret=ID); without it the guest cannot be read either, so there is no guest split and sparsify would refuse too';

const NO_DROP: DropSet = { data: new Set(), compressed: new Set() };

/** A part being summed: bytes, and bytes each output keeps of it. */
class Acc {
  bytes = 0; keptC = 0; keptS = 0;
  add(bytes: number, keptC: number, keptS: number): void { this.bytes += bytes; this.keptC += keptC; this.keptS += keptS; }
  part(name: string, c: boolean, s: boolean, extra: Partial<SpacePart> = {}): SpacePart {
    return { name, bytes: this.bytes, compact: c ? this.bytes - this.keptC : 0, sparsify: s ? this.bytes - this.keptS : 0, ...extra };
  }
}

export async function spaceReport(path: string, opts: SpaceOptions = {}): Promise<SpaceReport> {
  // with keys, a wrong passphrase fails the open (the engine's error names the image, never the passphrase)
  const img = await Qcow2Image.open(path, { openDataFile: false, keys: opts.keys });
  try {
    return await report(img, opts);
  } finally {
    await img.close();
  }
}

/** The report over an image already open (the editor's, with its backing chain and key). */
export function spaceReportOf(img: Qcow2Image, opts: SpaceOptions = {}): Promise<SpaceReport> {
  return report(img, opts);
}

async function report(img: Qcow2Image, opts: SpaceOptions): Promise<SpaceReport> {
  const cs = img.clusterSize, F = img.file.size;
  const notes: string[] = [];
  const st = await img.file.handle.stat();

  // what each compaction would do
  let settings: Settings | null = null;
  const locked = img.encrypted && img.cipher === null;
  try {
    settings = checkCompactable(img, {});
    // compaction's encryption refusals (compact/encrypted.ts): legacy AES, or no passphrase
    if (img.encrypted && img.header.cryptMethod !== CRYPT_LUKS) { settings = null; notes.push('compact would refuse: legacy AES images are not compacted; convert it to a LUKS image first'); }
  } catch (e) { notes.push(`compact would refuse: ${(e as Error).message}`); }
  if (locked) { settings = null; notes.push(LOCKED_NOTE); }
  const tick = pacer(opts.signal, img.path, 'space');
  // the L2 tables are not kept (a 1 TiB disk's are 256 MiB): each pass below reads them again, a window at a time
  const tables = await readSourceTables(img, false, opts.signal);
  await tick();
  let free: FreeMap | null = null;
  let sparsifyOk = settings !== null;
  if (locked) sparsifyOk = false;
  else {
    try {
      free = await guestFreeMap(img, { swap: opts.swap, refuseDirty: false });
      notes.push(...free.skipped);
      if (free.dirty.length) { sparsifyOk = false; notes.push(`sparsify would refuse: ${free.dirty.join('; ')}`); }
    } catch (e) {
      sparsifyOk = false;
      notes.push(`the guest could not be read, so its free space is unknown: ${(e as Error).message}`);
    }
  }
  if (settings && !settings.detectZero) { sparsifyOk = false; notes.push('sparsify would refuse: this image cannot record zero clusters (a version 2 overlay, or extended L2 entries)'); }
  await tick();
  const refs = await findReferences(img, tables, free, opts.signal);
  await tick();
  const zs = await findZeroClusters(img, tables, opts.zeroScan ?? false, opts.signal);
  await tick();
  if (!opts.zeroScan) notes.push(img.encrypted
    ? 'no zero scan: all-zero data clusters of an encrypted image are counted only where the L2 entry has the zero flag (--zero-scan reads and decrypts the data clusters)'
    : 'no zero scan: all-zero data clusters are counted only where the host file has holes or a zero flag (--zero-scan reads the data clusters)');
  const drop = sparsifyOk ? sparsifyDrop(tables, refs, cs) : NO_DROP;
  const forecast = async (d: DropSet): Promise<Forecast | null> =>
    settings ? forecastCompaction({ img, tables, settings, zero: zs.zero, drop: d, compressedLength: zs.compressedLength, signal: opts.signal }) : null;
  await tick();
  const fc = await forecast(NO_DROP);
  await tick();
  const fsp = sparsifyOk ? await forecast(drop) : null;
  await tick();

  // the usage walk: every host cluster's role; the stored refcounts, for leaks
  const usage = await clusterUsage(img, { signal: opts.signal, owners: false });
  await tick();
  const fileClusters = Math.ceil(F / cs);
  const stored = await readStoredRefcounts(img, fileClusters);
  const keptData = (f: Forecast | null, s: number): number => {
    if (!f) return cs;
    const d = f.placed.data.get(s);
    return d === undefined || d === ZERO ? 0 : cs;
  };
  // compressed clusters, by the host cluster they start in
  const compByCluster = new Map<number, { keptC: number; keptS: number; free: boolean; owner: number }>();
  for (const [off, c] of refs.compressed) {
    const k = Math.floor(off / cs);
    const e = compByCluster.get(k) ?? { keptC: 0, keptS: 0, free: true, owner: c.owner };
    const len = (f: Forecast | null) => {
      const d = f?.placed.compressed.get(off);
      return !f ? c.bound : d && d.kind === 'compressed' ? d.len : 0;
    };
    e.keptC += len(fc); e.keptS += len(fsp);
    e.free &&= c.owner === 0 && c.flags === AT_FREE;
    if (e.owner !== c.owner) e.owner = OWNER_SEVERAL;
    compByCluster.set(k, e);
  }

  const meta = new Map<string, Acc>();
  const act = { used: new Acc(), outside: new Acc(), free: new Acc(), zero: new Acc() };
  const snaps = img.snapshots.map(() => new Acc());
  const snapShared = new Acc();
  const leaked = new Acc(), unused = new Acc(), tail = new Acc();
  let lastUsed = -1;
  for (let k = 0; k < fileClusters; k++) if ((usage.role[k] & ROLE_MASK) !== ROLE_FREE || stored[k] !== 0) lastUsed = k;
  for (let k = 0; k < fileClusters; k++) {
    if ((k & 0xffff) === 0) await tick();
    const bytes = Math.min(cs, F - k * cs);
    const role = usage.role[k] & ROLE_MASK;
    if (role === ROLE_FREE) {
      (stored[k] !== 0 ? leaked : k > lastUsed ? tail : unused).add(bytes, 0, 0);
      continue;
    }
    if (role !== ROLE_DATA && role !== ROLE_COMPRESSED && role !== ROLE_SNAPSHOT_ONLY) {
      const name = ROLE_NAMES[role];
      if (!meta.has(name)) meta.set(name, new Acc());
      meta.get(name)!.add(bytes, 0, 0);
      continue;
    }
    const s = k * cs;
    let kc: number, ks: number, owner: number, where: keyof typeof act;
    if (role === ROLE_COMPRESSED) {
      const e = compByCluster.get(k);
      kc = e?.keptC ?? 0; ks = e?.keptS ?? 0; owner = e?.owner ?? OWNER_SEVERAL;
      where = e?.free ? 'free' : 'used';
    } else {
      kc = keptData(fc, s); ks = keptData(fsp, s); owner = refs.owner[k];
      const a = refs.active[k];
      const zero = zs.zero.has(s) || ((a & AT_ZERO_FLAG) !== 0 && !tables.data.has(s));
      where = (a & AT_FREE) && !(a & AT_USED) ? 'free' : zero ? 'zero' : (a & AT_INSIDE) || !free ? 'used' : 'outside';
    }
    if (!(usage.role[k] & ROLE_IN_TABLE)) act[where].add(bytes, kc, ks);
    else (owner >= 1 ? snaps[owner - 1] : snapShared).add(bytes, kc, ks);
  }

  // what deleting each snapshot frees: its exclusive data, its L1 table, the L2 tables only it reaches
  const deleteFrees = img.snapshots.map((sn, i) => snaps[i].bytes + Math.ceil((sn.l1Size * 8) / cs) * cs);
  for (const [, t] of refs.l2Owner) if (t >= 1) deleteFrees[t - 1] += cs;

  const c = fc !== null, sp = fsp !== null;
  const sum = (accs: Acc[]) => { const a = new Acc(); for (const x of accs) a.add(x.bytes, x.keptC, x.keptS); return a; };
  const activeAcc = sum(Object.values(act));
  const snapAcc = sum([...snaps, snapShared]);
  const metaAcc = sum([...meta.values()]);
  // the output's metadata (header, tables, refcounts, padding) is what it holds besides kept data
  const dataKeptC = activeAcc.keptC + snapAcc.keptC, dataKeptS = activeAcc.keptS + snapAcc.keptS;
  metaAcc.keptC = fc ? fc.bytesAfter - dataKeptC : metaAcc.bytes;
  metaAcc.keptS = fsp ? fsp.bytesAfter - dataKeptS : metaAcc.bytes;
  const holes = sum([unused, tail]);
  const parts: SpacePart[] = [
    { ...metaAcc.part('metadata', c, sp), parts: [...meta].map(([name, a]) => ({ name, bytes: a.bytes })) },
    { ...activeAcc.part('active', c, sp), parts: [
      act.used.part('in use by files', c, sp), act.outside.part('outside browsable file systems', c, sp),
      act.free.part('guest free space', c, sp), act.zero.part('all zero', c, sp),
    ] },
    { ...snapAcc.part('snapshots', c, sp), parts: [
      ...img.snapshots.map((sn, i) => snaps[i].part(`snapshot "${sn.name}"`, c, sp, { snapshot: sn.name, id: sn.id, deleteFrees: deleteFrees[i] })),
      ...(img.snapshots.length > 1 || snapShared.bytes ? [snapShared.part('shared by several snapshots', c, sp)] : []),
    ] },
    leaked.part('leaked', c, sp),
    { ...holes.part('holes', c, sp), parts: [unused.part('unused clusters', c, sp), tail.part('tail', c, sp)] },
  ];
  return {
    image: img.path, fileSize: F, allocatedBytes: st.blocks * 512, clusterSize: cs, virtualSize: img.virtualSize,
    zeroScan: opts.zeroScan ?? false, swap: opts.swap ?? false,
    parts,
    reclaim: { compact: fc ? F - fc.bytesAfter : 0, sparsify: fsp ? F - fsp.bytesAfter : 0 },
    guest: { freeBytes: free?.freeBytes ?? 0, fileSystems: free?.sources ?? [] },
    notes,
    dataBytesRead: zs.bytesRead,
    guestBytesRead: free?.bytesRead ?? 0,
  };
}
