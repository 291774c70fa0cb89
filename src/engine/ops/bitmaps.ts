/**
 * `qemu-img bitmap --add | --remove | --clear | --enable | --disable | --merge SRC`: persistent
 * dirty bitmaps edited in place. The resulting directory (names, granularities, flags, bits) is
 * what qemu-img bitmap leaves; the clusters are our own choice (QEMU moves every bitmap on each
 * read-write open, so no placement is canonical).
 *
 * Write order (each step synced before the next):
 *  1. new bitmap tables and data clusters, and a new bitmap directory, in clusters that were free
 *     — their refcounts written first, then their contents
 *  2. the header cluster rewritten with the new bitmaps extension (and autoclear bit): the switch
 *  3. the old directory, and the old tables and data clusters no longer used, freed
 * A crash before 2 leaves the old bitmaps and leaked clusters; after it, the new bitmaps.
 */
import { Qcow2Error } from '../errors';
import { Qcow2Image } from '../image/image';
import { ImageFile, readMany } from '../io/reader';
import { entryOffset, wordHi, wordLo } from '../qcow2/cluster';
import * as L from '../qcow2/layout';
import { RefcountWriter, writeAt } from './refcountWrite';
import { encodeHeader } from './create/header';
import { assertNotLocked, assertWritable } from './writable';

export type BitmapOp =
  | { op: 'add'; granularity?: number; disabled?: boolean }
  | { op: 'remove' } | { op: 'clear' } | { op: 'enable' } | { op: 'disable' }
  /** `sourceFile` (qemu-img's -b): SOURCE is a bitmap of that qcow2 image (same virtual size), else of this one. */
  | { op: 'merge'; source: string; sourceFile?: string };

/** A bitmap directory entry as it will be written; `bits` set when its table and data are rewritten. */
export interface BitmapEntry { name: string; flags: number; granularityBits: number; type: number; extra: Buffer; tableOffset: number; tableSize: number; bits?: Uint8Array }
type Entry = BitmapEntry;

const KNOWN = new Set([L.EXT_BACKING_FORMAT, L.EXT_DATA_FILE, L.EXT_FEATURE_TABLE, L.EXT_BITMAPS, L.EXT_CRYPTO]);

function refuse(path: string, detail: string): Qcow2Error {
  return new Qcow2Error(path, 'bitmap directory', undefined, detail, 'unsupported');
}

/** The image's bitmap directory as entries (none when the autoclear bit says the bitmaps are stale); in-use bitmaps refused. */
export async function readBitmapEntries(img: Qcow2Image): Promise<BitmapEntry[]> {
  const h = img.header, entries: BitmapEntry[] = [];
  if (!h.bitmaps || !h.bitmaps.nbBitmaps || (h.autoclearFeatures & L.AUTOCLEAR_BITMAPS) === 0n) return entries;
  const dir = await img.file.read(h.bitmaps.bitmapDirectoryOffset, h.bitmaps.bitmapDirectorySize, 'bitmap directory');
  for (const b of img.bitmaps) {
    const p = b.hostOffset - h.bitmaps.bitmapDirectoryOffset;
    if (b.inUse) throw refuse(img.path, `bitmap '${b.name}' is inconsistent (in use); remove it or run qemu-img check -r all`);
    entries.push({ name: b.name, flags: b.flags, granularityBits: b.granularityBits, type: b.type, extra: Buffer.from(dir.subarray(p + L.BME_HEADER_SIZE, p + L.BME_HEADER_SIZE + b.extraDataSize)), tableOffset: b.bitmapTableOffset, tableSize: b.bitmapTableSize });
  }
  return entries;
}

/** A bitmap's bits, one table entry's cluster after another (an all-ones entry read as 0xff). */
export async function readBitmapBits(f: ImageFile, e: BitmapEntry, cs: number): Promise<Uint8Array> {
  const bits = new Uint8Array(e.tableSize * cs);
  if (!e.tableSize) return bits;
  const t = await f.read(e.tableOffset, e.tableSize * 8, `bitmap '${e.name}' table`);
  const offs: number[] = [];
  for (let i = 0; i < e.tableSize; i++) { const o = entryOffset(wordHi(t, i * 8), wordLo(t, i * 8)); if (o) offs.push(o); }
  const data = await readMany(f, offs, cs, o => `bitmap '${e.name}' data at 0x${o.toString(16)}`);
  for (let i = 0; i < e.tableSize; i++) {
    const o = entryOffset(wordHi(t, i * 8), wordLo(t, i * 8));
    if (o) bits.set(data.get(o)!, i * cs);
    else if (wordLo(t, i * 8) & 1) bits.fill(0xff, i * cs, (i + 1) * cs);
  }
  return bits;
}

