/**
 * `qemu-img resize`, in place, as QEMU 7.2's qcow2_co_truncate does it (create/clusters.ts holds
 * the steps and their write order): growing allocates a larger L1 table (and with preallocation
 * the L2 tables, refcount room and data clusters) before the header's size changes; shrinking
 * (only with --shrink) discards the clusters past the new end, clears the L1 entries beyond it,
 * drops refcount blocks that count nothing, truncates the file, and writes the size last.
 * The result is the image qemu-img resize makes, cluster for cluster.
 *
 * Crash safety is QEMU's order with one change: every pointer is written after the refcounts
 * of what it points to (refcount blocks synced first), every decrement after the pointer it
 * drops; growing writes the size last, shrinking writes it first (so the tail is cut only once
 * the guest no longer sees it). A SIGKILL after any write leaves an image `qemu-img check` finds at most leaking, and the
 * virtual size is either the old or the new one.
 *
 * Persistent bitmaps are resized as QEMU's close after a resize stores them: each bitmap's bits
 * kept up to the smaller of the two sizes, new bits clear, its table sized for the new disk. QEMU
 * refuses to load a bitmap whose table is not exactly that size, so the new bitmap data, tables and
 * directory are written into free clusters first (refcounts, then contents, synced), and the size
 * and the bitmaps extension then change in one write of the header's first bytes; the old tables
 * and directory are freed after it (a crash in between leaks them, nothing more).
 *
 * Refused as QEMU refuses: a version 2 image with internal snapshots; shrinking with
 * preallocation; sizes not a multiple of 512; an inconsistent (in-use) bitmap. Growing with
 * falloc/full preallocation from a size inside a cluster replaces that partial cluster, as QEMU
 * does: a new cluster in the data area gets the old guest bytes of its head (read through the
 * backing chain, written before the entry is linked) and the old entry's cluster is freed after
 * the link. Not supported yet: the same with metadata preallocation or extended L2 entries.
 */
import * as fs from 'node:fs';
import { Qcow2Error } from '../errors';
import { Qcow2Image } from '../image/image';
import { entryOffset, wordHi, wordLo } from '../qcow2/cluster';
import * as L from '../qcow2/layout';
import { readAllRefcounts, refcountGeometry } from '../qcow2/refcount';
import { BitmapEntry, bitmapTableSize, encodeBitmapDirectory, readBitmapBits, readBitmapEntries } from './bitmaps';
import { ClusterModel, resizeFile } from './create/clusters';
import { FileDisk } from './create/disk';
import { RefAlloc } from './create/refalloc';
import type { Preallocation } from './measure';
import { assertNotLocked, assertWritable } from './writable';

export interface ResizeOptions {
  shrink?: boolean;
  preallocation?: Preallocation;
  signal?: AbortSignal;
}

/** What the SIZE operand asks for: an absolute size or a change (+/-). */
export type SizeSpec = { absolute: number } | { delta: number };

export class ResizeRefused extends Error {}

function target(current: number, spec: SizeSpec): number {
  const n = 'absolute' in spec ? spec.absolute : current + spec.delta;
  if (n <= 0 && !('absolute' in spec && spec.absolute === 0)) throw new ResizeRefused('New image size must be positive');
  return n;
}

