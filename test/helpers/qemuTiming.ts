/**
 * qemu-img and qemu-io calibrate LUKS's PBKDF2 by timing their own thread's CPU, and on a coarse-clocked
 * machine that timing often reads zero: they then fail with "Unable to get accurate CPU usage" before
 * touching the image (seen here on a quarter of idle `create`s with sha1, and on CI many times in a
 * row). That is QEMU timing itself, not the command under test, so every test helper that runs QEMU
 * runs the command again when — and only when — that is the failure. A failed calibration costs one
 * process start, so tries are many and pauses short and uneven (they shift the run against the clock's
 * ticks); any other failure is the command's own and is reported at once.
 */
export const CPU_TIMING = /Unable to get accurate CPU usage/;
export const TIMING_TRIES = 60;

/** Milliseconds to wait before try `attempt` (1-based). */
export function timingPause(attempt: number): number {
  return 10 + Math.floor(Math.random() * 40) + Math.min(attempt, 10) * 5;
}

/** Whether a finished QEMU command should run again. */
export function calibrationFailed(status: number | null, stderr: string, attempt: number): boolean {
  return status !== 0 && attempt < TIMING_TRIES && CPU_TIMING.test(stderr);
}
