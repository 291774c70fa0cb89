/**
 * The qcow2 header (versions 2 and 3) and its extensions: every field, feature bits decoded by
 * name (from the image's feature name table when it has one), unknown extensions kept.
 */
import { Qcow2Error } from '../errors';
import { ImageFile } from '../io/reader';
import { formatPath, step } from '../path';
import * as L from './layout';
import { HEADER_FIELD as F, HeaderFieldName, readHeaderField } from './layout';

export interface FeatureBit {
  bit: number;
  name: string;
  /** True when the bit is set in the header. */
  set: boolean;
  /** True when this implementation knows what the bit means. */
  known: boolean;
}

export interface HeaderExtension {
  type: number;
  typeName: string;
  hostOffset: number;
  length: number;
  data: Buffer;
}

export interface BitmapsExtension {
  nbBitmaps: number;
  bitmapDirectorySize: number;
  bitmapDirectoryOffset: number;
}

export interface CryptoExtension {
  offset: number;
  length: number;
}

export interface Qcow2Header {
  magic: number;
  version: number;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  /** The virtual disk size, as QEMU takes it: the size field rounded down to whole sectors. */
  size: number;
  /** The size field as stored (QEMU sizes the L1 table by it). */
  sizeField: bigint;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  /**
   * l1_table_offset as stored when it is 2^53 or more (QEMU opens an L1 table offset up to
   * INT64_MAX - its size; such a table lies far past the end of any file and reads as zeros):
   * `l1TableOffset` then holds it rounded, and header writes put back this exact value.
   */
  l1TableOffsetExact?: bigint;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
  // derived
  clusterSize: number;
  refcountBits: number;
  extendedL2: boolean;
  backingFile?: string;
  backingFormat?: string;
  dataFile?: string;
  featureNames: Map<string, string>; // "type:bit" -> name from the feature name table
  extensions: HeaderExtension[];
  bitmaps?: BitmapsExtension;
  crypto?: CryptoExtension;
  /** End of the header, extensions and backing file name. */
  headerEnd: number;
}

const EXT_NAMES: Record<number, string> = {
  [L.EXT_BACKING_FORMAT]: 'backing format',
  [L.EXT_FEATURE_TABLE]: 'feature name table',
  [L.EXT_BITMAPS]: 'bitmaps',
  [L.EXT_CRYPTO]: 'full disk encryption',
  [L.EXT_DATA_FILE]: 'external data file name',
};

export function extensionName(type: number): string {
  return EXT_NAMES[type] ?? `unknown (0x${type.toString(16).padStart(8, '0')})`;
}

/** `header.l1_size`: the structure path of one header field. */
export function headerPath(field?: HeaderFieldName): string {
  return formatPath([step('header', undefined, field === undefined ? {} : { field })]);
}

const INT64_MAX = (1n << 63n) - 1n;
const BDRV_MAX_LENGTH = INT64_MAX & ~((1n << 30n) - 1n);

type U64Field = 'backing_file_offset' | 'l1_table_offset' | 'refcount_table_offset' | 'snapshots_offset';
function u64(buf: Buffer, name: U64Field, file: string): number {
  const v = readHeaderField(buf, name);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new Qcow2Error(file, headerPath(name), F[name].offset, `value 0x${v.toString(16)} is too large to be a file offset or size`);
  }
  return Number(v);
}

/**
 * The virtual disk size. QEMU keeps it in whole sectors (bs->total_sectors): a size that is not a
 * multiple of 512 is rounded down, and that is the size it reports and writes back. A multiple of
 * 512 below 2^62 is exact as a number, and QEMU opens nothing larger (an L1 table of at most 4 Mi
 * entries of 2^39 bytes each with 2 MiB clusters covers 2^61).
 */
function diskSize(buf: Buffer, file: string): number {
  const v = readHeaderField(buf, 'size');
  if (v >= 1n << 62n) throw new Qcow2Error(file, headerPath('size'), F.size.offset, `disk size 0x${v.toString(16)} is beyond what a qcow2 L1 table can map`);
  return Number(v - v % BigInt(L.SECTOR_SIZE));
}

