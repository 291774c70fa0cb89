/**
 * Where are the holes of a host file? QEMU asks with lseek(SEEK_DATA/SEEK_HOLE) when it detects
 * metadata preallocation, and `qemu-img map` reports data clusters lying in holes as zero. Node's
 * fs cannot ask, so a tiny Node-API addon (native/holes.c, built to dist/holes.node) does; when it
 * is missing, `holeSeeker()` returns undefined and callers say what they cannot see.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface HoleSeeker {
  /** The first offset >= `offset` holding data, or -1 when only a hole follows. */
  seekData(fd: number, offset: number): number;
  /** The first offset >= `offset` in a hole (the end of the file counts as one). */
  seekHole(fd: number, offset: number): number;
}

let cached: HoleSeeker | null | undefined;

export function holeSeeker(): HoleSeeker | undefined {
  if (cached !== undefined) return cached ?? undefined;
  cached = null;
  if (process.env.QCOW2_LENS_NO_NATIVE) return undefined;
  // dist/holes.node next to the bundle, or in the package's dist/ when running from dist-test/
  const candidates = [path.join(__dirname, 'holes.node')];
  for (let d = __dirname; path.dirname(d) !== d; d = path.dirname(d)) {
    if (fs.existsSync(path.join(d, 'package.json'))) { candidates.push(path.join(d, 'dist', 'holes.node')); break; }
  }
  for (const p of candidates) {
    if (!fs.existsSync(p)) continue;
    try {
      const m = { exports: {} as HoleSeeker };
      process.dlopen(m, p);
      cached = m.exports;
      break;
    } catch {
      // a binary for another platform: behave as if absent
    }
  }
  return cached ?? undefined;
}

/**
 * Splits host range [hostOffset, hostOffset + length) of an open file into data and hole pieces,
 * calling `piece(start, length, isHole)` in order. Ranges past the end of the file are holes.
 */
export function forEachHostPiece(seeker: HoleSeeker, fd: number, hostOffset: number, length: number, piece: (start: number, len: number, hole: boolean) => void): void {
  const end = hostOffset + length;
  let pos = hostOffset;
  while (pos < end) {
    const data = seeker.seekData(fd, pos);
    if (data < 0 || data >= end) { piece(pos, end - pos, true); return; }
    if (data > pos) { piece(pos, data - pos, true); pos = data; }
    const hole = Math.min(end, seeker.seekHole(fd, pos));
    piece(pos, hole - pos, false);
    pos = hole;
  }
}
