/**
 * The Disk the allocator model writes to: one file, every write through the crash hook
 * (writable.ts beforeWrite), the file's length tracked as QEMU's bdrv_getlength sees it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Qcow2Error } from '../../errors';
import { readFullSync } from '../../io/readDisk';
import { beforeWrite } from '../writable';
import type { Disk } from './refalloc';

const ZERO_CHUNK = 4 * 1024 * 1024;

export class FileDisk implements Disk {
  private constructor(readonly path: string, private fd: number, private len: number, private readonly signal?: AbortSignal, private readonly noFlush = false) {}

  /**
   * Opens (mode 'r+') or creates empty (mode 'w', a temporary file: its syncs are skipped, as
   * QEMU creates with BDRV_O_NO_FLUSH, and `finish` syncs once) a file.
   */
  static open(p: string, mode: 'r+' | 'w', signal?: AbortSignal): FileDisk {
    let fd: number;
    try {
      fd = fs.openSync(p, mode === 'w' ? fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC : fs.constants.O_RDWR, 0o644);
    } catch (e) {
      throw new Qcow2Error(p, 'file', undefined, `cannot open (${(e as NodeJS.ErrnoException).code ?? String(e)})`, 'io');
    }
    return new FileDisk(p, fd, fs.fstatSync(fd).size, signal, mode === 'w');
  }

  length(): number {
    return this.len;
  }

  private check(): void {
    if (this.signal?.aborted) throw new Qcow2Error(this.path, 'file', undefined, 'cancelled', 'cancelled');
  }

  async write(off: number, data: Uint8Array, what: string): Promise<void> {
    this.check();
    beforeWrite();
    let done = 0;
    try {
      while (done < data.length) done += fs.writeSync(this.fd, data, done, data.length - done, off + done);
    } catch (e) {
      throw new Qcow2Error(this.path, what, off, `write failed (${(e as NodeJS.ErrnoException).code ?? String(e)})`, 'io');
    }
    if (off + data.length > this.len) this.len = off + data.length;
  }

  async writeZeroes(off: number, len: number, what: string): Promise<void> {
    const z = Buffer.alloc(Math.min(ZERO_CHUNK, len));
    for (let p = 0; p < len; p += z.length) await this.write(off + p, z.subarray(0, Math.min(z.length, len - p)), what);
  }

  async read(off: number, len: number, what: string): Promise<Buffer> {
    if (off + len > this.len) throw new Qcow2Error(this.path, what, off, `${len} bytes would end past the end of the file (0x${this.len.toString(16)})`);
    return readFullSync(this.fd, len, off);
  }

  async sync(): Promise<void> {
    if (!this.noFlush) fs.fsyncSync(this.fd);
  }

  /** The one sync a new file gets before it is renamed into place. */
  finish(): void {
    fs.fsyncSync(this.fd);
  }

  async truncate(size: number): Promise<void> {
    this.check();
    beforeWrite();
    fs.ftruncateSync(this.fd, size);
    this.len = size;
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/** A temporary file beside `dest`, renamed over it by `commit` (then the folder is synced). */
export class TempOutput {
  readonly tmp: string;
  constructor(readonly dest: string) {
    this.tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.qcow2-lens-${process.pid}-${Date.now().toString(36)}.tmp`);
  }

  commit(): void {
    fs.renameSync(this.tmp, this.dest);
    const dfd = fs.openSync(path.dirname(this.dest), 'r');
    try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
  }

  discard(): void {
    fs.rmSync(this.tmp, { force: true });
  }
}
