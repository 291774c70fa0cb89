/**
 * `qemu-img amend -o compat=…,lazy_refcounts=…,refcount_bits=…` in place, as QEMU 7.2's
 * qcow2_amend_options: the change is one rewrite of the header cluster (qcow2_update_header's
 * layout: fields, extensions in QEMU's order, the feature table for version 3 above 4 KiB
 * clusters, the backing file name), written whole and synced — before it the old image, after it
 * the new one. What needs more than the header is refused, with QEMU's message where QEMU refuses
 * too, and "not supported yet" where QEMU would rewrite clusters: a downgrade to compat=0.10 of an
 * overlay with snapshots and zero clusters, images with persistent bitmaps (QEMU rewrites their
 * directory on every read-write open).
 * A downgrade expands the zero clusters as QEMU's qcow2_expand_zero_clusters does. Without a
 * backing file a plain zero entry becomes unallocated (it reads zeros either way), a preallocated
 * one keeps its cluster, whose bytes are zeroed on disk, and loses the flag — unless a snapshot
 * shares the cluster: then it becomes unallocated too (QEMU zeroes it, under the snapshot). Write
 * order: (1) the preallocated zero clusters' bytes zeroed, sync; (2) each changed L2 table
 * rewritten whole, sync — a v3 image without zero flags, same guest content; (3) the references
 * let go of dropped, sync; (4) a new refcount width's structures, if asked, then the header. In an overlay every zero entry becomes a data cluster
 * of zeros (the cluster writer's order: data, refcounts, L2 tables, each synced), then (4).
 * A refcount width change (refcount_bits) first writes new refcount structures after the end of
 * the file and syncs them (amendRefcount.ts); the header switch to them is the same one write.
 */
import { Qcow2Error } from '../errors';
import { Qcow2Image } from '../image/image';
import { entryOffset, hasZeroFlag, isCompressed, putOffset, wordHi, wordLo } from '../qcow2/cluster';
import { RefcountWriter, writeAt } from './refcountWrite';
import * as L from '../qcow2/layout';
import { encodeHeader } from './create/header';
import { FileDisk } from './create/disk';
import { OptionError, parseBool, type OptionEntry } from './options';
import { assertNotLocked, assertWritable } from './writable';
import { readMany } from '../io/reader';
import { Qcow2ClusterWriter } from './commit/clusterWrite';
import { parseRefcountOrder, writeRefcountsOfOrder, type NewRefcounts } from './amendRefcount';

const KNOWN = new Set([L.EXT_BACKING_FORMAT, L.EXT_DATA_FILE, L.EXT_FEATURE_TABLE, L.EXT_BITMAPS, L.EXT_CRYPTO]);

export async function amendQcow2(path: string, entries: readonly OptionEntry[]): Promise<void> {
  assertNotLocked(path);
  let header: Buffer | undefined;
  const plan = await withImage(path, async img => {
    const p = await planAmend(img, entries);
    if (!p.zeros.tables.length) header = await headerOf(path, img, p);
    return p;
  });
  if (!header) {
    // the zero clusters expanded first, then the header from what the expansion left: the
    // refcounts it dropped, the refcount table the cluster writer may have moved — and a new
    // refcount width's structures built from those
    if (plan.overlay) await allocateZeroClusters(path, plan.zeros);
    else await expandZeroClusters(path, plan.zeros);
    header = await withImage(path, img => headerOf(path, img, plan));
  }
  const disk = FileDisk.open(path, 'r+');
  try {
    await disk.write(0, header, 'header');
    await disk.sync();
  } finally {
    disk.close();
  }
}

interface AmendPlan {
  version: 2 | 3;
  lazy: boolean;
  order: number;
  /** A downgrade's zero clusters (none otherwise). */
  zeros: ZeroScan;
  overlay: boolean;
}

async function withImage<T>(path: string, f: (img: Qcow2Image) => Promise<T>): Promise<T> {
  const img = await Qcow2Image.open(path, { writable: false, openBacking: false });
  try {
    return await f(img);
  } catch (e) {
    if (e instanceof OptionError) throw new Qcow2Error(path, 'options', undefined, e.message, 'unsupported');
    throw e;
  } finally {
    await img.close();
  }
}

