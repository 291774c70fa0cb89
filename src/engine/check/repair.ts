/**
 * Repair, as `qemu-img check -r leaks|all` (QEMU 7.2, qcow2_check_refcounts and friends):
 *
 *  - leaks: refcounts higher than the number of users are lowered (in place).
 *  - all:   additionally misaligned preallocated-zero L2 entries become plain zero entries,
 *           refcounts lower than the number of users are raised, and when a used cluster is
 *           counted as free or a refcount block is unusable the whole refcount structure is
 *           rebuilt from the clusters actually in use; then OFLAG_COPIED is set from the refcounts.
 *
 * Crash-safety order (a crash at any point leaves an image a second repair can still fix):
 *  1. L2 entry fixes (each a single 8-byte write of a self-contained entry), fsync.
 *  2. Refcounts. In place: each refcount block rewritten whole, fsync. Rebuild: new refcount blocks
 *     and a new refcount table are written after the end of the file — nothing the old structure
 *     uses is touched — fsync, then the header's refcount_table_offset/clusters are switched in
 *     one 12-byte write, fsync. Before the switch the old structure is intact; after it the new
 *     one is complete.
 *  3. COPIED flags in L2 tables and L1 entries, now that refcounts are right, fsync.
 *  0. (-r all) Snapshot entries beyond QEMU's limits: the header's nb_snapshots lowered (one 4-byte
 *     write), fsync — their clusters become leaks that step 2 frees.
 *  3b. (-r all) A snapshot table with cut or incomplete entries rewritten whole in new clusters,
 *     then the header switched, then the old clusters freed (snapshotTable.ts has the order).
 *  4. Header last: dirty and corrupt bits cleared only when the re-check finds no corruption, fsync.
 */
import { analyzeImage, CheckResult, checkResultOf, CheckState, openForCheck } from './check';
import { hex, Qcow2Error } from '../errors';
import { Qcow2Image } from '../image/image';
import { withCopied } from '../qcow2/cluster';
import { headerPath } from '../qcow2/header';
import * as L from '../qcow2/layout';
import { formatPath, step } from '../path';
import { maxRefcount, setRefcountAt } from '../qcow2/refcount';
import { RefcountWriter, writeAt } from '../ops/refcountWrite';
import { assertNotLocked } from '../ops/writable';
import { rewriteSnapshotTable, snapshotTableFindings, snapshotTableRewrites, writeReducedSnapshotCount } from './snapshotTable';

export type RepairMode = 'leaks' | 'all';

export interface RepairResult {
  /** The check before repair. */
  before: CheckResult;
  /** The check after repair, with leaks-fixed / corruptions-fixed (as `qemu-img check -r` prints it). */
  after: CheckResult;
  leaksFixed: number;
  corruptionsFixed: number;
  /** What was done, one line each, in order. */
  actions: string[];
}

export interface RepairOptions {
  signal?: AbortSignal;
  onProgress?(done: number, total: number): void;
}

function reopen(path: string, mode: RepairMode): Promise<Qcow2Image> {
  return openForCheck(path, true, mode === 'all' ? 'repair' : 'check');
}

