/**
 * The one walk every writer uses to find what to copy: the source's status is asked span by span,
 * only ranges that may hold data are read (window by window into one bounded buffer), and each
 * fixed-size unit (a VHD block, a VMDK grain, a piece of a raw file) that holds a non-zero byte is
 * handed to the writer. All-zero units are skipped, as `qemu-img convert` skips them when the
 * target reads as zero where nothing was written. Memory: one window, whatever the disk size.
 */
import { sharedBuffer } from '../io/bufferRing';
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

/** One window of a span: the ranges to read into it (the rest of it is zeroed) and the units they touch. */
interface WindowPlan {
  start: number;
  end: number;
  reads: Array<[number, number]>;
  units: number[];
}

/** The windows of the source that hold data runs, in ascending order, span by span; after each span, its end. */
async function* windowPlans(source: ImageSource, unitSize: number, control: WriteControl, file: string): AsyncGenerator<WindowPlan | number> {
  const size = source.virtualSize;
  for (let spanStart = 0; spanStart < size; spanStart += STATUS_SPAN) {
    throwIfCancelled(control.signal, file);
    const spanEnd = Math.min(size, spanStart + STATUS_SPAN);
    const runs = (await source.status(spanStart, spanEnd)).filter(r => !r.zero && r.length > 0);
    let i = 0;
    while (i < runs.length) {
      const winStart = Math.floor(runs[i].start / COPY_WINDOW) * COPY_WINDOW;
      const winEnd = Math.min(spanEnd, winStart + COPY_WINDOW);
      // Which units of the window may hold data (a unit only touched by zero runs is never looked at).
      const touched = new Set<number>();
      const reads: Array<[number, number]> = [];
      let j = i;
      while (j < runs.length && runs[j].start < winEnd) {
        const from = Math.max(runs[j].start, winStart);
        const to = Math.min(runs[j].start + runs[j].length, winEnd);
        reads.push([from, to]);
        for (let u = Math.floor(from / unitSize); u * unitSize < to; u++) touched.add(u);
        if (runs[j].start + runs[j].length > winEnd) break; // the run goes on in the next window
        j++;
      }
      yield { start: winStart, end: winEnd, reads, units: [...touched].sort((a, b) => a - b) };
      i = j;
      // A run continuing past this window is resumed, clipped, by the next iteration.
      if (i < runs.length && runs[i].start < winEnd) {
        const r = runs[i];
        runs[i] = { start: winEnd, length: r.start + r.length - winEnd, zero: false };
      }
    }
    yield spanEnd;
  }
}

/** Every byte of the plan's window into `win`: its data runs read, only the gaps between them zeroed. */
async function fillWindow(source: ImageSource, plan: WindowPlan, win: Buffer): Promise<void> {
  let filled = plan.start;
  for (const [from, to] of plan.reads) {
    if (from > filled) win.fill(0, filled - plan.start, from - plan.start);
    filled = Math.max(filled, to);
    for (let at = from; at < to; at += MAX_READ) {
      const n = Math.min(MAX_READ, to - at);
      if (source.readGuestInto) await source.readGuestInto(at, n, win, at - plan.start);
      else (await source.readGuest(at, n)).copy(win, at - plan.start, 0, n);
    }
  }
  if (filled < plan.end) win.fill(0, filled - plan.start, plan.end - plan.start);
}

/**
 * Calls `visit(unitStart, data)` in ascending order for every `unitSize`-aligned unit of the source
 * holding a non-zero byte; `data` covers the unit up to the end of the source (the last unit may
 * be short). `data` is a view of one of two reused windows: it is valid until `visit` resolves, so
 * a writer keeping it longer copies it. The next window is read while the units of this one are
 * visited (written), as qemu-img reads ahead of its writes. The windows are shared memory, so an
 * encrypted source decrypts in them on its worker threads. `unitSize` must divide COPY_WINDOW.
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
  const windows = [0, 1].map(() => sharedBuffer(Math.max(1, Math.min(COPY_WINDOW, size))));
  let turn = 0;
  let ahead: { plan: WindowPlan; win: Buffer; filled: Promise<void>; doneAt?: number } | null = null;
  const visitWindow = async ({ plan, win, doneAt }: NonNullable<typeof ahead>) => {
    for (const u of plan.units) {
      const unitStart = u * unitSize;
      const data = win.subarray(unitStart - plan.start, Math.min(plan.end, unitStart + unitSize) - plan.start);
      if (!isZero(data)) await visit(unitStart, data);
    }
    control.onProgress?.(doneAt ?? plan.end, size);
  };
  try {
    for await (const plan of windowPlans(source, unitSize, control, file)) {
      if (typeof plan === 'number') {
        // a span done: reported once its last window is visited, so progress never runs ahead of the writes
        if (ahead) ahead.doneAt = plan;
        else control.onProgress?.(plan, size);
        continue;
      }
      const win = windows[turn++ % 2].subarray(0, plan.end - plan.start);
      const filled = fillWindow(source, plan, win);
      filled.catch(() => undefined); // awaited below; not unhandled while the previous window is visited
      const prev = ahead;
      ahead = { plan, win, filled };
      if (prev) {
        await prev.filled;
        await visitWindow(prev);
      }
    }
    if (ahead) {
      const last = ahead;
      ahead = null;
      await last.filled;
      await visitWindow(last);
    }
  } finally {
    // no read left running into a window once this returns or throws
    if (ahead) await ahead.filled.catch(() => undefined);
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
