/**
 * The engine's write and check entry points the extension uses, in one place (the engine modules
 * are written by other parts of the project; the extension only calls these names).
 */
import * as check from '../engine/check';
import * as compact from '../engine/compact';
import { Qcow2Image } from '../engine/image';
import { isLockedByQemu } from '../engine/lock';
import * as repair from '../engine/repair';
import * as snapshot from '../engine/snapshot';

export interface CheckFindingLike {
  kind: string;
  severity: 'error' | 'warning' | 'info';
  hostOffset?: number;
  structure: string;
  message: string;
  explanation: string;
}
export interface CheckReportLike {
  leaks?: number;
  corruptions?: number;
  'check-errors'?: number;
  'image-end-offset'?: number;
  'total-clusters'?: number;
  'allocated-clusters'?: number;
  'fragmented-clusters'?: number;
  'compressed-clusters'?: number;
  findings: CheckFindingLike[];
}
export interface WriteOpts {
  signal?: AbortSignal;
  onProgress?(done: number, total: number): void;
}

/** The integrity check of one image (read-only; backing files are not needed for it). */
export async function checkPath(path: string, opts: WriteOpts = {}): Promise<CheckReportLike> {
  const img = await check.openForCheck(path);
  try {
    const r = await check.checkImage(img, { signal: opts.signal, onProgress: opts.onProgress });
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

export function repairPath(path: string, mode: 'leaks' | 'all', opts: WriteOpts = {}): Promise<repair.RepairResult> {
  return repair.repairImage(path, mode, opts);
}
export async function createSnapshotAt(path: string, name: string, opts: WriteOpts = {}): Promise<unknown> {
  return snapshot.createSnapshot(path, name, opts);
}
export async function deleteSnapshotAt(path: string, name: string, opts: WriteOpts = {}): Promise<unknown> {
  return snapshot.deleteSnapshot(path, name, { ...opts, match: 'name' });
}
export async function applySnapshotAt(path: string, name: string, opts: WriteOpts = {}): Promise<unknown> {
  return snapshot.applySnapshot(path, name, { ...opts, match: 'name' }); // the editor's pickers offer names
}
/** Snapshot names (and ids) as the file has them now. */
export async function listSnapshots(path: string): Promise<{ id: string; name: string }[]> {
  return (await snapshot.listSnapshots(path)).map(s => ({ id: s.id, name: s.name }));
}
export function compactPath(path: string, opts: WriteOpts & { output?: string; compress?: 'zlib' | 'zstd' }): Promise<compact.CompactResult> {
  return compact.compactImage(path, opts);
}
