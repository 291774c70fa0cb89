/**
 * The qcow2 specification's constants and masks (QEMU docs/interop/qcow2.txt), named as the spec
 * names them. Every other module takes its numbers from here.
 */
export const QCOW_MAGIC = 0x514649fb; // "QFI\xfb"
export const HEADER_V2_LENGTH = 72;
export const HEADER_V3_MIN_LENGTH = 104;
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
export const MAX_REFCOUNT_ORDER = 6;
/** QEMU refuses L1 tables larger than 32 MiB (QCOW_MAX_L1_SIZE). */
export const QCOW_MAX_L1_SIZE = 0x2000000;
/** QEMU refuses refcount tables larger than 8 MiB (QCOW_MAX_REFTABLE_SIZE). */
export const QCOW_MAX_REFTABLE_SIZE = 0x800000;
export const QCOW_MAX_SNAPSHOTS = 65536;
export const QCOW_MAX_SNAPSHOTS_SIZE = 64 * 1024 * 1024; // bytes of snapshot table QEMU accepts
export const QCOW_MAX_BACKING_FILE_NAME = 1023;

// Incompatible feature bits
export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
export const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTL2 = 1n << 4n;
// Compatible feature bits
export const COMPAT_LAZY_REFCOUNTS = 1n << 0n;
// Autoclear feature bits
export const AUTOCLEAR_BITMAPS = 1n << 0n;
export const AUTOCLEAR_DATA_FILE_RAW = 1n << 1n;

export const KNOWN_FEATURE_NAMES: Record<'incompatible' | 'compatible' | 'autoclear', Record<number, string>> = {
  incompatible: { 0: 'dirty bit', 1: 'corrupt bit', 2: 'external data file', 3: 'compression type', 4: 'extended L2 entries' },
  compatible: { 0: 'lazy refcounts' },
  autoclear: { 0: 'bitmaps', 1: 'raw external data' },
};

// Header extension types
export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_BITMAPS = 0x23852875;
export const EXT_CRYPTO = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;

export const CRYPT_NONE = 0;
export const CRYPT_AES = 1;
export const CRYPT_LUKS = 2;

export const COMPRESSION_ZLIB = 0;
export const COMPRESSION_ZSTD = 1;

// L1 / L2 / refcount table entries (as bigint masks, applied to 64-bit big-endian words)
export const L1E_OFFSET_MASK = 0x00fffffffffffe00n;
export const L2E_OFFSET_MASK = 0x00fffffffffffe00n;
export const REFT_OFFSET_MASK = 0xfffffffffffffe00n;
export const QCOW_OFLAG_COPIED = 1n << 63n;
export const QCOW_OFLAG_COMPRESSED = 1n << 62n;
export const QCOW_OFLAG_ZERO = 1n;
/** L1 bits 0-8 and 56-62 are reserved and must be zero (spec "L1 table entry"; QEMU's L1E_RESERVED_MASK). */
export const L1E_RESERVED_MASK = 0x7f000000000001ffn;
/** Standard L2 bits 1-8 and 56-61 are reserved. */
export const L2E_STD_RESERVED_MASK = 0x3f000000000001fen;

/**
 * The same entry bits on the high and low 32-bit halves of a big-endian entry, for the hot paths that
 * decode millions of entries without BigInt. Each is the bigint mask above, split at bit 32.
 */
export const OFLAG_COPIED_HI = 0x80000000;
export const OFLAG_COMPRESSED_HI = 0x40000000;
export const OFLAG_ZERO_LO = 0x1;
export const ENTRY_OFFSET_HI_MASK = 0x00ffffff;
export const ENTRY_OFFSET_LO_MASK = 0xfffffe00;
export const L1E_RESERVED_HI = 0x7f000000;
export const L1E_RESERVED_LO = 0x000001ff;
export const L2E_STD_RESERVED_HI = 0x3f000000;
export const L2E_STD_RESERVED_LO = 0x000001fe;
/** A compressed entry's descriptor: bits 0-61, below the copied and compressed flags. */
export const COMPRESSED_DESC_HI_MASK = 0x3fffffff;
/** Refcount table entries keep bits 9-63 (REFT_OFFSET_MASK): the whole high half. */
export const REFT_OFFSET_LO_MASK = 0xfffffe00;

