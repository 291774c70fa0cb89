/**
 * The engine's write and check entry points the extension uses, in one place (the engine modules
 * are written by other parts of the project; the extension only calls these names).
 */
import { Qcow2Image } from '../engine/image';

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
export async function createSnapshotAt(_path: string, _name: string, _opts: WriteOpts = {}): Promise<unknown> {
  throw notYet('snapshot create');
}
export async function deleteSnapshotAt(_path: string, _name: string, _opts: WriteOpts = {}): Promise<unknown> {
  throw notYet('snapshot delete');
}
export async function applySnapshotAt(_path: string, _name: string, _opts: WriteOpts = {}): Promise<unknown> {
  throw notYet('snapshot apply');
}
/** Snapshot names (and ids) as the file has them now. */
export async function listSnapshots(path: string): Promise<{ id: string; name: string }[]> {
  const img = await Qcow2Image.open(path, { openBacking: false });
  try {
    return img.snapshots.map(s => ({ id: s.id, name: s.name }));
  } finally {
    await img.close();
  }
}
export async function compactPath(_path: string, _opts: WriteOpts & { output?: string; compress?: 'zlib' | 'zstd' }): Promise<unknown> {
  throw notYet('compact');
}
