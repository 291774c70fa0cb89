/**
 * PBKDF2 (RFC 8018) for LUKS, always through Node's asynchronous crypto.pbkdf2: OpenSSL runs it on
 * a libuv thread-pool thread, so the JavaScript thread (VS Code's extension host, the CLI's event
 * loop) keeps running while a key slot takes its seconds. Slots are tried one after the other, so
 * an unlock occupies one of the pool's (by default four) threads and file reads go on beside it.
 *
 * Iteration counts come from the image, so they are bounded before any work starts.
 */
import { nodeCrypto } from '../builtins';
import { HashAlgorithm } from './algorithms';

/**
 * The most iterations one key slot (or the master key digest) may ask for unless the caller raises
 * the limit. QEMU and cryptsetup calibrate a slot to `iter-time` of PBKDF2 on the machine that
 * writes it (2 s by default): 5.5 million SHA-256 iterations for a 64-byte key on the 2024 server
 * core the tests run on, perhaps 20 million on the fastest desktop CPUs. 100 million leaves room
 * for `iter-time` settings several times the default. Node's PBKDF2 (OpenSSL 3) runs about 2.4
 * million HMAC-SHA256 per second on that core — less than half of what QEMU's gnutls does — so
 * such a slot costs 40–80 s of one pool thread per try; the LUKS1 field allows 4 294 967 295,
 * half an hour and more per slot, eight slots per wrong passphrase.
 */
export const DEFAULT_MAX_PBKDF2_ITERATIONS = 100_000_000;

/** Node's own ceiling for the iteration argument (an int32). */
const NODE_MAX_ITERATIONS = 2 ** 31 - 1;

export function pbkdf2(hash: HashAlgorithm, password: Buffer, salt: Buffer, iterations: number, outBytes: number): Promise<Buffer> {
  if (!Number.isSafeInteger(iterations) || iterations < 1 || iterations > NODE_MAX_ITERATIONS) {
    return Promise.reject(new RangeError(`${iterations} is not a PBKDF2 iteration count Node can run`));
  }
  return new Promise((resolve, reject) => {
    nodeCrypto().pbkdf2(password, salt, iterations, outBytes, hash, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('cancelled');
}

/**
 * Iterations per second of PBKDF2 with these inputs, measured the way QEMU's
 * qcrypto_pbkdf2_count_iters measures (start at 2¹⁵ iterations, ×10 while a run takes under
 * 100 ms, rescale until one run takes over 500 ms). QEMU times its own thread's CPU time; Node
 * cannot see a pool thread's CPU time, so this times the wall clock, which on a busy machine counts
 * fewer iterations than QEMU would.
 */
export async function countIterationsPerSecond(hash: HashAlgorithm, password: Buffer, salt: Buffer, outBytes: number, signal?: AbortSignal): Promise<number> {
  let iterations = 1 << 15;
  for (;;) {
    throwIfAborted(signal);
    const start = process.hrtime.bigint();
    const out = await pbkdf2(hash, password, salt, iterations, outBytes);
    out.fill(0);
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    if (ms > 500) return Math.floor((iterations * 1000) / ms);
    iterations = ms < 100 ? iterations * 10 : Math.floor((iterations * 1000) / Math.max(ms, 1));
    if (iterations > NODE_MAX_ITERATIONS) return NODE_MAX_ITERATIONS;
  }
}