export async function resizeQcow2(path: string, spec: SizeSpec, opts: ResizeOptions = {}): Promise<{ oldSize: number; newSize: number }> {
  assertNotLocked(path);
  const img = await Qcow2Image.open(path, { writable: false, openBacking: false });
  let dataPath: string | undefined;
  let state: { l1: Buffer; counts: Float64Array; reftable: Float64Array };
  const bitmaps: { entry: BitmapEntry; bits: Uint8Array }[] = [];
  const h = img.header;
  try {
    assertWritable(img);
    const newSize = target(h.size, spec);
    if (newSize < h.size && !opts.shrink) throw new ResizeRefused("Use the --shrink option to perform a shrink operation.\nwarning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.");
    if (h.nbSnapshots && h.version < 3) throw new ResizeRefused("Can't resize a v2 image which has snapshots");
    if (h.cryptMethod !== 0 && (opts.preallocation ?? 'off') !== 'off') throw new Qcow2Error(path, 'header.crypt_method', 32, 'preallocating an encrypted image is not supported yet', 'unsupported');
    dataPath = img.dataFilePath;
    if (h.dataFile && !dataPath) throw new Qcow2Error(path, 'header extension external data file name', undefined, 'the external data file cannot be opened', 'missing-backing');
    const g = refcountGeometry(h.clusterBits, h.refcountOrder);
    let maxIndex = img.refcountTable.length;
    while (maxIndex > 0 && img.refcountTable[maxIndex - 1] === 0) maxIndex--;
    const counts = await readAllRefcounts(img.file, img.refcountTable, g, Math.max(maxIndex * g.blockEntries, Math.ceil(img.file.size / h.clusterSize)), (i, off, reason) => {
      throw new Qcow2Error(path, `refcount table[${i}] → refcount block`, off, reason);
    });
    state = { l1: Buffer.from(img.l1), counts, reftable: Float64Array.from(img.refcountTable) };
    for (const e of await readBitmapEntries(img)) bitmaps.push({ entry: e, bits: await readBitmapBits(img.file, e, h.clusterSize) });
    if (newSize === h.size && (opts.preallocation ?? 'off') === 'off') return { oldSize: h.size, newSize };
  } finally {
    await img.close();
  }
  const newSize = target(h.size, spec);
  const prealloc = opts.preallocation ?? 'off';
  let cowHead: Buffer | undefined;
  if ((prealloc === 'falloc' || prealloc === 'full') && h.size % h.clusterSize !== 0 && newSize > h.size && !dataPath && !h.extendedL2) {
    // the old content of the partial last cluster (through the backing chain), for its copy
    const full = await Qcow2Image.open(path, { writable: false });
    try {
      const from = Math.floor(h.size / h.clusterSize) * h.clusterSize;
      cowHead = await full.readGuest(from, h.size - from);
    } finally {
      await full.close();
    }
  }
  const disk = FileDisk.open(path, 'r+', opts.signal);
  const dataDisk = dataPath ? FileDisk.open(dataPath, 'r+', opts.signal) : undefined;
  try {
    const rc = new RefAlloc(disk, { clusterBits: h.clusterBits, refcountOrder: h.refcountOrder, reftable: state.reftable, reftableOffset: h.refcountTableOffset, counts: state.counts });
    const m = new ClusterModel(disk, rc, {
      size: h.size, l1Offset: h.l1TableOffset, l1Size: h.l1Size, l1: state.l1, extendedL2: h.extendedL2, dataDisk,
      dataFileRaw: (h.autoclearFeatures & 2n) !== 0n, cowHead,
      writeSize: bitmaps.length ? size => switchBitmaps(disk, rc, h, bitmaps, size) : undefined,
    });
    if (prealloc !== 'off' && h.size % h.clusterSize !== 0 && newSize > h.size && !dataDisk && (prealloc === 'metadata' || h.extendedL2)) {
      throw new Qcow2Error(path, 'header.size', 24, `growing with preallocation=${prealloc} from a size that is not a multiple of the cluster size is not supported yet${h.extendedL2 ? ' (extended L2 entries)' : ''}`, 'unsupported');
    }
    await m.truncate(newSize, prealloc);
    await m.writeCaches();
    await disk.sync();
    if (dataDisk) await dataDisk.sync();
    return { oldSize: h.size, newSize };
  } finally {
    disk.close();
    dataDisk?.close();
  }
}

/**
 * The bitmaps rewritten for a disk of `size` bytes and switched in with the size (see the top of
 * this file): new data, tables and directory in free clusters, synced; then one header write of
 * [0, end of the bitmaps extension) carrying the size and the new directory; then the old freed.
 */
