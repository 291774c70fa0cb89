/**
 * The integrity check, equal to `qemu-img check` (QEMU 7.2, block/qcow2-refcount.c
 * qcow2_check_refcounts): expected reference counts come from usage.ts (every user of every
 * cluster), stored ones from the refcount blocks; the comparison, the OFLAG_COPIED check and the
 * fragmentation counters follow QEMU's rules so the numbers are the same as qemu-img's. On top of
 * the counters, every problem becomes a Finding with a structure path and plain-language text.
 */
import { entryOffset, wordHi, wordLo } from '../qcow2/cluster';
import { hex, Qcow2Error } from '../errors';
import { Qcow2Image } from '../image/image';
import * as L from '../qcow2/layout';
import { decodeRefcountBlock, maxRefcount, refcountAt } from '../qcow2/refcount';
import { ClusterUsage, clusterUsage, readTablesPadded, ROLE_CONFLICT, ROLE_MASK, ROLE_NAMES, UsageIssue, UsageIssueKind } from './usage';

export type Severity = 'error' | 'warning' | 'info';

export interface Finding {
  /** Machine-readable kind, e.g. 'leak', 'refcount-too-low', 'copied-flag-mismatch'. */
  kind: string;
  severity: Severity;
  hostOffset?: number;
  /** Where: a structure path like 'L1[3] → L2[0x1f0]'. */
  structure: string;
  /** One sentence: what is wrong. */
  message: string;
  /** One sentence: what it means for the data and what repair would do. */
  explanation: string;
  /** For grouped findings (runs of leaked clusters): how many clusters or entries. */
  count?: number;
}

/** The keys of `qemu-img check --output=json`, plus our findings. Optional keys are absent when 0, as in QEMU. */
export interface CheckResult {
  filename: string;
  format: 'qcow2';
  'check-errors': number;
  'image-end-offset'?: number;
  corruptions?: number;
  leaks?: number;
  'corruptions-fixed'?: number;
  'leaks-fixed'?: number;
  'total-clusters'?: number;
  'allocated-clusters'?: number;
  'fragmented-clusters'?: number;
  'compressed-clusters'?: number;
  findings: Finding[];
}

export interface CheckOptions {
  signal?: AbortSignal;
  onProgress?(done: number, total: number): void;
  /** Findings listed at most (default 1000); the rest are counted in a final 'findings-truncated' finding. */
  maxFindings?: number;
}

/** Everything the check learned, for the result and for repair. */
export interface CheckState {
  usage: ClusterUsage;
  /** Stored refcount per cluster (0..nbClusters-1); NaN where the refcount block cannot be read. */
  stored: Float64Array;
  checkErrors: number;
  corruptions: number;
  leaks: number;
  /** QEMU's "rebuild": a used cluster is counted as free, or a refcount block is unusable. */
  rebuild: boolean;
  highestCluster: number;
  /** Active L1 entries whose COPIED flag disagrees with the L2 table's refcount. */
  copiedL1: { l1Index: number; want: boolean }[];
  /** Active L2 entries whose COPIED flag disagrees with the data cluster's refcount. */
  copiedL2: { l2Offset: number; l2Index: number; l1Index: number; want: boolean }[];
  /** Number of refcount mismatches in each direction (before grouping). */
  leakedClusters: number[];
  lowClusters: number[];
  findings: Finding[];
  findingsDropped: number;
}