/** Reads and validates the header and its extensions. Never trusts a size before checking it. */
export async function readHeader(file: ImageFile): Promise<Qcow2Header> {
  const path = file.path;
  if (file.size < L.HEADER_V2_LENGTH) {
    // Distinguish "not qcow2" from "truncated qcow2" by the magic when at least 4 bytes exist.
    if (file.size >= 4) {
      const m = await file.read(F.magic.offset, F.magic.size, headerPath('magic'));
      if (readHeaderField(m, 'magic') === L.QCOW_MAGIC) {
        throw new Qcow2Error(path, headerPath(), 0, `file is truncated: ${file.size} bytes, a qcow2 header needs at least ${L.HEADER_V2_LENGTH}`);
      }
    }
    throw new Qcow2Error(path, headerPath('magic'), F.magic.offset, 'not a qcow2 image (file too small)', 'not-qcow2');
  }
  const first = await file.read(0, Math.min(file.size, 4096), headerPath());
  const magic = readHeaderField(first, 'magic');
  if (magic !== L.QCOW_MAGIC) {
    throw new Qcow2Error(path, headerPath('magic'), F.magic.offset, `not a qcow2 image (magic 0x${magic.toString(16).padStart(8, '0')}, expected 0x${L.QCOW_MAGIC.toString(16)})`, 'not-qcow2');
  }
  const version = readHeaderField(first, 'version');
  if (version !== 2 && version !== 3) {
    throw new Qcow2Error(path, headerPath('version'), F.version.offset, `unsupported qcow2 version ${version}`, 'unsupported');
  }
  if (version === 3 && first.length < L.HEADER_V3_MIN_LENGTH) {
    throw new Qcow2Error(path, headerPath(), 0, `file is truncated: ${file.size} bytes, a version 3 header needs at least ${L.HEADER_V3_MIN_LENGTH}`);
  }
  const clusterBits = readHeaderField(first, 'cluster_bits');
  if (clusterBits < L.MIN_CLUSTER_BITS || clusterBits > L.MAX_CLUSTER_BITS) {
    throw new Qcow2Error(path, headerPath('cluster_bits'), F.cluster_bits.offset, `cluster_bits ${clusterBits} is outside 9..21 (512 B to 2 MiB)`);
  }
  const clusterSize = 2 ** clusterBits;
  let headerLength = L.HEADER_V2_LENGTH;
  let incompatibleFeatures = 0n, compatibleFeatures = 0n, autoclearFeatures = 0n;
  let refcountOrder = 4;
  let compressionType = L.COMPRESSION_ZLIB;
  if (version === 3) {
    headerLength = readHeaderField(first, 'header_length');
    // QEMU asks only for 104 bytes or more within the first cluster: the spec's "multiple of 8" is
    // not enforced, and the extensions then start at that unaligned offset (qcow2_do_open)
    if (headerLength >= L.HEADER_V3_MIN_LENGTH && headerLength <= clusterSize && headerLength > file.size) {
      throw new Qcow2Error(path, headerPath(), 0, `file is truncated: ${file.size} bytes, the header is ${headerLength}`);
    }
    if (headerLength < L.HEADER_V3_MIN_LENGTH || headerLength > clusterSize) {
      throw new Qcow2Error(path, headerPath('header_length'), F.header_length.offset, `header_length ${headerLength} is invalid (must be at least ${L.HEADER_V3_MIN_LENGTH} and within the first cluster)`);
    }
    incompatibleFeatures = readHeaderField(first, 'incompatible_features');
    compatibleFeatures = readHeaderField(first, 'compatible_features');
    autoclearFeatures = readHeaderField(first, 'autoclear_features');
    refcountOrder = readHeaderField(first, 'refcount_order');
    if (refcountOrder > L.MAX_REFCOUNT_ORDER) {
      throw new Qcow2Error(path, headerPath('refcount_order'), F.refcount_order.offset, `refcount_order ${refcountOrder} is above 6 (64-bit refcounts)`);
    }
    // compression_type exists only when header_length reaches past its offset
    if (headerLength > F.compression_type.offset) compressionType = readHeaderField(first, 'compression_type');
    // QEMU's validate_compression_type: a known type, and the feature bit set exactly when it is not zlib
    if (compressionType !== L.COMPRESSION_ZLIB && compressionType !== L.COMPRESSION_ZSTD) {
      throw new Qcow2Error(path, headerPath('compression_type'), F.compression_type.offset, `unknown compression type ${compressionType}`, 'unsupported');
    }
    const bit = (incompatibleFeatures & L.INCOMPAT_COMPRESSION) !== 0n;
    if (compressionType === L.COMPRESSION_ZLIB && bit) {
      throw new Qcow2Error(path, headerPath('incompatible_features'), F.incompatible_features.offset, 'the compression type feature bit (incompatible bit 3) is set on a zlib image; QEMU refuses to open it (the bit means a compression type other than zlib)');
    }
    if (compressionType !== L.COMPRESSION_ZLIB && !bit) {
      throw new Qcow2Error(path, headerPath('compression_type'), F.compression_type.offset, `compression_type ${compressionType} without the compression type feature bit`);
    }
  }
  const h: Qcow2Header = {
    magic, version,
    backingFileOffset: u64(first, 'backing_file_offset', path),
    backingFileSize: readHeaderField(first, 'backing_file_size'),
    clusterBits,
    size: diskSize(first, path),
    sizeField: readHeaderField(first, 'size'),
    cryptMethod: readHeaderField(first, 'crypt_method'),
    l1Size: readHeaderField(first, 'l1_size'),
    l1TableOffset: 0,
    refcountTableOffset: u64(first, 'refcount_table_offset', path),
    refcountTableClusters: readHeaderField(first, 'refcount_table_clusters'),
    nbSnapshots: readHeaderField(first, 'nb_snapshots'),
    snapshotsOffset: u64(first, 'snapshots_offset', path),
    incompatibleFeatures, compatibleFeatures, autoclearFeatures, refcountOrder, headerLength, compressionType,
    clusterSize,
    refcountBits: 2 ** refcountOrder,
    extendedL2: (incompatibleFeatures & L.INCOMPAT_EXTL2) !== 0n,
    featureNames: new Map(),
    extensions: [],
    headerEnd: headerLength,
  };
  // QEMU's validate_table_offset: any offset up to INT64_MAX minus the table's size opens
  const l1Raw = readHeaderField(first, 'l1_table_offset');
  if (l1Raw > BigInt(Number.MAX_SAFE_INTEGER)) {
    if (l1Raw > INT64_MAX - BigInt(h.l1Size) * 8n) {
      throw new Qcow2Error(path, headerPath('l1_table_offset'), F.l1_table_offset.offset, `value 0x${l1Raw.toString(16)} is too large for a table offset (QEMU: "Active L1 table offset invalid")`);
    }
    // QEMU's block layer refuses any read reaching past BDRV_MAX_LENGTH (INT64_MAX aligned down to 1 GiB)
    if (h.l1Size > 0 && l1Raw + BigInt(h.l1Size) * 8n > BDRV_MAX_LENGTH) {
      throw new Qcow2Error(path, headerPath('l1_table_offset'), F.l1_table_offset.offset, `an L1 table at 0x${l1Raw.toString(16)} cannot be read (QEMU: "Could not read L1 table: Input/output error")`);
    }
    h.l1TableOffsetExact = l1Raw;
  }
  h.l1TableOffset = Number(l1Raw);
  if (h.cryptMethod > L.CRYPT_LUKS) {
    throw new Qcow2Error(path, headerPath('crypt_method'), F.crypt_method.offset, `unknown encryption method ${h.cryptMethod}`, 'unsupported');
  }
  if (h.extendedL2 && clusterBits < 14) {
    throw new Qcow2Error(path, headerPath('incompatible_features'), F.incompatible_features.offset, 'extended L2 entries need clusters of at least 16 KiB');
  }
  if (h.backingFileOffset > clusterSize) {
    throw new Qcow2Error(path, headerPath('backing_file_offset'), F.backing_file_offset.offset, 'backing file name lies outside the first cluster');
  }
  // Extensions follow the header, inside the first cluster and before the backing file name:
  // QEMU reads them up to backing_file_offset when there is one (ext_end in qcow2_do_open) and
  // stops there even without an end marker.
  const extEnd = h.backingFileOffset !== 0 ? h.backingFileOffset : clusterSize;
  const extArea = await file.read(0, Math.min(file.size, clusterSize), 'header extensions');
  let off = headerLength;
  while (off < extEnd) {
    const fileEnded = extArea.length < clusterSize; // the file is shorter than its first cluster
    if (off + L.EXT_HEADER_SIZE > extArea.length) {
      if (off === extArea.length && fileEnded) break; // QEMU reads past EOF as zeros: an end marker
      throw new Qcow2Error(path, 'header extension', off, fileEnded
        ? `file is truncated: it ends at 0x${file.size.toString(16)}, inside the header extensions`
        : 'extension header runs past the first cluster');
    }
    const type = extArea.readUInt32BE(off);
    const length = extArea.readUInt32BE(off + 4);
    if (off + L.EXT_HEADER_SIZE > extEnd || length > extEnd - off - L.EXT_HEADER_SIZE) {
      // QEMU checks this before it looks at the type, so an end marker with a length is refused too
      throw new Qcow2Error(path, `header extension ${extensionName(type)}`, off, `length ${length} runs past ${h.backingFileOffset !== 0 ? 'the backing file name' : 'the first cluster'} ("Header extension too large")`);
    }
    if (type === L.EXT_END) { h.headerEnd = off + L.EXT_HEADER_SIZE; break; }
    const dataEnd = off + L.EXT_HEADER_SIZE + length;
    if (dataEnd > extArea.length) {
      throw new Qcow2Error(path, `header extension ${extensionName(type)}`, off, dataEnd <= clusterSize && fileEnded
        ? `file is truncated: it ends at 0x${file.size.toString(16)}, inside this ${length}-byte extension`
        : `length ${length} runs past the first cluster`);
    }
    const data = Buffer.from(extArea.subarray(off + L.EXT_HEADER_SIZE, dataEnd));
    h.extensions.push({ type, typeName: extensionName(type), hostOffset: off, length, data });
    parseExtension(h, type, data, off, path);
    off += L.EXT_HEADER_SIZE + L.alignUp(length, 8);
  }
  if (h.backingFileOffset !== 0) {
    if (h.backingFileSize > L.QCOW_MAX_BACKING_FILE_NAME) {
      throw new Qcow2Error(path, headerPath('backing_file_size'), F.backing_file_size.offset, `backing file name length ${h.backingFileSize} is invalid (at most ${L.QCOW_MAX_BACKING_FILE_NAME})`);
    }
    if (h.backingFileOffset + h.backingFileSize > clusterSize) {
      throw new Qcow2Error(path, headerPath('backing_file_offset'), F.backing_file_offset.offset, 'backing file name lies outside the first cluster');
    }
  }
  // an empty name (backing_file_size 0) is no backing file, as QEMU reads it
  if (h.backingFileOffset !== 0 && h.backingFileSize > 0) {
    const name = await file.read(h.backingFileOffset, h.backingFileSize, 'backing file name');
    h.backingFile = name.toString('utf8');
    h.headerEnd = Math.max(h.headerEnd, h.backingFileOffset + h.backingFileSize);
  }
  if ((h.incompatibleFeatures & L.INCOMPAT_DATA_FILE) !== 0n && h.dataFile === undefined) {
    // QEMU requires the data-file option then; we report it clearly rather than guess.
    h.dataFile = undefined;
  }
  return h;
}