export async function repairImage(path: string, mode: RepairMode, opts: RepairOptions = {}): Promise<RepairResult> {
  assertNotLocked(path);
  const actions: string[] = [];
  let img = await reopen(path, mode);
  try {
    const st0 = await analyzeImage(img, { signal: opts.signal });
    const before = checkResultOf(img, st0);
    // QEMU's check stops at a snapshot table it cannot read (-r leaks, or damage -r all cannot cut): nothing is written
    if (st0.incomplete) return { before, after: before, leaksFixed: 0, corruptionsFixed: 0, actions };
    let st = st0;
    const extraCut = img.snapshotTable.extraTruncated.length;
    let extraCheckErrors = 0;
    // fixes counted per phase, as QEMU counts them (a COPIED flag that only disagrees once the
    // refcounts are right is a second fixed corruption)
    let leaksFixed = 0, corruptionsFixed = 0;
    const step = (n: number) => opts.onProgress?.(n, 5);

    // 0. snapshot entries beyond QEMU's limits dropped from the header's count (-r all), as
    //    qcow2_check_read_snapshot_table does before the refcounts (their clusters become leaks)
    if (mode === 'all' && img.snapshotTable.dropped) {
      const n = await writeReducedSnapshotCount(img);
      corruptionsFixed += n;
      actions.push(`dropped ${n} snapshot table entr${n === 1 ? 'y' : 'ies'} beyond QEMU's limits from the header's count`);
      await img.close();
      img = await reopen(path, mode);
      st = await analyzeImage(img, { signal: opts.signal });
    }
    step(1);

    // 1. misaligned preallocated zero clusters → plain zero entries (-r all)
    if (mode === 'all') {
      const fixes = st.usage.issues.filter(i => i.l2EntryFix);
      for (const i of fixes) {
        const f = i.l2EntryFix!;
        const e = Buffer.alloc(8);
        if (!f.extendedL2) e.writeBigUInt64BE(L.QCOW_OFLAG_ZERO);
        assertNotLocked(path);
        await writeAt(img.file, f.hostOffset, e, i.structure);
      }
      if (fixes.length) {
        await img.file.sync();
        corruptionsFixed += fixes.length;
        actions.push(`turned ${fixes.length} misaligned preallocated zero cluster entr${fixes.length === 1 ? 'y' : 'ies'} into plain zero entries`);
        st = await analyzeImage(img, { signal: opts.signal });
      }
    }
    step(2);

    // 2. refcounts
    const needRebuild = st.rebuild || st.usage.issues.some(i => i.kind === 'refblock-past-eof');
    if (needRebuild) {
      if (mode === 'all') {
        assertNotLocked(path);
        await rebuildRefcounts(img, st, actions);
        await img.close();
        img = await reopen(path, mode);
        const prev = st;
        st = await analyzeImage(img, { signal: opts.signal });
        const copiedNow = st.copiedL1.length + st.copiedL2.length, copiedBefore = prev.copiedL1.length + prev.copiedL2.length;
        corruptionsFixed += Math.max(0, (prev.corruptions - copiedBefore) - (st.corruptions - copiedNow));
        leaksFixed += Math.max(0, prev.leaks - st.leaks);
      } else if (st.rebuild) {
        // QEMU: "ERROR need to rebuild refcount structures" — a check error, nothing fixed
        extraCheckErrors++;
        actions.push('refcounts need a full rebuild, which only `--repair all` does; nothing changed');
      }
    }
    if (!(mode === 'leaks' && st.rebuild)) {
      const changed = await fixRefcountsInPlace(img, st, mode, actions);
      leaksFixed += changed.leaks;
      corruptionsFixed += changed.low;
      if (changed.leaks + changed.low > 0) {
        await img.close();
        img = await reopen(path, mode);
        st = await analyzeImage(img, { signal: opts.signal });
      }
    }
    step(3);

    // 3. OFLAG_COPIED (-r all always; -r leaks only when everything else is consistent, as QEMU)
    // (snapshot-table corruptions are QEMU's separate snapshot result: they do not hold this back)
    const otherCorruptions = st.corruptions - st.copiedL1.length - st.copiedL2.length - snapshotTableFindings(img).corruptions;
    const fixCopied = mode === 'all' || (st.checkErrors === 0 && otherCorruptions === 0 && st.leaks === 0 && extraCheckErrors === 0);
    if (fixCopied && (st.copiedL1.length || st.copiedL2.length)) {
      assertNotLocked(path);
      await fixCopiedFlags(img, st, actions);
      corruptionsFixed += st.copiedL1.length + st.copiedL2.length;
      await img.close();
      img = await reopen(path, mode);
      st = await analyzeImage(img, { signal: opts.signal });
    }
    step(4);

    // 3b. the snapshot table rewritten when entries were cut or incomplete (-r all), once the
    //     refcounts it allocates from are right (QEMU's qcow2_check_fix_snapshot_table)
    const snapshotFixes = mode === 'all' ? snapshotTableRewrites(img, extraCut) : 0;
    if (snapshotFixes) {
      await rewriteSnapshotTable(img, actions);
      corruptionsFixed += snapshotFixes;
      await img.close();
      img = await reopen(path, mode);
      st = await analyzeImage(img, { signal: opts.signal });
    }

    // 4. header last: clear dirty/corrupt once nothing is wrong
    const h = img.header;
    if (h.version >= 3 && st.checkErrors === 0 && extraCheckErrors === 0 && st.corruptions === 0 && (h.incompatibleFeatures & (L.INCOMPAT_DIRTY | L.INCOMPAT_CORRUPT)) !== 0n) {
      assertNotLocked(path);
      const b = L.encodeHeaderField('incompatible_features', h.incompatibleFeatures & ~(L.INCOMPAT_DIRTY | L.INCOMPAT_CORRUPT));
      await writeAt(img.file, L.HEADER_FIELD.incompatible_features.offset, b, headerPath('incompatible_features'));
      await img.file.sync();
      actions.push('cleared the dirty/corrupt bits in the header');
      await img.close();
      img = await reopen(path, mode);
      st = await analyzeImage(img, { signal: opts.signal });
    }
    step(5);

    const after = checkResultOf(img, st, { leaks: leaksFixed, corruptions: corruptionsFixed });
    after['check-errors'] += extraCheckErrors;
    return { before, after, leaksFixed, corruptionsFixed, actions };
  } finally {
    await img.close();
  }
}

