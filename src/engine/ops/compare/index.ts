/**
 * `qemu-img compare [-s] A B` (QEMU 7.2 img_compare): the guest contents of two images, each
 * read through its backing chain, in qemu-img's walk — block status of both, ranges zero in both
 * skipped, ranges allocated in both read and compared sector by sector, a range allocated in one
 * only must read as zeros in it; with different sizes the larger image's extra area must be zero
 * (unless strict, where the sizes must match and every extent's block status too). Read-only.
 *
 * The result is qemu-img's verdict (exit 0 identical, 1 different, 2+ error) and its message, plus
 * — with `all` — every differing range rather than only the first (our --json).
 */
import { throwIfCancelled } from '../../cancel';
import { Qcow2Error } from '../../errors';
import type { BlockLayer } from '../../formats';
import { isLockedByQemu } from '../../io/lock';
import type { KeyLookup } from '../../image/encryption';
import { openImageLayer } from './open';
import { BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_ZERO, chainBlockStatus } from './status';

const IO_BUF_SIZE = 2 * 1024 * 1024;
const SECTOR = 512;

export interface CompareOptions {
  formatA?: string;
  formatB?: string;
  /** Passphrases of A's and B's encrypted layers. */
  keysA?: KeyLookup;
  keysB?: KeyLookup;
  strict?: boolean;
  /** Go on past the first difference and list every differing range (our --json). */
  all?: boolean;
  /** -U: compare images a running QEMU holds (read-only; results may be inconsistent). */
  forceShare?: boolean;
  signal?: AbortSignal;
  onProgress?(done: number, total: number): void;
}

export interface CompareRange { start: number; length: number }

export interface CompareResult {
  /** qemu-img compare's exit code: 0 identical, 1 different. */
  exitCode: 0 | 1;
  identical: boolean;
  /** The lines qemu-img prints on stdout, in order. */
  messages: string[];
  /** The first offset qemu-img names ("Content mismatch at offset N!" or the strict-mode offset). */
  firstMismatch?: number;
  sizeA: number;
  sizeB: number;
  /** Every differing guest range (sector granularity), when asked with `all`; else the first only. */
  differences: CompareRange[];
  /** Strict mode: the offsets whose block status differs (with `all`, every one). */
  statusMismatches: number[];
}

/** An error on the way, with qemu-img's exit code for it (2 open, 3 block status, 4 read). */
export class CompareError extends Error {
  constructor(readonly exitCode: 2 | 3 | 4, readonly reason: unknown) {
    super(reason instanceof Error ? reason.message : String(reason));
  }
}

async function step<T>(code: 2 | 3 | 4, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if (e instanceof Qcow2Error && e.code === 'cancelled') throw e;
    throw new CompareError(code, e);
  }
}

/** The sector-granular ranges where `a` and `b` differ, at guest offset `base`. */
function differingRanges(a: Buffer, b: Buffer, base: number, out: CompareRange[]): void {
  for (let i = 0; i < a.length; i += SECTOR) {
    const n = Math.min(SECTOR, a.length - i);
    if (a.compare(b, i, i + n, i, i + n) === 0) continue;
    addRange(out, base + i, n);
  }
}

/** The sector-granular ranges of `a` holding a non-zero byte. */
function nonZeroRanges(a: Buffer, base: number, out: CompareRange[]): void {
  const zero = Buffer.alloc(SECTOR);
  for (let i = 0; i < a.length; i += SECTOR) {
    const n = Math.min(SECTOR, a.length - i);
    if (a.compare(zero, 0, n, i, i + n) === 0) continue;
    addRange(out, base + i, n);
  }
}

function addRange(out: CompareRange[], start: number, length: number): void {
  const last = out[out.length - 1];
  if (last && last.start + last.length === start) last.length += length;
  else out.push({ start, length });
}

