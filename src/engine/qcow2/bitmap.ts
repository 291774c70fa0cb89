/**
 * Persistent dirty bitmaps: the bitmap directory named by the bitmaps header extension, and each
 * bitmap's table of data clusters.
 */
import { entryOffset, wordHi, wordLo } from './cluster';
import { Qcow2Error } from '../errors';
import { ImageFile } from '../io/reader';
import * as L from './layout';

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
    if (pos + L.BME_HEADER_SIZE > buf.length) throw new Qcow2Error(file.path, `bitmap[${i}]`, at, 'entry runs past the bitmap directory');
    const nameSize = buf.readUInt16BE(pos + 18);
    const extraDataSize = buf.readUInt32BE(pos + 20);
    if (nameSize > L.BME_MAX_NAME_SIZE) throw new Qcow2Error(file.path, `bitmap[${i}].name_size`, at + 18, `name of ${nameSize} bytes exceeds ${L.BME_MAX_NAME_SIZE}`);
    const entrySize = L.alignUp(L.BME_HEADER_SIZE + extraDataSize + nameSize, 8);
    if (pos + entrySize > buf.length) throw new Qcow2Error(file.path, `bitmap[${i}]`, at, 'entry runs past the bitmap directory');
    const flags = buf.readUInt32BE(pos + 12);
    const granularityBits = buf[pos + 17];
    const bitmapTableSize = buf.readUInt32BE(pos + 8);
    if (bitmapTableSize > L.BME_MAX_TABLE_SIZE) {
      throw new Qcow2Error(file.path, `bitmap[${i}].bitmap_table_size`, at + 8, `${bitmapTableSize} entries exceed QEMU's limit`);
    }
    const nameStart = pos + L.BME_HEADER_SIZE + extraDataSize;
    out.push({
      index: i, hostOffset: at, entrySize,
      bitmapTableOffset: Number(buf.readBigUInt64BE(pos)),
      bitmapTableSize,
      flags,
      type: buf[pos + 16],
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
    out.push({ index: i, hostOffset: entryOffset(hi, lo), allOnes: (lo & 1) === 1, reservedBitsSet: (hi & 0xff000000) !== 0 || (lo & 0x1fe) !== 0 });
  }
  return out;
}