const EXPLAIN: Record<string, string> = {
  leak: 'Leaked clusters only waste disk space and no data is at risk; repairing leaks lowers their refcounts so QEMU can reuse the space.',
  'refcount-too-low': 'A cluster in use is counted with fewer references than it has users, so QEMU could free and reuse it while it still holds data; `--repair all` raises the refcount to the number of users.',
  'refcount-zero-but-used': 'A cluster in use is counted as free, so QEMU could allocate it for something else and overwrite its contents; `--repair all` rebuilds the refcount structure from the clusters actually in use.',
  'metadata-overlap': 'Two structures claim the same cluster, so writing one of them damages the other; repair corrects the counts but cannot tell which owner\'s contents are right.',
  'double-reference': 'Two entries of the active disk point at the same cluster, so a write through one changes what the other reads; repair corrects the refcount (and the COPIED flags), the guest keeps seeing the same bytes.',
  'copied-flag-mismatch': 'The COPIED flag tells QEMU whether it may write in place; a wrong flag can make it overwrite data a snapshot still shares or copy clusters needlessly; `--repair all` sets the flag from the refcount.',
  'l2-entry-unaligned': 'The entry points into the middle of a cluster, which no valid image does; QEMU refuses to use it, and repair cannot tell where the data really is.',
  'l2-entry-unaligned-zero': 'The entry is a preallocated zero cluster with a misaligned offset; `--repair all` turns it into a plain zero cluster, so the guest still reads zeros.',
  'offset-past-eof': 'The structure points at least one cluster past the end of the file, so what it refers to is lost (reads return zeros or fail); repair cannot bring it back.',
  'l1-reserved-bits': 'Reserved bits are set in an L1 entry, which QEMU treats as corruption; the table it points to may not be what was intended.',
  'l2-reserved-bits': 'Reserved bits are set in an L2 entry, which QEMU treats as corruption; the cluster it maps may not be what was intended.',
  'l2-table-unaligned': 'An L1 entry points at an L2 table that is not on a cluster boundary, so the guest range it covers cannot be read; repair cannot recover that range.',
  'refcount-overflow': 'The cluster has more users than the refcount width can count; QEMU cannot safely share it further — `qemu-img amend -o refcount_bits=…` widens the refcounts.',
  'compressed-copied': 'Compressed clusters are never written in place, so the COPIED flag is meaningless here; the data still reads correctly.',
  'compressed-with-data-file': 'Images with an external data file cannot contain compressed clusters; the cluster cannot be read.',
  'compressed-with-subclusters': 'A compressed cluster must have an all-zero subcluster bitmap; the entry is inconsistent and its data may not read back.',
  'subcluster-bitmap-invalid': 'The subcluster bitmap contradicts itself, so QEMU refuses to read the affected range; repair does not guess the intended state.',
  'snapshot-l1-unaligned': 'The snapshot table entry points at a misaligned L1 table, so that snapshot cannot be used or reverted to.',
  'snapshot-l1-too-large': 'The snapshot table entry claims an impossibly large L1 table, so that snapshot cannot be used.',
  'snapshots-with-data-file': 'Internal snapshots are not possible with an external data file; the snapshot entries are unusable.',
  'bitmap-table-entry-invalid': 'A persistent bitmap\'s table entry is invalid, so that bitmap\'s contents cannot be trusted (the guest data is not affected).',
  'reftable-reserved-bits': 'The refcount table entry is unusable, so refcounts of the clusters it covers are unknown; `--repair all` rebuilds the refcount structure.',
  'refblock-unaligned': 'The refcount table entry points at a misaligned refcount block, so the refcounts it covers are unknown; `--repair all` rebuilds the refcount structure.',
  'refblock-past-eof': 'A refcount block lies past the end of the file (it was probably truncated), so the refcounts it held are lost; `--repair all` restores it.',
  'refblock-refcount': 'A refcount block shares its cluster with another structure, so updating refcounts would damage that structure; `--repair all` rebuilds the refcount structure elsewhere.',
  'refcount-unreadable': 'The refcount of the cluster cannot be read, so the check could not finish for it.',
  'dirty-bit': 'The image was not closed cleanly while lazy refcounts were on, so refcounts may lag behind; QEMU repairs them the next time it opens the image read-write, and leaks are expected until then.',
  'corrupt-bit': 'QEMU marked the image corrupt and will refuse to open it read-write until it is repaired; `--repair all` clears the bit once no corruption remains.',
  'findings-truncated': 'Only the first findings are listed; the counters include all of them.',
};

function issueFinding(i: UsageIssue): Finding {
  const kind = i.kind === 'l2-entry-unaligned' && i.l2EntryFix ? 'l2-entry-unaligned' : i.kind;
  const explanation = i.kind === 'l2-entry-unaligned' && i.l2EntryFix ? EXPLAIN['l2-entry-unaligned-zero'] : EXPLAIN[i.kind];
  return { kind, severity: 'error', hostOffset: i.hostOffset, structure: i.structure, message: i.message.endsWith('.') ? i.message : i.message + '.', explanation };
}