/** Leaks (both modes) and too-low refcounts (-r all), one rewrite per refcount block. */
async function fixRefcountsInPlace(img: Qcow2Image, st: CheckState, mode: RepairMode, actions: string[]): Promise<{ leaks: number; low: number }> {
  const wantLow = mode === 'all';
  if (st.leaks === 0 && (!wantLow || st.lowClusters.length === 0)) return { leaks: 0, low: 0 };
  const h = img.header;
  const w = await RefcountWriter.load({
    file: img.file, clusterBits: h.clusterBits, refcountOrder: h.refcountOrder,
    tableOffset: h.refcountTableOffset, tableClusters: h.refcountTableClusters, table: img.refcountTable,
  });
  const refMax = maxRefcount(h.refcountOrder);
  const refs = st.usage.refs;
  let leaks = 0, low = 0;
  // each refcount is set to the count of its users, computed by the check, never derived from the
  // stored value (a 64-bit refcount need not be exact as a number)
  for (const k of st.leakedClusters) {
    w.set(k, Math.min(refs[k], refMax), `cluster ${hex(k * img.clusterSize)}`);
    leaks++;
  }
  if (wantLow) {
    for (const k of st.lowClusters) {
      if (w.get(k) === 0) continue; // counted as free: only a rebuild fixes it
      w.set(k, Math.min(refs[k], refMax), `cluster ${hex(k * img.clusterSize)}`);
      low++;
    }
  }
  if (leaks + low === 0) return { leaks, low };
  assertNotLocked(img.path);
  await w.flush();
  if (leaks) actions.push(`lowered the refcounts of ${leaks} leaked cluster${leaks === 1 ? '' : 's'}`);
  if (low) actions.push(`raised ${low} refcount${low === 1 ? '' : 's'} that were lower than the number of users`);
  return { leaks, low };
}

/**
 * Rebuilds the refcount structure from the expected counts: new refcount blocks and a new table
 * are appended after everything in use, written and synced, and only then does the header point
 * at them. The old blocks and table are not counted in the new refcounts (they become free).
 */
