/**
 * qcow2_update_header (QEMU 7.2) as bytes: the fixed fields (72 bytes for version 2, 112 for
 * version 3), then the extensions in QEMU's order — backing format, external data file name,
 * feature name table (version 3 with clusters above 4 KiB), bitmaps, any kept unknown ones — the
 * end marker, and the backing file name right after it. One cluster, written whole.
 */
import * as L from '../../qcow2/layout';

export interface HeaderImage {
  version: 2 | 3;
  clusterBits: number;
  size: number;
  cryptMethod?: number;
  l1Size: number;
  l1Offset: number;
  reftableOffset: number;
  reftableClusters: number;
  nbSnapshots?: number;
  snapshotsOffset?: number;
  incompatible: bigint;
  compatible: bigint;
  autoclear: bigint;
  refcountOrder: number;
  compressionType: number;
  backingFile?: string;
  backingFormat?: string;
  dataFile?: string;
  crypto?: { offset: number; length: number };
  bitmaps?: { nb: number; dirSize: number; dirOffset: number };
  /** Extensions QEMU keeps without knowing them (type, data), in file order. */
  unknown?: { type: number; data: Buffer }[];
}

const FEATURES: [number, number, string][] = [
  [0, 0, 'dirty bit'], [0, 1, 'corrupt bit'], [0, 2, 'external data file'], [0, 3, 'compression type'], [0, 4, 'extended L2 entries'],
  [1, 0, 'lazy refcounts'], [2, 0, 'bitmaps'], [2, 1, 'raw external data'],
];

/** QEMU's feature name table: 48-byte entries (type, bit, name padded with NULs). */
export function featureTable(): Buffer {
  const b = Buffer.alloc(FEATURES.length * 48);
  FEATURES.forEach(([t, bit, name], i) => { b[i * 48] = t; b[i * 48 + 1] = bit; b.write(name, i * 48 + 2, 'latin1'); });
  return b;
}

export const V3_HEADER_LENGTH = 112;

export function encodeHeader(h: HeaderImage): Buffer {
  const cs = 2 ** h.clusterBits;
  const buf = Buffer.alloc(cs);
  L.writeHeaderField(buf, 'magic', L.QCOW_MAGIC);
  L.writeHeaderField(buf, 'version', h.version);
  L.writeHeaderField(buf, 'cluster_bits', h.clusterBits);
  L.writeHeaderField(buf, 'size', h.size);
  L.writeHeaderField(buf, 'crypt_method', h.cryptMethod ?? 0);
  L.writeHeaderField(buf, 'l1_size', h.l1Size);
  L.writeHeaderField(buf, 'l1_table_offset', h.l1Offset);
  L.writeHeaderField(buf, 'refcount_table_offset', h.reftableOffset);
  L.writeHeaderField(buf, 'refcount_table_clusters', h.reftableClusters);
  L.writeHeaderField(buf, 'nb_snapshots', h.nbSnapshots ?? 0);
  L.writeHeaderField(buf, 'snapshots_offset', h.snapshotsOffset ?? 0);
  let pos = L.HEADER_V2_LENGTH;
  if (h.version === 3) {
    L.writeHeaderField(buf, 'incompatible_features', h.incompatible);
    L.writeHeaderField(buf, 'compatible_features', h.compatible);
    L.writeHeaderField(buf, 'autoclear_features', h.autoclear);
    L.writeHeaderField(buf, 'refcount_order', h.refcountOrder);
    L.writeHeaderField(buf, 'header_length', V3_HEADER_LENGTH);
    L.writeHeaderField(buf, 'compression_type', h.compressionType);
    pos = V3_HEADER_LENGTH;
  }
  const ext = (type: number, data: Buffer) => {
    buf.writeUInt32BE(type, pos);
    buf.writeUInt32BE(data.length, pos + 4);
    data.copy(buf, pos + 8);
    pos += 8 + L.alignUp(data.length, 8);
  };
  if (h.backingFormat) ext(L.EXT_BACKING_FORMAT, Buffer.from(h.backingFormat));
  if (h.dataFile) ext(L.EXT_DATA_FILE, Buffer.from(h.dataFile));
  if (h.crypto && h.crypto.offset) {
    const c = Buffer.alloc(16);
    c.writeBigUInt64BE(BigInt(h.crypto.offset), 0);
    c.writeBigUInt64BE(BigInt(h.crypto.length), 8);
    ext(L.EXT_CRYPTO, c);
  }
  if (h.version >= 3 && cs > 4096) ext(L.EXT_FEATURE_TABLE, featureTable());
  if (h.bitmaps && h.bitmaps.nb > 0) {
    const b = Buffer.alloc(24);
    b.writeUInt32BE(h.bitmaps.nb, 0);
    b.writeBigUInt64BE(BigInt(h.bitmaps.dirSize), 8);
    b.writeBigUInt64BE(BigInt(h.bitmaps.dirOffset), 16);
    ext(L.EXT_BITMAPS, b);
  }
  for (const u of h.unknown ?? []) ext(u.type, u.data);
  ext(L.EXT_END, Buffer.alloc(0));
  if (h.backingFile) {
    const name = Buffer.from(h.backingFile);
    if (pos + name.length > cs) throw new Error('Backing file name too long');
    name.copy(buf, pos);
    L.writeHeaderField(buf, 'backing_file_offset', pos);
    L.writeHeaderField(buf, 'backing_file_size', name.length);
  }
  return buf;
}
