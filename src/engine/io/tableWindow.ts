/**
 * A bounded window for walking many same-sized tables (L2 tables, refcount blocks): one buffer of
 * `capacity` tables, allocated once and refilled by each read, so a walk over any number of tables
 * holds at most `capacity` of them (fresh buffers per batch would pile up until the garbage
 * collector ran). Runs of adjacent tables are read as one, a few runs at once.
 *
 * Two ways to meet the end of the file:
 *   padded  bytes past it (and tables at no valid position) read as zero, as QEMU's block layer
 *           returns them: the check walks a truncated image the way `qemu-img check` judges it
 *   strict  every table must lie inside the file; one that does not is an error naming it
 *           (compaction: it copies only what it can read)
 */
import { Qcow2Error } from '../errors';
import type { ImageFile } from './reader';

/** Reads in flight at once for one window (libuv's pool has 4 threads by default). */
const WINDOW_CONCURRENCY = 4;

export type TableEnd = 'padded' | 'strict';

export class TableWindow {
  readonly capacity: number;
  private buf: Buffer | null = null;
  /**
   * Awaited after each table forEach visits (cancel.ts pacer): a walk over tables already read lets
   * the event loop run, and stops when its operation is cancelled.
   */
  pause?: () => Promise<void>;
  constructor(private readonly file: ImageFile, private readonly size: number, windowBytes: number, private readonly end: TableEnd = 'padded') {
    this.capacity = Math.max(1, Math.floor(windowBytes / size));
  }

  /**
   * The tables at `offsets` (at most `capacity` distinct ones), by offset; duplicates share one
   * slot. The views are valid until the next read. `what` names a table in errors (strict).
   */
  async read(offsets: readonly number[], what: (o: number) => string = o => `table at 0x${o.toString(16)}`): Promise<Map<number, Buffer>> {
    const size = this.size, file = this.file, strict = this.end === 'strict';
    const sorted = [...new Set(offsets)].sort((a, b) => a - b);
    if (sorted.length > this.capacity) throw new Error(`internal: ${sorted.length} tables for a window of ${this.capacity}`);
    if (strict) for (const o of sorted) file.checkRange(o, size, what(o));
    const buf = this.buf ??= Buffer.allocUnsafeSlow(this.capacity * size);
    const out = new Map<number, Buffer>();
    // runs of adjacent tables: [first slot, end slot)
    const runs: [number, number][] = [];
    for (let i = 0; i < sorted.length;) {
      let j = i + 1;
      while (j < sorted.length && sorted[j] === sorted[j - 1] + size) j++;
      runs.push([i, j]);
      for (let k = i; k < j; k++) out.set(sorted[k], buf.subarray(k * size, (k + 1) * size));
      i = j;
    }
    let next = 0;
    const worker = async () => {
      while (next < runs.length) {
        const [a, b] = runs[next++];
        const at = a * size, host = sorted[a], len = (b - a) * size;
        const dst = buf.subarray(at, at + len);
        const avail = Number.isSafeInteger(host) && host >= 0 ? Math.max(0, Math.min(len, file.size - host)) : 0;
        const limit = strict ? len : avail;
        let done = 0;
        while (done < limit) {
          const { bytesRead } = await file.handle.read(dst, done, limit - done, host + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        if (strict && done < len) throw new Qcow2Error(file.path, what(host), host, `file ends after ${done} of ${len} bytes`);
        dst.fill(0, done);
      }
    };
    await Promise.all(Array.from({ length: Math.min(WINDOW_CONCURRENCY, runs.length) }, worker));
    return out;
  }

  /** Calls `fn` for each of `offsets`, in their order, a window at a time; `t` is valid only during the call. */
  async forEach(offsets: readonly number[], what: (o: number) => string, fn: (o: number, t: Buffer) => void | Promise<void>): Promise<void> {
    for (let w = 0; w < offsets.length; w += this.capacity) {
      const part = offsets.slice(w, w + this.capacity);
      const tables = await this.read(part, what);
      for (const o of part) {
        await fn(o, tables.get(o)!);
        await this.pause?.();
      }
    }
  }
}
