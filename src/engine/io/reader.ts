/**
 * The one bounded reader every structure goes through (STYLE.md principle 3): each read is checked
 * against the file size and against an allocation ceiling before a buffer is allocated, so a
 * hostile header cannot make us allocate gigabytes or read past the end of the file.
 */
import * as fs from 'node:fs';
import { Qcow2Error, Qcow2ErrorCode } from '../errors';

/** The error code for a failed open, from the operating system's reason. */
export function openErrorCode(errno: string | undefined): Qcow2ErrorCode {
  switch (errno) {
    case 'ENOENT': case 'ENOTDIR': return 'not-found';
    case 'EACCES': case 'EPERM': case 'EROFS': return 'permission-denied';
    default: return 'io';
  }
}

/**
 * What to do about a refused open. Hypervisors keep images readable by root alone (libvirt's
 * /var/lib/libvirt/images is 0711 with 0600 images), so "permission denied" is the common case on a
 * remote host and says which way out there is.
 */
export function openErrorHint(errno: string | undefined, writable: boolean): string {
  switch (errno) {
    case 'EACCES': case 'EPERM':
      return `: this user may not ${writable ? 'write' : 'read'} it (hypervisors such as libvirt keep images readable by root only); ` +
        `give this user access (e.g. setfacl -m u:$USER:${writable ? 'rw' : 'r'} FILE) or run as root`;
    case 'EROFS': return ': the file system is mounted read-only';
    case 'ENOENT': return ': no such file';
    default: return '';
  }
}

/** Opens a regular file or block device, with the errors every image reader gives. */
export async function openImageFile(path: string, writable: boolean): Promise<{ fh: fs.promises.FileHandle; size: number }> {
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(path, writable ? 'r+' : 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new Qcow2Error(path, 'file', undefined, `cannot open (${err.code ?? err.message})${openErrorHint(err.code, writable)}`, openErrorCode(err.code));
  }
  const st = await fh.stat();
  if (!st.isFile() && !st.isBlockDevice()) {
    await fh.close();
    throw new Qcow2Error(path, 'file', undefined, 'not a regular file', 'io');
  }
  return { fh, size: st.size };
}

/** The largest single metadata read we allow (L1 tables of 32 MiB are QEMU's own limit). */
export const MAX_METADATA_READ = 256 * 1024 * 1024;

export class ImageFile {
  private constructor(
    readonly path: string,
    private fh: fs.promises.FileHandle,
    public size: number,
    readonly writable: boolean,
  ) {}

  static async open(path: string, writable = false): Promise<ImageFile> {
    const { fh, size } = await openImageFile(path, writable);
    return new ImageFile(path, fh, size, writable);
  }

  get handle(): fs.promises.FileHandle {
    return this.fh;
  }

  /** Reads exactly `length` bytes at `hostOffset`; anything past the end of file is an error naming `structure`. */
  async read(hostOffset: number, length: number, structure: string): Promise<Buffer> {
    this.checkRange(hostOffset, length, structure);
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, done, length - done, hostOffset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    if (done < length) {
      throw new Qcow2Error(this.path, structure, hostOffset, `file ends after ${done} of ${length} bytes`);
    }
    return buf;
  }

  /**
   * Reads up to `length` bytes; bytes past the end of the file read as zero. QEMU treats data
   * clusters beyond EOF the same way (a file may be shorter than its last allocated data cluster).
   */
  async readPadded(hostOffset: number, length: number, structure: string): Promise<Buffer> {
    if (!Number.isSafeInteger(hostOffset) || hostOffset < 0 || length < 0 || length > MAX_METADATA_READ) {
      throw new Qcow2Error(this.path, structure, hostOffset, `invalid read of ${length} bytes`);
    }
    const buf = Buffer.alloc(length);
    await this.readPaddedInto(buf, 0, hostOffset, length, structure);
    return buf;
  }

