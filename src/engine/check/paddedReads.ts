/**
 * Table reads for the check: bytes past the end of the file read as zero, as QEMU's block layer
 * returns them, so a truncated image is walked (and judged) the way `qemu-img check` judges it.
 */
import { ImageFile, readMany } from '../io/reader';

/** Reads same-sized tables by host offset; bytes past the end of the file read as zero. */
export async function readTablesPadded(file: ImageFile, offsets: number[], size: number, structure: (o: number) => string): Promise<Map<number, Buffer>> {
  const inside: number[] = [];
  const out = new Map<number, Buffer>();
  for (const o of offsets) {
    if (o + size <= file.size) inside.push(o);
    else if (o >= file.size || !Number.isSafeInteger(o)) out.set(o, Buffer.alloc(size));
    else out.set(o, await file.readPadded(o, size, structure(o)));
  }
  if (inside.length) for (const [o, b] of await readMany(file, inside, size, structure)) out.set(o, b);
  return out;
}

/** One table at `offset`, padded like readTablesPadded. */
export async function readTablePadded(file: ImageFile, offset: number, size: number, structure: string): Promise<Buffer> {
  return (await readTablesPadded(file, [offset], size, () => structure)).get(offset)!;
}

/** Reads in flight at once for one window (libuv's pool has 4 threads by default). */
const WINDOW_CONCURRENCY = 4;

/**
 * A bounded window for walking many same-sized tables (L2 tables, refcount blocks): one buffer of
 * `capacity` tables, allocated once and refilled by each `read`, so a walk over any number of
 * tables holds at most `capacity` of them (fresh buffers per batch would pile up until the
 * garbage collector ran). The views `read` returns are valid until the next `read`. Padded like
 * readTablesPadded.
 */
export class TableWindow {
  readonly capacity: number;
  private readonly buf: Buffer;
  constructor(private readonly file: ImageFile, private readonly size: number, windowBytes: number) {
    this.capacity = Math.max(1, Math.floor(windowBytes / size));
    this.buf = Buffer.allocUnsafeSlow(this.capacity * size);
  }

  /** The tables at `offsets` (at most `capacity` of them), by offset; duplicates share one slot. */
  async read(offsets: readonly number[]): Promise<Map<number, Buffer>> {
    const size = this.size, file = this.file;
    const sorted = [...new Set(offsets)].sort((a, b) => a - b);
    if (sorted.length > this.capacity) throw new Error(`internal: ${sorted.length} tables for a window of ${this.capacity}`);
    const out = new Map<number, Buffer>();
    // runs of adjacent tables: [first slot, end slot)
    const runs: [number, number][] = [];
    for (let i = 0; i < sorted.length;) {
      let j = i + 1;
      while (j < sorted.length && sorted[j] === sorted[j - 1] + size) j++;
      runs.push([i, j]);
      for (let k = i; k < j; k++) out.set(sorted[k], this.buf.subarray(k * size, (k + 1) * size));
      i = j;
    }
    let next = 0;
    const worker = async () => {
      while (next < runs.length) {
        const [a, b] = runs[next++];
        const at = a * size, host = sorted[a], len = (b - a) * size;
        const dst = this.buf.subarray(at, at + len);
        const avail = Number.isSafeInteger(host) && host >= 0 ? Math.max(0, Math.min(len, file.size - host)) : 0;
        let done = 0;
        while (done < avail) {
          const { bytesRead } = await file.handle.read(dst, done, avail - done, host + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        dst.fill(0, done);
      }
    };
    await Promise.all(Array.from({ length: Math.min(WINDOW_CONCURRENCY, runs.length) }, worker));
    return out;
  }
}
