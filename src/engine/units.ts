/**
 * Byte counts and offsets as people write them, one formatter and one parser for the CLI, the
 * extension host and the webview. Imports nothing, so the browser bundle can take it too.
 */

const UNITS = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];

/**
 * `65536` → "64 KiB". Exact in the largest unit that divides the count (a header's "1536 KiB"
 * stays exact); a count no unit divides is shown with one decimal ("1.5 KiB").
 */
export function formatBytes(n: number): string {
  let u = 0, v = n;
  while (v >= 1024 && u < UNITS.length - 1 && v % 1024 === 0) { v /= 1024; u++; }
  if (u === 0 && n >= 1024) {
    v = n;
    while (v >= 1024 && u < UNITS.length - 1) { v /= 1024; u++; }
    return `${v.toFixed(1)} ${UNITS[u]}`;
  }
  return `${v} ${UNITS[u]}`;
}

const SUFFIX_POWER: Record<string, number> = { '': 0, k: 1, m: 2, g: 3, t: 4 };

/**
 * "1234", "0x4d2", "4d2h", "64K", "64 KiB", "1M", "2G" (binary units, as qemu-img reads them;
 * `_` separates digits) into a byte count; undefined when the text is none of these or the value
 * is not an exact integer.
 */
export function parseOffset(text: string): number | undefined {
  const t = text.trim().toLowerCase().replace(/_/g, '');
  const h = /^([0-9a-f]+)h$/.exec(t);
  if (h) return exact(parseInt(h[1], 16));
  const m = /^(0x[0-9a-f]+|\d+)\s*(?:([kmgt])i?b?)?$/.exec(t);
  if (!m) return undefined;
  const base = m[1].startsWith('0x') ? parseInt(m[1], 16) : parseInt(m[1], 10);
  return exact(base * 1024 ** SUFFIX_POWER[m[2] ?? '']);
}

function exact(v: number): number | undefined {
  return Number.isSafeInteger(v) ? v : undefined;
}
