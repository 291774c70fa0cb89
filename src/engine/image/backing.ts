/**
 * Backing chains: resolve a backing file name as QEMU does (relative names are relative to the
 * directory of the image that names them, as given), honour the backing format, and open raw
 * backing files as layers of their own.
 */
import * as path from 'node:path';
import { Qcow2Error } from '../errors';
import { forEachHostPiece, holeSeeker } from '../io/holes';
import { ImageFile } from '../io/reader';

/** QEMU's path_combine: a relative name is joined to the directory part of the overlay's path. */
export function resolveBackingPath(overlayPath: string, backingName: string): string {
  if (path.isAbsolute(backingName) || /^[a-z][a-z0-9+.-]*:/i.test(backingName)) return backingName;
  const slash = overlayPath.lastIndexOf('/');
  if (slash < 0) return backingName;
  return overlayPath.slice(0, slash + 1) + backingName;
}

import type { StatusExtent } from '../formats/layer';
export type { StatusExtent };

/** What every layer of a chain provides: a qcow2 image or a raw file. */
export interface BlockLayer {
  readonly path: string;
  readonly format: 'qcow2' | 'raw';
  readonly virtualSize: number;
  readonly backing: BlockLayer | null;
  readGuest(guestOffset: number, length: number): Promise<Buffer>;
  /** Block status of this layer alone for [start, end): present=false where it defers to its backing. */
  layerStatus(start: number, end: number, visit: (e: StatusExtent) => void, signal?: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

/** A raw file as a layer: every byte is present data at the same offset. */
export class RawImage implements BlockLayer {
  readonly format = 'raw' as const;
  readonly backing = null;
  private constructor(readonly path: string, readonly file: ImageFile) {}
  static async open(p: string): Promise<RawImage> {
    return new RawImage(p, await ImageFile.open(p));
  }
  /** QEMU sizes a raw file in whole 512-byte sectors (the tail past the end of the file reads as zero). */
  get virtualSize(): number {
    return Math.ceil(this.file.size / 512) * 512;
  }
  async readGuest(guestOffset: number, length: number): Promise<Buffer> {
    if (guestOffset < 0 || guestOffset + length > this.virtualSize) {
      throw new Qcow2Error(this.path, 'guest read', guestOffset, `range of ${length} bytes is outside the ${this.virtualSize}-byte disk`);
    }
    return this.file.readPadded(guestOffset, length, 'raw data');
  }
  /**
   * As QEMU's raw format over file-posix: every byte is present at its own offset; with the hole
   * seeker, holes of the file report as zero and not data (SEEK_DATA/SEEK_HOLE, as qemu-img map).
   */
  async layerStatus(start: number, end: number, visit: (e: StatusExtent) => void): Promise<void> {
    if (end <= start) return;
    const seeker = holeSeeker();
    if (!seeker) {
      visit({ start, length: end - start, present: true, zero: false, data: true, offset: start, depth: 0 });
      return;
    }
    forEachHostPiece(seeker, this.file.handle.fd, start, end - start, (at, length, hole) => {
      visit({ start: at, length, present: true, zero: hole, data: !hole, offset: at, depth: 0 });
    });
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}