/** Runs the analysis (no writes); `checkImage` formats it, `repairImage` acts on it. */
export async function analyzeImage(img: Qcow2Image, opts: CheckOptions = {}): Promise<CheckState> {
  const total = 4;
  const progress = (d: number) => opts.onProgress?.(d, total);
  const maxFindings = opts.maxFindings ?? 1000;
  const h = img.header;
  progress(0);
  // stored refcounts first, so the OFLAG_COPIED check can run while usage walks the active L2 tables
  const cs = img.clusterSize;
  const rg = img.rg;
  const storedAll = await readStoredRefcounts(img, Math.ceil(img.file.size / cs) + 1);
  const copied = new CopiedCheck(img, storedAll);
  const usage = await clusterUsage(img, { signal: opts.signal, onActiveL2: (t, li, off) => copied.table(t, li, off) });
  progress(1);
  if (opts.signal?.aborted) throw new Qcow2Error(img.path, 'check', undefined, 'cancelled', 'cancelled');

  const st: CheckState = {
    usage, stored: storedAll.subarray(0, usage.nbClusters), checkErrors: 0, corruptions: usage.issueCount, leaks: 0,
    rebuild: usage.issues.some(i => i.rebuild), highestCluster: 0,
    copiedL1: [], copiedL2: [], leakedClusters: [], lowClusters: [], findings: [], findingsDropped: 0,
  };
  const add = (f: Finding) => {
    if (st.findings.length < maxFindings) st.findings.push(f);
    else st.findingsDropped++;
  };
  if (h.incompatibleFeatures & L.INCOMPAT_CORRUPT) {
    add({ kind: 'corrupt-bit', severity: 'error', hostOffset: 72, structure: 'header.incompatible_features', message: 'The image is marked corrupt (incompatible feature bit 1).', explanation: EXPLAIN['corrupt-bit'] });
  }
  if (h.incompatibleFeatures & L.INCOMPAT_DIRTY) {
    add({ kind: 'dirty-bit', severity: 'warning', hostOffset: 72, structure: 'header.incompatible_features', message: 'The image is marked dirty (incompatible feature bit 0): it was not closed cleanly.', explanation: EXPLAIN['dirty-bit'] });
  }
  for (const i of usage.issues) add(issueFinding(i));
  st.findingsDropped += usage.issueCount - usage.issues.length;

  const nb = usage.nbClusters;
  const refMax = Math.min(maxRefcount(rg.order), 0xffffffff);
  const stored = st.stored;
  progress(2);

  // compare (QEMU's compare_refcounts)
  const refs = usage.refs;
  let highest = 0;
  // runs of equal-kind mismatches, grouped into one finding each
  /** Where the refcounts of clusters [k, k+n) are stored: `refcount table[i] → refcount block[0x…]`. */
  const refcountPath = (k: number, n: number) => {
    const per = rg.blockEntries, ti = Math.floor(k / per);
    const last = k + n - 1;
    return `refcount table[${ti}] → refcount block[${hex(k % per)}${n > 1 ? (Math.floor(last / per) === ti ? `..${hex(last % per)}` : ` and on`) : ''}]`;
  };
  let runKind = '', runStart = -1, runLen = 0, runStored = 0, runRefs = 0;
  const flushRun = () => {
    if (runLen === 0) return;
    const k = runStart, at = hex(k * cs);
    if (runKind === 'leak') {
      add({
        kind: 'leak', severity: 'warning', hostOffset: k * cs, structure: refcountPath(k, runLen),
        message: runLen === 1
          ? `Cluster at ${at} has refcount ${runStored} but ${runRefs === 0 ? 'nothing uses it' : `only ${runRefs} user${runRefs === 1 ? '' : 's'}`} (leaked).`
          : `${runLen} consecutive clusters from ${at} have refcounts higher than their users (leaked), e.g. refcount ${runStored} with ${runRefs} users.`,
        explanation: EXPLAIN.leak, count: runLen,
      });
    } else if (runKind === 'unreadable') {
      add({ kind: 'refcount-unreadable', severity: 'error', hostOffset: k * cs, structure: `refcounts of clusters ${at}–${hex((k + runLen) * cs - 1)}`, message: `The refcounts of ${runLen} clusters from ${at} cannot be read because their refcount block is misaligned.`, explanation: EXPLAIN['refcount-unreadable'], count: runLen });
    } else {
      const owner = usage.ownerPath(k);
      const second = usage.secondOwner.get(k);
      const conflict = (usage.role[k] & ROLE_CONFLICT) !== 0;
      const kind = conflict ? 'metadata-overlap' : second ? 'double-reference' : runKind;
      let message: string;
      if (conflict || second) {
        message = `Cluster at ${at} is used as ${ROLE_NAMES[usage.role[k] & ROLE_MASK]} by ${owner}${second ? ` and also by ${second}` : ''}, ${runRefs} references, but its refcount is ${runStored}.`;
      } else if (runLen === 1) {
        message = `Cluster at ${at} (${ROLE_NAMES[usage.role[k] & ROLE_MASK]}) has ${runRefs} user${runRefs === 1 ? '' : 's'} but refcount ${runStored}${runStored === 0 ? ', so it is counted as free' : ''}.`;
      } else {
        message = `${runLen} consecutive clusters from ${at} (first: ${ROLE_NAMES[usage.role[k] & ROLE_MASK]}) have more users than their refcounts count, e.g. ${runRefs} users with refcount ${runStored}.`;
      }
      add({ kind, severity: 'error', hostOffset: k * cs, structure: owner, message, explanation: EXPLAIN[kind === runKind ? runKind : kind], count: runLen > 1 ? runLen : undefined });
    }
    runLen = 0;
    runKind = '';
  };
  for (let k = 0; k < nb; k++) {
    const s = stored[k];
    const e = refs[k] > refMax ? refMax : refs[k];
    if (s !== s) { // NaN: refcount block unreadable → check error
      st.checkErrors++;
      if (runKind !== 'unreadable' || runStart + runLen !== k) { flushRun(); runKind = 'unreadable'; runStart = k; }
      runLen++;
      continue;
    }
    if (s > 0 || e > 0) highest = k;
    if (s === e) continue;
    let kind: string;
    if (s > e) {
      st.leaks++;
      st.leakedClusters.push(k);
      kind = 'leak';
    } else {
      st.corruptions++;
      st.lowClusters.push(k);
      kind = s === 0 ? 'refcount-zero-but-used' : 'refcount-too-low';
    }
    if (s === 0) st.rebuild = true;
    // group leaks into runs; corruptions are grouped only while they have the same values and owners are not special
    const groupable = kind === 'leak' || (!(usage.role[k] & ROLE_CONFLICT) && !usage.secondOwner.has(k));
    if (groupable && kind === runKind && runStart + runLen === k && (kind === 'leak' || (s === runStored && e === runRefs))) {
      runLen++;
    } else {
      flushRun();
      runKind = kind; runStart = k; runLen = 1; runStored = s; runRefs = e;
      if (!groupable) flushRun();
    }
  }
  flushRun();
  st.highestCluster = highest;
  progress(3);

  // OFLAG_COPIED (QEMU's check_oflag_copied), with the stored refcounts
  await copied.finish(st, add);
  progress(4);

  if (st.findingsDropped > 0) {
    st.findings.push({ kind: 'findings-truncated', severity: 'info', structure: 'check', message: `${st.findingsDropped} further findings are not listed (the first ${maxFindings} are).`, explanation: EXPLAIN['findings-truncated'], count: st.findingsDropped });
  }
  return st;
}