function parseExtension(h: Qcow2Header, type: number, data: Buffer, off: number, path: string): void {
  switch (type) {
    case L.EXT_BACKING_FORMAT:
      h.backingFormat = data.toString('utf8');
      break;
    case L.EXT_DATA_FILE:
      h.dataFile = data.toString('utf8');
      break;
    case L.EXT_FEATURE_TABLE:
      for (let i = 0; i + L.FEATURE_TABLE_ENTRY_SIZE <= data.length; i += L.FEATURE_TABLE_ENTRY_SIZE) {
        const kind = data[i];
        const bit = data[i + 1];
        const raw = data.subarray(i + L.FEATURE_NAME_OFFSET, i + L.FEATURE_TABLE_ENTRY_SIZE);
        const nul = raw.indexOf(0);
        h.featureNames.set(`${kind}:${bit}`, raw.subarray(0, nul < 0 ? raw.length : nul).toString('utf8'));
      }
      break;
    case L.EXT_BITMAPS:
      if (data.length < L.BITMAPS_EXT.length) throw new Qcow2Error(path, 'header extension bitmaps', off, `length ${data.length} is below ${L.BITMAPS_EXT.length}`);
      h.bitmaps = {
        nbBitmaps: data.readUInt32BE(L.BITMAPS_EXT.nb_bitmaps),
        bitmapDirectorySize: Number(data.readBigUInt64BE(L.BITMAPS_EXT.bitmap_directory_size)),
        bitmapDirectoryOffset: Number(data.readBigUInt64BE(L.BITMAPS_EXT.bitmap_directory_offset)),
      };
      break;
    case L.EXT_CRYPTO:
      if (data.length < L.CRYPTO_EXT.size) throw new Qcow2Error(path, 'header extension full disk encryption', off, `length ${data.length} is below ${L.CRYPTO_EXT.size}`);
      h.crypto = { offset: Number(data.readBigUInt64BE(L.CRYPTO_EXT.offset)), length: Number(data.readBigUInt64BE(L.CRYPTO_EXT.length)) };
      break;
    default:
      break;
  }
}

