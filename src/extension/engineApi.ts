/**
 * The engine's write and check entry points the extension uses, in one place, so that write
 * operations on one file can be run one at a time whichever command starts them.
 */
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import * as check from '../engine/check/check';
import { brokenChainFinding, findBrokenChain } from '../engine/check/backingChain';
import * as compact from '../engine/ops/compact';
import { isLockedByQemu } from '../engine/io/lock';
import * as repair from '../engine/check/repair';
import * as snapshot from '../engine/ops/snapshot';
import * as create from '../engine/ops/create/create';
import * as resize from '../engine/ops/resize';
import { amendQcow2 } from '../engine/ops/amend';
import { amendEncryption, type EncryptionAmendOptions, type EncryptionAmendResult } from '../engine/ops/amendEncryption';
import type { Secret } from '../engine/crypto/secret';
import { editBitmap, type BitmapOp } from '../engine/ops/bitmaps';
import type { OptionEntry } from '../engine/ops/options';
import { convert as convertImage, type ConvertOptions, type ConvertResult } from '../engine/ops/convert';
import { commitImage, type CommitOptions, type CommitResult } from '../engine/ops/commit';
import { rebaseImage, type RebaseOptions, type RebaseResult } from '../engine/ops/rebase';
import { compareImages, type CompareOptions, type CompareResult } from '../engine/ops/compare';
import { Qcow2Image } from '../engine/image/image';

export interface WriteOpts {
  signal?: AbortSignal;
  onProgress?(done: number, total: number): void;
}

/**
 * The integrity check of one image (read-only; backing files are not needed for it): the file is
 * judged alone, and a backing chain QEMU could not open is one more finding (backing-chain-broken).
 */
export async function checkPath(path: string, opts: WriteOpts = {}): Promise<check.CheckResult> {
  const img = await check.openForCheck(path);
  try {
    const r = await check.checkImage(img, { signal: opts.signal, onProgress: opts.onProgress });
    const broken = await findBrokenChain(img);
    if (broken) r.findings.push(brokenChainFinding(broken));
    if (isLockedByQemu(path)) {
      r.findings.push({
        kind: 'in-use', severity: 'info', structure: 'image', message: 'The image is in use by QEMU, so its metadata may change while it is checked.',
        explanation: 'Findings of an image a running VM writes to can be transient; check again after shutting the VM down.',
      });
    }
    return r;
  } finally {
    await img.close();
  }
}

/**
 * Write operations on one file run one at a time: two at once (a snapshot deleted in one tab while
 * one is created from the palette, a compaction during a repair) each read the refcounts and
 * write their own view of them back, which corrupts the image. Keyed by the file's real path.
 */
const writeQueues = new Map<string, Promise<unknown>>();
function fileKey(p: string): string {
  try { return fs.realpathSync(p); } catch { return nodePath.resolve(p); }
}
async function serialized<T>(paths: string[], fn: () => Promise<T>): Promise<T> {
  const keys = [...new Set(paths.map(fileKey))].sort(); // one order for all: no deadlock between two
  const release: (() => void)[] = [];
  try {
    for (const k of keys) {
      const prev = writeQueues.get(k) ?? Promise.resolve();
      let done!: () => void;
      const mine = new Promise<void>(r => { done = r; });
      const tail = prev.then(() => mine);
      writeQueues.set(k, tail);
      release.push(() => { done(); if (writeQueues.get(k) === tail) writeQueues.delete(k); });
      await prev;
    }
    return await fn();
  } finally {
    for (const r of release) r();
  }
}

