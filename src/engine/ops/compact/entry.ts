/**
 * Entry encoders the compaction writes tables with: 64-bit big-endian entries from 32-bit words
 * (no BigInt on the hot path), the counterpart of qcow2/cluster.ts's decoders.
 */
import type { L2Geometry } from '../../qcow2/cluster';
import * as L from '../../qcow2/layout';

const TWO_32 = 0x100000000;

/** The high 32-bit word of a host offset (the low word is `offset >>> 0`). */
export function offsetHi(offset: number): number {
  return Math.floor(offset / TWO_32);
}

/** Writes a 64-bit entry from its high and low 32-bit words. */
export function putEntry(t: Uint8Array, pos: number, hi: number, lo: number): void {
  t[pos] = hi >>> 24; t[pos + 1] = hi >>> 16; t[pos + 2] = hi >>> 8; t[pos + 3] = hi;
  t[pos + 4] = lo >>> 24; t[pos + 5] = lo >>> 16; t[pos + 6] = lo >>> 8; t[pos + 7] = lo;
}

/** Writes a 64-bit entry (or header field) holding `offset`, with `flagsHi` (e.g. OFLAG_COPIED_HI) in its high word. */
export function putOffset(t: Uint8Array, pos: number, offset: number, flagsHi = 0): void {
  putEntry(t, pos, offsetHi(offset) | flagsHi, offset >>> 0);
}

/**
 * The high word of a compressed L2 entry for `len` bytes at `host`: the compressed flag, the
 * additional 512-byte sectors at bit `compressedOffsetBits` (49 or higher, so within the high
 * word) and the offset's top bits. The low word is `host >>> 0`.
 */
export function compressedEntryHi(g: L2Geometry, host: number, len: number): number {
  const nb = Math.floor((host + len - 1) / L.COMPRESSED_SECTOR_SIZE) - Math.floor(host / L.COMPRESSED_SECTOR_SIZE);
  return (L.OFLAG_COMPRESSED_HI | (nb << (g.compressedOffsetBits - 32)) | offsetHi(host)) >>> 0;
}
