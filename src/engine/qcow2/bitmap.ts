/**
 * Persistent dirty bitmaps: the bitmap directory named by the bitmaps header extension, and each
 * bitmap's table of data clusters.
 */
import { entryOffset, wordHi, wordLo } from './cluster';
import { Qcow2Error } from '../errors';
import { ImageFile } from '../io/reader';
import * as L from './layout';
import { formatPath, step } from '../path';

const E = L.BME_ENTRY;

export interface Bitmap {
  index: number;
  hostOffset: number; // of the directory entry
  entrySize: number;
  bitmapTableOffset: number;
  bitmapTableSize: number; // entries
  flags: number;
  type: number;
  granularityBits: number;
  name: string;
  extraDataSize: number;
  inUse: boolean;
  auto: boolean;
}

export interface BitmapTableEntry {
  index: number;
  hostOffset: number; // 0: no data cluster
  allOnes: boolean;
  reservedBitsSet: boolean;
}

export async function readBitmapDirectory(file: ImageFile, nbBitmaps: number, dirOffset: number, dirSize: number, clusterSize: number): Promise<Bitmap[]> {
  if (nbBitmaps === 0) return [];
  if (nbBitmaps > 65535) throw new Qcow2Error(file.path, 'bitmaps extension.nb_bitmaps', undefined, `${nbBitmaps} bitmaps exceed QEMU's limit of 65535`);
  if (dirSize > 64 * 1024 * 1024) throw new Qcow2Error(file.path, 'bitmap directory', dirOffset, `size ${dirSize} exceeds QEMU's 64 MiB limit`);
  if (dirOffset % clusterSize !== 0) throw new Qcow2Error(file.path, 'bitmap directory', dirOffset, 'offset is not cluster-aligned');
  const buf = await file.read(dirOffset, dirSize, 'bitmap directory');
  const out: Bitmap[] = [];
  let pos = 0;
  for (let i = 0; i < nbBitmaps; i++) {
    const at = dirOffset + pos;
    const what = formatPath([step('bitmap', i)]);
    if (pos + L.BME_HEADER_SIZE > buf.length) throw new Qcow2Error(file.path, what, at, 'entry runs past the bitmap directory');
    const nameSize = buf.readUInt16BE(pos + E.name_size);
    const extraDataSize = buf.readUInt32BE(pos + E.extra_data_size);
    if (nameSize > L.BME_MAX_NAME_SIZE) throw new Qcow2Error(file.path, formatPath([step('bitmap', i, { field: 'name_size' })]), at + E.name_size, `name of ${nameSize} bytes exceeds ${L.BME_MAX_NAME_SIZE}`);
    const entrySize = L.alignUp(L.BME_HEADER_SIZE + extraDataSize + nameSize, 8);
    if (pos + entrySize > buf.length) throw new Qcow2Error(file.path, what, at, 'entry runs past the bitmap directory');
    const flags = buf.readUInt32BE(pos + E.flags);
    const granularityBits = buf[pos + E.granularity_bits];
    const bitmapTableSize = buf.readUInt32BE(pos + E.bitmap_table_size);
    if (bitmapTableSize > L.BME_MAX_TABLE_SIZE) {
      throw new Qcow2Error(file.path, formatPath([step('bitmap', i, { field: 'bitmap_table_size' })]), at + E.bitmap_table_size, `${bitmapTableSize} entries exceed QEMU's limit`);
    }
    const nameStart = pos + L.BME_HEADER_SIZE + extraDataSize;
    out.push({
      index: i, hostOffset: at, entrySize,
      bitmapTableOffset: Number(buf.readBigUInt64BE(pos + E.bitmap_table_offset)),
      bitmapTableSize,
      flags,
      type: buf[pos + E.type],
      granularityBits,
      name: buf.toString('utf8', nameStart, nameStart + nameSize),
      extraDataSize,
      inUse: (flags & L.BME_FLAG_IN_USE) !== 0,
      auto: (flags & L.BME_FLAG_AUTO) !== 0,
    });
    pos += entrySize;
  }
  return out;
}

export async function readBitmapTable(file: ImageFile, bm: Bitmap): Promise<BitmapTableEntry[]> {
  if (bm.bitmapTableSize === 0) return [];
  const buf = await file.read(bm.bitmapTableOffset, bm.bitmapTableSize * 8, `bitmap "${bm.name}" table`);
  const out: BitmapTableEntry[] = [];
  for (let i = 0; i < bm.bitmapTableSize; i++) {
    const hi = wordHi(buf, i * 8), lo = wordLo(buf, i * 8);
    out.push({
      index: i, hostOffset: entryOffset(hi, lo), allOnes: (lo & L.BME_TABLE_ENTRY_FLAG_ALL_ONES_LO) !== 0,
      reservedBitsSet: (hi & L.BME_TABLE_ENTRY_RESERVED_HI) !== 0 || (lo & L.BME_TABLE_ENTRY_RESERVED_LO) !== 0,
    });
  }
  return out;
}
