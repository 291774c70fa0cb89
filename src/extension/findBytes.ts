/**
 * Find in the image file (no `vscode` import): one bounded window per request, so the webview
 * drives a search over a large file as a loop of requests, shows progress between them and
 * cancels by not asking again. Each window is read through the engine's file reader in chunks
 * of at most CHUNK bytes; consecutive chunks overlap by the pattern's length − 1 so a match
 * across a chunk boundary is found.
 */
import type { ImageFile } from '../engine/io/reader';

/** Bytes read per engine call. */
const CHUNK = 1024 * 1024;
/** Bytes one request searches at most (the webview asks again for the rest). */
export const MAX_FIND_WINDOW = 64 * 1024 * 1024;
/** Longest pattern accepted. */
export const MAX_FIND_PATTERN = 4096;

/**
 * Searches [from, from + window) forward for the first match starting there, or backward for the
 * last match starting before `from` (in [from − window, from)). Returns the match's offset (or
 * undefined) and how far the search got: the next `from` to ask with.
 */
export async function findInFile(file: ImageFile, pattern: Uint8Array, from: number, direction: 'next' | 'previous', window = MAX_FIND_WINDOW): Promise<{ offset?: number; scannedTo: number }> {
  const size = file.size, n = pattern.length;
  if (n === 0 || n > MAX_FIND_PATTERN) throw new Error(`a search pattern is 1 to ${MAX_FIND_PATTERN} bytes (got ${n})`);
  window = Math.max(CHUNK, Math.min(MAX_FIND_WINDOW, Math.floor(window) || MAX_FIND_WINDOW));
  const pat = Buffer.from(pattern);
  from = Math.max(0, Math.min(size, Math.floor(from)));
  if (direction === 'next') {
    const end = Math.min(size, from + window); // match starts in [from, end)
    for (let a = from; a < end; a += CHUNK) {
      const starts = Math.min(CHUNK, end - a);
      const len = Math.min(size - a, starts + n - 1);
      const buf = await file.read(a, len, 'find');
      const i = buf.indexOf(pat);
      if (i >= 0 && i < starts) return { offset: a + i, scannedTo: a + i + 1 };
    }
    return { scannedTo: end };
  }
  const start = Math.max(0, from - window); // match starts in [start, from)
  for (let b = from; b > start; b -= CHUNK) {
    const a = Math.max(start, b - CHUNK);
    const len = Math.min(size - a, b - a + n - 1);
    const buf = await file.read(a, len, 'find');
    const i = buf.lastIndexOf(pat, b - a - 1);
    if (i >= 0) return { offset: a + i, scannedTo: a + i };
  }
  return { scannedTo: start };
}
