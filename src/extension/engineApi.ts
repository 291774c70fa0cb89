/**
 * The engine's write and check entry points the extension uses, in one place (the engine modules
 * are written by other parts of the project; the extension only calls these names).
 */
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
const notYet = (what: string) => new Error(`${what} is not available in this build`);

export async function checkPath(_path: string, _opts: WriteOpts = {}): Promise<CheckReportLike> {
  throw notYet('check');
}
export async function repairPath(_path: string, _mode: 'leaks' | 'all', _opts: WriteOpts = {}): Promise<unknown> {
  throw notYet('repair');
}
export async function createSnapshotAt(path: string, name: string, opts: WriteOpts = {}): Promise<unknown> {
  return snapshot.createSnapshot(path, name, opts);
}
export async function deleteSnapshotAt(path: string, name: string, opts: WriteOpts = {}): Promise<unknown> {
  return snapshot.deleteSnapshot(path, name, { ...opts, match: 'name' });
}
export async function applySnapshotAt(path: string, name: string, opts: WriteOpts = {}): Promise<unknown> {
  return snapshot.applySnapshot(path, name, opts);
}
/** Snapshot names (and ids) as the file has them now. */
export async function listSnapshots(path: string): Promise<{ id: string; name: string }[]> {
  return (await snapshot.listSnapshots(path)).map(s => ({ id: s.id, name: s.name }));
}
export async function compactPath(_path: string, _opts: WriteOpts & { output?: string; compress?: 'zlib' | 'zstd' }): Promise<unknown> {
  throw notYet('compact');
}
