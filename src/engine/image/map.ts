/**
 * `qemu-img map --output=json` for a whole chain: each layer's block status, unallocated ranges
 * deferred to the backing file (depth + 1), merged exactly as qemu-img merges entries.
 */
import { BlockLayer, StatusExtent } from './backing';

export interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

function mergeable(a: MapEntry, b: StatusExtent): boolean {
  if (a.zero !== b.zero || a.data !== b.data || a.depth !== b.depth || a.present !== b.present) return false;
  if ((a.offset === undefined) !== (b.offset === undefined)) return false;
  if (a.offset !== undefined && a.offset + a.length !== b.offset) return false;
  return a.start + a.length === b.start;
}

/** Block status of [start, end) through the chain starting at `layer` (at `depth`). */
async function chainStatus(layer: BlockLayer, start: number, end: number, depth: number, emit: (e: StatusExtent) => void, signal?: AbortSignal): Promise<void> {
  const deferred: StatusExtent[] = [];
  const flushDeferred = async () => {
    for (const d of deferred.splice(0)) {
      const backing = layer.backing!;
      const bEnd = Math.min(d.start + d.length, backing.virtualSize);
      if (bEnd > d.start) await chainStatus(backing, d.start, bEnd, depth + 1, emit, signal);
      if (d.start + d.length > Math.max(bEnd, d.start)) {
        // Beyond the end of a shorter backing file QEMU's block layer reports zeros that are not
        // allocated, at this layer (bdrv_co_block_status: offset >= backing length → ZERO).
        const s = Math.max(bEnd, d.start);
        const e: StatusExtent = { start: s, length: d.start + d.length - s, present: false, zero: true, data: false, depth };
        if (d.offset !== undefined) e.offset = d.offset + (s - d.start);
        emit(e);
      }
    }
  };
  if (!layer.backing) {
    // Bottom of the chain: nothing to recurse into, so extents go straight out (no buffering).
    await layer.layerStatus(start, end, e => {
      if (e.present) {
        e.depth = depth;
        emit(e);
      } else {
        const z: StatusExtent = { start: e.start, length: e.length, present: false, zero: true, data: false, depth };
        if (e.offset !== undefined) z.offset = e.offset;
        emit(z);
      }
    }, signal);
    return;
  }
  // Collect this layer's extents in order; recurse for unallocated ones in order.
  const own: StatusExtent[] = [];
  await layer.layerStatus(start, end, e => own.push(e), signal);
  for (const e of own) {
    if (e.present) {
      emit({ ...e, depth });
    } else if (layer.backing) {
      deferred.push(e);
      await flushDeferred();
    } else {
      emit({ start: e.start, length: e.length, present: false, zero: true, data: false, offset: e.offset, depth });
    }
  }
}

/**
 * The entries `qemu-img map --output=json` prints for the image (and its chain), handed to `visit`
 * one at a time as soon as each is final (merged exactly as qemu-img merges them), so a caller
 * can stream millions of entries without keeping them.
 */
export async function forEachMapEntry(top: BlockLayer, visit: (e: MapEntry) => void, opts: { start?: number; end?: number; signal?: AbortSignal } = {}): Promise<void> {
  let last: MapEntry | null = null;
  await chainStatus(top, opts.start ?? 0, opts.end ?? top.virtualSize, 0, e => {
    if (last && mergeable(last, e)) last.length += e.length;
    else {
      if (last) visit(last);
      const m: MapEntry = { start: e.start, length: e.length, depth: e.depth, present: e.present, zero: e.zero, data: e.data };
      if (e.offset !== undefined) m.offset = e.offset;
      last = m;
    }
  }, opts.signal);
  // qemu-img map starts from an all-false zero-length entry and prints it even when the loop
  // never runs (a 0-byte disk).
  visit(last ?? { start: opts.start ?? 0, length: 0, depth: 0, present: false, zero: false, data: false });
}

/** The same array `qemu-img map --output=json` prints for the image (and its chain). */
export async function mapImage(top: BlockLayer, opts: { start?: number; end?: number; signal?: AbortSignal } = {}): Promise<MapEntry[]> {
  const out: MapEntry[] = [];
  await forEachMapEntry(top, e => out.push(e), opts);
  return out;
}

/** One entry as qemu-img 7.2 prints it. */
export function formatMapEntry(e: MapEntry): string {
  return `{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}, "zero": ${e.zero}, "data": ${e.data}${e.offset !== undefined ? `, "offset": ${e.offset}` : ''}}`;
}

/** Formats entries exactly as qemu-img 7.2 prints them (one object a line). */
export function formatMapJson(entries: MapEntry[]): string {
  return '[' + entries.map(formatMapEntry).join(',\n') + ']\n';
}

/**
 * Streams `qemu-img map --output=json` text for the image to `write` in chunks of about
 * `chunkBytes` (no array of entries, no single giant string).
 */
export async function writeMapJson(top: BlockLayer, write: (chunk: string) => void | Promise<void>, opts: { signal?: AbortSignal; chunkBytes?: number; onEntry?: (e: MapEntry) => void } = {}): Promise<void> {
  const limit = opts.chunkBytes ?? 1 << 20;
  let parts: string[] = [];
  let size = 0;
  let first = true;
  const pending: Promise<void>[] = [];
  await forEachMapEntry(top, e => {
    opts.onEntry?.(e);
    const line = (first ? '[' : ',\n') + formatMapEntry(e);
    first = false;
    parts.push(line);
    size += line.length;
    if (size >= limit) {
      const r = write(parts.join(''));
      if (r) pending.push(r);
      parts = [];
      size = 0;
    }
  }, opts);
  parts.push(']\n');
  await Promise.all(pending);
  await write(parts.join(''));
}
