/**
 * `qemu-img measure`: how large a new image would be — the qcow2 computation of QEMU 7.2
 * (qcow2_measure → qcow2_calc_prealloc_size → qcow2_refcount_metadata_size, plus
 * qcow2_get_persistent_dirty_bitmap_size for "bitmaps") and raw_measure.
 *
 * - fully-allocated: header, every L2 and L1 table the disk needs, the refcount blocks and table
 *   that count all of it (a fixed point: refcount metadata counts itself), every data cluster,
 *   and the LUKS header when encrypting.
 * - required: the same metadata, but only the data clusters the source touches (all of them with
 *   a backing file, where QEMU cannot know what is shared, or with falloc/full preallocation).
 * - bitmaps: what copying the source's persistent bitmaps takes, when both source and output
 *   support them (a qcow2 v3 source, compat=1.1 output).
 *
 * Sizes can pass 2^53 (2 MiB clusters address 2^61 bytes), so everything is computed in BigInt.
 * The source comes in as its length and the guest ranges holding data (ascending); a later step
 * feeds them from a qcow2 chain's block status.
 */
import { Qcow2Error } from '../errors';

export type MeasureFormat = 'qcow2' | 'raw' | 'vpc' | 'vmdk';
export type Preallocation = 'off' | 'metadata' | 'falloc' | 'full';

/** The output's creation options qemu-img measure takes with -o (qcow2). */
export interface Qcow2MeasureOptions {
  /** The `size` option (--size SIZE, or -o size=): 0 when measuring a source without one. */
  size?: number | bigint;
  clusterSize?: number;
  refcountBits?: number;
  /** compat=0.10 or 1.1 (measure accepts only these spellings, as QEMU's qcow2_measure does). */
  compat?: string;
  extendedL2?: boolean;
  preallocation?: Preallocation;
  /** backing_file given: QEMU then counts every data cluster as required. */
  backingFile?: boolean;
  /** encrypt.format=luks: the LUKS header's length in bytes (see `luksHeaderSize`). */
  luksHeaderSize?: number;
}

export interface MeasureSource {
  /** The source's length in bytes (qemu-img's bdrv_getlength: whole sectors). */
  virtualSize: number | bigint;
  /** Guest ranges holding data (allocated anywhere in the source's chain, not reading as zero), ascending. */
  dataRuns: Iterable<{ start: number; length: number }>;
  /**
   * The source's persistent bitmaps, or undefined when the source cannot have any (raw, qcow2 v2).
   * `size` defaults to the source's virtual size.
   */
  bitmaps?: ReadonlyArray<{ name: string; granularity: number; size?: number | bigint }>;
}

export interface MeasureResult {
  required: bigint;
  fullyAllocated: bigint;
  /** Present exactly when qemu-img prints it. */
  bitmaps?: bigint;
}

const MIN_CLUSTER_BITS = 9;
const MAX_CLUSTER_BITS = 21;
const DEFAULT_CLUSTER_SIZE = 65536;
const SUBCLUSTERS_PER_CLUSTER = 32;
const L1E_SIZE = 8n;
const L2E_SIZE_NORMAL = 8n;
const L2E_SIZE_EXTENDED = 16n;
const REFTABLE_ENTRY_SIZE = 8n;
const QCOW_MAX_L1_SIZE = 0x2000000n;

function fail(detail: string): never {
  throw new Qcow2Error('measure', 'options', undefined, detail, 'unsupported');
}

const roundUp = (n: bigint, to: bigint): bigint => ((n + to - 1n) / to) * to;
const divRoundUp = (n: bigint, d: bigint): bigint => (n + d - 1n) / d;

/**
 * What `qemu-img measure -O FORMAT [-o OPTS] (--size SIZE | SOURCE)` reports; throws (messages as
 * qemu-img's) for options it rejects and for formats that cannot be measured.
 */
export function measure(format: MeasureFormat, options: Qcow2MeasureOptions, source?: MeasureSource): MeasureResult {
  if (format === 'raw') return measureRaw(options, source);
  if (format !== 'qcow2') fail(`Block driver '${format}' does not support size measurement`);
  return measureQcow2(options, source);
}

