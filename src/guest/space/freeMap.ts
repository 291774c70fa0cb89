/**
 * The guest disk in qcow2 clusters: which clusters lie wholly in guest free space (the free runs
 * of every browsable file system — ext block bitmaps, FAT free clusters — and, when asked, swap
 * space after its header), and which touch a browsable file system at all. One bit per guest
 * cluster; built from the file systems' metadata only (the free-space streams read bitmaps and
 * FATs, never file data).
 */
import { Qcow2Error } from '../../engine/errors';
import type { Guest } from '../guest';

/** Bits kept per guest cluster map: beyond this (2 TiB of 512-byte clusters, 256 TiB of 64 KiB ones) the map is refused. */
export const MAX_MAP_CLUSTERS = 2 ** 32;

/** What may be dropped of a swap partition: everything after its first 64 KiB (the header page, whatever the page size). */
const SWAP_HEADER_BYTES = 64 * 1024;

export interface FreeMapOptions {
  /** Count Linux swap partitions (SWAPSPACE2, not a hibernation image) as free after their header. */
  swap?: boolean;
}

export interface FreeMap {
  clusterSize: number;
  clusters: number;
  /** Guest cluster wholly in guest free space. */
  isFree(gc: number): boolean;
  /** Guest cluster overlapping a browsable file system (or, with `swap`, a swap partition). */
  inFileSystem(gc: number): boolean;
  /** Bytes of guest free space the file systems report (not rounded to clusters). */
  freeBytes: number;
  /** File systems that must not be sparsified, each with why (dirty, needs recovery, recorded errors). */
  dirty: string[];
  /** File systems whose free space is not known (they could not be opened): nothing of theirs is free here. */
  skipped: string[];
  /** Guest bytes read to build the map (file-system metadata: bitmaps, FATs, group descriptors). */
  bytesRead: number;
  /** What was looked at, for the report: "partition 1 ext4: 12345 bytes free". */
  sources: { partition: number; fs: string; start: number; size: number; free: number }[];
}

class Bits {
  readonly b: Uint8Array;
  constructor(n: number) { this.b = new Uint8Array(Math.ceil(n / 8)); }
  set(i: number): void { this.b[Math.floor(i / 8)] |= 1 << (i & 7); }
  get(i: number): boolean { return ((this.b[Math.floor(i / 8)] >> (i & 7)) & 1) === 1; }
  setRange(from: number, to: number): void { for (let i = from; i < to; i++) this.set(i); }
}

export async function buildFreeMap(guest: Guest, clusterSize: number, file: string, opts: FreeMapOptions = {}): Promise<FreeMap> {
  const size = guest.disk.size;
  const clusters = Math.ceil(size / clusterSize);
  if (clusters > MAX_MAP_CLUSTERS) {
    throw new Qcow2Error(file, 'guest disk', undefined, `${clusters} guest clusters are more than the ${MAX_MAP_CLUSTERS} the free-space map holds`, 'unsupported');
  }
  const free = new Bits(clusters), inFs = new Bits(clusters);
  const dirty: string[] = [], skipped: string[] = [];
  const sources: FreeMap['sources'] = [];
  let freeBytes = 0;
  const clusterEnd = (gc: number) => Math.min((gc + 1) * clusterSize, size);
  /** Marks the clusters wholly inside [start, end). */
  const markFree = (start: number, end: number) => {
    const first = Math.ceil(start / clusterSize);
    const last = Math.floor(end / clusterSize); // exclusive, unless the disk's partial last cluster ends inside
    free.setRange(first, last);
    if (last < clusters && clusterEnd(last) <= end && last * clusterSize >= start) free.set(last);
  };
  const markFs = (start: number, len: number) => {
    if (len > 0) inFs.setRange(Math.floor(start / clusterSize), Math.ceil((start + len) / clusterSize));
  };
  for (const p of guest.partitions) {
    const label = p.number === 0 ? 'whole disk' : `partition ${p.number}`;
    if (p.fileSystem) {
      const fs = p.fileSystem;
      markFs(fs.start, fs.size);
      if (fs.warnings.length) dirty.push(`${label} (${fs.kind}): ${fs.warnings.join('; ')}`);
      let n = 0;
      for await (const [s, len] of fs.freeRanges()) { markFree(s, s + len); n += len; }
      freeBytes += n;
      sources.push({ partition: p.number, fs: fs.kind, start: fs.start, size: fs.size, free: n });
    } else if (p.browsable === false && p.error) {
      skipped.push(`${label} (${p.fs ?? 'unknown'}): could not be opened (${p.error}); its free space is kept`);
    } else if (opts.swap && p.fs === 'swap' && p.fsInfo?.version === '1' && p.fsInfo.size !== undefined) {
      const start = p.start, end = Math.min(p.start + p.fsInfo.size, size);
      markFs(start, end - start);
      const n = Math.max(0, end - (start + SWAP_HEADER_BYTES));
      if (n > 0) markFree(start + SWAP_HEADER_BYTES, end);
      freeBytes += n;
      sources.push({ partition: p.number, fs: 'swap', start, size: end - start, free: n });
    }
  }
  return {
    clusterSize, clusters, freeBytes, dirty, skipped, sources, bytesRead: guest.disk.bytesRead,
    isFree: gc => gc >= 0 && gc < clusters && free.get(gc),
    inFileSystem: gc => gc >= 0 && gc < clusters && inFs.get(gc),
  };
}
