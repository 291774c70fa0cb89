/**
 * The File Allocation Table: entry decoding for FAT12/16/32, cluster chains (bounded: a chain may
 * not be longer than the volume has clusters, and may not point outside it), and a windowed reader
 * so a chain walk or a free-space scan reads the FAT in 64 KiB pieces, never all at once.
 */
import { GuestDisk, readStructure } from '../disk';
import { guestError, GuestPath } from '../errors';
import type { Bpb } from './bpb';

/** Entries decoded per window (a multiple of 2, so FAT12 windows start on a byte boundary). */
const WINDOW_ENTRIES = 16384;

export type FatEntryKind = 'free' | 'next' | 'end' | 'bad' | 'reserved';

export class FatTable {
  private windowStart = -1;
  private window = new Uint32Array(0);
  readonly endMark: number;
  readonly badMark: number;

  constructor(private readonly disk: GuestDisk, private readonly fsStart: number, readonly bpb: Bpb, private readonly path: GuestPath) {
    this.endMark = bpb.fatType === 'FAT12' ? 0xff8 : bpb.fatType === 'FAT16' ? 0xfff8 : 0x0ffffff8;
    this.badMark = this.endMark - 1;
  }

  /** The entry count the FAT covers: clusters 0 … clusterCount + 1. */
  get entryCount(): number {
    return this.bpb.clusterCount + 2;
  }

  private async load(first: number): Promise<void> {
    const count = Math.min(WINDOW_ENTRIES, this.entryCount - first);
    const t = this.bpb.fatType;
    const byteFrom = t === 'FAT12' ? (first * 3) / 2 : first * (t === 'FAT16' ? 2 : 4);
    const byteLen = t === 'FAT12' ? Math.ceil((count * 3) / 2) + 1 : count * (t === 'FAT16' ? 2 : 4);
    const fatBytes = this.bpb.fatSectors * this.bpb.bytesPerSector;
    const b = await readStructure(this.disk, this.fsStart + this.bpb.fatOffset + byteFrom, Math.min(byteLen, fatBytes - byteFrom), [...this.path, 'FAT']);
    const out = new Uint32Array(count);
    for (let i = 0; i < count; i++) {
      if (t === 'FAT12') {
        const o = Math.floor(((first + i) * 3) / 2) - byteFrom;
        const v = b[o] | ((b[o + 1] ?? 0) << 8);
        out[i] = (first + i) & 1 ? v >> 4 : v & 0xfff;
      } else if (t === 'FAT16') out[i] = b.readUInt16LE(i * 2);
      else out[i] = b.readUInt32LE(i * 4) & 0x0fffffff;
    }
    this.windowStart = first;
    this.window = out;
  }

  async entry(n: number): Promise<number> {
    if (n < 0 || n >= this.entryCount) throw guestError(this.disk.name ?? 'disk', [...this.path, 'FAT'], undefined, `cluster ${n} is outside 0…${this.entryCount - 1}`);
    if (n < this.windowStart || n >= this.windowStart + this.window.length) await this.load(n - (n % WINDOW_ENTRIES));
    return this.window[n - this.windowStart];
  }

  kindOf(value: number): FatEntryKind {
    if (value === 0) return 'free';
    if (value >= this.endMark) return 'end';
    if (value === this.badMark) return 'bad';
    if (value < 2 || value > this.bpb.clusterCount + 1) return 'reserved';
    return 'next';
  }

  /** The guest offset of a data cluster. */
  clusterOffset(c: number): number {
    return this.fsStart + this.bpb.dataOffset + (c - 2) * this.bpb.clusterBytes;
  }

  /**
   * The clusters of a chain starting at `first`, as runs of consecutive clusters; the chain must
   * end within maxClusters (callers pass what the file's size needs, or a directory's limit).
   */
  async chain(first: number, what: string, maxClusters = this.bpb.clusterCount): Promise<Array<{ start: number; count: number }>> {
    const runs: Array<{ start: number; count: number }> = [];
    const file = this.disk.name ?? 'disk';
    let c = first, n = 0;
    while (true) {
      if (c < 2 || c > this.bpb.clusterCount + 1) throw guestError(file, [...this.path, what], this.clusterOffsetSafe(c), `cluster chain reaches cluster ${c}, outside 2…${this.bpb.clusterCount + 1}`);
      const last = runs[runs.length - 1];
      if (last && last.start + last.count === c) last.count++;
      else runs.push({ start: c, count: 1 });
      const v = await this.entry(c);
      const k = this.kindOf(v);
      if (k === 'end') break;
      // A loop never reaches an end mark, so a chain still going after the clusters its owner can
      // have is a loop (or a chain longer than the file): refused rather than read as repeated data.
      if (++n >= maxClusters) throw guestError(file, [...this.path, what], this.clusterOffset(c), `cluster chain does not end after ${n} clusters (a loop in the FAT, or longer than its file)`);
      if (k !== 'next') throw guestError(file, [...this.path, what], this.fsStart + this.bpb.fatOffset, `FAT entry of cluster ${c} is ${k === 'free' ? 'free' : k === 'bad' ? 'a bad-cluster mark' : `0x${v.toString(16)}`} inside a chain`);
      c = v;
    }
    return runs;
  }

  private clusterOffsetSafe(c: number): number | undefined {
    return c >= 2 && c <= this.bpb.clusterCount + 1 ? this.clusterOffset(c) : undefined;
  }

  /** Free clusters as runs [first, count), ascending, reading the FAT one window at a time. */
  async *freeClusterRuns(): AsyncGenerator<[number, number]> {
    let runStart = -1, runLen = 0;
    for (let c = 2; c < this.entryCount; c++) {
      if ((await this.entry(c)) === 0) {
        if (runLen > 0 && runStart + runLen === c) runLen++;
        else {
          if (runLen > 0) yield [runStart, runLen];
          runStart = c;
          runLen = 1;
        }
      }
    }
    if (runLen > 0) yield [runStart, runLen];
  }
}