/** Bits per bitmap and table entries per bitmap for a disk of `size` bytes (QEMU's serialization size in clusters). */
export function bitmapTableSize(size: number, granularityBits: number, cs: number): number {
  return Math.ceil(Math.ceil(size / 2 ** granularityBits) / (cs * 8));
}

/** The bitmap directory's bytes (entries 8-byte aligned; IN_USE cleared: what is written is consistent). */
export function encodeBitmapDirectory(entries: BitmapEntry[]): Buffer {
  return Buffer.concat(entries.map(e => {
    const nm = Buffer.from(e.name);
    const B = L.BME_ENTRY;
    const b = Buffer.alloc(L.alignUp(L.BME_HEADER_SIZE + e.extra.length + nm.length, 8));
    b.writeBigUInt64BE(BigInt(e.tableOffset), B.bitmap_table_offset);
    b.writeUInt32BE(e.tableSize, B.bitmap_table_size);
    b.writeUInt32BE(e.flags & ~L.BME_FLAG_IN_USE, B.flags);
    b[B.type] = e.type;
    b[B.granularity_bits] = e.granularityBits;
    b.writeUInt16BE(nm.length, B.name_size);
    b.writeUInt32BE(e.extra.length, B.extra_data_size);
    e.extra.copy(b, L.BME_HEADER_SIZE);
    nm.copy(b, L.BME_HEADER_SIZE + e.extra.length);
    return b;
  }));
}

/** A bitmap of another image (read-only; qemu-img bitmap --merge SOURCE -b FILE): its entry and bits, refused as qemu-img refuses a size mismatch. */
async function otherImageBits(path: string, file: string, name: string, size: number): Promise<{ src: BitmapEntry; s: Uint8Array }> {
  const other = await Qcow2Image.open(file, { openBacking: false, openDataFile: false });
  try {
    const src = (await readBitmapEntries(other)).find(e => e.name === name);
    if (!src) throw refuse(path, `Operation merge on bitmap failed: Dirty bitmap '${name}' not found in ${file}`);
    if (other.header.size !== size) {
      throw refuse(path, `Operation merge on bitmap failed: Bitmaps are of different sizes (destination size is ${size}, source size is ${other.header.size}) and can't be merged`);
    }
    return { src, s: await readBitmapBits(other.file, src, other.clusterSize) };
  } finally {
    await other.close();
  }
}

