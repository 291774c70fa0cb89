/**
 * The full metadata walk the editor and `check` depend on, as a benchmark operation: every L2
 * table of the active L1 table and of every snapshot's L1 table (read in coalesced batches, each
 * entry classified), plus every refcount block. Compared with `qemu-img check`, which does the
 * same reads (and more bookkeeping). Run alone: `node dist-test/bench/walk.js IMAGE`.
 */
import { entryOffset, hasEntryOffset, hasZeroFlag, isCompressed, wordHi, wordLo } from '../src/engine/qcow2/cluster';
import { hex } from '../src/engine/errors';
import { Qcow2Image } from '../src/engine/image/image';
import { readMany } from '../src/engine/io/reader';
import { readAllRefcounts } from '../src/engine/qcow2/refcount';

export interface WalkResult {
  l1Tables: number;
  l2Tables: number;
  allocatedEntries: number;
  compressedEntries: number;
  zeroEntries: number;
  refcountedClusters: number;
}

/** Tables read per batch: bounds memory (256 tables of 2 MiB clusters = 512 MiB at most). */
const BATCH = 256;

export async function metadataWalk(img: Qcow2Image): Promise<WalkResult> {
  const cs = img.clusterSize;
  const l1s: Buffer[] = [img.l1];
  for (const s of img.snapshots) {
    if (s.l1Size > 0) l1s.push(await img.file.read(s.l1TableOffset, s.l1Size * 8, `snapshot[${s.index}] L1 table`));
  }
  const l2Offsets = new Set<number>();
  l1s.forEach((l1, t) => {
    for (let i = 0; i < l1.length / 8; i++) {
      const off = entryOffset(wordHi(l1, i * 8), wordLo(l1, i * 8));
      if (off === 0) continue;
      img.checkL2Offset(off, i, t === 0 ? 'L1' : `snapshot[${t - 1}] L1`);
      l2Offsets.add(off);
    }
  });
  const sorted = [...l2Offsets].sort((a, b) => a - b);
  const entrySize = img.g.l2EntrySize;
  let allocated = 0, compressed = 0, zero = 0;
  for (let b = 0; b < sorted.length; b += BATCH) {
    const tables = await readMany(img.file, sorted.slice(b, b + BATCH), cs, o => `L2 table at ${hex(o)}`);
    for (const t of tables.values()) {
      for (let p = 0; p < t.length; p += entrySize) {
        const hi = wordHi(t, p), lo = wordLo(t, p);
        if (isCompressed(hi)) compressed++;
        else if (hasEntryOffset(hi, lo)) allocated++;
        if (hasZeroFlag(lo)) zero++;
      }
    }
  }
  const nbClusters = Math.ceil(img.file.size / cs);
  const refcounts = await readAllRefcounts(img.file, img.refcountTable, img.rg, nbClusters);
  let refcounted = 0;
  for (let i = 0; i < refcounts.length; i++) if (refcounts[i] !== 0) refcounted++;
  return { l1Tables: l1s.length, l2Tables: sorted.length, allocatedEntries: allocated, compressedEntries: compressed, zeroEntries: zero, refcountedClusters: refcounted };
}

// (esbuild bundles this file into bench.js too, so `require.main === module` cannot tell; the script name can)
if (/[\\/]walk\.js$/.test(process.argv[1] ?? '')) {
  (async () => {
    const img = await Qcow2Image.open(process.argv[2], { openBacking: false });
    try {
      console.log(JSON.stringify(await metadataWalk(img)));
    } finally {
      await img.close();
    }
  })().catch(e => { console.error(String(e)); process.exitCode = 1; });
}