export const SUBCLUSTERS_PER_CLUSTER = 32;
export const COMPRESSED_SECTOR_SIZE = 512;
/** QEMU's block layer counts a disk's size in 512-byte sectors (BDRV_SECTOR_SIZE). */
export const SECTOR_SIZE = 512;

// Snapshot table entry
export const SNAPSHOT_HEADER_SIZE = 40;
export const SNAPSHOT_EXTRA_DATA_V3 = 16; // vm_state_size_large + disk_size
export const SNAPSHOT_MAX_EXTRA_DATA = 1024; // QEMU's limit on extra data per entry
/** Byte offsets of a snapshot table entry's fields; id and name follow the extra data. */
export const SNAPSHOT_ENTRY = {
  l1_table_offset: 0, l1_size: 8, id_str_size: 12, name_size: 14, date_sec: 16, date_nsec: 20,
  vm_clock_nsec: 24, vm_state_size: 32, extra_data_size: 36, extra_data: 40,
} as const;
/** Byte offsets within a snapshot's extra data (each field present when the extra data reaches its end). */
export const SNAPSHOT_EXTRA = { vm_state_size_large: 0, disk_size: 8, icount: 16 } as const;

// Bitmap directory entry
export const BME_HEADER_SIZE = 24;
/** Byte offsets of a bitmap directory entry's fields; extra data, then the name, follow. */
export const BME_ENTRY = {
  bitmap_table_offset: 0, bitmap_table_size: 8, flags: 12, type: 16, granularity_bits: 17, name_size: 18, extra_data_size: 20,
} as const;
export const BME_FLAG_IN_USE = 1 << 0;
export const BME_FLAG_AUTO = 1 << 1;
export const BME_FLAG_EXTRA_DATA_COMPATIBLE = 1 << 2;
export const BME_TABLE_ENTRY_OFFSET_MASK = 0x00fffffffffffe00n;
export const BME_TABLE_ENTRY_FLAG_ALL_ONES = 1n;
/** The bitmap table entry bits on 32-bit halves: bit 0 "all ones", bits 1-8 and 56-63 reserved. */
export const BME_TABLE_ENTRY_FLAG_ALL_ONES_LO = 0x1;
export const BME_TABLE_ENTRY_RESERVED_HI = 0xff000000;
export const BME_TABLE_ENTRY_RESERVED_LO = 0x000001fe;
export const BME_MAX_NAME_SIZE = 1023;
export const BME_MAX_TABLE_SIZE = 0x8000000;
export const BME_MAX_GRANULARITY_BITS = 31;
export const BME_MIN_GRANULARITY_BITS = 9;

/**
 * The header's fixed fields (spec "Header"), in on-disk order: the one table the parser, every header
 * write and the structure view take offsets and sizes from. Fields from `incompatible_features` on
 * exist only in version 3; `compression_type` only when header_length reaches it.
 */
export const HEADER_FIELDS = [
  { name: 'magic', offset: 0, size: 4 },
  { name: 'version', offset: 4, size: 4 },
  { name: 'backing_file_offset', offset: 8, size: 8 },
  { name: 'backing_file_size', offset: 16, size: 4 },
  { name: 'cluster_bits', offset: 20, size: 4 },
  { name: 'size', offset: 24, size: 8 },
  { name: 'crypt_method', offset: 32, size: 4 },
  { name: 'l1_size', offset: 36, size: 4 },
  { name: 'l1_table_offset', offset: 40, size: 8 },
  { name: 'refcount_table_offset', offset: 48, size: 8 },
  { name: 'refcount_table_clusters', offset: 56, size: 4 },
  { name: 'nb_snapshots', offset: 60, size: 4 },
  { name: 'snapshots_offset', offset: 64, size: 8 },
  { name: 'incompatible_features', offset: 72, size: 8 },
  { name: 'compatible_features', offset: 80, size: 8 },
  { name: 'autoclear_features', offset: 88, size: 8 },
  { name: 'refcount_order', offset: 96, size: 4 },
  { name: 'header_length', offset: 100, size: 4 },
  { name: 'compression_type', offset: 104, size: 1 },
] as const;
export type HeaderFieldName = (typeof HEADER_FIELDS)[number]['name'];
export const HEADER_FIELD: { readonly [K in HeaderFieldName]: { readonly name: K; readonly offset: number; readonly size: 1 | 4 | 8 } } =
  Object.fromEntries(HEADER_FIELDS.map(f => [f.name, f])) as never;