/** The options read and judged against the image, as qcow2_amend_options judges them. */
async function planAmend(img: Qcow2Image, entries: readonly OptionEntry[]): Promise<AmendPlan> {
  assertWritable(img);
  const h = img.header;
  let version = h.version as 2 | 3, lazy = (h.compatibleFeatures & L.COMPAT_LAZY_REFCOUNTS) !== 0n, order = h.refcountOrder;
  for (const { key, value } of entries) {
    if (key === 'compat') {
      if (value === '0.10' || value === 'v2') version = 2;
      else if (value === '1.1' || value === 'v3') version = 3;
      else throw new OptionError(`Invalid compatibility level: '${value}'`);
    } else if (key === 'lazy_refcounts') lazy = parseBool(key, value);
    else if (key === 'refcount_bits') order = parseRefcountOrder(value);
    else if (['size', 'backing_file', 'backing_fmt', 'cluster_size', 'preallocation', 'extended_l2', 'compression_type', 'data_file', 'data_file_raw'].includes(key) || key.startsWith('encrypt.')) {
      throw new OptionError(`changing '${key}' with amend is not supported`);
    } else throw new OptionError(`Invalid parameter '${key}'`);
  }
  if (h.bitmaps && h.bitmaps.nbBitmaps > 0) throw new OptionError('amending an image with persistent bitmaps is not supported yet (qemu-img rewrites their directory)');
  if (version === 2 && lazy) throw new OptionError('Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)');
  if (version === 2 && order !== 4) {
    throw new OptionError(h.version === 2 && order !== h.refcountOrder ? 'Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)' : 'compat=0.10 requires refcount_bits=16');
  }
  let zeros: ZeroScan = { tables: [], preallocated: 0 };
  const overlay = h.backingFile !== undefined;
  if (version === 2 && h.version === 3) {
    if ((h.incompatibleFeatures & L.INCOMPAT_DATA_FILE) !== 0n) throw new OptionError('Cannot downgrade an image with a data file');
    if (h.incompatibleFeatures & ~L.INCOMPAT_DIRTY) throw new OptionError(`Cannot downgrade an image with incompatible features 0x${h.incompatibleFeatures.toString(16)} set`);
    zeros = await zeroClusterScan(img);
    if (zeros.tables.length && overlay && h.nbSnapshots) throw new OptionError('downgrading an overlay with internal snapshots and zero clusters is not supported yet (QEMU allocates them as data, counted once per sharing table)');
    if (zeros.tables.length && img.encrypted && (overlay || zeros.preallocated)) throw new OptionError('downgrading an encrypted image with zero clusters that need writing is not supported yet');
  }
  return { version, lazy, order, zeros, overlay };
}

/** The new header cluster (after the new refcount structures, synced, when the width changes). */
async function headerOf(path: string, img: Qcow2Image, p: AmendPlan): Promise<Buffer> {
  const h = img.header, { version, lazy, order } = p;
  const rc: NewRefcounts = order === h.refcountOrder ? { tableOffset: h.refcountTableOffset, tableClusters: h.refcountTableClusters } : await writeRefcountsOfOrder(path, img, order);
  const ext = (t: number) => h.extensions.find(e => e.type === t);
  return encodeHeader({
    version, clusterBits: h.clusterBits, size: h.size, cryptMethod: h.cryptMethod, l1Size: h.l1Size, l1Offset: h.l1TableOffset,
    reftableOffset: rc.tableOffset, reftableClusters: rc.tableClusters, nbSnapshots: h.nbSnapshots, snapshotsOffset: h.snapshotsOffset,
    incompatible: h.incompatibleFeatures, compatible: lazy ? h.compatibleFeatures | L.COMPAT_LAZY_REFCOUNTS : h.compatibleFeatures & ~L.COMPAT_LAZY_REFCOUNTS,
    autoclear: h.autoclearFeatures & (L.AUTOCLEAR_BITMAPS | L.AUTOCLEAR_DATA_FILE_RAW), refcountOrder: order, compressionType: h.compressionType,
    backingFile: h.backingFile, backingFormat: ext(L.EXT_BACKING_FORMAT) ? h.backingFormat : undefined, dataFile: h.dataFile,
    crypto: h.crypto, unknown: h.extensions.filter(e => !KNOWN.has(e.type)).map(e => ({ type: e.type, data: e.data })),
  });
}

/**
 * An overlay's zero clusters, plain and preallocated, made data clusters of zeros (version 2 has
 * no other way to hide the backing file's bytes), as QEMU does: the cluster writer's order (data,
 * refcounts, L2 tables, each synced), a preallocated cluster written in place.
 */
async function allocateZeroClusters(path: string, zeros: ZeroScan): Promise<void> {
  const w = await Qcow2ClusterWriter.open(path);
  try {
    const cs = w.cs, perL2 = cs * (cs / 8), zero = Buffer.alloc(cs);
    for (const { l2Offset, l1Index } of zeros.tables) {
      const t = await w.img.file.read(l2Offset, cs, `L2 table ${l1Index}`);
      for (let p = 0; p < cs; p += 8) {
        const hi = wordHi(t, p), lo = wordLo(t, p);
        if (!isZeroEntry(hi, lo)) continue;
        const guest = l1Index * perL2 + (p / 8) * cs;
        if (guest < w.virtualSize) await w.writeCluster(guest, zero);
      }
    }
    await w.flush();
  } finally {
    await w.close();
  }
}

/** An uncompressed entry with the zero flag (plain, or preallocated with a host offset). */
const isZeroEntry = (hi: number, lo: number): boolean => !isCompressed(hi) && hasZeroFlag(lo);

interface ZeroScan {
  /** L2 tables holding zero entries: host offset and an L1 index reaching it. */
  tables: { l2Offset: number; l1Index: number }[];
  /** How many of those entries keep a host cluster. */
  preallocated: number;
}

/** Tables read at once by a scan. */
const SCAN_TABLES = 256;

