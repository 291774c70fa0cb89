/** Text forms shared by the guest CLI commands: ls -l lines, sizes, modes. */
import type { GuestStat } from './fs';

export function formatSize(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n, u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/** "drwxr-xr-x" from st_mode. */
export function modeString(mode: number): string {
  const t = mode & 0o170000;
  const c = t === 0o040000 ? 'd' : t === 0o120000 ? 'l' : t === 0o100000 ? '-' : t === 0o020000 ? 'c' : t === 0o060000 ? 'b' : t === 0o010000 ? 'p' : t === 0o140000 ? 's' : '?';
  const rwx = (bits: number, special: number, ch: string): string =>
    (bits & 4 ? 'r' : '-') + (bits & 2 ? 'w' : '-') + (special ? (bits & 1 ? ch : ch.toUpperCase()) : bits & 1 ? 'x' : '-');
  return c + rwx((mode >> 6) & 7, mode & 0o4000, 's') + rwx((mode >> 3) & 7, mode & 0o2000, 's') + rwx(mode & 7, mode & 0o1000, 't');
}

export function isoTime(seconds: number): string {
  return new Date(seconds * 1000).toISOString().replace('.000Z', 'Z');
}

export function longLine(e: GuestStat, name: string): string {
  const when = isoTime(e.mtime).replace('T', ' ').replace('Z', '');
  return `${modeString(e.mode)} ${String(e.links ?? 1).padStart(3)} ${String(e.uid).padStart(5)} ${String(e.gid).padStart(5)} ${String(e.size).padStart(12)} ${when} ${name}${e.type === 'symlink' && e.target !== undefined ? ` -> ${e.target}` : ''}`;
}