/** The feature bits of one kind, by name: from the image's own table when present, else the spec's. */
export function featureBits(h: Qcow2Header, kind: 'incompatible' | 'compatible' | 'autoclear'): FeatureBit[] {
  const value = kind === 'incompatible' ? h.incompatibleFeatures : kind === 'compatible' ? h.compatibleFeatures : h.autoclearFeatures;
  const kindNo = kind === 'incompatible' ? 0 : kind === 'compatible' ? 1 : 2;
  const out: FeatureBit[] = [];
  const bits = new Set<number>();
  for (let b = 0; b < 64; b++) if ((value >> BigInt(b)) & 1n) bits.add(b);
  for (const k of Object.keys(L.KNOWN_FEATURE_NAMES[kind])) bits.add(Number(k));
  for (const key of h.featureNames.keys()) {
    const [k, b] = key.split(':').map(Number);
    if (k === kindNo) bits.add(b);
  }
  for (const b of [...bits].sort((a, c) => a - c)) {
    const known = L.KNOWN_FEATURE_NAMES[kind][b];
    out.push({
      bit: b,
      name: h.featureNames.get(`${kindNo}:${b}`) ?? known ?? `unknown bit ${b}`,
      set: ((value >> BigInt(b)) & 1n) === 1n,
      known: known !== undefined,
    });
  }
  return out;
}