export function repairPath(path: string, mode: 'leaks' | 'all', opts: WriteOpts = {}): Promise<repair.RepairResult> {
  return serialized([path], () => repair.repairImage(path, mode, opts));
}
export async function createSnapshotAt(path: string, name: string, opts: WriteOpts = {}): Promise<unknown> {
  return serialized([path], () => snapshot.createSnapshot(path, name, opts));
}
export async function deleteSnapshotAt(path: string, name: string, opts: WriteOpts = {}): Promise<unknown> {
  return serialized([path], () => snapshot.deleteSnapshot(path, name, { ...opts, match: 'name' }));
}
export async function applySnapshotAt(path: string, name: string, opts: WriteOpts = {}): Promise<unknown> {
  return serialized([path], () => snapshot.applySnapshot(path, name, { ...opts, match: 'name' })); // the editor's pickers offer names
}
/** Snapshot names (and ids) as the file has them now. */
export async function listSnapshots(path: string): Promise<{ id: string; name: string }[]> {
  return (await snapshot.listSnapshots(path)).map(s => ({ id: s.id, name: s.name }));
}
export function compactPath(path: string, opts: WriteOpts & { output?: string; compress?: 'zlib' | 'zstd'; key?: Secret }): Promise<compact.CompactResult> {
  return serialized(opts.output ? [path, opts.output] : [path], () => compact.compactImage(path, opts));
}

/** New images and the image-management writes (create, resize, amend, bitmaps), one file at a time each. */
export function createImageAt(path: string, req: create.CreateRequest): Promise<{ size: number }> {
  return serialized([path], () => create.createQcow2(path, req));
}
export function resizeImageAt(path: string, spec: resize.SizeSpec, opts: resize.ResizeOptions): Promise<{ oldSize: number; newSize: number }> {
  return serialized([path], () => resize.resizeQcow2(path, spec, opts));
}
export function amendImageAt(path: string, entries: readonly OptionEntry[]): Promise<void> {
  return serialized([path], () => amendQcow2(path, entries));
}
export function editBitmapAt(path: string, name: string, op: BitmapOp): Promise<void> {
  return serialized([path], () => editBitmap(path, name, op)); // a merge's source is a bitmap of the same image
}

/**
 * Convert, commit, rebase and compare. Each waits for the writes queued on every file it reads or
 * writes (a convert's source read mid-commit would copy a half-committed chain).
 */

/** The files of an image's backing chain, top first (only the top when the chain does not open). */
export async function chainPaths(path: string): Promise<string[]> {
  let img: Qcow2Image | undefined;
  try {
    img = await Qcow2Image.open(path);
    const out: string[] = [];
    for (let l: { path: string; backing: unknown } | null = img; l; l = l.backing as typeof l) out.push(l.path);
    return out;
  } catch {
    return [path];
  } finally {
    await img?.close();
  }
}

export async function convertAt(opts: ConvertOptions, w: WriteOpts = {}): Promise<ConvertResult> {
  const read = (await Promise.all(opts.sources.map(chainPaths))).flat();
  return serialized([...read, opts.output], () => convertImage(opts, w.onProgress, w.signal));
}
export async function commitAt(path: string, opts: CommitOptions): Promise<CommitResult> {
  return serialized(await chainPaths(path), () => commitImage(path, opts));
}
export async function rebaseAt(path: string, opts: RebaseOptions, newBacking?: string): Promise<RebaseResult> {
  const read = opts.unsafe ? [path] : [...await chainPaths(path), ...(newBacking ? await chainPaths(newBacking) : [])];
  return serialized(read, () => rebaseImage(path, opts));
}
export async function compareAt(a: string, b: string, opts: CompareOptions): Promise<CompareResult> {
  return serialized([...await chainPaths(a), ...await chainPaths(b)], () => compareImages(a, b, opts));
}

/** Sparsify (src/guest/sparsify.ts): a compaction that also drops guest free space, in the same per-file queue. */
export function sparsifyPath(path: string, opts: WriteOpts & { output?: string; compress?: 'zlib' | 'zstd'; swap?: boolean; keys?: import('../engine/image/encryption').KeyLookup }): Promise<import('../guest/sparsify').SparsifyResult> {
  return serialized(opts.output ? [path, opts.output] : [path], () => import('../guest/sparsify').then(m => m.sparsifyImage(path, opts)));
}
export function amendEncryptionAt(path: string, key: Secret, o: EncryptionAmendOptions): Promise<EncryptionAmendResult> {
  return serialized([path], () => amendEncryption(path, key, o));
}
