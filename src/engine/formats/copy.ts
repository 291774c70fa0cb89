/**
 * The one walk every writer uses to find what to copy: the source's status is asked span by span,
 * only ranges that may hold data are read (window by window into one bounded buffer), and each
 * fixed-size unit (a VHD block, a VMDK grain, a piece of a raw file) that holds a non-zero byte is
 * handed to the writer. All-zero units are skipped, as `qemu-img convert` skips them when the
 * target reads as zero where nothing was written. Memory: one window, whatever the disk size.
 */
import type { ImageSink, ImageSource, WriteControl } from './layer';
import { throwIfCancelled } from './layer';

/**
 * How much status is asked at once: the runs of one span are held in memory, so this bounds them
 * (a 512-byte-cluster source alternating data and zero has 64 Ki runs in 32 MiB).
 */
const STATUS_SPAN = 32 * 1024 * 1024;
/** The read window: a multiple of every unit size used (64 KiB grains, 2 MiB blocks). */
export const COPY_WINDOW = 8 * 1024 * 1024;
/** The largest single guest read (a source may split further). */
const MAX_READ = 4 * 1024 * 1024;

const ZERO = Buffer.alloc(64 * 1024);

export function isZero(buf: Uint8Array): boolean {
  for (let at = 0; at < buf.length; at += ZERO.length) {
    const n = Math.min(ZERO.length, buf.length - at);
    if (Buffer.compare(buf.subarray(at, at + n), ZERO.subarray(0, n)) !== 0) return false;
  }
  return true;
}

/** [start, end) byte ranges of `buf` holding a non-zero byte, at `granularity`, adjacent ones merged. */
export function nonZeroRanges(buf: Uint8Array, granularity = 4096): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let at = 0; at < buf.length; at += granularity) {
    const end = Math.min(buf.length, at + granularity);
    if (isZero(buf.subarray(at, end))) continue;
    const last = out[out.length - 1];
    if (last && last[1] === at) last[1] = end;
    else out.push([at, end]);
  }
  return out;
}

const SECTOR = 512;
/** is_allocated_sectors' alignment: allocated runs end on 4 KiB boundaries of the disk. */
const SECTORS_PER_4K = 8;

function sectorIsZero(buf: Uint8Array, s: number): boolean {
  return isZero(buf.subarray(s * SECTOR, (s + 1) * SECTOR));
}

/** qemu-img's is_allocated_sectors: how many sectors from `from` share the first one's kind, 4 KiB-aligned. */
function sameKindRun(buf: Uint8Array, from: number, n: number, sectorNum: number): { allocated: boolean; count: number } {
  let zero = sectorIsZero(buf, from);
  let i = 1;
  while (i < n && sectorIsZero(buf, from + i) === zero) i++;
  if (i === n) return { allocated: !zero, count: i };
  const tail = (sectorNum + i) % SECTORS_PER_4K;
  if (tail) {
    if (zero && i <= tail) zero = false; // a short zero tail counts as data
    if (!zero) i = Math.min(n, i + (SECTORS_PER_4K - tail));
    else i -= tail;
  }
  return { allocated: !zero, count: i };
}

/**
 * The byte ranges of `buf` (guest data starting at byte `guestStart`, a multiple of 512) that
 * `qemu-img convert` writes when zero runs of at least `minSparse` bytes may stay unwritten: its
 * is_allocated_sectors_min, applied from the start of the buffer as its copy loop applies it
 * (a zero run shorter than minSparse inside data is written, data ends are 4 KiB-aligned).
 * `minSparse` 0 writes everything.
 */
export function writtenRanges(buf: Uint8Array, guestStart: number, minSparse: number): Array<[number, number]> {
  const total = Math.ceil(buf.length / SECTOR);
  if (minSparse === 0) return total ? [[0, buf.length]] : [];
  const min = minSparse / SECTOR;
  const out: Array<[number, number]> = [];
  let at = 0;
  while (at < total) {
    const n = total - at, sectorNum = guestStart / SECTOR + at;
    let used: number;
    if (n < min) used = n;
    else {
      const first = sameKindRun(buf, at, n, sectorNum);
      if (!first.allocated) { at += first.count; continue; }
      used = first.count;
      let checked = used;
      while (checked < n) {
        const r = sameKindRun(buf, at + checked, n - checked, sectorNum + checked);
        checked += r.count;
        if (r.allocated) used = checked;
        else if (r.count >= min) break;
      }
    }
    const last = out[out.length - 1];
    const s = at * SECTOR, e = Math.min(buf.length, (at + used) * SECTOR);
    if (last && last[1] === s) last[1] = e;
    else out.push([s, e]);
    at += used;
  }
  return out;
}