/** An 8-byte field reads as bigint (exact past 2^53), the others as number. */
export type HeaderFieldValue<K extends HeaderFieldName> = Extract<(typeof HEADER_FIELDS)[number], { name: K }>['size'] extends 8 ? bigint : number;

/** Reads one header field from a buffer holding the header from byte 0. */
export function readHeaderField<K extends HeaderFieldName>(buf: Buffer, name: K): HeaderFieldValue<K> {
  const f = HEADER_FIELD[name];
  return (f.size === 8 ? buf.readBigUInt64BE(f.offset) : f.size === 4 ? buf.readUInt32BE(f.offset) : buf.readUInt8(f.offset)) as HeaderFieldValue<K>;
}
/** Writes one header field into a buffer holding the header from byte 0. */
export function writeHeaderField(buf: Buffer, name: HeaderFieldName, value: bigint | number): void {
  const f = HEADER_FIELD[name];
  if (f.size === 8) buf.writeBigUInt64BE(BigInt(value), f.offset);
  else if (f.size === 4) buf.writeUInt32BE(Number(value) >>> 0, f.offset);
  else buf.writeUInt8(Number(value), f.offset);
}
/** The field's bytes alone, ready for an in-place write at `HEADER_FIELD[name].offset`. */
export function encodeHeaderField(name: HeaderFieldName, value: bigint | number): Buffer {
  const f = HEADER_FIELD[name], b = Buffer.alloc(f.size);
  if (f.size === 8) b.writeBigUInt64BE(BigInt(value));
  else if (f.size === 4) b.writeUInt32BE(Number(value) >>> 0);
  else b.writeUInt8(Number(value));
  return b;
}

/**
 * Consecutive header fields encoded for one in-place write at the first one's offset: a switch
 * (nb_snapshots + snapshots_offset, size + crypt_method + l1_size + l1_table_offset) that must land
 * in a single write. The fields must follow each other on disk.
 */
export function encodeHeaderRun(fields: readonly (readonly [HeaderFieldName, bigint | number])[]): { offset: number; bytes: Buffer } {
  const offset = HEADER_FIELD[fields[0][0]].offset;
  const parts: Buffer[] = [];
  let at = offset;
  for (const [name, value] of fields) {
    const f = HEADER_FIELD[name];
    if (f.offset !== at) throw new Error(`header field ${name} does not follow the previous field`);
    parts.push(encodeHeaderField(name, value));
    at += f.size;
  }
  return { offset, bytes: Buffer.concat(parts) };
}

/** Every header extension starts with its type and its data length, 4 bytes each. */
export const EXT_HEADER_SIZE = 8;
/** Feature name table entries: type (1 byte), bit number (1 byte), name (46 bytes, NUL-padded). */
export const FEATURE_TABLE_ENTRY_SIZE = 48;
export const FEATURE_NAME_OFFSET = 2;
/** Fields of the bitmaps extension's data (spec "Bitmaps extension"). */
export const BITMAPS_EXT = { nb_bitmaps: 0, bitmap_directory_size: 8, bitmap_directory_offset: 16, length: 24 } as const;
/** Fields of the full disk encryption extension's data. */
export const CRYPTO_EXT = { offset: 0, length: 8, size: 16 } as const;

export function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}
