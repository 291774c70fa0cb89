/**
 * The custom document behind a qcow2 editor tab. The image is opened read-only; the only edits are
 * snapshot creations and deletions, which stay pending (undoable, dirty tab) until the user saves.
 * Saving applies them to the file in order; hot-exit backups record the pending list as JSON.
 * The edit list itself is vscode-free (snapshotEdits.ts); this class adds VS Code's events.
 */
import * as vscode from 'vscode';
import { refuseLocked } from './userError';
import { describeEdit, EditApplier, SnapshotEdit, SnapshotEditList } from './snapshotEdits';

export type { EditApplier, SnapshotEdit } from './snapshotEdits';

export class Qcow2Document implements vscode.CustomDocument {
  private edits = new SnapshotEditList();
  private readonly changed = new vscode.EventEmitter<vscode.CustomDocumentEditEvent<Qcow2Document>>();
  /** For the provider: VS Code's dirty state and undo stack. */
  readonly onDidChange = this.changed.event;
  private readonly contentChanged = new vscode.EventEmitter<'disk' | 'edits'>();
  /** 'disk': the file changed (views reload, the check re-runs); 'edits': the pending list changed. */
  readonly onDidChangeContent = this.contentChanged.event;
  private readonly disposed = new vscode.EventEmitter<void>();
  readonly onDidDispose = this.disposed.event;
  private isDisposed = false;

  private constructor(readonly uri: vscode.Uri, private readonly applier: EditApplier) {}

  static async create(uri: vscode.Uri, backupId: string | undefined, applier: EditApplier): Promise<Qcow2Document> {
    const doc = new Qcow2Document(uri, applier);
    if (backupId) {
      const raw = await vscode.workspace.fs.readFile(vscode.Uri.parse(backupId));
      doc.edits = SnapshotEditList.fromBackup(Buffer.from(raw).toString('utf8'));
    }
    return doc;
  }

  get path(): string {
    return this.uri.fsPath;
  }

  /** Edits not yet written to the file, oldest first. */
  get pending(): readonly SnapshotEdit[] {
    return this.edits.pending;
  }

  get dirty(): boolean {
    return this.edits.dirty;
  }

  /** The snapshot names as they will be after saving. */
  namesAfterSave(onDisk: readonly string[]): string[] {
    return this.edits.namesAfterSave(onDisk);
  }

  /** Records an edit: VS Code marks the tab dirty and puts undo/redo on its stack. */
  edit(e: SnapshotEdit): void {
    const { undo, redo } = this.edits.add(e);
    this.contentChanged.fire('edits');
    this.changed.fire({
      document: this,
      label: describeEdit(e),
      undo: () => {
        const problem = undo();
        if (problem) void vscode.window.showWarningMessage(problem);
        this.contentChanged.fire('edits');
      },
      redo: () => {
        redo();
        this.contentChanged.fire('edits');
      },
    });
  }

  async save(cancellation?: vscode.CancellationToken): Promise<void> {
    await this.saveTo(this.uri, cancellation);
  }

  async saveAs(target: vscode.Uri, cancellation?: vscode.CancellationToken): Promise<void> {
    if (target.toString() !== this.uri.toString()) {
      // never overwrite an image a running QEMU holds (the copy would replace a live VM's disk)
      if (target.scheme === 'file') refuseLocked(target);
      await vscode.workspace.fs.copy(this.uri, target, { overwrite: true });
    }
    await this.saveTo(target, cancellation);
  }

  private async saveTo(target: vscode.Uri, cancellation?: vscode.CancellationToken): Promise<void> {
    if (!this.edits.dirty) return;
    const ac = new AbortController();
    const sub = cancellation?.onCancellationRequested(() => ac.abort());
    try {
      await this.edits.applyTo(target.fsPath, this.applier, target.toString() === this.uri.toString(), ac.signal);
    } finally {
      sub?.dispose();
    }
    this.contentChanged.fire('disk');
    this.contentChanged.fire('edits');
  }

  async revert(): Promise<void> {
    this.edits.clear();
    this.contentChanged.fire('edits');
  }

  async backup(destination: vscode.Uri): Promise<vscode.CustomDocumentBackup> {
    await vscode.workspace.fs.writeFile(destination, Buffer.from(this.edits.toBackup(this.uri.toString())));
    return {
      id: destination.toString(),
      // VS Code ignores the result; returning the promise lets a caller wait for the file to go.
      // eslint-disable-next-line @typescript-eslint/no-misused-promises
      delete: async () => {
        try {
          await vscode.workspace.fs.delete(destination);
        } catch {
          // already gone
        }
      },
    };
  }

  /** The file changed on disk (watcher): reload views. */
  fileChanged(): void {
    this.contentChanged.fire('disk');
  }

  get isClosed(): boolean {
    return this.isDisposed;
  }

  dispose(): void {
    if (this.isDisposed) return;
    this.isDisposed = true;
    this.disposed.fire();
    this.changed.dispose();
    this.contentChanged.dispose();
    this.disposed.dispose();
  }
}
