/**
 * The integrity check, equal to `qemu-img check` (QEMU 7.2, block/qcow2-refcount.c
 * qcow2_check_refcounts): expected reference counts come from usage.ts (every user of every
 * cluster), stored ones from the refcount blocks; the comparison, the OFLAG_COPIED check and the
 * fragmentation counters follow QEMU's rules so the numbers are the same as qemu-img's. On top of
 * the counters, every problem becomes a Finding with a structure path and plain-language text.
 */
import { throwIfCancelled } from '../cancel';
import { hex } from '../errors';
import { Qcow2Image } from '../image/image';
import * as L from '../qcow2/layout';
import { formatPath, formatStep, join, PATH_SEPARATOR, step } from '../path';
import { type ExactRefcounts, maxRefcount, type RefcountArray, refcountText } from '../qcow2/refcount';
import { EXPLAIN, type CheckOptions, type CheckResult, type CheckState, type Finding } from './findings';
import { CopiedCheck } from './oflagCopied';
import { ROLE_CONFLICT, ROLE_MASK, ROLE_NAMES } from './roles';
import { snapshotTableFindings, unreadableSnapshotTableFinding } from './snapshotTable';
import { readStoredRefcounts } from './storedRefcounts';
import { clusterUsage, NoOwnersError } from './usage';
import type { UsageIssue, UsageIssueKind } from './usageCounter';

export type { CheckOptions, CheckResult, CheckState, Finding, Severity } from './findings';

/** Where the header's feature bits are, for the dirty and corrupt findings. */
const INCOMPAT_FEATURES_PATH = formatPath([step('header', undefined, { field: 'incompatible_features' })]);

function issueFinding(i: UsageIssue): Finding {
  const kind = i.kind === 'l2-entry-unaligned' && i.l2EntryFix ? 'l2-entry-unaligned' : i.kind;
  const explanation = i.kind === 'l2-entry-unaligned' && i.l2EntryFix ? EXPLAIN['l2-entry-unaligned-zero'] : EXPLAIN[i.kind];
  return { kind, severity: 'error', hostOffset: i.hostOffset, structure: i.structure, message: i.message.endsWith('.') ? i.message : i.message + '.', explanation };
}

/**
 * Runs the analysis (no writes); `checkImage` formats it, `repairImage` acts on it. The usage walk
 * records no owners unless asked (a clean or only leaking image never needs them: 3 bytes a host
 * cluster instead of 15); a finding that must name an owner makes it walk again with them (the
 * stored refcounts, read once, serve both walks).
 */
export async function analyzeImage(img: Qcow2Image, opts: CheckOptions = {}): Promise<CheckState> {
  let shown = 0;
  const onProgress = opts.onProgress && ((d: number, t: number) => { if (d >= shown) { shown = d; opts.onProgress!(d, t); } });
  const o = { ...opts, onProgress };
  o.onProgress?.(0, TOTAL_STEPS);
  // stored refcounts first, so the OFLAG_COPIED check can run while usage walks the active L2 tables;
  // 64-bit refcounts of 2^53 or more are compared as rounded numbers (still larger than any count
  // of references) but reported and repaired from their exact values
  const storedExact: ExactRefcounts = new Map();
  const storedAll = await readStoredRefcounts(img, Math.ceil(img.file.size / img.clusterSize) + 1, storedExact);
  if (opts.owners) return analyzeOnce(img, o, storedAll, storedExact, true);
  try {
    return await analyzeOnce(img, o, storedAll, storedExact, false);
  } catch (e) {
    if (!(e instanceof NoOwnersError)) throw e;
    return analyzeOnce(img, o, storedAll, storedExact, true);
  }
}

/** The analysis's progress steps: refcounts and usage read, findings listed, refcounts compared, COPIED flags checked. */
const TOTAL_STEPS = 4;