/** raw_measure: the source's length (or the size rounded up to a sector); never sparse on paper. */
function measureRaw(options: Qcow2MeasureOptions, source?: MeasureSource): MeasureResult {
  const required = source ? BigInt(source.virtualSize) : roundUp(BigInt(options.size ?? 0), 512n);
  return { required, fullyAllocated: required };
}

function measureQcow2(options: Qcow2MeasureOptions, source?: MeasureSource): MeasureResult {
  const extendedL2 = options.extendedL2 ?? false;
  const clusterSize = validateClusterSize(options.clusterSize ?? DEFAULT_CLUSTER_SIZE, extendedL2);
  const cs = BigInt(clusterSize);
  const version = compatVersion(options.compat);
  const refcountBits = options.refcountBits ?? 16;
  if (refcountBits > 64 || refcountBits < 1 || (refcountBits & (refcountBits - 1)) !== 0) {
    fail('Refcount width must be a power of two and may not exceed 64 bits');
  }
  if (version < 3 && refcountBits !== 16) {
    fail('Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)');
  }
  const luksPayload = options.luksHeaderSize !== undefined ? roundUp(BigInt(options.luksHeaderSize), cs) : 0n;

  let virtualSize = roundUp(BigInt(options.size ?? 0), cs);
  const l2eSize = extendedL2 ? L2E_SIZE_EXTENDED : L2E_SIZE_NORMAL;
  const l2Tables = divRoundUp(virtualSize / cs, cs / l2eSize);
  if (l2Tables * L1E_SIZE > QCOW_MAX_L1_SIZE) fail('The image size is too large (try using a larger cluster size)');

  let required = 0n;
  if (source) {
    virtualSize = roundUp(BigInt(source.virtualSize), cs);
    required = options.backingFile ? virtualSize : BigInt(dataClusters(source.dataRuns, clusterSize)) * cs;
  }
  const prealloc = options.preallocation ?? 'off';
  if (prealloc === 'full' || prealloc === 'falloc') required = virtualSize;

  const fullyAllocated = luksPayload + calcPreallocSize(virtualSize, cs, Math.log2(refcountBits), extendedL2);
  const result: MeasureResult = { required: fullyAllocated - virtualSize + required, fullyAllocated };
  if (version >= 3 && source?.bitmaps) result.bitmaps = persistentBitmapsSize(source.bitmaps, BigInt(source.virtualSize), cs);
  return result;
}

function validateClusterSize(clusterSize: number, extendedL2: boolean): number {
  const bits = Math.log2(clusterSize);
  if (!Number.isInteger(bits) || bits < MIN_CLUSTER_BITS || bits > MAX_CLUSTER_BITS) {
    fail(`Cluster size must be a power of two between ${1 << MIN_CLUSTER_BITS} and ${1 << (MAX_CLUSTER_BITS - 10)}k`);
  }
  const min = (1 << MIN_CLUSTER_BITS) * SUBCLUSTERS_PER_CLUSTER;
  if (extendedL2 && clusterSize < min) fail(`Extended L2 entries are only supported with cluster sizes of at least ${min} bytes`);
  return clusterSize;
}

function compatVersion(compat: string | undefined): number {
  if (compat === undefined || compat === '1.1') return 3;
  if (compat === '0.10') return 2;
  fail(`Invalid compatibility level: '${compat}'`);
}

/** How many clusters the runs touch (QEMU rounds each data extent out to whole clusters). */
function dataClusters(runs: Iterable<{ start: number; length: number }>, clusterSize: number): number {
  let count = 0;
  let counted = -1; // the last cluster index already counted
  for (const r of runs) {
    if (r.length <= 0) continue;
    let first = Math.floor(r.start / clusterSize);
    const last = Math.floor((r.start + r.length - 1) / clusterSize);
    if (first <= counted) first = counted + 1;
    if (last >= first) count += last - first + 1;
    if (last > counted) counted = last;
  }
  return count;
}

/** qcow2_calc_prealloc_size: every byte of a fully allocated image of `totalSize` bytes. */
export function calcPreallocSize(totalSize: bigint, cs: bigint, refcountOrder: number, extendedL2: boolean): bigint {
  const aligned = roundUp(totalSize, cs);
  const l2eSize = extendedL2 ? L2E_SIZE_EXTENDED : L2E_SIZE_NORMAL;
  let meta = cs; // header
  const nl2e = roundUp(aligned / cs, cs / l2eSize);
  meta += nl2e * l2eSize;
  const nl1e = roundUp((nl2e * l2eSize) / cs, cs / L1E_SIZE);
  meta += nl1e * L1E_SIZE;
  meta += refcountMetadataSize((meta + aligned) / cs, cs, refcountOrder);
  return meta + aligned;
}