async function rebuildRefcounts(img: Qcow2Image, st: CheckState, actions: string[]): Promise<void> {
  const h = img.header;
  const cs = img.clusterSize;
  const rg = img.rg;
  const u = st.usage;
  const refMax = maxRefcount(h.refcountOrder);
  const per = rg.blockEntries;
  // expected counts without the old refcount structure
  const counts = new Float64Array(u.nbClusters);
  for (let k = 0; k < u.nbClusters; k++) counts[k] = Math.min(u.refs[k], refMax);
  const dropOld = (off: number, bytes: number) => {
    for (let k = Math.floor(off / cs); k <= Math.floor((off + bytes - 1) / cs) && k < counts.length; k++) if (counts[k] > 0) counts[k]--;
  };
  dropOld(h.refcountTableOffset, h.refcountTableClusters * cs);
  // each old refcount block the check counted (those not skipped as unusable) loses its reference
  const skipped = new Set(u.issues.filter(i => i.reftableIndex !== undefined && i.kind !== 'refblock-refcount').map(i => i.reftableIndex!));
  for (let i = 0; i < img.refcountTable.length; i++) {
    const off = img.refcountTable[i];
    if (off === 0 || skipped.has(i) || off % cs !== 0) continue;
    const k = off / cs;
    if (k < counts.length && counts[k] > 0) counts[k]--;
  }
  // place the new structure at the end: nB blocks then nT table clusters, starting at `base`
  const base = Math.max(u.nbClusters, Math.ceil(img.file.size / cs));
  const used = new Set<number>();
  for (let bi = 0; bi * per < counts.length; bi++) {
    const end = Math.min(counts.length, (bi + 1) * per);
    for (let k = bi * per; k < end; k++) if (counts[k] !== 0) { used.add(bi); break; }
  }
  let nB = 0, nT = 1, blocks: number[] = [];
  for (let iter = 0; iter < 64; iter++) {
    const need = new Set(used);
    for (let k = base; k < base + nB + nT; k++) need.add(Math.floor(k / per));
    blocks = [...need].sort((a, b) => a - b);
    const entries = blocks.length ? blocks[blocks.length - 1] + 1 : 1;
    const t = Math.max(1, Math.ceil(entries * 8 / cs));
    if (blocks.length === nB && t === nT) break;
    nB = blocks.length; nT = t;
  }
  if (nT * cs > L.QCOW_MAX_REFTABLE_SIZE) {
    throw new Qcow2Error(img.path, 'refcount table', undefined, `a rebuilt refcount table would need ${nT} clusters, beyond QEMU's 8 MiB limit`, 'unsupported');
  }
  const total = base + nB + nT;
  const all = new Float64Array(total);
  all.set(counts.subarray(0, Math.min(counts.length, total)));
  for (let k = base; k < total; k++) all[k] = 1;
  const table = Buffer.alloc(nT * cs);
  const blockData = Buffer.alloc(nB * cs);
  blocks.forEach((bi, n) => {
    const off = (base + n) * cs;
    table.writeBigUInt64BE(BigInt(off), bi * 8);
    const blk = blockData.subarray(n * cs, (n + 1) * cs);
    const end = Math.min(total, (bi + 1) * per);
    for (let k = bi * per; k < end; k++) if (all[k] !== 0) setRefcountAt(blk, k - bi * per, rg.order, all[k]);
  });
  // new blocks, then the new table (both past the end of everything in use), sync, then the header switch
  await writeAt(img.file, base * cs, blockData, 'new refcount blocks');
  await writeAt(img.file, (base + nB) * cs, table, 'new refcount table');
  await img.file.sync();
  const sw = L.encodeHeaderRun([['refcount_table_offset', (base + nB) * cs], ['refcount_table_clusters', nT]]);
  assertNotLocked(img.path);
  await writeAt(img.file, sw.offset, sw.bytes, headerPath('refcount_table_offset'));
  await img.file.sync();
  actions.push(`rebuilt the refcount structure: ${nB} refcount block${nB === 1 ? '' : 's'} and a ${nT}-cluster table at ${hex(base * cs)}`);
}

async function fixCopiedFlags(img: Qcow2Image, st: CheckState, actions: string[]): Promise<void> {
  const cs = img.clusterSize;
  const g = img.g;
  const byTable = new Map<number, { l2Index: number; want: boolean }[]>();
  for (const e of st.copiedL2) {
    const l = byTable.get(e.l2Offset) ?? [];
    l.push(e);
    byTable.set(e.l2Offset, l);
  }
  for (const [l2Offset, entries] of byTable) {
    const t = Buffer.from(await img.file.readPadded(l2Offset, cs, `L2 table at ${hex(l2Offset)}`));
    for (const e of entries) {
      const p = e.l2Index * g.l2EntrySize;
      t.writeUInt32BE(withCopied(t.readUInt32BE(p), e.want), p);
    }
    await writeAt(img.file, l2Offset, t, `L2 table at ${hex(l2Offset)}`);
  }
  if (byTable.size) await img.file.sync();
  for (const e of st.copiedL1) {
    const p = e.l1Index * 8;
    const b = Buffer.from(img.l1.subarray(p, p + 8));
    b.writeUInt32BE(withCopied(b.readUInt32BE(0), e.want), 0);
    await writeAt(img.file, img.header.l1TableOffset + p, b, formatPath([step('L1', e.l1Index)]));
  }
  if (st.copiedL1.length) await img.file.sync();
  const n = st.copiedL1.length + st.copiedL2.length;
  actions.push(`set the COPIED flag from the refcount in ${n} L1/L2 entr${n === 1 ? 'y' : 'ies'}`);
}