export async function editBitmap(path: string, name: string, op: BitmapOp): Promise<void> {
  assertNotLocked(path);
  const img = await Qcow2Image.open(path, { writable: true, openBacking: false });
  try {
    assertWritable(img, ['bitmaps']);
    const h = img.header, cs = img.clusterSize, f = img.file;
    const entries = await readBitmapEntries(img);
    const find = (n: string) => entries.find(e => e.name === n);
    const target = find(name);
    const bitsOf = (g: number) => Math.ceil(h.size / 2 ** g);
    const tableSizeOf = (g: number) => bitmapTableSize(h.size, g, cs);
    const readBits = (e: Entry) => readBitmapBits(f, e, cs);
    const oldTables: Entry[] = [];
    switch (op.op) {
      case 'add': {
        if (target) throw refuse(path, `Bitmap already exists: ${name}`);
        if (Buffer.byteLength(name) > L.BME_MAX_NAME_SIZE) throw refuse(path, 'bitmap name is longer than 1023 bytes');
        const g = op.granularity ?? Math.min(65536, Math.max(4096, cs));
        const gb = Math.log2(g);
        if (!Number.isInteger(gb)) throw refuse(path, 'Granularity must be power of 2');
        if (gb < L.BME_MIN_GRANULARITY_BITS) throw refuse(path, `Granularity is under minimum (${2 ** L.BME_MIN_GRANULARITY_BITS} bytes)`);
        if (gb > L.BME_MAX_GRANULARITY_BITS) throw refuse(path, `Granularity exceeds maximum (${2 ** L.BME_MAX_GRANULARITY_BITS} bytes)`);
        entries.push({ name, flags: op.disabled ? 0 : L.BME_FLAG_AUTO, granularityBits: gb, type: 1, extra: Buffer.alloc(0), tableOffset: 0, tableSize: tableSizeOf(gb), bits: new Uint8Array(tableSizeOf(gb) * cs) });
        break;
      }
      case 'remove':
        if (!target) throw refuse(path, `Dirty bitmap '${name}' not found`);
        entries.splice(entries.indexOf(target), 1);
        oldTables.push(target);
        break;
      case 'clear':
        if (!target) throw refuse(path, `Dirty bitmap '${name}' not found`);
        oldTables.push({ ...target });
        target.bits = new Uint8Array(target.tableSize * cs);
        break;
      case 'enable': case 'disable':
        if (!target) throw refuse(path, `Dirty bitmap '${name}' not found`);
        target.flags = op.op === 'enable' ? target.flags | L.BME_FLAG_AUTO : target.flags & ~L.BME_FLAG_AUTO;
        break;
      case 'merge': {
        if (!target) throw refuse(path, `Dirty bitmap '${name}' not found`);
        const { src, s } = op.sourceFile === undefined ? await (async () => {
          const e = find(op.source);
          if (!e) throw refuse(path, `Dirty bitmap '${op.source}' not found`);
          return { src: e, s: await readBits(e) };
        })() : await otherImageBits(path, op.sourceFile, op.source, h.size);
        const d = await readBits(target);
        const gs = 2 ** src.granularityBits, gd = 2 ** target.granularityBits;
        const ns = bitsOf(src.granularityBits);
        for (let i = 0; i < ns; i++) {
          if (!(s[i >> 3] & (1 << (i & 7)))) continue;
          const from = Math.floor((i * gs) / gd), to = Math.floor((Math.min(h.size, (i + 1) * gs) - 1) / gd);
          for (let j = from; j <= to; j++) d[j >> 3] |= 1 << (j & 7);
        }
        oldTables.push({ ...target });
        target.bits = d;
        break;
      }
    }
    const rc = await RefcountWriter.load({ file: f, clusterBits: h.clusterBits, refcountOrder: h.refcountOrder, tableOffset: h.refcountTableOffset, tableClusters: h.refcountTableClusters, table: img.refcountTable });
    // 1. new tables and data, then the new directory, in free clusters (refcounts first)
    const writes: [number, Buffer, string][] = [];
    for (const e of entries) {
      if (!e.bits) continue;
      const table = Buffer.alloc(e.tableSize * 8);
      for (let i = 0; i < e.tableSize; i++) {
        const chunk = e.bits.subarray(i * cs, (i + 1) * cs);
        if (chunk.every(b => b === 0)) continue;
        const off = rc.allocate(1, `bitmap '${e.name}' data`);
        writes.push([off, Buffer.from(chunk), `bitmap '${e.name}' data`]);
        table.writeBigUInt64BE(BigInt(off), i * 8);
      }
      e.tableOffset = e.tableSize ? rc.allocate(Math.ceil(table.length / cs), `bitmap '${e.name}' table`) : 0;
      if (e.tableSize) writes.push([e.tableOffset, table, `bitmap '${e.name}' table`]);
    }
    const dir = encodeBitmapDirectory(entries);
    const dirOffset = entries.length ? rc.allocate(Math.ceil(dir.length / cs), 'bitmap directory') : 0;
    if (entries.length) writes.push([dirOffset, dir, 'bitmap directory']);
    await rc.flush();
    for (const [off, b, what] of writes) await writeAt(f, off, b, what);
    await f.sync();
    // 2. the header switch
    const ext = (t: number) => h.extensions.find(e => e.type === t);
    const autoclear = entries.length ? h.autoclearFeatures | L.AUTOCLEAR_BITMAPS : h.autoclearFeatures & ~L.AUTOCLEAR_BITMAPS;
    const header = encodeHeader({
      version: 3, clusterBits: h.clusterBits, size: h.size, cryptMethod: h.cryptMethod, l1Size: h.l1Size, l1Offset: h.l1TableOffset,
      reftableOffset: rc.tableOffset, reftableClusters: rc.tableClusters, nbSnapshots: h.nbSnapshots, snapshotsOffset: h.snapshotsOffset,
      incompatible: h.incompatibleFeatures, compatible: h.compatibleFeatures, autoclear, refcountOrder: h.refcountOrder, compressionType: h.compressionType,
      backingFile: h.backingFile, backingFormat: ext(L.EXT_BACKING_FORMAT) ? h.backingFormat : undefined, dataFile: h.dataFile, crypto: h.crypto,
      bitmaps: entries.length ? { nb: entries.length, dirSize: dir.length, dirOffset } : undefined,
      unknown: h.extensions.filter(e => !KNOWN.has(e.type)).map(e => ({ type: e.type, data: e.data })),
    });
    await writeAt(f, 0, header, 'header');
    await f.sync();
    // 3. what the old directory and tables held, freed
    if (h.bitmaps && h.bitmaps.nbBitmaps && h.bitmaps.bitmapDirectoryOffset) rc.free(h.bitmaps.bitmapDirectoryOffset, h.bitmaps.bitmapDirectorySize, 'old bitmap directory');
    for (const e of oldTables) {
      if (!e.tableOffset || !e.tableSize) continue;
      const t = await f.read(e.tableOffset, e.tableSize * 8, `bitmap '${e.name}' table`);
      for (let i = 0; i < e.tableSize; i++) { const o = entryOffset(wordHi(t, i * 8), wordLo(t, i * 8)); if (o) rc.free(o, cs, `bitmap '${e.name}' data`); }
      rc.free(e.tableOffset, e.tableSize * 8, `bitmap '${e.name}' table`);
    }
    await rc.flush();
  } finally {
    await img.close();
  }
}