/**
 * Calls `visit(unitStart, data)` in ascending order for every `unitSize`-aligned unit of the source
 * holding a non-zero byte; `data` covers the unit up to the end of the source (the last unit may
 * be short). `data` is a view of the one reused window: it is valid until `visit` resolves, so a
 * writer keeping it longer copies it. `unitSize` must divide COPY_WINDOW.
 */
export async function forEachDataUnit(
  source: ImageSource,
  unitSize: number,
  control: WriteControl,
  file: string,
  visit: (unitStart: number, data: Buffer) => Promise<void>,
): Promise<void> {
  if (COPY_WINDOW % unitSize !== 0) throw new RangeError(`unit ${unitSize} does not divide the copy window`);
  const size = source.virtualSize;
  const window = Buffer.alloc(Math.min(COPY_WINDOW, size));
  for (let spanStart = 0; spanStart < size; spanStart += STATUS_SPAN) {
    throwIfCancelled(control.signal, file);
    const spanEnd = Math.min(size, spanStart + STATUS_SPAN);
    const runs = (await source.status(spanStart, spanEnd)).filter(r => !r.zero && r.length > 0);
    let i = 0;
    while (i < runs.length) {
      const winStart = Math.floor(runs[i].start / COPY_WINDOW) * COPY_WINDOW;
      const winEnd = Math.min(spanEnd, winStart + COPY_WINDOW);
      const win = window.subarray(0, winEnd - winStart);
      // Which units of the window may hold data (a unit only touched by zero runs is never looked at).
      const touched = new Set<number>();
      // every byte of a data run is read into the window; only the gaps between them are zeroed
      let filled = winStart;
      let j = i;
      while (j < runs.length && runs[j].start < winEnd) {
        const from = Math.max(runs[j].start, winStart);
        const to = Math.min(runs[j].start + runs[j].length, winEnd);
        if (from > filled) win.fill(0, filled - winStart, from - winStart);
        filled = Math.max(filled, to);
        for (let at = from; at < to; at += MAX_READ) {
          const n = Math.min(MAX_READ, to - at);
          if (source.readGuestInto) await source.readGuestInto(at, n, win, at - winStart);
          else (await source.readGuest(at, n)).copy(win, at - winStart, 0, n);
        }
        for (let u = Math.floor(from / unitSize); u * unitSize < to; u++) touched.add(u);
        if (runs[j].start + runs[j].length > winEnd) break; // the run goes on in the next window
        j++;
      }
      if (filled < winEnd) win.fill(0, filled - winStart);
      for (const u of [...touched].sort((a, b) => a - b)) {
        const unitStart = u * unitSize;
        const data = win.subarray(unitStart - winStart, Math.min(winEnd, unitStart + unitSize) - winStart);
        if (!isZero(data)) await visit(unitStart, data);
      }
      control.onProgress?.(winEnd, size);
      i = j;
      // A run continuing past this window is resumed, clipped, by the next iteration.
      if (i < runs.length && runs[i].start < winEnd) {
        const r = runs[i];
        runs[i] = { start: winEnd, length: r.start + r.length - winEnd, zero: false };
      }
    }
    control.onProgress?.(spanEnd, size);
  }
}

/**
 * QEMU's file driver writes zeros over the first block of a file it sizes from empty (so that
 * O_DIRECT alignment probing can read it), which `qemu-img map` then shows as data. Writers of
 * raw-like layouts do the same right after sizing the file, so their output maps as qemu-img's.
 */
export async function allocateFirstBlock(sink: ImageSink, size: number): Promise<void> {
  if (size <= 0) return;
  await sink.write(0, Buffer.alloc(size < 4096 ? 512 : 4096));
}