  /**
   * readPadded into `dest` at `destOffset` (no buffer of its own): the bytes past the end of the
   * file are written as zeros.
   */
  async readPaddedInto(dest: Uint8Array, destOffset: number, hostOffset: number, length: number, structure: string): Promise<void> {
    if (!Number.isSafeInteger(hostOffset) || hostOffset < 0 || !Number.isSafeInteger(length) || length < 0 || destOffset < 0 || destOffset + length > dest.length) {
      throw new Qcow2Error(this.path, structure, hostOffset, `invalid read of ${length} bytes`);
    }
    const avail = Math.max(0, Math.min(length, this.size - hostOffset));
    let done = 0;
    while (done < avail) {
      const { bytesRead } = await this.fh.read(dest, destOffset + done, avail - done, hostOffset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    if (done < length) dest.fill(0, destOffset + done, destOffset + length);
  }

  checkRange(hostOffset: number, length: number, structure: string): void {
    if (!Number.isSafeInteger(hostOffset) || hostOffset < 0) {
      throw new Qcow2Error(this.path, structure, hostOffset, 'offset is not a valid file position');
    }
    if (!Number.isSafeInteger(length) || length < 0 || length > MAX_METADATA_READ) {
      throw new Qcow2Error(this.path, structure, hostOffset, `size ${length} bytes is beyond the ${MAX_METADATA_READ}-byte limit`);
    }
    if (hostOffset + length > this.size) {
      throw new Qcow2Error(
        this.path, structure, hostOffset,
        `${length} bytes would end at 0x${(hostOffset + length).toString(16)}, past the end of the file (0x${this.size.toString(16)})`,
      );
    }
  }

  async write(hostOffset: number, data: Uint8Array, structure: string): Promise<void> {
    if (!this.writable) throw new Qcow2Error(this.path, structure, hostOffset, 'image is open read-only', 'io');
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, hostOffset + done);
      done += bytesWritten;
    }
    if (hostOffset + data.length > this.size) this.size = hostOffset + data.length;
  }

  async truncate(size: number): Promise<void> {
    await this.fh.truncate(size);
    this.size = size;
  }

  async sync(): Promise<void> {
    await this.fh.sync();
  }

  async refreshSize(): Promise<number> {
    this.size = (await this.fh.stat()).size;
    return this.size;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/**
 * Reads many same-sized structures (L2 tables, refcount blocks) with as few system calls as
 * possible: offsets are sorted and adjacent ones coalesced into reads of up to `maxRun` bytes.
 * Returns a map from each requested offset to its bytes (views into the larger buffers).
 */
/** Reads in flight at once in readMany (libuv's pool has 4 threads by default). */
const READ_CONCURRENCY = 8;

export async function readMany(
  file: ImageFile,
  offsets: Iterable<number>,
  size: number,
  structure: (offset: number) => string,
  maxRun = 32 * 1024 * 1024,
): Promise<Map<number, Buffer>> {
  const sorted = [...new Set(offsets)].sort((a, b) => a - b);
  const out = new Map<number, Buffer>();
  const runs: [number, number][] = []; // [first index, end index) into sorted
  let i = 0;
  while (i < sorted.length) {
    let j = i + 1;
    while (j < sorted.length && sorted[j] === sorted[j - 1] + size && (j - i + 1) * size <= maxRun) j++;
    // check each member so the error names the first structure that is out of bounds
    for (let k = i; k < j; k++) file.checkRange(sorted[k], size, structure(sorted[k]));
    runs.push([i, j]);
    i = j;
  }
  // Scattered tables (the common case in fragmented images) are read several at a time, so the
  // thread pool overlaps the system calls instead of one await per table.
  let next = 0;
  const worker = async () => {
    while (next < runs.length) {
      const [a, b] = runs[next++];
      const buf = await file.read(sorted[a], (b - a) * size, structure(sorted[a]));
      for (let k = a; k < b; k++) out.set(sorted[k], buf.subarray((k - a) * size, (k - a + 1) * size));
    }
  };
  await Promise.all(Array.from({ length: Math.min(READ_CONCURRENCY, runs.length) }, worker));
  return out;
}
