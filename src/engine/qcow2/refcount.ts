/**
 * Reference counts: the refcount table (offsets of refcount blocks) and the blocks themselves,
 * with entries of 1 to 64 bits (refcount_order 0-6). Sub-byte widths pack the lowest index in the
 * lowest bits of each byte, as QEMU does; wider ones are big-endian.
 *
 * Refcounts are plain numbers, exact up to 2^53 - 1. Only a 64-bit refcount can be larger; where
 * that matters (the check compares, reports and repairs stored values) its exact value is kept
 * beside the numbers in an ExactRefcounts map, filled by the decoders, while the number array
 * holds an approximation that still compares as larger than any count the image could have.
 */
import { Qcow2Error } from '../errors';
import { ImageFile, readMany } from '../io/reader';
import { reftableEntryOffset, wordHi, wordLo } from './cluster';
import { headerPath } from './header';
import * as L from './layout';

/** Stored refcounts of 2^53 or more (refcount_bits=64 only), exact, by cluster index. */
export type ExactRefcounts = Map<number, bigint>;

/** The first high word of a 64-bit refcount that no double holds exactly (2^53 = 2^21 << 32). */
const HI_UNSAFE = 0x200000;
/** The largest 64-bit refcount. */
export const REFCOUNT_MAX_64 = (1n << 64n) - 1n;

/** One refcount as a number: exact below 2^53; a larger 64-bit refcount is approximated (refcount64At reads it exactly). */
export function refcountAt(block: Uint8Array, index: number, order: number): number {
  switch (order) {
    case 0: return (block[index >> 3] >> (index & 7)) & 1;
    case 1: return (block[index >> 2] >> (2 * (index & 3))) & 3;
    case 2: return (block[index >> 1] >> (4 * (index & 1))) & 15;
    case 3: return block[index];
    case 4: return (block[2 * index] << 8) | block[2 * index + 1];
    case 5: return (((block[4 * index] << 24) | (block[4 * index + 1] << 16) | (block[4 * index + 2] << 8) | block[4 * index + 3]) >>> 0);
    default: {
      const p = 8 * index;
      const hi = ((block[p] << 24) | (block[p + 1] << 16) | (block[p + 2] << 8) | block[p + 3]) >>> 0;
      const lo = ((block[p + 4] << 24) | (block[p + 5] << 16) | (block[p + 6] << 8) | block[p + 7]) >>> 0;
      return hi * 0x100000000 + lo; // from 2^53 on, rounded: refcount64At is exact
    }
  }
}

/** One 64-bit refcount (refcount_order 6), exact. */
export function refcount64At(block: Uint8Array, index: number): bigint {
  return new DataView(block.buffer, block.byteOffset, block.byteLength).getBigUint64(8 * index);
}

/** Stores one refcount; a bigint is for 64-bit refcounts of 2^53 or more (refcount_order 6). */
export function setRefcountAt(block: Uint8Array, index: number, order: number, value: number | bigint): void {
  if (typeof value === 'bigint') {
    if (order !== 6 || value < 0n || value > REFCOUNT_MAX_64) throw new RangeError(`refcount ${value} does not fit ${2 ** order} bits`);
    new DataView(block.buffer, block.byteOffset, block.byteLength).setBigUint64(8 * index, value);
    return;
  }
  switch (order) {
    case 0: case 1: case 2: {
      const bits = 1 << order, per = 8 >> order, shift = bits * (index % per), mask = ((1 << bits) - 1) << shift;
      const i = Math.floor(index / per);
      block[i] = (block[i] & ~mask) | ((value << shift) & mask);
      return;
    }
    case 3: block[index] = value; return;
    case 4: block[2 * index] = value >> 8; block[2 * index + 1] = value & 0xff; return;
    case 5: {
      const p = 4 * index;
      block[p] = value >>> 24; block[p + 1] = (value >>> 16) & 0xff; block[p + 2] = (value >>> 8) & 0xff; block[p + 3] = value & 0xff;
      return;
    }
    default: {
      const p = 8 * index, hi = Math.floor(value / 0x100000000), lo = value >>> 0;
      block[p] = hi >>> 24; block[p + 1] = (hi >>> 16) & 0xff; block[p + 2] = (hi >>> 8) & 0xff; block[p + 3] = hi & 0xff;
      block[p + 4] = lo >>> 24; block[p + 5] = (lo >>> 16) & 0xff; block[p + 6] = (lo >>> 8) & 0xff; block[p + 7] = lo & 0xff;
    }
  }
}

/** The largest refcount representable with 2^order bits (capped at 2^53-1). */
export function maxRefcount(order: number): number {
  return order >= 6 ? Number.MAX_SAFE_INTEGER : 2 ** (2 ** order) - 1;
}

export interface RefcountGeometry {
  order: number;
  clusterBits: number;
  /** Entries per refcount block. */
  blockEntries: number;
  blockBits: number;
}

export function refcountGeometry(clusterBits: number, order: number): RefcountGeometry {
  const blockBits = clusterBits + 3 - order;
  return { order, clusterBits, blockEntries: 2 ** blockBits, blockBits };
}

/** Refcounts of a run of clusters, in an array as wide as they need (Float64Array for 64-bit ones, rounded from 2^53). */
export type RefcountArray = Uint8Array | Uint16Array | Uint32Array | Float64Array;

/** The narrowest array that holds refcounts of 2^order bits (64-bit ones as rounded numbers). */
export function refcountArray(order: number, n: number): RefcountArray {
  return order <= 3 ? new Uint8Array(n) : order === 4 ? new Uint16Array(n) : order === 5 ? new Uint32Array(n) : new Float64Array(n);
}

