/**
 * Shared by the foreign-format tests: raw sources made with qemu-img/qemu-io, the hole seeker,
 * block status merged the way `qemu-img map` merges it, and small file utilities.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FileSink } from '../../src/engine/formats/file';
import type { BlockLayer, HoleSeeker, ImageSink, StatusExtent } from '../../src/engine/formats/layer';
import { ROOT, qemuImg, qemuIo, type MapEntry } from '../helpers/qemu';

export { qemuMap } from '../helpers/qemu';

/** dist/holes.node (built by build.mjs), loaded as the engine loads it; undefined when absent. */
export const holes: HoleSeeker | undefined = (() => {
  const p = path.join(ROOT, 'dist', 'holes.node');
  if (!fs.existsSync(p)) return undefined;
  const m = { exports: {} as HoleSeeker };
  process.dlopen(m, p);
  return m.exports;
})();

/** A sparse raw file of `size` bytes with the given qemu-io writes (e.g. 'write -P 0x41 0 1M'). */
export function makeRaw(file: string, size: number | string, writes: string[]): string {
  qemuImg('create', '-q', '-f', 'raw', file, String(size));
  if (writes.length) qemuIo(file, writes, ['-f', 'raw']);
  return file;
}

/** Runs `write` into a new file through a FileSink and closes it. */
export async function withSink<T>(file: string, write: (sink: ImageSink) => Promise<T>): Promise<T> {
  const sink = await FileSink.create(file);
  try {
    return await write(sink);
  } finally {
    await sink.close();
  }
}

/** A layer's status over the whole disk, merged as qemu-img map merges adjacent entries. */
export async function layerMap(layer: BlockLayer): Promise<MapEntry[]> {
  const out: MapEntry[] = [];
  await layer.layerStatus(0, layer.virtualSize, (e: StatusExtent) => {
    const last = out[out.length - 1];
    const sameOffset = last && (last.offset === undefined ? e.offset === undefined : e.offset === last.offset + last.length);
    if (last && last.present === e.present && last.zero === e.zero && last.data === e.data && last.depth === e.depth && sameOffset && last.start + last.length === e.start) {
      last.length += e.length;
      return;
    }
    const entry: MapEntry = { start: e.start, length: e.length, depth: e.depth, present: e.present, zero: e.zero, data: e.data };
    if (e.offset !== undefined) entry.offset = e.offset;
    out.push(entry);
  });
  return out;
}

/** Reads a whole (small) layer through readGuest. */
export async function readAll(layer: BlockLayer, chunk = 4 * 1024 * 1024): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let at = 0; at < layer.virtualSize; at += chunk) parts.push(await layer.readGuest(at, Math.min(chunk, layer.virtualSize - at)));
  return Buffer.concat(parts);
}

export function readAt(file: string, offset: number, length: number): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(length);
    fs.readSync(fd, b, 0, length, offset);
    return b;
  } finally {
    fs.closeSync(fd);
  }
}

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
