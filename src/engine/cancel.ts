/**
 * Cancellation: every long operation takes an AbortSignal and stops with one kind of error, so the
 * CLI and the editor tell "cancelled" from a failure in one place.
 */
import { Qcow2Error } from './errors';

/** The error a cancelled operation ends with; `operation` names what stopped ("compaction", "check"). */
export function cancelledError(file: string, operation: string, detail = 'cancelled', hostOffset?: number): Qcow2Error {
  return new Qcow2Error(file, operation, hostOffset, detail, 'cancelled');
}

/** Throws `cancelledError` when the signal has fired; cheap enough for every loop iteration. */
export function throwIfCancelled(signal: AbortSignal | undefined, file: string, operation: string): void {
  if (signal?.aborted) throw cancelledError(file, operation);
}

export function isCancelled(e: unknown): boolean {
  return e instanceof Qcow2Error && e.code === 'cancelled';
}
