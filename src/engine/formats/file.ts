/**
 * File access for the foreign formats: one bounded reader (every read checked against the file
 * size and an allocation ceiling before a buffer is allocated, so a hostile BAT or grain directory
 * cannot make us allocate gigabytes) and a plain file sink for writers.
 */
import * as fs from 'node:fs';
import { Qcow2Error, hex } from '../errors';
import type { HoleSeeker, ImageSink } from './layer';
import { forEachHostPiece } from '../io/holes';
import { openImageFile } from '../io/reader';

/** The largest single structure read (a VHD BAT of 2040 GiB in 2 MiB blocks is 4 MiB). */
export const MAX_STRUCTURE_READ = 64 * 1024 * 1024;

export class FormatFile {
  private constructor(readonly path: string, private fh: fs.promises.FileHandle, readonly size: number) {}

  static async open(path: string): Promise<FormatFile> {
    const { fh, size } = await openImageFile(path, false);
    return new FormatFile(path, fh, size);
  }

  get fd(): number {
    return this.fh.fd;
  }

  /** Exactly `length` bytes at `hostOffset`; a range past the end of the file is an error naming `structure`. */
  async read(hostOffset: number, length: number, structure: string): Promise<Buffer> {
    this.checkRange(hostOffset, length, structure);
    const buf = Buffer.allocUnsafe(length);
    const done = await this.fill(buf, hostOffset, length);
    if (done < length) throw new Qcow2Error(this.path, structure, hostOffset, `file ends after ${done} of ${length} bytes`);
    return buf;
  }

  /** Up to `length` bytes; whatever lies past the end of the file reads as zero (as QEMU reads data past EOF). */
  async readPadded(hostOffset: number, length: number, structure: string): Promise<Buffer> {
    if (!Number.isSafeInteger(hostOffset) || hostOffset < 0 || !Number.isSafeInteger(length) || length < 0 || length > MAX_STRUCTURE_READ) {
      throw new Qcow2Error(this.path, structure, hostOffset, `invalid read of ${length} bytes`);
    }
    const buf = Buffer.alloc(length);
    const avail = Math.max(0, Math.min(length, this.size - hostOffset));
    if (avail > 0) await this.fill(buf, hostOffset, avail);
    return buf;
  }

  /**
   * Guest data: `length` bytes at `hostOffset` into `target` (already zeroed by the caller's
   * Buffer.alloc), whatever lies past the end of the file left as zero. No ceiling: the caller
   * sized `target` for its own request, nothing here comes from the file.
   */
  async readInto(target: Buffer, targetOffset: number, hostOffset: number, length: number): Promise<void> {
    const avail = Math.max(0, Math.min(length, this.size - hostOffset));
    let done = 0;
    while (done < avail) {
      const { bytesRead } = await this.fh.read(target, targetOffset + done, avail - done, hostOffset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
  }

  checkRange(hostOffset: number, length: number, structure: string): void {
    if (!Number.isSafeInteger(hostOffset) || hostOffset < 0) {
      throw new Qcow2Error(this.path, structure, undefined, `offset ${hostOffset} is not a valid file position`);
    }
    if (!Number.isSafeInteger(length) || length < 0 || length > MAX_STRUCTURE_READ) {
      throw new Qcow2Error(this.path, structure, hostOffset, `size of ${length} bytes is beyond the ${MAX_STRUCTURE_READ}-byte limit`);
    }
    if (hostOffset + length > this.size) {
      throw new Qcow2Error(this.path, structure, hostOffset,
        `${length} bytes would end at ${hex(hostOffset + length)}, past the end of the file (${hex(this.size)})`);
    }
  }

  private async fill(buf: Buffer, hostOffset: number, length: number): Promise<number> {
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, done, length - done, hostOffset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/**
 * Splits host range [hostOffset, hostOffset + length) into data and hole pieces, in order; with
 * no seeker the whole range is one data piece. Ranges past the end of the file are holes.
 */
export function hostPieces(seeker: HoleSeeker | undefined, fd: number, hostOffset: number, length: number, piece: (start: number, len: number, hole: boolean) => void): void {
  if (!seeker) { if (length > 0) piece(hostOffset, length, false); return; }
  forEachHostPiece(seeker, fd, hostOffset, length, piece);
}

/** A sink writing straight into a new file (tests, and callers that wrap it with temp-file + rename). */
export class FileSink implements ImageSink {
  private constructor(readonly path: string, private fh: fs.promises.FileHandle) {}

  /** Creates (or empties) the file. */
  static async create(path: string): Promise<FileSink> {
    try {
      return new FileSink(path, await fs.promises.open(path, 'w'));
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new Qcow2Error(path, 'file', undefined, `cannot create (${err.code ?? err.message})`, 'io');
    }
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
  }

  async truncate(size: number): Promise<void> {
    await this.fh.truncate(size);
  }

  async sync(): Promise<void> {
    await this.fh.sync();
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