/**
 * Stored refcounts of clusters [0, nb). Refcount blocks past the end of the file read as zeros (as
 * QEMU reads them); misaligned block offsets make their clusters unreadable (NaN), which QEMU
 * counts as one check error per cluster.
 */
export async function readStoredRefcounts(img: Qcow2Image, nb: number): Promise<Float64Array> {
  const rg = img.rg;
  const cs = img.clusterSize;
  const table = img.refcountTable;
  const out = new Float64Array(nb);
  const nBlocks = Math.min(table.length, Math.ceil(nb / rg.blockEntries));
  const want: number[] = [];
  for (let i = 0; i < nBlocks; i++) {
    const off = table[i];
    if (off === 0) continue;
    if (off % cs !== 0) {
      out.fill(NaN, i * rg.blockEntries, Math.min(nb, (i + 1) * rg.blockEntries));
      continue;
    }
    want.push(off);
  }
  const blocks = await readTablesPadded(img.file, want, cs, o => `refcount block at ${hex(o)}`);
  for (let i = 0; i < nBlocks; i++) {
    const off = table[i];
    if (off === 0 || off % cs !== 0) continue;
    const blk = blocks.get(off)!;
    const base = i * rg.blockEntries;
    decodeRefcountBlock(blk, rg.order, out, base, Math.min(rg.blockEntries, nb - base));
  }
  return out;
}