export async function compareLayers(a: BlockLayer, b: BlockLayer, opts: CompareOptions = {}): Promise<CompareResult> {
  const sizeA = a.virtualSize, sizeB = b.virtualSize;
  const res: CompareResult = { exitCode: 0, identical: true, messages: [], sizeA, sizeB, differences: [], statusMismatches: [] };
  const total = Math.min(sizeA, sizeB), progressBase = Math.max(sizeA, sizeB);
  const differ = (offset: number | undefined, msg: string) => {
    if (res.identical) { res.messages.push(msg); res.firstMismatch = offset; }
    res.identical = false;
    res.exitCode = 1;
    return !opts.all;
  };
  /**
   * qemu-img's check_empty_sectors: a range only one side has must read as zeros there; each non-zero
   * run is a difference. True when the comparison stops (the first difference is enough).
   */
  const onlyZeros = async (layer: BlockLayer, at: number, len: number): Promise<boolean> => {
    const x = await step(4, () => layer.readGuest(at, len));
    const found: CompareRange[] = [];
    nonZeroRanges(x, at, found);
    if (!found.length) return false;
    for (const r of found) addRange(res.differences, r.start, r.length);
    return differ(found[0].start, `Content mismatch at offset ${found[0].start}!`);
  };
  if (opts.strict && sizeA !== sizeB) {
    differ(undefined, 'Strict mode: Image size mismatch!');
    return res;
  }
  let offset = 0;
  while (offset < total) {
    throwIfCancelled(opts.signal, a.path, 'compare');
    const s1 = await step(3, () => chainBlockStatus(a, offset, sizeA - offset));
    const s2 = await step(3, () => chainBlockStatus(b, offset, sizeB - offset));
    let chunk = Math.min(s1.pnum, s2.pnum, total - offset);
    const alloc1 = (s1.status & BDRV_BLOCK_ALLOCATED) !== 0, alloc2 = (s2.status & BDRV_BLOCK_ALLOCATED) !== 0;
    if (opts.strict && s1.status !== s2.status) {
      res.statusMismatches.push(offset);
      if (differ(offset, `Strict mode: Offset ${offset} block status mismatch!`)) return res;
    }
    if ((s1.status & BDRV_BLOCK_ZERO) && (s2.status & BDRV_BLOCK_ZERO)) {
      // both read as zeros
    } else if (alloc1 === alloc2) {
      if (alloc1) {
        chunk = Math.min(chunk, IO_BUF_SIZE);
        const at = offset, len = chunk;
        const x = await step(4, () => a.readGuest(at, len));
        const y = await step(4, () => b.readGuest(at, len));
        const found: CompareRange[] = [];
        differingRanges(x, y, offset, found);
        if (found.length) {
          for (const r of found) addRange(res.differences, r.start, r.length);
          if (differ(found[0].start, `Content mismatch at offset ${found[0].start}!`)) return res;
        }
      }
    } else {
      chunk = Math.min(chunk, IO_BUF_SIZE);
      if (await onlyZeros(alloc1 ? a : b, offset, chunk)) return res;
    }
    offset += chunk;
    opts.onProgress?.(offset, progressBase);
  }
  if (sizeA !== sizeB) {
    res.messages.push('Warning: Image size mismatch!');
    const over = sizeA > sizeB ? a : b;
    while (offset < progressBase) {
      throwIfCancelled(opts.signal, over.path, 'compare');
      const s = await step(3, () => chainBlockStatus(over, offset, progressBase - offset));
      let chunk = s.pnum;
      if ((s.status & BDRV_BLOCK_ALLOCATED) && !(s.status & BDRV_BLOCK_ZERO)) {
        chunk = Math.min(chunk, IO_BUF_SIZE);
        if (await onlyZeros(over, offset, chunk)) return res;
      }
      offset += chunk;
      opts.onProgress?.(offset, progressBase);
    }
  }
  if (res.identical) res.messages.push('Images are identical.');
  return res;
}

/** Opens both images (read-only, chains included) and compares them; open failures are CompareError(2). */
export async function compareImages(pathA: string, pathB: string, opts: CompareOptions = {}): Promise<CompareResult> {
  const open = async (p: string, fmt?: string, keys?: KeyLookup) => step(2, async () => {
    if (!opts.forceShare && isLockedByQemu(p)) {
      throw new Qcow2Error(p, 'file', undefined, 'the image is in use by a running QEMU (it holds a lock on it); use -U (--force-share) to compare it anyway, read-only', 'locked');
    }
    return openImageLayer(p, fmt, keys);
  });
  const a = await open(pathA, opts.formatA, opts.keysA);
  try {
    const b = await open(pathB, opts.formatB, opts.keysB);
    try {
      return await compareLayers(a, b, opts);
    } finally {
      await b.close();
    }
  } finally {
    await a.close();
  }
}
