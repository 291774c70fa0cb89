/**
 * A ring of same-sized buffers allocated once, for a copy that reads a run, hands it to writes that
 * complete later, and reads the next: each buffer is filled again only once `settled` says no write
 * from it is still in flight. Fresh buffers per run are freed only when the garbage collector gets
 * to them, so a long copy grew by hundreds of MiB; the ring holds `count` × `size` bytes, at any
 * size of disk. `count` must cover the run being used, the runs read ahead and those the writer may
 * still be writing from. The buffers are shared memory, so an encrypted source's workers can
 * decrypt in them in place (crypto/cipherPool.ts).
 */
/** A zero-filled buffer over shared memory, which worker threads can work in (crypto/cipherPool.ts). */
export function sharedBuffer(size: number): Buffer {
  return Buffer.from(new SharedArrayBuffer(size));
}

export class BufferRing {
  private readonly buffers: Buffer[];
  private turn = 0;
  constructor(count: number, readonly size: number, private readonly settled: (memory: ArrayBufferLike) => Promise<void>) {
    this.buffers = Array.from({ length: count }, () => sharedBuffer(size));
  }

  /** The next buffer's first `length` bytes (length <= size), once no write from it is in flight. Its content is stale. */
  async next(length: number): Promise<Buffer> {
    if (length > this.size) throw new RangeError(`a run of ${length} bytes does not fit the ring's ${this.size}-byte buffers`);
    const b = this.buffers[this.turn++ % this.buffers.length];
    await this.settled(b.buffer);
    return b.subarray(0, length);
  }
}
