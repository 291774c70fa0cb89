/**
 * Re-clustering (an output cluster size other than the source's): the guest view of every L1 table
 * is cut into output clusters; each distinct content source (the same source clusters, or slices of
 * them) becomes one output cluster, so what snapshots share stays shared. The result is synthetic
 * "source" L1/L2 tables over synthetic host ids (the `Job`s), which the rest of the compaction lays
 * out exactly as it does for a same-size compaction.
 */
import { Qcow2Error } from '../../errors';
import type { Qcow2Image } from '../../image/image';
import { l2Geometry, offsetHi, putEntry, putOffset, SubclusterType } from '../../qcow2/cluster';
import * as L from '../../qcow2/layout';
import { ClusterSet } from './places';
import type { CompactPlan, Job, L1Source, Piece, SourceTables } from './plan';

/** Refuses what the guest-view walk cannot carry into another cluster size. */
export function checkReclusterable(img: Qcow2Image): void {
  const src = img.path;
  if (img.bitmaps.length) throw new Qcow2Error(src, 'bitmaps', undefined, 'changing the cluster size of an image with persistent bitmaps is not supported', 'unsupported');
  if (img.g.extendedL2) throw new Qcow2Error(src, 'header.incompatible_features', L.HEADER_FIELD.incompatible_features.offset, 'changing the cluster size of an image with extended L2 entries is not supported', 'unsupported');
  // a savevm snapshot's VM state lies past its disk size, at an offset that depends on the
  // cluster size; the guest-view walk would drop it
  const withState = img.snapshots.find(sn => (sn.vmStateSizeLarge ?? sn.vmStateSize) > 0);
  if (withState) throw new Qcow2Error(src, `snapshot "${withState.name}"`, withState.hostOffset, 'changing the cluster size of an image whose snapshots carry VM state is not supported', 'unsupported');
}

const isUnalloc = (t: SubclusterType) => t === SubclusterType.UnallocatedPlain || t === SubclusterType.UnallocatedAlloc;
const isZero = (t: SubclusterType) => t === SubclusterType.ZeroPlain || t === SubclusterType.ZeroAlloc;

/** The synthetic tables and jobs for output clusters of `ocs` bytes, from `source`'s L1 tables. */
export async function reclusterTables(img: Qcow2Image, source: SourceTables, ocs: number, hasBacking: boolean, signal?: AbortSignal): Promise<CompactPlan> {
  const h = img.header;
  const cs = h.clusterSize;
  const og = l2Geometry(Math.log2(ocs), false);
  const jobs: Job[] = [];
  const byKey = new Map<string, number>();
  const fakeL2 = new Map<number, Buffer>();
  const byContent = new Map<string, number>();
  let nextFakeL2 = 1;
  // without a backing file, unallocated and zero read alike: nothing to keep
  const trivial = (t: SubclusterType) => isUnalloc(t) || (!hasBacking && isZero(t));
  const newTables: L1Source[] = [];
  const sizes = [h.size, ...img.snapshots.map(sn => (sn.diskSize === undefined ? h.size : Number(sn.diskSize)))];
  for (let ti = 0; ti < source.l1Tables.length; ti++) {
    const { l1: srcL1, label } = source.l1Tables[ti];
    const size = sizes[ti];
    const perL2 = ocs * og.l2Size;
    const l1 = Buffer.alloc(Math.ceil(size / perL2) * 8);
    const l2For = new Map<number, Buffer>();
    const setEntry = (c: number, hi: number, lo: number) => {
      const li = Math.floor(c / og.l2Size);
      let t = l2For.get(li);
      if (!t) { t = Buffer.alloc(ocs); l2For.set(li, t); }
      putEntry(t, (c % og.l2Size) * 8, hi, lo);
    };
    let cur: { index: number; pieces: Piece[] } | null = null;
    const finalize = () => {
      if (!cur) return;
      const ps = cur.pieces;
      const c = cur.index;
      cur = null;
      if (ps.every(p => isUnalloc(p.type))) return;
      // zero throughout (without a backing file, unallocated reads as zero too)
      if (ps.every(p => isZero(p.type) || (!hasBacking && isUnalloc(p.type)))) { if (hasBacking) setEntry(c, 0, L.OFLAG_ZERO_LO); return; }
      const key = ps.map(p => p.type === SubclusterType.Normal ? `d${p.host}:${p.len}` : p.type === SubclusterType.Compressed ? `c${p.comp!}+${p.within}:${p.len}`
        : isZero(p.type) ? `z${p.len}` : `u${p.guest}:${p.len}`).join('|');
      let fake = byKey.get(key);
      if (fake === undefined) {
        fake = (jobs.length + 1) * ocs;
        byKey.set(key, fake);
        jobs.push({ fake, guest: c * ocs, pieces: ps });
      }
      setEntry(c, offsetHi(fake), fake >>> 0);
    };
    await img.walk(0, size, r => {
      let pos = r.guestOffset;
      const end = r.guestOffset + r.length;
      while (pos < end) {
        const c = Math.floor(pos / ocs);
        if (cur && cur.index !== c) finalize();
        if (trivial(r.type) && pos % ocs === 0 && end - pos >= ocs) {
          pos += Math.floor((end - pos) / ocs) * ocs; // whole clusters with nothing to keep
          continue;
        }
        const ce = Math.min(end, (c + 1) * ocs);
        if (!cur) cur = { index: c, pieces: [] };
        cur.pieces.push({
          type: r.type, guest: pos, len: ce - pos,
          host: r.type === SubclusterType.Normal ? r.hostOffset + (pos - r.guestOffset) : 0,
          comp: r.compressedOffset, compSize: r.compressedSize, within: pos % cs,
        });
        pos = ce;
      }
    }, { l1: srcL1, l1Label: label, signal });
    finalize();
    for (const [li, t] of l2For) {
      const k = t.toString('base64');
      let off = byContent.get(k);
      if (off === undefined) { off = nextFakeL2++ * ocs; byContent.set(k, off); fakeL2.set(off, t); }
      putOffset(l1, li * 8, off);
    }
    newTables.push({ l1, label });
  }
  // the synthetic tables are the source from here on, in the output geometry
  return { tables: { l1Tables: newTables, l2Offsets: [...fakeL2.keys()].sort((a, b) => a - b), l2: fakeL2, data: new ClusterSet(0, ocs), compressed: new Map() }, g: og, cs: ocs, jobs };
}