async function analyzeOnce(img: Qcow2Image, opts: CheckOptions, storedAll: RefcountArray, storedExact: ExactRefcounts, owners: boolean): Promise<CheckState> {
  const progress = (d: number) => opts.onProgress?.(d, TOTAL_STEPS);
  const maxFindings = opts.maxFindings ?? 1000;
  const h = img.header;
  const cs = img.clusterSize;
  const rg = img.rg;
  const copied = new CopiedCheck(img, storedAll, storedExact);
  const usage = await clusterUsage(img, { signal: opts.signal, owners, onActiveL2: (t, li, off) => copied.table(t, li, off) });
  progress(1);
  throwIfCancelled(opts.signal, img.path, 'check');

  const st: CheckState = {
    usage, stored: storedAll.subarray(0, usage.nbClusters), storedExact, checkErrors: 0, corruptions: usage.issueCount, leaks: 0,
    rebuild: usage.issues.some(i => i.rebuild), highestCluster: 0,
    copiedL1: [], copiedL2: [], leakedClusters: [], lowClusters: [], findings: [], findingsDropped: 0,
  };
  const add = (f: Finding) => {
    if (st.findings.length < maxFindings) st.findings.push(f);
    else st.findingsDropped++;
  };
  if (h.incompatibleFeatures & L.INCOMPAT_CORRUPT) {
    add({ kind: 'corrupt-bit', severity: 'error', hostOffset: L.HEADER_FIELD.incompatible_features.offset, structure: INCOMPAT_FEATURES_PATH, message: 'The image is marked corrupt (incompatible feature bit 1).', explanation: EXPLAIN['corrupt-bit'] });
  }
  if (h.incompatibleFeatures & L.INCOMPAT_DIRTY) {
    add({ kind: 'dirty-bit', severity: 'warning', hostOffset: L.HEADER_FIELD.incompatible_features.offset, structure: INCOMPAT_FEATURES_PATH, message: 'The image is marked dirty (incompatible feature bit 0): it was not closed cleanly.', explanation: EXPLAIN['dirty-bit'] });
  }
  const snap = snapshotTableFindings(img);
  for (const f of snap.findings) add(f);
  st.corruptions += snap.corruptions;
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
    // a run's entries as a range within the block's index: `refcount block[0x10..0x1f]`
    const range = n > 1 ? (Math.floor(last / per) === ti ? `..${hex(last % per)}` : ' and on') : '';
    const block = formatStep(step('refcount block', k % per));
    return formatPath(join(step('refcount table', ti))) + PATH_SEPARATOR + block.slice(0, -1) + range + ']';
  };
  let runKind = '', runStart = -1, runLen = 0, runStored = 0, runRefs = 0;
  const flushRun = () => {
    if (runLen === 0) return;
    const k = runStart, at = hex(k * cs);
    if (runKind === 'leak') {
      const storedText = refcountText(runStored, storedExact, k);
      add({
        kind: 'leak', severity: 'warning', hostOffset: k * cs, structure: refcountPath(k, runLen),
        message: runLen === 1
          ? `Cluster at ${at} has refcount ${storedText} but ${runRefs === 0 ? 'nothing uses it' : `only ${runRefs} user${runRefs === 1 ? '' : 's'}`} (leaked).`
          : `${runLen} consecutive clusters from ${at} have refcounts higher than their users (leaked), e.g. refcount ${storedText} with ${runRefs} users.`,
        explanation: EXPLAIN.leak, count: runLen,
      });
    } else if (runKind === 'unreadable') {
      add({ kind: 'refcount-unreadable', severity: 'error', hostOffset: k * cs, structure: `refcounts of clusters ${at}–${hex((k + runLen) * cs - 1)}`, message: `The refcounts of ${runLen} clusters from ${at} cannot be read because their refcount block is misaligned or lies beyond the largest offset QEMU reads (2^63 − 2^30).`, explanation: EXPLAIN['refcount-unreadable'], count: runLen });
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

  // a snapshot table QEMU's check cannot read stops its check before the refcounts: one check error, nothing else counted
  const unreadable = unreadableSnapshotTableFinding(img);
  if (unreadable) {
    Object.assign(st, { checkErrors: 1, corruptions: 0, leaks: 0, rebuild: false, copiedL1: [], copiedL2: [], leakedClusters: [], lowClusters: [], findings: [unreadable], findingsDropped: 0, incomplete: true });
  }

  if (st.findingsDropped > 0) {
    st.findings.push({ kind: 'findings-truncated', severity: 'info', structure: 'check', message: `${st.findingsDropped} further findings are not listed (the first ${maxFindings} are).`, explanation: EXPLAIN['findings-truncated'], count: st.findingsDropped });
  }
  return st;
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
 * data file (the check needs neither; repair opens it writable), with table bytes past the end of a truncated file read
 * as zeros so the truncation is judged rather than refused, a missing refcount table accepted, and
 * the snapshot table read as QEMU's check reads it ('repair': as `-r all` reads it).
 */
export function openForCheck(path: string, writable = false, mode: 'check' | 'repair' = writable ? 'repair' : 'check'): Promise<Qcow2Image> {
  return Qcow2Image.open(path, { writable, openBacking: false, openDataFile: false, zeroPastEof: true, checkMode: mode });
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