/** Incompatible bits this implementation can open (everything the spec defines in QEMU 7.2). */
export const SUPPORTED_INCOMPATIBLE = L.INCOMPAT_DIRTY | L.INCOMPAT_CORRUPT | L.INCOMPAT_DATA_FILE | L.INCOMPAT_COMPRESSION | L.INCOMPAT_EXTL2;

/** Serialises the fixed part of a header (used by write paths); extensions are written by the caller. */
export function encodeHeaderFields(h: Qcow2Header): Buffer {
  const len = h.version === 2 ? L.HEADER_V2_LENGTH : h.headerLength;
  const b = Buffer.alloc(len);
  const put = (name: HeaderFieldName, value: bigint | number) => L.writeHeaderField(b, name, value);
  put('magic', L.QCOW_MAGIC);
  put('version', h.version);
  put('backing_file_offset', h.backingFileOffset);
  put('backing_file_size', h.backingFileSize);
  put('cluster_bits', h.clusterBits);
  put('size', h.size);
  put('crypt_method', h.cryptMethod);
  put('l1_size', h.l1Size);
  put('l1_table_offset', h.l1TableOffsetExact !== undefined && Number(h.l1TableOffsetExact) === h.l1TableOffset ? h.l1TableOffsetExact : h.l1TableOffset);
  put('refcount_table_offset', h.refcountTableOffset);
  put('refcount_table_clusters', h.refcountTableClusters);
  put('nb_snapshots', h.nbSnapshots);
  put('snapshots_offset', h.snapshotsOffset);
  if (h.version === 3) {
    put('incompatible_features', h.incompatibleFeatures);
    put('compatible_features', h.compatibleFeatures);
    put('autoclear_features', h.autoclearFeatures);
    put('refcount_order', h.refcountOrder);
    put('header_length', h.headerLength);
    if (h.headerLength > F.compression_type.offset) put('compression_type', h.compressionType);
  }
  return b;
}
