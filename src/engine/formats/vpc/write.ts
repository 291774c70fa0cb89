/**
 * Writing VHD images as `qemu-img convert -O vpc` (QEMU 7.2) writes them.
 *
 * fixed:   the guest data at its own offset (zero ranges left as holes) and the footer after it.
 *          This is the VHD Azure and Hyper-V import; Azure also wants the size to be a whole
 *          number of MiB, which QEMU does not arrange (not even with force_size) — `vhdSize`
 *          reports `azureAligned` so a caller can say so before converting.
 * dynamic: footer copy, dynamic header, BAT, then one [sector bitmap + 2 MiB block] per block that
 *          holds a non-zero byte, in guest order, and the footer after the last block. All-zero
 *          blocks stay unallocated. Bitmaps are all ones, as QEMU writes them.
 *
 * Write order: data first, then the BAT, the footer(s) last, then one sync. The caller writes into
 * a temp file and renames it after `sync`, so a crash at any point leaves no half-made image in
 * place. Memory: one copy window plus the BAT (4 MiB for the largest disk).
 */
import { randomUUID } from 'node:crypto';
import { Qcow2Error } from '../../errors';
import { allocateFirstBlock, forEachDataUnit, nonZeroRanges } from '../copy';
import type { ImageSink, ImageSource, WriteControl } from '../layer';
import { VhdTooLargeError, vhdSize, type VhdSize } from './geometry';
import {
  DEFAULT_BLOCK_SIZE, DISK_DYNAMIC, DISK_FIXED, DYNAMIC_HEADER_SIZE, FOOTER_COOKIE, FOOTER_SIZE, NO_OFFSET,
  VHD_EPOCH, bitmapSize, encodeDynamicHeader, encodeFooter,
} from './layout';

export interface VpcWriteOptions extends WriteControl {
  /** 'dynamic' (QEMU's default) or 'fixed'. */
  subformat?: 'dynamic' | 'fixed';
  /** QEMU's force_size: keep the exact size instead of rounding it to a CHS geometry. */
  forceSize?: boolean;
  /** The footer's timestamp (default: now). */
  now?: Date;
  /** The footer's UUID (default: a random version-4 UUID, as QEMU's). */
  uuid?: Buffer;
  /** Names the output in errors. */
  name?: string;
}

export interface VpcWriteResult extends VhdSize {
  subformat: 'dynamic' | 'fixed';
  /** Blocks written (dynamic only). */
  allocatedBlocks: number;
  /** The length of the file written. */
  fileSize: number;
}

export async function writeVpc(source: ImageSource, sink: ImageSink, options: VpcWriteOptions = {}): Promise<VpcWriteResult> {
  const name = options.name ?? 'VHD image';
  const subformat = options.subformat ?? 'dynamic';
  let layout: VhdSize;
  try {
    layout = vhdSize(source.virtualSize, options.forceSize ?? false);
  } catch (e) {
    if (e instanceof VhdTooLargeError) {
      throw new Qcow2Error(name, 'VHD footer', undefined, `the image size is too large for the vpc format (${source.virtualSize} bytes; at most 2040 GiB)`, 'unsupported');
    }
    throw e;
  }
  const footer = encodeFooter({
    cookie: FOOTER_COOKIE,
    features: 2,
    version: 0x00010000,
    dataOffset: subformat === 'dynamic' ? BigInt(FOOTER_SIZE) : NO_OFFSET,
    timestamp: (Math.floor((options.now ?? new Date()).getTime() / 1000) - VHD_EPOCH) >>> 0,
    creatorApp: layout.creatorApp,
    creatorVersion: 0x00050003, // Virtual PC 2007, as QEMU claims
    creatorOs: 'Wi2k',
    originalSize: BigInt(layout.size),
    currentSize: BigInt(layout.size),
    cylinders: layout.cylinders,
    heads: layout.heads,
    sectorsPerTrack: layout.sectorsPerTrack,
    diskType: subformat === 'dynamic' ? DISK_DYNAMIC : DISK_FIXED,
    uuid: options.uuid ?? randomUuid(),
    savedState: 0,
  });
  if (subformat === 'fixed') {
    await sink.truncate(layout.size + FOOTER_SIZE);
    await allocateFirstBlock(sink, layout.size + FOOTER_SIZE);
    await forEachDataUnit(source, DEFAULT_BLOCK_SIZE, options, name, async (unitStart, data) => {
      for (const [from, to] of nonZeroRanges(data)) await sink.write(unitStart + from, data.subarray(from, to));
    });
    await sink.write(layout.size, footer);
    await sink.sync();
    return { ...layout, subformat, allocatedBlocks: 0, fileSize: layout.size + FOOTER_SIZE };
  }

  const blockSize = DEFAULT_BLOCK_SIZE;
  const entries = Math.ceil(layout.size / blockSize);
  const batAt = FOOTER_SIZE + DYNAMIC_HEADER_SIZE;
  const batBytes = Math.ceil((entries * 4) / 512) * 512;
  const bitmap = Buffer.alloc(bitmapSize(blockSize), 0xff);
  const bat = Buffer.alloc(batBytes, 0xff);
  let next = batAt + batBytes; // where the next block's bitmap goes
  let allocated = 0;
  await forEachDataUnit(source, blockSize, options, name, async (unitStart, data) => {
    const index = unitStart / blockSize;
    bat.writeUInt32BE(next / 512, index * 4);
    await sink.write(next, bitmap);
    for (const [from, to] of nonZeroRanges(data)) await sink.write(next + bitmap.length + from, data.subarray(from, to));
    next += bitmap.length + blockSize;
    allocated++;
  });
  await sink.write(batAt, bat);
  await sink.write(FOOTER_SIZE, encodeDynamicHeader({ tableOffset: BigInt(batAt), maxTableEntries: entries, blockSize }));
  await sink.write(next, footer); // also extends the file over the last block's holes
  await sink.write(0, footer);
  await sink.sync();
  return { ...layout, subformat, allocatedBlocks: allocated, fileSize: next + FOOTER_SIZE };
}

/** A random version-4 UUID, as QEMU's qemu_uuid_generate. */
function randomUuid(): Buffer {
  return Buffer.from(randomUUID().replace(/-/g, ''), 'hex');
}
