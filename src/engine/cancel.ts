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

/**
 * A cooperative pause for long work in a shared thread (the extension host): each call throws
 * when `signal` has fired, and every `sliceMs` of work it lets the event loop run (setImmediate:
 * timers and I/O, not only promise jobs). Awaiting reads that come from a cache never does that by
 * itself, so a walk over cached tables would otherwise hold the thread for its whole length.
 */
export function pacer(signal: AbortSignal | undefined, file: string, operation: string, sliceMs = 8): () => Promise<void> {
  let since = Date.now();
  return async () => {
    throwIfCancelled(signal, file, operation);
    if (Date.now() - since < sliceMs) return;
    await new Promise<void>(resolve => setImmediate(resolve));
    since = Date.now();
    throwIfCancelled(signal, file, operation);
  };
}
