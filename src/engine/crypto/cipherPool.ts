/**
 * Sector encryption on worker threads (sector.worker.ts), for the large runs of guest data a copy
 * decrypts or encrypts: qemu-img does its AES on its thread pool too, so a copy of an encrypted
 * image on one thread is held to one core's AES rate while qemu-img uses them all.
 *
 * The work happens in place in the caller's buffer, which must be shared memory (the copy loops
 * read into SharedArrayBuffer windows: io/bufferRing.ts sharedBuffer): a run is cut into
 * sector-aligned parts, one per worker, and the promise settles when every part is done. Nothing
 * is copied or allocated per run. The workers start on first use, hold the key in OpenSSL only (the copy handed to them is
 * wiped there), keep the process alive only while a run is in flight, and end with dispose().
 * A worker that fails fails the runs it had; later runs go back to the caller's own thread.
 */
import * as os from 'node:os';
import { Worker } from 'node:worker_threads';
import { workerFile } from '../io/workerFile';
import type { SectorCipherSpec } from './sectorCipher';
import type { SectorReply, SectorRequest, SectorWorkerInit } from './sector.worker';

const SECTOR = 512;
/** A worker's heap, MiB: it holds a request's few objects and the cipher's 64 KiB scratch. */
const WORKER_YOUNG_MB = 1;
const WORKER_OLD_MB = 16;

/**
 * Workers by default: one less than the cores (the caller's thread has the copy's I/O and zero
 * scans to do), at least one, at most 4. Measured on 2 cores, 1 GiB LUKS to raw: one worker took
 * the copy from 3.1 s to 1.9 s; a second gained nothing and cost ~40 MiB more (each worker's heap
 * collects OpenSSL's output buffers only now and then).
 */
export function defaultCipherWorkers(): number {
  const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  return Math.max(1, Math.min(4, cores - 1));
}

export function isShared(buf: Uint8Array): boolean {
  return buf.buffer instanceof SharedArrayBuffer;
}

export class CipherPool {
  private readonly workers: Worker[] = [];
  private readonly waiting = new Map<number, { resolve(): void; reject(e: Error): void }>();
  private next = 1;
  private failed: Error | null = null;

  /** `key` is copied to each worker (and wiped there once in OpenSSL); the caller keeps and wipes its own. */
  constructor(spec: SectorCipherSpec, key: Uint8Array, count = defaultCipherWorkers()) {
    const file = workerFile('sector', 'encryption');
    const init: SectorWorkerInit = { spec, key };
    for (let i = 0; i < count; i++) {
      const w = new Worker(file, { workerData: init, resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_MB, maxOldGenerationSizeMb: WORKER_OLD_MB } });
      w.unref();
      w.on('message', (r: SectorReply) => {
        const p = this.waiting.get(r.id);
        this.waiting.delete(r.id);
        if (this.waiting.size === 0) for (const x of this.workers) x.unref();
        if (r.error) p?.reject(new Error(r.error));
        else p?.resolve();
      });
      w.on('error', e => this.fail(e));
      w.on('exit', code => { if (code !== 0) this.fail(new Error(`an encryption worker stopped (exit code ${code})`)); });
      this.workers.push(w);
    }
  }

  /** False once a worker has failed: the caller does the work itself. */
  get usable(): boolean {
    return this.failed === null && this.workers.length > 0;
  }

  /** Decrypts (or encrypts) `buf`, shared memory of whole sectors starting at sector `firstSector`, in place. */
  run(buf: Buffer, firstSector: number, encrypt: boolean): Promise<void> {
    if (!isShared(buf)) return Promise.reject(new TypeError('the cipher pool works in shared memory only'));
    if (this.failed) return Promise.reject(this.failed);
    const sectors = Math.ceil(buf.length / SECTOR);
    const n = Math.min(this.workers.length, sectors);
    const per = Math.ceil(sectors / n);
    const parts: Promise<void>[] = [];
    for (let i = 0; i < n; i++) {
      const from = i * per * SECTOR, to = Math.min(buf.length, (i + 1) * per * SECTOR);
      if (to <= from) break;
      const id = this.next++;
      parts.push(new Promise<void>((resolve, reject) => this.waiting.set(id, { resolve, reject })));
      const req: SectorRequest = {
        id, memory: buf.buffer as SharedArrayBuffer, byteOffset: buf.byteOffset + from, length: to - from,
        firstSector: firstSector + i * per, encrypt,
      };
      const w = this.workers[i];
      w.ref();
      w.postMessage(req);
    }
    return Promise.all(parts).then(() => undefined);
  }

  /** Ends the workers (their OpenSSL contexts go with them). */
  dispose(): void {
    this.fail(new Error('the encryption workers were stopped'));
    for (const w of this.workers.splice(0)) void w.terminate();
  }

  private fail(e: Error): void {
    this.failed ??= e;
    for (const p of this.waiting.values()) p.reject(e);
    this.waiting.clear();
  }
}
