/** What the management commands ask of an image before they prompt: size, version, snapshots, bitmaps. */
import { Qcow2Image } from '../engine/image/image';
import { COMPAT_LAZY_REFCOUNTS } from '../engine/qcow2/layout';

export interface ImageFacts {
  virtualSize: number;
  version: number;
  clusterSize: number;
  lazyRefcounts: boolean;
  snapshots: number;
  bitmaps: { name: string; enabled: boolean; granularity: number }[];
}

/** Reads the header, the snapshot table and the bitmap directory of one file (no backing chain). */
export async function imageFacts(path: string): Promise<ImageFacts> {
  const img = await Qcow2Image.open(path, { openBacking: false, openDataFile: false });
  try {
    const h = img.header;
    return {
      virtualSize: h.size,
      version: h.version,
      clusterSize: h.clusterSize,
      lazyRefcounts: (h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n,
      snapshots: img.snapshots.length,
      bitmaps: img.bitmaps.map(b => ({ name: b.name, enabled: b.auto, granularity: 2 ** b.granularityBits })),
    };
  } finally {
    await img.close();
  }
}
