/**
 * A whole read at an offset of an open descriptor: `fs.readSync` may return fewer bytes than
 * asked, so it is repeated until `len` bytes are in or the file ends (the rest stays zero).
 */
import * as fs from 'node:fs';

export function readFullSync(fd: number, len: number, off: number): Buffer {
  const b = Buffer.alloc(len);
  let done = 0;
  while (done < len) {
    const n = fs.readSync(fd, b, done, len - done, off + done);
    if (n === 0) break;
    done += n;
  }
  return b;
}
