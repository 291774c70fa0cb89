/**
 * QEMU's check_oflag_copied over the active L1/L2 tables: an entry's COPIED flag must be set
 * exactly when the cluster it points to has refcount 1.
 */
import { hex } from '../errors';
import type { Qcow2Image } from '../image/image';
import { entryOffset, wordHi, wordLo } from '../qcow2/cluster';
import * as L from '../qcow2/layout';
import { type ExactRefcounts, type RefcountArray, refcountText } from '../qcow2/refcount';
import { formatPath, step } from '../path';
import { EXPLAIN, type CheckState, type Finding } from './findings';
import { storedRefcountOf } from './storedRefcounts';
import { l2EntryPath } from './usageL1';

interface CopiedHit { l1Index: number; l2Offset: number; l2Index: number; hi: number; lo: number; rc: number }

/**
 * QEMU's check_oflag_copied over the active L1/L2 tables, fed table by table while usage walks
 * them. Refcounts of clusters past the stored array (beyond the end of the file) are looked up
 * afterwards, in `finish`.
 */
export class CopiedCheck {
  private hits: CopiedHit[] = [];
  private later: Omit<CopiedHit, 'rc'>[] = [];
  private readonly cs: number;
  private readonly extData: boolean;
  constructor(private img: Qcow2Image, private stored: RefcountArray, private exact?: ExactRefcounts) {
    this.cs = img.clusterSize;
    this.extData = img.g.externalData;
  }

  private look(k: number, e: Omit<CopiedHit, 'rc'>, copied: boolean): void {
    if (k >= this.stored.length) { this.later.push(e); return; }
    const rc = this.stored[k];
    if (rc !== rc) return; // unreadable: QEMU skips silently
    if ((rc === 1) !== copied) this.hits.push({ ...e, rc });
  }

  table(t: Uint8Array, l1Index: number, l2Offset: number): void {
    if (l2Offset === 0) return; // QEMU skips L1 entries without an offset here
    const l1 = this.img.l1;
    const l1hi = wordHi(l1, l1Index * 8), l1lo = wordLo(l1, l1Index * 8);
    this.look(Math.floor(l2Offset / this.cs), { l1Index, l2Offset, l2Index: -1, hi: l1hi, lo: l1lo }, (l1hi & L.OFLAG_COPIED_HI) !== 0);
    const g = this.img.g, es = g.l2EntrySize, n = g.l2Size, cs = this.cs, stored = this.stored;
    for (let j = 0; j < n; j++) {
      const p = j * es;
      const hi = wordHi(t, p), lo = wordLo(t, p);
      if ((hi === 0 && lo === 0) || (hi & L.OFLAG_COMPRESSED_HI)) continue;
      const copied = (hi & L.OFLAG_COPIED_HI) !== 0;
      const off = entryOffset(hi, lo);
      if (off === 0 && !(this.extData && copied)) continue; // unallocated / zero without a cluster
      if (this.extData) {
        if (!copied) this.hits.push({ l1Index, l2Offset, l2Index: j, hi, lo, rc: 1 });
        continue;
      }
      const k = Math.floor(off / cs);
      if (k < stored.length) {
        const rc = stored[k];
        if (rc !== rc || (rc === 1) === copied) continue;
        this.hits.push({ l1Index, l2Offset, l2Index: j, hi, lo, rc });
      } else this.look(k, { l1Index, l2Offset, l2Index: j, hi, lo }, copied);
    }
  }

  async finish(st: CheckState, add: (f: Finding) => void): Promise<void> {
    const cache = new Map<number, Buffer>();
    for (const e of this.later) {
      const rc = await storedRefcountOf(this.img, this.stored, Math.floor((e.l2Index < 0 ? e.l2Offset : entryOffset(e.hi, e.lo)) / this.cs), cache);
      if (rc === undefined) continue;
      if ((rc === 1) !== ((e.hi & L.OFLAG_COPIED_HI) !== 0)) this.hits.push({ ...e, rc });
    }
    // in QEMU's order: by L1 index, the L1 entry before its L2 entries
    this.hits.sort((a, b) => a.l1Index - b.l1Index || a.l2Index - b.l2Index);
    for (const e of this.hits) {
      const has = (e.hi & L.OFLAG_COPIED_HI) !== 0 ? 'has' : 'lacks';
      const raw = hex((BigInt(e.hi) << 32n) | BigInt(e.lo));
      const rc = refcountText(e.rc, this.exact, Math.floor((e.l2Index < 0 ? e.l2Offset : entryOffset(e.hi, e.lo)) / this.cs));
      st.corruptions++;
      if (e.l2Index < 0) {
        st.copiedL1.push({ l1Index: e.l1Index, want: e.rc === 1 });
        add({
          kind: 'copied-flag-mismatch', severity: 'error', hostOffset: this.img.header.l1TableOffset + e.l1Index * 8, structure: formatPath([step('L1', e.l1Index)]),
          message: `L1 entry ${raw} ${has} the COPIED flag but its L2 table's refcount is ${rc}.`, explanation: EXPLAIN['copied-flag-mismatch'],
        });
      } else {
        st.copiedL2.push({ l2Offset: e.l2Offset, l2Index: e.l2Index, l1Index: e.l1Index, want: e.rc === 1 });
        add({
          kind: 'copied-flag-mismatch', severity: 'error', hostOffset: e.l2Offset + e.l2Index * this.img.g.l2EntrySize, structure: l2EntryPath([], e.l1Index, e.l2Index),
          message: `L2 entry ${raw} ${has} the COPIED flag but its data cluster's refcount is ${rc}.`, explanation: EXPLAIN['copied-flag-mismatch'],
        });
      }
    }
  }
}