/** One stored refcount, also for clusters past the array (reads the block); undefined when unreadable. */
async function storedRefcountOf(img: Qcow2Image, stored: Float64Array, k: number, cache: Map<number, Buffer>): Promise<number | undefined> {
  if (k < stored.length) {
    const s = stored[k];
    return s === s ? s : undefined;
  }
  const rg = img.rg;
  const ti = Math.floor(k / rg.blockEntries);
  if (ti >= img.refcountTable.length) return 0;
  const off = img.refcountTable[ti];
  if (off === 0) return 0;
  if (off % img.clusterSize !== 0) return undefined;
  let blk = cache.get(off);
  if (!blk) {
    blk = (await readTablesPadded(img.file, [off], img.clusterSize, o => `refcount block at ${hex(o)}`)).get(off)!;
    cache.set(off, blk);
  }
  return refcountAt(blk, k % rg.blockEntries, rg.order);
}

interface CopiedHit { l1Index: number; l2Offset: number; l2Index: number; hi: number; lo: number; rc: number }

/**
 * QEMU's check_oflag_copied over the active L1/L2 tables, fed table by table while usage walks
 * them. Refcounts of clusters past the stored array (beyond the end of the file) are looked up
 * afterwards, in `finish`.
 */
class CopiedCheck {
  private hits: CopiedHit[] = [];
  private later: Omit<CopiedHit, 'rc'>[] = [];
  private readonly cs: number;
  private readonly extData: boolean;
  constructor(private img: Qcow2Image, private stored: Float64Array) {
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
    this.look(Math.floor(l2Offset / this.cs), { l1Index, l2Offset, l2Index: -1, hi: l1hi, lo: l1lo }, (l1hi & 0x80000000) !== 0);
    const g = this.img.g, es = g.l2EntrySize, n = g.l2Size, cs = this.cs, stored = this.stored;
    for (let j = 0; j < n; j++) {
      const p = j * es;
      const hi = (t[p] << 24 | t[p + 1] << 16 | t[p + 2] << 8 | t[p + 3]) >>> 0;
      const lo = (t[p + 4] << 24 | t[p + 5] << 16 | t[p + 6] << 8 | t[p + 7]) >>> 0;
      if ((hi === 0 && lo === 0) || (hi & 0x40000000)) continue;
      const copied = (hi & 0x80000000) !== 0;
      const off = (hi & 0x00ffffff) * 0x100000000 + ((lo & 0xfffffe00) >>> 0);
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
      if ((rc === 1) !== ((e.hi & 0x80000000) !== 0)) this.hits.push({ ...e, rc });
    }
    // in QEMU's order: by L1 index, the L1 entry before its L2 entries
    this.hits.sort((a, b) => a.l1Index - b.l1Index || a.l2Index - b.l2Index);
    for (const e of this.hits) {
      const has = (e.hi & 0x80000000) !== 0 ? 'has' : 'lacks';
      const raw = hex((BigInt(e.hi) << 32n) | BigInt(e.lo));
      st.corruptions++;
      if (e.l2Index < 0) {
        st.copiedL1.push({ l1Index: e.l1Index, want: e.rc === 1 });
        add({
          kind: 'copied-flag-mismatch', severity: 'error', hostOffset: this.img.header.l1TableOffset + e.l1Index * 8, structure: `L1[${e.l1Index}]`,
          message: `L1 entry ${raw} ${has} the COPIED flag but its L2 table's refcount is ${e.rc}.`, explanation: EXPLAIN['copied-flag-mismatch'],
        });
      } else {
        st.copiedL2.push({ l2Offset: e.l2Offset, l2Index: e.l2Index, l1Index: e.l1Index, want: e.rc === 1 });
        add({
          kind: 'copied-flag-mismatch', severity: 'error', hostOffset: e.l2Offset + e.l2Index * this.img.g.l2EntrySize, structure: `L1[${e.l1Index}] → L2[${hex(e.l2Index)}]`,
          message: `L2 entry ${raw} ${has} the COPIED flag but its data cluster's refcount is ${e.rc}.`, explanation: EXPLAIN['copied-flag-mismatch'],
        });
      }
    }
  }
}