/**
 * The L2 tables, the active L1's and the snapshots', with a zero-flagged (uncompressed) entry —
 * version 2 cannot express them — read SCAN_TABLES at a time.
 */
async function zeroClusterScan(img: Qcow2Image): Promise<ZeroScan> {
  const cs = img.clusterSize, where = new Map<number, number>();
  const l1s: Uint8Array[] = [img.l1];
  for (const sn of img.snapshots) l1s.push(await img.file.read(sn.l1TableOffset, sn.l1Size * 8, `snapshot ${sn.id} L1 table`));
  for (const l1 of l1s) {
    for (let i = 0; i < l1.length / 8; i++) {
      const { l2Offset } = img.l1Entry(i, l1);
      if (!l2Offset || where.has(l2Offset)) continue;
      img.checkL2Offset(l2Offset, i);
      where.set(l2Offset, i);
    }
  }
  const out: ZeroScan = { tables: [], preallocated: 0 }, offs = [...where.keys()];
  for (let k = 0; k < offs.length; k += SCAN_TABLES) {
    const tables = await readMany(img.file, offs.slice(k, k + SCAN_TABLES), cs, o => `L2 table at 0x${o.toString(16)}`);
    for (const [l2Offset, t] of tables) {
      let any = false;
      for (let p = 0; p < cs; p += 8) {
        const hi = wordHi(t, p), lo = wordLo(t, p);
        if (!isZeroEntry(hi, lo)) continue;
        any = true;
        if (entryOffset(hi, lo)) out.preallocated++;
      }
      if (any) out.tables.push({ l2Offset, l1Index: where.get(l2Offset)! });
    }
  }
  return out;
}

/**
 * Phases (1)–(3) of a downgrade without a backing file, every decision taken from the refcounts
 * as they were: (1) the preallocated zero clusters only one entry references zeroed on disk,
 * sync; (2) each table of the scan re-read and rewritten without zero flags — such a cluster
 * keeps its offset (copied), a plain zero entry and a preallocated one whose cluster is shared
 * become unallocated — sync; (3) the shared clusters' refcounts dropped by the refcount of the
 * table that let go of them, synced (a crash before: leaks). QEMU 7.2 zeroes shared clusters in
 * place, wiping a snapshot's data where it still reads them as data. Tables are read one at a
 * time in both passes.
 */
async function expandZeroClusters(path: string, zeros: ZeroScan): Promise<void> {
  const img = await Qcow2Image.open(path, { writable: true, openBacking: false, openDataFile: false });
  try {
    const h = img.header, cs = img.clusterSize, file = img.file;
    const rc = await RefcountWriter.load({ file, clusterBits: h.clusterBits, refcountOrder: h.refcountOrder, tableOffset: h.refcountTableOffset, tableClusters: h.refcountTableClusters, table: img.refcountTable });
    const tableOf = (l2Offset: number, l1Index: number) => file.read(l2Offset, cs, `L2 table ${l1Index}`);
    const zero = Buffer.alloc(Math.min(4 * 1024 * 1024, cs * 64));
    let runStart = -1, runEnd = -1;
    const flush = async () => {
      for (let p = runStart; p < runEnd; p += zero.length) await writeAt(file, p, zero.subarray(0, Math.min(zero.length, runEnd - p)), 'zero cluster');
      runStart = runEnd = -1;
    };
    for (const { l2Offset, l1Index } of zeros.tables) {
      const t = await tableOf(l2Offset, l1Index);
      for (let p = 0; p < cs; p += 8) {
        const hi = wordHi(t, p), lo = wordLo(t, p);
        if (!isZeroEntry(hi, lo)) continue;
        const off = entryOffset(hi, lo);
        if (!off || rc.get(off / cs) !== 1) continue;
        if (off % cs !== 0 || off + cs > file.size) throw new Qcow2Error(path, `L2 table ${l1Index}`, l2Offset + p, `zero cluster at 0x${off.toString(16)} is not a cluster inside the file`);
        if (off !== runEnd) await flush();
        if (runStart < 0) runStart = off;
        runEnd = off + cs;
      }
    }
    await flush();
    await file.sync();
    const drops: [cluster: number, by: number][] = [];
    for (const { l2Offset, l1Index } of zeros.tables) {
      const t = await tableOf(l2Offset, l1Index), tableRefs = rc.get(l2Offset / cs);
      for (let p = 0; p < cs; p += 8) {
        const hi = wordHi(t, p), lo = wordLo(t, p);
        if (!isZeroEntry(hi, lo)) continue;
        const off = entryOffset(hi, lo), keep = off !== 0 && rc.get(off / cs) === 1;
        if (off && !keep) drops.push([off / cs, tableRefs]);
        putOffset(t, p, keep ? off : 0, keep ? L.OFLAG_COPIED_HI : 0);
      }
      await writeAt(file, l2Offset, t, `L2 table ${l1Index}`);
    }
    await file.sync();
    for (const [c, by] of drops) rc.add(c, -by, `zero cluster at 0x${(c * cs).toString(16)}`);
    await rc.flush();
  } finally {
    await img.close();
  }
}
