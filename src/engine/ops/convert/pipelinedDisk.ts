/**
 * The temporary qcow2 output's disk with its guest data written asynchronously: data and
 * compressed-data writes go out on libuv's threads (a second descriptor of the same file, at most
 * MAX_INFLIGHT at a time), so the next window is read, classified and compressed while the kernel
 * copies the previous one into the page cache — as qemu-img keeps several requests in flight
 * (-m). Everything else (metadata writes, reads, truncation, syncs) first waits for every data
 * write in flight, then goes through the FileDisk as before, so the model reads back only what
 * has been written. Every write still passes the crash hook (beforeWrite) when it is issued; the
 * file is a temporary one no reader sees until it is synced (`finish`, after the last data write
 * completed) and renamed, so the order of data writes inside it does not matter to a crash.
 *
 * Callers hand over their buffers: a data buffer is not touched again until `drain`, or until
 * `settled` says no write from it is in flight (the convert writer reuses a ring of window buffers).
 */
import * as fs from 'node:fs';
import { Qcow2Error } from '../../errors';
import { readFullSync } from '../../io/readDisk';
import type { FileDisk } from '../create/disk';
import type { Disk } from '../create/refalloc';
import { beforeWrite } from '../writable';

export const MAX_INFLIGHT = 4;
const ASYNC_KINDS = new Set(['data', 'compressed data']);

function writeAll(fd: number, data: Uint8Array, off: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number) => {
      if (done >= data.length) { resolve(); return; }
      fs.write(fd, data, done, data.length - done, off + done, (err, n) => (err ? reject(err) : step(done + n)));
    };
    step(0);
  });
}

export class PipelinedDisk implements Disk {
  private readonly fd: number;
  /** Writes in flight, each with the memory it writes from. */
  private inflight = new Map<Promise<void>, ArrayBufferLike>();
  private failure: Qcow2Error | null = null;
  /** The end of the furthest asynchronous write issued (the file's length as the model sees it). */
  private asyncEnd = 0;

  constructor(private readonly inner: FileDisk, private readonly signal?: AbortSignal) {
    this.fd = fs.openSync(inner.path, fs.constants.O_RDWR);
  }

  get path(): string {
    return this.inner.path;
  }

  length(): number {
    return Math.max(this.inner.length(), this.asyncEnd);
  }

  async write(off: number, data: Uint8Array, what: string): Promise<void> {
    if (!ASYNC_KINDS.has(what)) {
      await this.drain();
      return this.inner.write(off, data, what);
    }
    if (this.failure) throw this.failure;
    if (this.signal?.aborted) throw new Qcow2Error(this.path, 'file', undefined, 'cancelled', 'cancelled');
    beforeWrite();
    const p: Promise<void> = writeAll(this.fd, data, off).catch((e: NodeJS.ErrnoException) => {
      this.failure ??= new Qcow2Error(this.path, what, off, `write failed (${e.code ?? String(e)})`, 'io');
    }).finally(() => this.inflight.delete(p));
    this.inflight.set(p, data.buffer);
    if (off + data.length > this.asyncEnd) this.asyncEnd = off + data.length;
    while (this.inflight.size >= MAX_INFLIGHT) await Promise.race(this.inflight.keys());
  }

  /** Waits until no write in flight reads from `buffer` (its memory may then be filled again); the first failure is thrown. */
  async settled(buffer: ArrayBufferLike): Promise<void> {
    for (;;) {
      const using = [...this.inflight].filter(([, b]) => b === buffer).map(([p]) => p);
      if (!using.length) break;
      await Promise.all(using);
    }
    if (this.failure) throw this.failure;
  }

  /** Waits for every data write in flight; the first failure is thrown. */
  async drain(): Promise<void> {
    while (this.inflight.size) await Promise.all([...this.inflight.keys()]);
    if (this.failure) throw this.failure;
  }

  async writeZeroes(off: number, len: number, what: string): Promise<void> {
    await this.drain();
    return this.inner.writeZeroes(off, len, what);
  }

  async read(off: number, len: number, what: string): Promise<Buffer> {
    await this.drain();
    // read here, bounded by the length the asynchronous writes made (the FileDisk knows only its own)
    const end = this.length();
    if (off + len > end) throw new Qcow2Error(this.path, what, off, `${len} bytes would end past the end of the file (0x${end.toString(16)})`);
    return readFullSync(this.fd, len, off);
  }

  async sync(): Promise<void> {
    await this.drain();
    return this.inner.sync();
  }

  async truncate(size: number): Promise<void> {
    await this.drain();
    await this.inner.truncate(size);
    this.asyncEnd = Math.min(this.asyncEnd, size);
  }

  /** Every data write completed, then the one sync of the new file. */
  async finish(): Promise<void> {
    await this.drain();
    this.inner.finish();
  }

  close(): void {
    try { fs.closeSync(this.fd); } catch { /* already closed */ }
    this.inner.close();
  }
}
