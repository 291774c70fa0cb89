/**
 * What a compaction would write, without writing: the placement the copy phase would produce
 * (every kept data cluster one output cluster, every kept compressed cluster its stored length in
 * the stream) run through the same table, layout and bitmap code as the real compaction, so the
 * forecast size is the size `compactImage` then writes. For `space` (what compact and sparsify
 * would reclaim); same cluster size and no recompression only (an encrypted source: as compacted
 * with its passphrase, the LUKS area kept).
 */
import { pacer } from '../../cancel';
import type { Qcow2Image } from '../../image/image';
import { readBitmapTable } from '../../qcow2/bitmap';
import { type Placement, ZERO } from './copy';
import { layoutMetadata } from './layout';
import { ClusterPlaces, CompressedPlaces } from './places';
import { type DropSet, l2Window, type Settings, type SourceTables } from './plan';
import { countL2Refs, readBitmapData } from './tables';

export interface ForecastInput {
  img: Qcow2Image;
  tables: SourceTables;
  settings: Settings;
  /** Source data clusters known to read as zero (dropped where `settings.detectZero`). */
  zero: { has(host: number): boolean };
  drop?: DropSet;
  /** The bytes compressed cluster `offset` (`bound` bytes by its L2 entry) takes in the output's stream. */
  compressedLength(offset: number, bound: number): number;
  /** Stops the forecast (it also lets the event loop run every few milliseconds: cancel.ts pacer). */
  signal?: AbortSignal;
}

export interface Forecast {
  /** The output file's size. */
  bytesAfter: number;
  /** Where each source cluster would go (ZERO: dropped). */
  placed: Placement;
}

export async function forecastCompaction(x: ForecastInput): Promise<Forecast> {
  const { img, tables, settings } = x;
  const cs = img.header.clusterSize;
  const clusters = Math.ceil(img.file.size / cs);
  const data = new ClusterPlaces(clusters, cs);
  let pos = cs; // cluster 0 is the header
  // an encrypted (LUKS) output keeps its LUKS area right after it, padded to whole clusters (encrypted.ts placeArea)
  if (img.encrypted && img.header.crypto) pos += Math.ceil(img.header.crypto.length / cs) * cs;
  const tick = pacer(x.signal, img.path, 'forecast');
  let n = 0;
  for (const s of tables.data) {
    if ((++n & 0xffff) === 0) await tick();
    if (settings.detectZero && (x.zero.has(s) || x.drop?.data.has(s))) data.set(s, ZERO);
    else { data.set(s, pos); pos += cs; }
  }
  const compressed = new CompressedPlaces(tables.compressed.keys());
  let streamLen = 0;
  for (const [off, bound] of [...tables.compressed].sort((a, b) => a[0] - b[0])) {
    if (settings.detectZero && x.drop?.compressed.has(off)) { compressed.set(off, { kind: 'zero' }); continue; }
    const len = x.compressedLength(off, bound);
    compressed.set(off, { kind: 'compressed', host: streamLen, len });
    streamLen += len;
  }
  const placed: Placement = { data, compressed, streamLen };
  const l2Refs = await countL2Refs(l2Window(img, tick), tables, img.g, settings.hasBacking, placed);
  const bitmapTables = [];
  for (const bm of img.bitmaps) bitmapTables.push(await readBitmapTable(img.file, bm));
  const bitmaps = await readBitmapData(img, bitmapTables, cs, () => undefined);
  const h = img.header;
  const rawBitmapDir = img.bitmaps.length ? await img.file.read(h.bitmaps!.bitmapDirectoryOffset, h.bitmaps!.bitmapDirectorySize, 'bitmap directory') : null;
  const lay = layoutMetadata({ img, cs, start: pos, l1Tables: tables.l1Tables, l2Refs, bitmaps, rawBitmapDir, streamLen });
  return { bytesAfter: lay.streamBase + streamLen, placed };
}