async function switchBitmaps(disk: FileDisk, rc: RefAlloc, h: Qcow2Image['header'], bitmaps: { entry: BitmapEntry; bits: Uint8Array }[], size: number): Promise<void> {
  const cs = h.clusterSize;
  const ext = h.extensions.find(e => e.type === L.EXT_BITMAPS);
  if (!ext || !h.bitmaps) throw new Qcow2Error(disk.path, 'header extension bitmaps', undefined, 'the bitmaps extension is missing', 'corrupt');
  const entries: BitmapEntry[] = [];
  const writes: [number, Buffer, string][] = [];
  for (const { entry, bits } of bitmaps) {
    const tableSize = bitmapTableSize(size, entry.granularityBits, cs);
    const keep = Math.min(Math.ceil(h.size / 2 ** entry.granularityBits), Math.ceil(size / 2 ** entry.granularityBits));
    const nb = new Uint8Array(tableSize * cs);
    nb.set(bits.subarray(0, keep >> 3));
    if (keep & 7) nb[keep >> 3] = bits[keep >> 3] & ((1 << (keep & 7)) - 1);
    const table = Buffer.alloc(tableSize * 8);
    for (let i = 0; i < tableSize; i++) {
      const chunk = nb.subarray(i * cs, (i + 1) * cs);
      if (chunk.every(b => b === 0)) continue;
      const off = await rc.allocClusters(cs);
      writes.push([off, Buffer.from(chunk), `bitmap '${entry.name}' data`]);
      table.writeBigUInt64BE(BigInt(off), i * 8);
    }
    const tableOffset = await rc.allocClusters(L.alignUp(table.length, cs));
    writes.push([tableOffset, table, `bitmap '${entry.name}' table`]);
    entries.push({ ...entry, tableOffset, tableSize });
  }
  const dir = encodeBitmapDirectory(entries);
  const dirOffset = await rc.allocClusters(L.alignUp(dir.length, cs));
  writes.push([dirOffset, dir, 'bitmap directory']);
  await rc.flushRefcounts();
  await disk.sync();
  for (const [off, b, what] of writes) await disk.write(off, b, what);
  await disk.sync();
  // the switch: the size and the bitmaps extension in one write of the header's first bytes
  const dataAt = ext.hostOffset + L.EXT_HEADER_SIZE;
  const head = await disk.read(0, dataAt + L.BITMAPS_EXT.length, 'header');
  head.set(L.encodeHeaderField('size', size), L.HEADER_FIELD.size.offset);
  head.writeUInt32BE(entries.length, dataAt + L.BITMAPS_EXT.nb_bitmaps);
  head.writeBigUInt64BE(BigInt(dir.length), dataAt + L.BITMAPS_EXT.bitmap_directory_size);
  head.writeBigUInt64BE(BigInt(dirOffset), dataAt + L.BITMAPS_EXT.bitmap_directory_offset);
  await disk.write(0, head, 'header (size and bitmaps extension)');
  await disk.sync();
  // the old directory, tables and data, freed (a crash before this leaks them)
  await rc.freeClusters(h.bitmaps.bitmapDirectoryOffset, L.alignUp(h.bitmaps.bitmapDirectorySize, cs));
  for (const { entry } of bitmaps) {
    if (!entry.tableOffset || !entry.tableSize) continue;
    const t = await disk.read(entry.tableOffset, entry.tableSize * 8, `bitmap '${entry.name}' table`);
    for (let i = 0; i < entry.tableSize; i++) {
      const o = entryOffset(wordHi(t, i * 8), wordLo(t, i * 8));
      if (o) await rc.freeClusters(o, cs);
    }
    await rc.freeClusters(entry.tableOffset, L.alignUp(entry.tableSize * 8, cs));
  }
  await rc.flushRefcounts();
}

/** A raw file resized: truncated (preallocation off) or extended with zeros (falloc, full). */
export async function resizeRaw(path: string, spec: SizeSpec, opts: ResizeOptions = {}): Promise<{ oldSize: number; newSize: number }> {
  assertNotLocked(path);
  const disk = FileDisk.open(path, 'r+', opts.signal);
  try {
    const old = disk.length();
    const newSize = target(old, spec);
    if (newSize < old && !opts.shrink) throw new ResizeRefused("Use the --shrink option to perform a shrink operation.\nwarning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.");
    const prealloc = opts.preallocation ?? 'off';
    if (newSize < old && prealloc !== 'off') throw new ResizeRefused("Preallocation can't be used for shrinking an image");
    if (prealloc === 'metadata') throw new ResizeRefused("Unsupported preallocation mode 'metadata'");
    if (prealloc === 'off' || newSize <= old) await resizeFile(disk, newSize);
    else await disk.writeZeroes(old, newSize - old, 'data');
    await disk.sync();
    return { oldSize: old, newSize };
  } finally {
    disk.close();
  }
}

/** qcow2 or raw, by the file's magic (as qemu-img probes without -f). */
export function probeIsQcow2(path: string): boolean {
  const fd = fs.openSync(path, 'r');
  try {
    const b = Buffer.alloc(4);
    return fs.readSync(fd, b, 0, 4, 0) === 4 && b.readUInt32BE(0) === 0x514649fb;
  } finally {
    fs.closeSync(fd);
  }
}