/**
 * qcow2_refcount_metadata_size: refcount blocks and table clusters for `clusters` clusters, found
 * as the fixed point where the refcount metadata also counts itself.
 */
export function refcountMetadataSize(clusters: bigint, cs: bigint, refcountOrder: number): bigint {
  const blocksPerTableCluster = cs / REFTABLE_ENTRY_SIZE;
  const refcountsPerBlock = (cs * 8n) >> BigInt(refcountOrder);
  let table = 0n, blocks = 0n, n = 0n, last: bigint;
  do {
    last = n;
    blocks = divRoundUp(clusters + table + blocks, refcountsPerBlock);
    table = divRoundUp(blocks, blocksPerTableCluster);
    n = clusters + blocks + table;
  } while (n !== last);
  return (blocks + table) * cs;
}

/**
 * qcow2_get_persistent_dirty_bitmap_size: per bitmap its data as if fully allocated and its
 * bitmap table, both in whole clusters, then the bitmap directory rounded to a cluster.
 */
function persistentBitmapsSize(bitmaps: NonNullable<MeasureSource['bitmaps']>, diskSize: bigint, cs: bigint): bigint {
  let total = 0n;
  let directory = 0n;
  for (const b of bitmaps) {
    const size = BigInt(b.size ?? diskSize);
    const bytes = divRoundUp(divRoundUp(size, BigInt(b.granularity)), 8n);
    const clusters = divRoundUp(bytes, cs);
    total += clusters * cs;
    total += roundUp(clusters * 8n, cs);
    directory += roundUp(24n + BigInt(Buffer.byteLength(b.name, 'utf8')), 8n);
  }
  return total + roundUp(directory, cs);
}

/** qemu-img measure --output=json, byte for byte (QEMU's pretty JSON, its key order). */
export function formatMeasureJson(r: MeasureResult): string {
  const lines: string[] = [];
  if (r.bitmaps !== undefined) lines.push(`    "bitmaps": ${r.bitmaps}`);
  lines.push(`    "required": ${r.required}`, `    "fully-allocated": ${r.fullyAllocated}`);
  return `{\n${lines.join(',\n')}\n}\n`;
}

/** qemu-img measure's human output. */
export function formatMeasureHuman(r: MeasureResult): string {
  return `required size: ${r.required}\nfully allocated size: ${r.fullyAllocated}\n`
    + (r.bitmaps !== undefined ? `bitmaps size: ${r.bitmaps}\n` : '');
}

/** Key lengths of the ciphers QEMU's LUKS driver offers (bytes, before XTS doubles them). */
const LUKS_CIPHER_KEY_BYTES: Record<string, number> = {
  'aes-128': 16, 'aes-192': 24, 'aes-256': 32, 'cast5-128': 16,
  'serpent-128': 16, 'serpent-192': 24, 'serpent-256': 32, 'twofish-128': 16, 'twofish-192': 24, 'twofish-256': 32,
};

/**
 * The length of the LUKS1 header QEMU writes (qcrypto_block_calculate_payload_offset): 4 KiB of
 * header, then 8 key slots each holding the master key split into 4000 stripes, every slot
 * aligned to 4 KiB. Defaults as QEMU's: aes-256 in XTS mode (a 64-byte master key).
 */
export function luksHeaderSize(cipher: { cipherAlg?: string; cipherMode?: string } = {}): number {
  const alg = cipher.cipherAlg ?? 'aes-256';
  const keyBytes = LUKS_CIPHER_KEY_BYTES[alg];
  if (keyBytes === undefined) fail(`Invalid parameter '${alg}'`);
  const masterKey = keyBytes * ((cipher.cipherMode ?? 'xts') === 'xts' ? 2 : 1);
  const splitKeySectors = Math.ceil((masterKey * 4000) / 512);
  const slotSectors = Math.ceil(splitKeySectors / 8) * 8;
  return (8 + 8 * slotSectors) * 512;
}