/**
 * Decodes the first `n` refcounts of one refcount block into `out[base …]` (16-bit: the common case,
 * unrolled); 64-bit refcounts of 2^53 or more also go to `exact` exactly.
 */
export function decodeRefcountBlock(blk: Uint8Array, order: number, out: RefcountArray, base: number, n: number, exact?: ExactRefcounts): void {
  if (order === 4) {
    for (let k = 0; k < n; k++) out[base + k] = (blk[2 * k] << 8) | blk[2 * k + 1];
  } else if (order === 6) {
    for (let k = 0; k < n; k++) {
      const p = 8 * k;
      const hi = ((blk[p] << 24) | (blk[p + 1] << 16) | (blk[p + 2] << 8) | blk[p + 3]) >>> 0;
      const lo = ((blk[p + 4] << 24) | (blk[p + 5] << 16) | (blk[p + 6] << 8) | blk[p + 7]) >>> 0;
      out[base + k] = hi * 0x100000000 + lo;
      if (hi >= HI_UNSAFE) exact?.set(base + k, refcount64At(blk, k));
    }
  } else {
    for (let k = 0; k < n; k++) out[base + k] = refcountAt(blk, k, order);
  }
}

/** A stored refcount as text, exact also beyond 2^53. */
export function refcountText(value: number, exact: ExactRefcounts | undefined, cluster: number): string {
  return (exact?.get(cluster) ?? value).toString();
}

/** Reads the refcount table (validated against QEMU's 8 MiB limit and the file size). */
export async function readRefcountTable(file: ImageFile, offset: number, clusters: number, clusterSize: number): Promise<Float64Array> {
  const bytes = clusters * clusterSize;
  if (bytes > L.QCOW_MAX_REFTABLE_SIZE) {
    throw new Qcow2Error(file.path, headerPath('refcount_table_clusters'), L.HEADER_FIELD.refcount_table_clusters.offset, `refcount table of ${clusters} clusters (${bytes} bytes) exceeds QEMU's 8 MiB limit`);
  }
  if (offset % clusterSize !== 0) throw new Qcow2Error(file.path, 'refcount table', offset, 'offset is not cluster-aligned');
  if (clusters === 0) throw new Qcow2Error(file.path, headerPath('refcount_table_clusters'), L.HEADER_FIELD.refcount_table_clusters.offset, 'the image has no refcount table');
  return decodeRefcountTable(await file.read(offset, bytes, 'refcount table'));
}

/** Refcount table entries (the offset bits only) from the table's raw big-endian bytes. */
export function decodeRefcountTable(buf: Uint8Array): Float64Array {
  const out = new Float64Array(buf.length / 8);
  // Most of a table is room to grow, all zeros: decoded up to its last non-zero 4 KiB only, found
  // by native compares (a whole 64 KiB table entry by entry costs ~5 ms of a CLI start, cold).
  let end = buf.length;
  const bytes = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  while (end > 0) {
    const from = Math.max(0, end - ZERO_PIECE.length);
    if (!bytes.subarray(from, end).equals(ZERO_PIECE.subarray(0, end - from))) break;
    end = from;
  }
  // offsets above 2^53 cannot be valid here and read as NaN-free huge values
  for (let i = 0; i < end / 8; i++) out[i] = reftableEntryOffset(wordHi(buf, i * 8), wordLo(buf, i * 8));
  return out;
}

const ZERO_PIECE = Buffer.alloc(4096);

/** Refcount blocks by offset; the one the end of the file cuts reads as zeros past it (QEMU's reads of a short file). */
export async function readBlocksPadded(file: ImageFile, offsets: number[], clusterSize: number): Promise<Map<number, Buffer>> {
  const name = (o: number) => `refcount block at 0x${o.toString(16)}`;
  const whole = offsets.filter(o => o + clusterSize <= file.size);
  const out = await readMany(file, whole, clusterSize, name);
  for (const o of offsets) if (!out.has(o)) out.set(o, await file.readPadded(o, clusterSize, name(o)));
  return out;
}

/**
 * All stored refcounts of the clusters in [0, nbClusters) as one typed array, read with batched
 * reads of the refcount blocks. Blocks past the end of the file are reported, not trusted.
 */
export async function readAllRefcounts(
  file: ImageFile, table: Float64Array, g: RefcountGeometry, nbClusters: number,
  onBadBlock?: (tableIndex: number, blockOffset: number, reason: string) => void, exact?: ExactRefcounts,
): Promise<Float64Array> {
  const clusterSize = 2 ** g.clusterBits;
  const out = new Float64Array(nbClusters);
  const wanted: number[] = [];
  const byOffset = new Map<number, number[]>();
  const maxIndex = Math.min(table.length, Math.ceil(nbClusters / g.blockEntries));
  for (let i = 0; i < maxIndex; i++) {
    const off = table[i];
    if (off === 0) continue;
    // a block cut by the end of the file is read with zeros past it, as QEMU reads it
    if (off % clusterSize !== 0 || off >= file.size) {
      onBadBlock?.(i, off, off % clusterSize !== 0 ? 'refcount block offset is not cluster-aligned' : 'refcount block lies past the end of the file');
      continue;
    }
    wanted.push(off);
    const l = byOffset.get(off) ?? [];
    l.push(i);
    byOffset.set(off, l);
  }
  const blocks = await readBlocksPadded(file, wanted, clusterSize);
  for (const [off, idxs] of byOffset) {
    const blk = blocks.get(off)!;
    for (const i of idxs) {
      const base = i * g.blockEntries;
      decodeRefcountBlock(blk, g.order, out, base, Math.min(g.blockEntries, nbClusters - base), exact);
    }
  }
  return out;
}
