/**
 * The guard every write path shares (snapshots, compaction, repair): an image is written only when
 * no running QEMU holds it, its corrupt bit is clear, it is not dirty (lazy refcounts not yet
 * settled), and what we are about to write is allowed by its version. Each refusal is a Qcow2Error
 * with a message a user can act on.
 */
import { Qcow2Error } from '../errors';
import type { Qcow2Image } from '../image/image';
import * as L from '../qcow2/layout';
import { headerPath } from '../qcow2/header';
import { isLockedByQemu, locksOn } from '../io/lock';

export type WriteFeature = 'zstd' | 'extended-l2' | 'external-data-file' | 'lazy-refcounts' | 'bitmaps' | 'snapshot-extra-data';

/** Refuses before opening: a file held by QEMU must not be opened for writing at all. */
export function assertNotLocked(path: string): void {
  if (isLockedByQemu(path)) {
    const l = locksOn(path)[0];
    throw new Qcow2Error(path, 'file', undefined,
      `the image is in use by a running QEMU (it holds a ${l?.kind ?? 'file'} lock); shut the VM down or detach the disk before writing to it`, 'locked');
  }
}

/**
 * Refuses images we must not modify. `features` lists the v3-only features the write would
 * introduce into the image; a version 2 image cannot carry any of them.
 */
export function assertWritable(img: Qcow2Image, features: WriteFeature[] = []): void {
  assertNotLocked(img.path);
  const h = img.header;
  if ((h.incompatibleFeatures & L.INCOMPAT_CORRUPT) !== 0n) {
    throw new Qcow2Error(img.path, headerPath('incompatible_features'), L.HEADER_FIELD.incompatible_features.offset,
      'the corrupt bit is set: QEMU found inconsistent metadata; run `qemu-img check -r all` before writing to it', 'corrupt');
  }
  if ((h.incompatibleFeatures & L.INCOMPAT_DIRTY) !== 0n) {
    throw new Qcow2Error(img.path, headerPath('incompatible_features'), L.HEADER_FIELD.incompatible_features.offset,
      'the dirty bit is set (lazy refcounts were not written back); run `qemu-img check -r all` first', 'corrupt');
  }
  if (h.version < 3) {
    const v3only = features.filter(f => f !== 'snapshot-extra-data');
    if (v3only.length) {
      throw new Qcow2Error(img.path, headerPath('version'), L.HEADER_FIELD.version.offset, `a version 2 (compat 0.10) image cannot carry ${v3only.join(', ')}; convert it to compat 1.1 first`, 'unsupported');
    }
  }
}

/**
 * The write-count crash hook for crash tests: with QCOW2_LENS_CRASH_AFTER_WRITES=k in the
 * environment the process is killed (SIGKILL, no clean-up, no flush) just before its (k+1)-th
 * metadata or data write. Every write path calls `beforeWrite()` once per write.
 */
let writesDone = 0;
const crashAfter = Number(process.env.QCOW2_LENS_CRASH_AFTER_WRITES ?? '');
export function beforeWrite(): void {
  if (Number.isInteger(crashAfter) && crashAfter >= 0 && process.env.QCOW2_LENS_CRASH_AFTER_WRITES !== undefined) {
    if (writesDone >= crashAfter) process.kill(process.pid, 'SIGKILL');
  }
  writesDone++;
}
/** Writes performed so far in this process (reported by the CLI for crash tests). */
export function writeCount(): number {
  return writesDone;
}
