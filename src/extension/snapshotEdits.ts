/**
 * The pending snapshot edits of one open image, without VS Code: the list, undo/redo of each edit,
 * the names the image will have after saving, applying them to a file, and the hot-exit backup
 * format. Qcow2Document (document.ts) wraps it for VS Code; test/extension tests it with QEMU.
 */
import { throwIfCancelled } from '../engine/cancel';
import { isLockedByQemu } from '../engine/io/lock';
import { createSnapshotAt, deleteSnapshotAt } from './engineApi';

export type SnapshotEdit = { kind: 'create'; name: string } | { kind: 'delete'; name: string };

/**
 * Applies edits to an image file, oldest first (the engine's snapshot writers); `onApplied` is
 * called after each edit is written, so a save that fails part-way knows what reached the file.
 */
export type EditApplier = (path: string, edits: readonly SnapshotEdit[], signal?: AbortSignal, onApplied?: (e: SnapshotEdit) => void) => Promise<void>;

/** The applier saving uses: refuses an image QEMU holds, then writes each edit with the engine. */
export const applyWithEngine: EditApplier = async (path, edits, signal, onApplied) => {
  if (isLockedByQemu(path)) throw new Error(`${path} is in use by QEMU (a running VM or qemu-nbd holds a lock on it); the snapshot edits were not saved.`);
  for (const e of edits) {
    throwIfCancelled(signal, path, 'saving snapshot edits');
    if (e.kind === 'create') await createSnapshotAt(path, e.name, { signal });
    else await deleteSnapshotAt(path, e.name, { signal });
    onApplied?.(e);
  }
};

export interface BackupFile {
  version: 1;
  uri: string;
  pending: SnapshotEdit[];
}

export function describeEdit(e: SnapshotEdit): string {
  return e.kind === 'create' ? `Create snapshot "${e.name}"` : `Delete snapshot "${e.name}"`;
}

export function isEdit(e: unknown): e is SnapshotEdit {
  const x = e as SnapshotEdit;
  return !!x && (x.kind === 'create' || x.kind === 'delete') && typeof x.name === 'string';
}

export class SnapshotEditList {
  private list: SnapshotEdit[] = [];

  constructor(initial: readonly SnapshotEdit[] = []) {
    this.list = initial.filter(isEdit).map(e => ({ ...e }));
  }

  /** Edits not yet written to the file, oldest first. */
  get pending(): readonly SnapshotEdit[] {
    return this.list;
  }

  get dirty(): boolean {
    return this.list.length > 0;
  }

  /** The snapshot names after saving: on-disk names with the pending edits applied. */
  namesAfterSave(onDisk: readonly string[]): string[] {
    const names = [...onDisk];
    for (const e of this.list) {
      if (e.kind === 'create') names.push(e.name);
      else {
        const i = names.indexOf(e.name);
        if (i >= 0) names.splice(i, 1);
      }
    }
    return names;
  }

  /**
   * Records an edit and returns its undo/redo. Undoing an edit that was saved meanwhile records the
   * inverse (a saved create becomes a pending delete); a saved delete cannot be undone (its clusters
   * are gone) and undo returns a message saying so.
   */
  add(e: SnapshotEdit): { undo(): string | undefined; redo(): void } {
    this.list.push(e);
    return {
      undo: () => {
        const i = this.list.lastIndexOf(e);
        if (i >= 0) this.list.splice(i, 1);
        else if (e.kind === 'create') this.list.push({ kind: 'delete', name: e.name });
        else return `Snapshot "${e.name}" was already deleted from the file; that cannot be undone.`;
        return undefined;
      },
      redo: () => {
        this.list.push(e);
      },
    };
  }

  /** Writes the pending edits to `path`; when it is the document's own file they stop being pending. */
  async applyTo(path: string, applier: EditApplier, sameFile: boolean, signal?: AbortSignal): Promise<void> {
    if (this.list.length === 0) return;
    const edits = [...this.list];
    // each written edit stops pending at once: after a failure part-way, saving again must not
    // repeat the edits already in the file (a second snapshot of the same name)
    const done = (e: SnapshotEdit) => { if (sameFile) { const i = this.list.indexOf(e); if (i >= 0) this.list.splice(i, 1); } };
    await applier(path, edits, signal, done);
    // edits recorded while saving stay pending
    if (sameFile) this.list = this.list.filter(e => !edits.includes(e));
  }

  clear(): void {
    this.list = [];
  }

  toBackup(uri: string): string {
    const data: BackupFile = { version: 1, uri, pending: this.list };
    return JSON.stringify(data);
  }

  static fromBackup(text: string): SnapshotEditList {
    const data = JSON.parse(text) as BackupFile;
    if (data?.version !== 1 || !Array.isArray(data.pending)) throw new Error('not a QCOW2 Lens backup');
    return new SnapshotEditList(data.pending);
  }
}
