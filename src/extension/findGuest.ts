/**
 * Navigation in a large sparse virtual disk (no `vscode` import): the next or previous allocated
 * guest range from an offset, and where one guest byte lives, in words. Both read the mapping
 * through the engine's block status (src/engine/image/map.ts, the same as `qemu-img map`), a
 * bounded window of guest bytes at a time, so a 1 TiB disk with five used clusters costs a few
 * L1 lookups per window rather than a walk of every cluster.
 *
 * "Allocated" is what `qemu-img map` calls present: this image or a backing file holds the
 * bytes (data, compressed or zero clusters). Contiguous present entries count as one range.
 */
import * as path from 'node:path';
import { hex } from '../engine/errors';
import type { Qcow2Image } from '../engine/image/image';
import { forEachMapEntry, type MapEntry } from '../engine/image/map';
import { SubclusterType } from '../engine/qcow2/cluster';
import { formatPath, step } from '../engine/path';
import type { GuestLocationInfo } from '../protocol';

/** Guest bytes mapped per block-status call: a few L2 tables' worth (2 GiB with 64 KiB clusters). */
function windowBytes(img: Qcow2Image): number {
  return img.g.l2Size * img.clusterSize * 4;
}

async function entries(img: Qcow2Image, start: number, end: number, signal?: AbortSignal): Promise<MapEntry[]> {
  const out: MapEntry[] = [];
  if (end <= start) return out;
  await forEachMapEntry(img, e => { if (e.length > 0) out.push(e); }, { start, end, signal });
  return out;
}

/**
 * The allocated range after `from` (the first present byte past the run holding `from`), or the
 * one before it (the start of the run holding byte `from - 1`, or of the run before). Undefined
 * when there is none in that direction.
 */
export async function findAllocated(img: Qcow2Image, from: number, direction: 'next' | 'previous', signal?: AbortSignal): Promise<{ start: number; length: number } | undefined> {
  const size = img.virtualSize, w = windowBytes(img);
  from = Math.max(0, Math.min(size, Math.floor(from)));
  if (direction === 'next') {
    let skipping = true; // still inside the run that holds `from`
    let found: { start: number; length: number } | undefined;
    for (let a = from; a < size; a += w) {
      for (const e of await entries(img, a, Math.min(size, a + w), signal)) {
        if (found) {
          if (e.present && e.start === found.start + found.length) { found.length += e.length; continue; }
          return found;
        }
        if (!e.present) { skipping = false; continue; }
        if (skipping) continue;
        found = { start: e.start, length: e.length };
      }
    }
    return found;
  }
  let runStart: number | undefined, runEnd = 0;
  for (let b = from; b > 0; b -= w) {
    const list = await entries(img, Math.max(0, b - w), b, signal);
    for (let i = list.length - 1; i >= 0; i--) {
      const e = list[i];
      if (runStart === undefined) {
        if (e.present) { runStart = e.start; runEnd = e.start + e.length; }
        continue;
      }
      if (e.present && e.start + e.length === runStart) runStart = e.start;
      else return { start: runStart, length: runEnd - runStart };
    }
  }
  return runStart === undefined ? undefined : { start: runStart, length: runEnd - runStart };
}

/** Where the guest byte at `guestOffset` lives: which L1/L2 entry maps it and what the bytes read as, in words. */
export async function describeGuestOffset(img: Qcow2Image, guestOffset: number, opts: { backingNotFollowed?: boolean } = {}): Promise<GuestLocationInfo> {
  const size = img.virtualSize;
  if (!Number.isSafeInteger(guestOffset) || guestOffset < 0 || guestOffset >= size) {
    return { guestOffset, kind: 'beyondEnd', text: `past the end of the ${size}-byte disk` };
  }
  const perL2 = img.g.l2Size * img.clusterSize;
  const l1Index = Math.floor(guestOffset / perL2);
  let structure = formatPath([step('L1', l1Index)]);
  let type: SubclusterType | undefined, hostOffset: number | undefined, compressed: number | undefined;
  const hasL2 = l1Index < img.l1Size && img.l1Entry(l1Index).l2Offset !== 0;
  await img.walk(guestOffset, guestOffset + 1, r => {
    type = r.type;
    if (hasL2) structure = formatPath([step('L1', r.l1Index), step('L2', r.l2Index)]);
    if (r.hostOffset > 0) hostOffset = r.hostOffset + (guestOffset - r.guestOffset);
    compressed = r.compressedOffset;
  });
  // the L1 entry maps a table but the walk reports no run: name the L2 entry anyway
  if (type === undefined && hasL2) structure = formatPath([step('L1', l1Index), step('L2', Math.floor((guestOffset % perL2) / img.clusterSize))]);
  const inFile = img.dataFilePath ? ` in ${path.basename(img.dataFilePath)}` : ' in this file';
  const base = { guestOffset, structure };
  switch (type) {
    case SubclusterType.Compressed:
      return { ...base, kind: 'compressed', depth: 0, hostOffset: compressed, text: `compressed cluster at ${hex(compressed ?? 0)}${inFile}` };
    case SubclusterType.Normal:
      return { ...base, kind: 'data', depth: 0, hostOffset, text: `data at ${hex(hostOffset ?? 0)}${inFile}${img.encrypted ? ' (encrypted)' : ''}` };
    case SubclusterType.ZeroPlain:
    case SubclusterType.ZeroAlloc:
      return { ...base, kind: 'zero', depth: 0, hostOffset, text: 'zero cluster: reads zeros' };
    default:
      break;
  }
  // not in this image: the backing chain decides
  let m: MapEntry | undefined;
  await forEachMapEntry(img, e => { m ??= e; }, { start: guestOffset, end: guestOffset + 1 });
  const chain = img.chain();
  if (m?.present && m.depth > 0) {
    const layer = chain[m.depth];
    const name = path.basename(layer?.path ?? 'backing file');
    const where = m.zero ? ' (reads zeros)' : m.offset !== undefined ? `, at ${hex(m.offset)} in that file` : '';
    return { ...base, kind: 'backing', depth: m.depth, text: `from backing file ${name} at depth ${m.depth}${where}` };
  }
  const note = opts.backingNotFollowed ? ' (the backing file is not opened)' : chain.length > 1 ? ' (no layer of the backing chain holds it)' : '';
  return { ...base, kind: 'unallocated', text: `unallocated: reads zeros${note}` };
}
