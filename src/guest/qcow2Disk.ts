/**
 * The one adapter between the guest layer and the qcow2 engine: a Qcow2Image (its backing chain
 * included) as a GuestDisk. Qcow2Image.readGuest returns at most MAX_GUEST_READ bytes per call, so
 * longer reads are paged here. Raw disk files (no qcow2 magic) open as RawFileDisk.
 */
import * as fs from 'node:fs';
import { MAX_GUEST_READ, Qcow2Image } from '../engine/image/image';
import type { GuestDisk } from './disk';
import { RawFileDisk } from './rawDisk';

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"

export interface OpenedDisk {
  disk: GuestDisk;
  format: 'qcow2' | 'raw';
  close(): Promise<void>;
}

class Qcow2GuestDisk implements GuestDisk {
  constructor(private readonly img: Qcow2Image) {}
  get size(): number {
    return this.img.virtualSize;
  }
  get name(): string {
    return this.img.path;
  }
  async read(offset: number, length: number): Promise<Buffer> {
    if (length <= MAX_GUEST_READ) return this.img.readGuest(offset, length);
    const out = Buffer.alloc(length);
    for (let at = 0; at < length; at += MAX_GUEST_READ) {
      (await this.img.readGuest(offset + at, Math.min(MAX_GUEST_READ, length - at))).copy(out, at);
    }
    return out;
  }
}

/** An opened Qcow2Image (with its backing chain) as a guest disk; the caller keeps and closes the image. */
export function qcow2GuestDisk(img: Qcow2Image): GuestDisk {
  return new Qcow2GuestDisk(img);
}

async function hasQcow2Magic(path: string): Promise<boolean> {
  const fh = await fs.promises.open(path, 'r');
  try {
    const b = Buffer.alloc(4);
    const { bytesRead } = await fh.read(b, 0, 4, 0);
    return bytesRead === 4 && b.readUInt32BE(0) === QCOW2_MAGIC;
  } finally {
    await fh.close();
  }
}

/** Opens IMAGE as a guest disk: a qcow2 image (through its backing chain) or, without the magic, a raw disk. */
export async function openDiskImage(path: string): Promise<OpenedDisk> {
  if (await hasQcow2Magic(path)) {
    const img = await Qcow2Image.open(path);
    return { disk: new Qcow2GuestDisk(img), format: 'qcow2', close: () => img.close() };
  }
  const raw = await RawFileDisk.open(path);
  return { disk: raw, format: 'raw', close: () => raw.close() };
}
