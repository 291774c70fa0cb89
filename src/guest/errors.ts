/**
 * Guest-layer errors: the engine's Qcow2Error (file, structure path, offset, detail, code), with the
 * structure path rooted at "guest disk" so a reader knows the offset is a guest offset, not a host one.
 */
import { Qcow2Error, Qcow2ErrorCode } from '../engine/errors';

/** A structure path inside the guest, e.g. ['partition 2', 'ext4', 'group descriptor 3']. */
export type GuestPath = readonly string[];

/** The one formatter for guest structure paths. */
export function formatGuestPath(path: GuestPath): string {
  return ['guest disk', ...path].join(' → ');
}

export function guestError(file: string, path: GuestPath, guestOffset: number | undefined, detail: string, code: Qcow2ErrorCode = 'corrupt'): Qcow2Error {
  return new Qcow2Error(file, formatGuestPath(path), guestOffset, detail, code);
}

/** Not found / not a directory and the like: the user named something the file system does not have. */
export class GuestPathError extends Error {
  constructor(readonly code: 'ENOENT' | 'ENOTDIR' | 'EISDIR' | 'ELOOP' | 'EINVAL', readonly guestPath: string, message: string) {
    super(`${guestPath}: ${message}`);
    this.name = 'GuestPathError';
  }
}