/** QEMU's JSON object order: its QDict hashes keys into 512 buckets (tdb_hash) and lists each bucket newest first. */
function qdictBucket(key: string): number {
  let value = Math.imul(0x238f13af, key.length) >>> 0;
  for (let i = 0; i < key.length; i++) value = (value + (key.charCodeAt(i) << ((i * 5) % 24))) >>> 0;
  return ((Math.imul(1103515243, value) + 12345) >>> 0) % 512;
}

/** The QAPI field order of ImageCheck (insertion order into the QDict). */
const IMAGE_CHECK_FIELDS = ['filename', 'format', 'check-errors', 'image-end-offset', 'corruptions', 'leaks', 'corruptions-fixed', 'leaks-fixed', 'total-clusters', 'allocated-clusters', 'fragmented-clusters', 'compressed-clusters'] as const;

/** Serialises like `qemu-img check --output=json` (same key order, 4-space indent), `findings` last. */
export function formatCheckJson(r: CheckResult, withFindings = true): string {
  const present = IMAGE_CHECK_FIELDS.map((k, i) => ({ k, i })).filter(x => (r as unknown as Record<string, unknown>)[x.k] !== undefined);
  present.sort((a, b) => qdictBucket(a.k) - qdictBucket(b.k) || b.i - a.i);
  const o: Record<string, unknown> = {};
  for (const { k } of present) o[k] = (r as unknown as Record<string, unknown>)[k];
  if (withFindings) o.findings = r.findings;
  return JSON.stringify(o, null, 4) + '\n';
}

/** Builds the qemu-img-shaped result from an analysis (keys present only when non-zero, as QEMU does). */
export function checkResultOf(img: Qcow2Image, st: CheckState, fixed?: { leaks: number; corruptions: number }): CheckResult {
  const r: CheckResult = { filename: img.path, format: 'qcow2', 'check-errors': st.checkErrors, findings: st.findings };
  const end = (st.highestCluster + 1) * st.usage.clusterSize;
  if (end) r['image-end-offset'] = end;
  if (st.corruptions) r.corruptions = st.corruptions;
  if (st.leaks) r.leaks = st.leaks;
  if (fixed?.corruptions) r['corruptions-fixed'] = fixed.corruptions;
  if (fixed?.leaks) r['leaks-fixed'] = fixed.leaks;
  const u = st.usage;
  if (u.totalClusters) r['total-clusters'] = u.totalClusters;
  if (u.allocatedClusters) r['allocated-clusters'] = u.allocatedClusters;
  if (u.fragmentedClusters) r['fragmented-clusters'] = u.fragmentedClusters;
  if (u.compressedClusters) r['compressed-clusters'] = u.compressedClusters;
  return r;
}

/**
 * Opens an image the way the check reads it, as qemu-img check does: without its backing chain or
 * data file (the check needs neither; repair opens it writable), and with table bytes past the end of a truncated file read
 * as zeros so the truncation is judged rather than refused.
 */
export function openForCheck(path: string, writable = false): Promise<Qcow2Image> {
  return Qcow2Image.open(path, { writable, openBacking: false, openDataFile: false, zeroPastEof: true });
}

export async function checkImage(img: Qcow2Image, opts: CheckOptions = {}): Promise<CheckResult> {
  const st = await analyzeImage(img, opts);
  return checkResultOf(img, st);
}

/** qemu-img check's exit code: 0 clean, 1 check not completed, 2 corruptions, 3 leaks only. */
export function checkExitCode(r: CheckResult): number {
  if (r['check-errors']) return 1;
  if (r.corruptions) return 2;
  if (r.leaks) return 3;
  return 0;
}

export type { UsageIssueKind };
