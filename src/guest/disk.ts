/**
 * GuestDisk: what the guest layer reads — the VM's disk as a flat array of bytes. Everything in
 * src/guest/ works on this interface (a qcow2 image through qcow2Disk.ts, a raw file through
 * rawDisk.ts, a test buffer), so it is testable without the engine.
 *
 * BlockCache wraps one with a small LRU of aligned blocks: file-system code asks for a superblock,
 * a group descriptor, one inode, a FAT sector, and the same blocks again and again; the cache makes
 * those reads cheap and counts what really reached the disk (the "metadata reads only" test).
 */
import { guestError, GuestPath } from './errors';

export interface GuestDisk {
  /** Size of the guest disk in bytes. */
  readonly size: number;
  /** Reads [offset, offset + length) of the guest disk; the range must lie inside it. */
  read(offset: number, length: number): Promise<Buffer>;
  /** The file the disk comes from, for error messages. */
  readonly name?: string;
}

/** The largest single read the guest layer makes for metadata; larger untrusted sizes are refused. */
export const MAX_METADATA_READ = 16 * 1024 * 1024;

/**
 * Reads a structure, refusing ranges outside the disk and sizes above the metadata ceiling before
 * allocating — every size here may come from an untrusted field.
 */
export async function readStructure(disk: GuestDisk, offset: number, length: number, path: GuestPath, limit = MAX_METADATA_READ): Promise<Buffer> {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw guestError(disk.name ?? 'disk', path, Number.isSafeInteger(offset) ? offset : undefined, `invalid range (${length} bytes)`);
  }
  if (length > limit) throw guestError(disk.name ?? 'disk', path, offset, `${length} bytes exceed the ${limit}-byte limit for one structure`);
  if (offset + length > disk.size) {
    throw guestError(disk.name ?? 'disk', path, offset, `${length} bytes at this offset lie past the end of the ${disk.size}-byte disk`);
  }
  return disk.read(offset, length);
}

/** A window of a disk (a partition) as a disk of its own: offsets are relative to its start. */
export class DiskSlice implements GuestDisk {
  constructor(readonly parent: GuestDisk, readonly start: number, readonly size: number) {}
  get name(): string | undefined {
    return this.parent.name;
  }
  read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      return Promise.reject(guestError(this.name ?? 'disk', ['partition at ' + this.start], this.start + offset, `read of ${length} bytes lies outside the ${this.size}-byte partition`));
    }
    return this.parent.read(this.start + offset, length);
  }
}

export interface BlockCacheOptions {
  /** Bytes per cached block (a power of two). Default 64 KiB. */
  blockSize?: number;
  /** Blocks kept. Default 256 (16 MiB). */
  maxBlocks?: number;
  /** Reads at least this long bypass the cache (file contents). Default 1 MiB. */
  bypassAt?: number;
}

export class BlockCache implements GuestDisk {
  readonly blockSize: number;
  private readonly maxBlocks: number;
  private readonly bypassAt: number;
  /** Insertion order is recency order: a hit is deleted and re-inserted. */
  private readonly blocks = new Map<number, Promise<Buffer>>();
  /** Bytes requested from the underlying disk. */
  bytesRead = 0;
  readCalls = 0;

  constructor(readonly inner: GuestDisk, opts: BlockCacheOptions = {}) {
    this.blockSize = opts.blockSize ?? 64 * 1024;
    this.maxBlocks = opts.maxBlocks ?? 256;
    this.bypassAt = opts.bypassAt ?? 1024 * 1024;
  }
  get size(): number {
    return this.inner.size;
  }
  get name(): string | undefined {
    return this.inner.name;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw guestError(this.name ?? 'disk', ['read'], Number.isSafeInteger(offset) ? offset : undefined, `range of ${length} bytes is outside the ${this.size}-byte disk`);
    }
    if (length === 0) return Buffer.alloc(0);
    if (length >= this.bypassAt) return this.readInner(offset, length);
    const bs = this.blockSize;
    const first = Math.floor(offset / bs), last = Math.floor((offset + length - 1) / bs);
    if (first === last) {
      const b = await this.block(first);
      return Buffer.from(b.subarray(offset - first * bs, offset - first * bs + length));
    }
    const out = Buffer.alloc(length);
    for (let i = first; i <= last; i++) {
      const b = await this.block(i);
      const from = Math.max(offset, i * bs), to = Math.min(offset + length, i * bs + b.length);
      b.copy(out, from - offset, from - i * bs, to - i * bs);
    }
    return out;
  }

  private block(index: number): Promise<Buffer> {
    const hit = this.blocks.get(index);
    if (hit) {
      this.blocks.delete(index);
      this.blocks.set(index, hit);
      return hit;
    }
    const start = index * this.blockSize;
    const p = this.readInner(start, Math.min(this.blockSize, this.size - start));
    p.catch(() => this.blocks.delete(index));
    this.blocks.set(index, p);
    while (this.blocks.size > this.maxBlocks) this.blocks.delete(this.blocks.keys().next().value as number);
    return p;
  }

  private readInner(offset: number, length: number): Promise<Buffer> {
    this.bytesRead += length;
    this.readCalls++;
    return this.inner.read(offset, length);
  }
}
