/**
 * Raw images. Reading: every byte is present at its own offset; the size counts whole 512-byte
 * sectors (QEMU's bdrv_getlength) and holes of the file report as zero (SEEK_DATA/SEEK_HOLE, as
 * `qemu-img map` does). Writing: as `qemu-img convert -O raw` — the file is sized with ftruncate
 * and only non-zero data is written, so zero ranges stay holes.
 */
import { Qcow2Error } from '../errors';
import { allocateFirstBlock, forEachDataUnit, nonZeroRanges } from './copy';
import { FormatFile, hostPieces } from './file';
import type { BlockLayer, HoleSeeker, ImageSink, ImageSource, SourceRun, StatusExtent, WriteControl } from './layer';
import { pushRun, throwIfCancelled } from './layer';

export interface OpenOptions {
  /** Asks the file system for holes; without it, holes read as zeros but report as data. */
  holes?: HoleSeeker;
}

export class RawReader implements BlockLayer {
  readonly format = 'raw' as const;
  readonly backing = null;
  private constructor(readonly path: string, readonly file: FormatFile, private holes: HoleSeeker | undefined) {}

  static async open(path: string, options: OpenOptions = {}): Promise<RawReader> {
    return new RawReader(path, await FormatFile.open(path), options.holes);
  }

  get virtualSize(): number {
    return Math.ceil(this.file.size / 512) * 512;
  }

  async readGuest(guestOffset: number, length: number): Promise<Buffer> {
    checkGuestRange(this.path, guestOffset, length, this.virtualSize);
    const out = Buffer.alloc(length);
    await this.file.readInto(out, 0, guestOffset, length);
    return out;
  }

  async layerStatus(start: number, end: number, visit: (e: StatusExtent) => void): Promise<void> {
    hostPieces(this.holes, this.file.fd, start, Math.max(0, end - start), (at, length, hole) => {
      visit({ start: at, length, present: true, zero: hole, data: !hole, offset: at, depth: 0 });
    });
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}

/** A raw file as a writer's source: holes are zero runs (when a seeker is given), the rest data. */
export async function rawSource(path: string, options: OpenOptions = {}): Promise<ImageSource & { close(): Promise<void> }> {
  const raw = await RawReader.open(path, options);
  return {
    virtualSize: raw.virtualSize,
    readGuest: (off, len) => raw.readGuest(off, len),
    async status(start, end) {
      const runs: SourceRun[] = [];
      await raw.layerStatus(start, end, e => pushRun(runs, e.start, e.length, e.zero));
      return runs;
    },
    close: () => raw.close(),
  };
}

/** How much of the source one visit covers; non-zero 4 KiB pieces inside it are written. */
const RAW_UNIT = 1024 * 1024;

export interface RawWriteOptions {
  /**
   * qemu-img convert's -S in bytes: zero runs of at least this much (aligned pieces of it) stay
   * holes; 0 writes every byte (a fully allocated file). Default 4096.
   */
  minSparse?: number;
}

/**
 * Writes `source` as a raw image of exactly `source.virtualSize` bytes: the length is set first
 * (the file reads as zeros, as holes), then the non-zero data, then one sync.
 */
export async function writeRaw(source: ImageSource, sink: ImageSink, control: WriteControl = {}, name = 'raw image', options: RawWriteOptions = {}): Promise<void> {
  const size = source.virtualSize;
  const minSparse = options.minSparse ?? 4096;
  await sink.truncate(size);
  if (minSparse === 0) {
    for (let at = 0; at < size; at += MAX_FULL_WRITE) {
      throwIfCancelled(control.signal, name);
      await sink.write(at, await source.readGuest(at, Math.min(MAX_FULL_WRITE, size - at)));
      control.onProgress?.(Math.min(size, at + MAX_FULL_WRITE), size);
    }
    await sink.sync();
    return;
  }
  await allocateFirstBlock(sink, size);
  const granularity = Math.min(RAW_UNIT, minSparse);
  await forEachDataUnit(source, RAW_UNIT, control, name, async (unitStart, data) => {
    for (const [from, to] of nonZeroRanges(data, granularity)) await sink.write(unitStart + from, data.subarray(from, to));
  });
  await sink.sync();
}

/** The piece a fully allocated raw output is written in. */
const MAX_FULL_WRITE = 4 * 1024 * 1024;

export function checkGuestRange(file: string, guestOffset: number, length: number, virtualSize: number): void {
  if (!Number.isSafeInteger(guestOffset) || !Number.isSafeInteger(length) || guestOffset < 0 || length < 0 || guestOffset + length > virtualSize) {
    throw new Qcow2Error(file, 'guest read', Number.isSafeInteger(guestOffset) && guestOffset >= 0 ? guestOffset : undefined,
      `range of ${length} bytes is outside the ${virtualSize}-byte disk`);
  }
}
