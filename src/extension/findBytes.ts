/**
 * Find in the image file or in the guest disk (no `vscode` import): one bounded window per request,
 * so the webview drives a search over a large file as a loop of requests, shows progress between
 * them and cancels by not asking again. Bytes are read in chunks of at most CHUNK bytes;
 * consecutive chunks overlap by the pattern's length − 1 so a match across a chunk boundary is
 * found. In the guest disk, a pattern with a non-zero byte can only match where the disk holds
 * data (this image's or a backing file's clusters; unallocated and zero clusters read as zeros),
 * so the search reads only those runs (and the pattern's length − 1 bytes around them) and skips
 * the rest of a sparse disk through the mapping (`qemu-img map`'s block status), a bounded span
 * of it per request.
 */
import type { Qcow2Image } from '../engine/image/image';
import { forEachMapEntry } from '../engine/image/map';
import type { ImageFile } from '../engine/io/reader';

/** Bytes read per engine call. */
const CHUNK = 1024 * 1024;
/** Bytes one request searches at most (the webview asks again for the rest). */
export const MAX_FIND_WINDOW = 64 * 1024 * 1024;
/** Longest pattern accepted. */
export const MAX_FIND_PATTERN = 4096;

type Read = (offset: number, length: number) => Promise<Buffer>;

/** The first match starting in [from, end) (bytes past `end` read for the pattern's tail, up to `size`). */
async function forward(read: Read, size: number, pat: Buffer, from: number, end: number): Promise<number | undefined> {
  const n = pat.length;
  for (let a = from; a < end; a += CHUNK) {
    const starts = Math.min(CHUNK, end - a);
    const buf = await read(a, Math.min(size - a, starts + n - 1));
    const i = buf.indexOf(pat);
    if (i >= 0 && i < starts) return a + i;
  }
  return undefined;
}

/** The last match starting in [start, from). */
async function backward(read: Read, size: number, pat: Buffer, start: number, from: number): Promise<number | undefined> {
  const n = pat.length;
  for (let b = from; b > start; b -= CHUNK) {
    const a = Math.max(start, b - CHUNK);
    const buf = await read(a, Math.min(size - a, b - a + n - 1));
    const i = buf.lastIndexOf(pat, b - a - 1);
    if (i >= 0) return a + i;
  }
  return undefined;
}

function checkPattern(pattern: Uint8Array, window: number): { pat: Buffer; window: number } {
  const n = pattern.length;
  if (n === 0 || n > MAX_FIND_PATTERN) throw new Error(`a search pattern is 1 to ${MAX_FIND_PATTERN} bytes (got ${n})`);
  return { pat: Buffer.from(pattern), window: Math.max(CHUNK, Math.min(MAX_FIND_WINDOW, Math.floor(window) || MAX_FIND_WINDOW)) };
}

/**
 * Searches [from, from + window) forward for the first match starting there, or backward for the
 * last match starting before `from` (in [from − window, from)). Returns the match's offset (or
 * undefined) and how far the search got: the next `from` to ask with.
 */
export async function findInFile(file: ImageFile, pattern: Uint8Array, from: number, direction: 'next' | 'previous', window = MAX_FIND_WINDOW): Promise<{ offset?: number; scannedTo: number }> {
  const size = file.size;
  const c = checkPattern(pattern, window);
  const read: Read = (a, len) => file.read(a, len, 'find');
  from = Math.max(0, Math.min(size, Math.floor(from)));
  if (direction === 'next') {
    const end = Math.min(size, from + c.window); // match starts in [from, end)
    const at = await forward(read, size, c.pat, from, end);
    return at === undefined ? { scannedTo: end } : { offset: at, scannedTo: at + 1 };
  }
  const start = Math.max(0, from - c.window); // match starts in [start, from)
  const at = await backward(read, size, c.pat, start, from);
  return at === undefined ? { scannedTo: start } : { offset: at, scannedTo: at };
}

/** Guest bytes whose mapping one guest search request looks through at most (what it reads stays within the window). */
export const MAX_GUEST_SPAN = 128 * 1024 ** 3;

/**
 * findInFile over the guest disk (the backing chain read through, decrypted when unlocked): the
 * first match starting in [from, …) or the last before `from`, reading at most `window` bytes and
 * looking through at most MAX_GUEST_SPAN bytes of the mapping per request.
 */
export async function findInGuest(img: Qcow2Image, pattern: Uint8Array, from: number, direction: 'next' | 'previous', window = MAX_FIND_WINDOW): Promise<{ offset?: number; scannedTo: number }> {
  const size = img.virtualSize;
  const c = checkPattern(pattern, window), n = c.pat.length;
  const read: Read = (a, len) => img.readGuest(a, len);
  from = Math.max(0, Math.min(size, Math.floor(from)));
  const next = direction === 'next';
  const limit = next ? Math.min(size, from + MAX_GUEST_SPAN) : Math.max(0, from - MAX_GUEST_SPAN);
  if (c.pat.every(b => b === 0)) { // zeros match anywhere, holes included: a plain window
    const end = next ? Math.min(size, from + c.window) : Math.max(0, from - c.window);
    const at = next ? await forward(read, size, c.pat, from, end) : await backward(read, size, c.pat, end, from);
    return at === undefined ? { scannedTo: end } : { offset: at, scannedTo: next ? at + 1 : at };
  }
  // the runs holding data, in search order, a mapping window at a time
  const step = img.g.l2Size * img.clusterSize * 4;
  let budget = c.window, pos = from;
  for (let w = from; next ? w < limit : w > limit; w = next ? w + step : w - step) {
    const lo = next ? w : Math.max(limit, w - step), hi = next ? Math.min(limit, w + step) : w;
    const runs: Array<{ start: number; end: number }> = [];
    await forEachMapEntry(img, e => { if (e.length > 0 && e.present && !e.zero) runs.push({ start: e.start, end: e.start + e.length }); }, { start: lo, end: hi });
    if (!next) runs.reverse();
    for (const r of runs) {
      if (next) {
        const s = Math.max(pos, r.start - (n - 1)), t = Math.min(limit, r.end); // match starts in [s, t)
        if (t <= s) continue;
        const e = Math.min(t, s + budget);
        const at = await forward(read, size, c.pat, s, e);
        if (at !== undefined) return { offset: at, scannedTo: at + 1 };
        budget -= e - s;
        pos = e;
        if (budget <= 0) return { scannedTo: pos };
      } else {
        const t = Math.min(pos, r.end), s = Math.max(limit, r.start - (n - 1)); // match starts in [s, t)
        if (t <= s) continue;
        const b = Math.max(s, t - budget);
        const at = await backward(read, size, c.pat, b, t);
        if (at !== undefined) return { offset: at, scannedTo: at };
        budget -= t - b;
        pos = b;
        if (budget <= 0) return { scannedTo: pos };
      }
    }
  }
  return { scannedTo: limit };
}
