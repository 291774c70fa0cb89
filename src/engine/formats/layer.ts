/**
 * The shapes every foreign image format speaks, so `convert` can read and write them without
 * knowing which one it has.
 *
 * - Readers expose a `BlockLayer`, declared here structurally identical to the engine's own block
 *   layer (qcow2 images and raw backing files) with `format` widened to the formats of this folder,
 *   so a VHD or VMDK opens wherever a qcow2 chain layer is expected.
 * - Writers take an `ImageSource` (what to copy: size, guest reads, which ranges hold data) and an
 *   `ImageSink` (where the bytes go). The caller owns the output file's life: temp file, fsync,
 *   rename and the crash-injection hook all wrap the sink, so every format gets them alike.
 */
import { Qcow2Error } from '../errors';

/** One extent of a layer's block status, in the terms of `qemu-img map`. */
export interface StatusExtent {
  start: number;
  length: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  /** Host offset when QEMU would report one (OFFSET_VALID). */
  offset?: number;
  depth: number;
}

export type LayerFormat = 'qcow2' | 'raw' | 'vpc' | 'vmdk';

/** What every layer of a chain provides (structurally the engine's BlockLayer, format widened). */
export interface BlockLayer {
  readonly path: string;
  readonly format: LayerFormat;
  readonly virtualSize: number;
  readonly backing: BlockLayer | null;
  readGuest(guestOffset: number, length: number): Promise<Buffer>;
  /** Block status of this layer alone for [start, end): present=false where it defers to its backing. */
  layerStatus(start: number, end: number, visit: (e: StatusExtent) => void, signal?: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

/** lseek(SEEK_DATA/SEEK_HOLE) on an open file; optional everywhere: without it, holes of raw data read as zeros but are reported as data. */
export type { HoleSeeker } from '../io/holes';

/** A run of a source's guest range: `zero` runs read as zeros and need not be read at all. */
export interface SourceRun {
  start: number;
  length: number;
  zero: boolean;
}

/** What a writer copies: a guest disk of `virtualSize` bytes (a qcow2 chain, a raw file, another format). */
export interface ImageSource {
  readonly virtualSize: number;
  readGuest(guestOffset: number, length: number): Promise<Buffer>;
  /** readGuest into `dest` at `destOffset` (every byte of the range written), when the source can do it without a buffer of its own. */
  readGuestInto?(guestOffset: number, length: number, dest: Buffer, destOffset: number): Promise<void>;
  /** Runs covering [start, end) exactly, in order. Writers ask window by window, never for the whole disk. */
  status(start: number, end: number): Promise<SourceRun[]>;
}

/**
 * Where a writer puts the image. Offsets are byte offsets in the output file. The writer calls
 * `truncate` to set the file length (holes, never written zeros), `write` for everything else and
 * `sync` once when the image is complete; the caller renames only after that. `write` must be
 * done with `data` when its promise resolves (writers reuse their buffers).
 */
export interface ImageSink {
  write(offset: number, data: Uint8Array): Promise<void>;
  truncate(size: number): Promise<void>;
  sync(): Promise<void>;
}

/** Progress and cancellation, common to every writer. */
export interface WriteControl {
  signal?: AbortSignal;
  /** Called after each window with the guest bytes done so far and the total. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * A source reading through a layer that has no backing file (or whose non-present ranges read as
 * zero): present-and-zero and absent ranges become zero runs, everything else data.
 */
export function layerSource(layer: BlockLayer): ImageSource {
  return {
    virtualSize: layer.virtualSize,
    readGuest: (off, len) => layer.readGuest(off, len),
    async status(start, end) {
      const runs: SourceRun[] = [];
      await layer.layerStatus(start, end, e => {
        const zero = e.present ? e.zero : layer.backing === null;
        pushRun(runs, e.start, e.length, zero);
      });
      return runs;
    },
  };
}

/** Appends a run, merging it into the previous one when contiguous and of the same kind. */
export function pushRun(runs: SourceRun[], start: number, length: number, zero: boolean): void {
  if (length <= 0) return;
  const last = runs[runs.length - 1];
  if (last && last.zero === zero && last.start + last.length === start) last.length += length;
  else runs.push({ start, length, zero });
}

export function throwIfCancelled(signal: AbortSignal | undefined, file: string): void {
  if (signal?.aborted) throw new Qcow2Error(file, 'write', undefined, 'cancelled', 'cancelled');
}
