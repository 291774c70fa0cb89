/**
 * File-to-file copies in the kernel: copy_file_range(2) through the same Node-API addon as the
 * hole seeker (native/holes.c → dist/holes.node), so compaction's data clusters move from the
 * source to the output with no user-space copy (and as a reflink where the file system shares
 * extents), and all-zero clusters are found by reading only their first 512 bytes unless those
 * are zero. Both run on libuv's thread pool. Callers fall back to reading and writing through
 * buffers when `nativeCopy()` is undefined (no addon, an older one, QCOW2_LENS_NO_NATIVE or
 * QCOW2_LENS_NO_COPY_RANGE set) or once the kernel refuses (`isCopyRefusal`).
 */
import { holeSeeker } from './holes';

export interface NativeCopy {
  /** Copies `len` bytes; resolves with the bytes copied (fewer only where the source ends). */
  copyRange(fdIn: number, offIn: number, fdOut: number, offOut: number, len: number): Promise<number>;
  /** Sets `mask[i]` to 1 when cluster i of the `n` clusters of `cs` bytes from `off` reads as all zero, else 0. */
  zeroScan(fd: number, off: number, n: number, cs: number, mask: Uint8Array): Promise<number>;
}

/** The error the addon rejects with: errno's name and the bytes copied before it. */
export interface CopyError extends Error { code?: string; done?: number }

/** copy_file_range cannot here (another file system, an old kernel, a file system without it): not tried again. */
const REFUSALS = new Set(['EXDEV', 'ENOSYS', 'EOPNOTSUPP', 'EINVAL']);

export function isCopyRefusal(e: unknown): boolean {
  return REFUSALS.has((e as CopyError).code ?? '');
}

export function nativeCopy(): NativeCopy | undefined {
  if (process.env.QCOW2_LENS_NO_COPY_RANGE) return undefined;
  const m = holeSeeker() as Partial<NativeCopy> | undefined;
  if (!m || typeof m.copyRange !== 'function' || typeof m.zeroScan !== 'function') return undefined;
  // tests: the kernel refusing every copy, as across file systems (EXDEV) or on an old kernel
  const refuse = process.env.QCOW2_LENS_COPY_RANGE_REFUSE;
  if (refuse) {
    return {
      copyRange: () => Promise.reject(Object.assign(new Error(`simulated ${refuse}`), { code: refuse, done: 0 })),
      zeroScan: m.zeroScan.bind(m),
    };
  }
  return m as NativeCopy;
}
