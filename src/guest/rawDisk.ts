/** A raw disk file (or a partition image) as a GuestDisk: byte N of the file is guest byte N. */
import * as fs from 'node:fs';
import type { GuestDisk } from './disk';
import { guestError } from './errors';

export class RawFileDisk implements GuestDisk {
  private constructor(readonly name: string, private readonly handle: fs.promises.FileHandle, readonly size: number) {}

  static async open(path: string): Promise<RawFileDisk> {
    const handle = await fs.promises.open(path, 'r');
    try {
      const st = await handle.stat();
      return new RawFileDisk(path, handle, st.size);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw guestError(this.name, ['read'], offset, `range of ${length} bytes is outside the ${this.size}-byte disk`);
    }
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) break; // the file shrank under us: the rest reads as zeros
      done += bytesRead;
    }
    return buf;
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}
