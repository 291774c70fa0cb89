/**
 * Is the image held by a running QEMU? QEMU takes OFD (open file description) byte-range locks on
 * the image file (bytes 100.. and 200..); Linux lists every lock in /proc/locks with the file's
 * device and inode, so we can see them without taking a lock of our own.
 */
import * as fs from 'node:fs';

export interface LockHolder {
  kind: string; // OFDLCK, POSIX, FLOCK
  access: string; // READ / WRITE
  pid: number; // -1 for OFD locks
  start: string;
  end: string;
}

export function locksOn(path: string): LockHolder[] {
  let st: fs.Stats;
  let text: string;
  try {
    st = fs.statSync(path);
    text = fs.readFileSync('/proc/locks', 'utf8');
  } catch {
    return [];
  }
  const major = Math.floor(st.dev / 256) & 0xfff, minor = (st.dev & 0xff) | ((st.dev >> 12) & 0xfff00);
  const out: LockHolder[] = [];
  for (const line of text.split('\n')) {
    // "1: OFDLCK  ADVISORY  READ  -1 fd:01:1234 100 100"  (a "->" marks a waiter)
    const f = line.trim().split(/\s+/).filter(x => x !== '->');
    if (f.length < 8) continue;
    const [, kind, , access, pid, id, start, end] = f;
    const [maj, min, ino] = id.split(':');
    if (Number(ino) === st.ino && parseInt(maj, 16) === major && parseInt(min, 16) === minor) {
      out.push({ kind, access, pid: Number(pid), start, end });
    }
  }
  return out;
}

/** True when some process (a running QEMU, qemu-nbd, qemu-img) holds a lock on the image. */
export function isLockedByQemu(path: string): boolean {
  return locksOn(path).length > 0;
}
