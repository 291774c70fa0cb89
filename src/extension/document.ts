/**
 * The custom document behind a qcow2 editor tab. The image is opened read-only; the only edits are
 * snapshot creations and deletions, which stay pending (undoable, dirty tab) until the user saves.
 * Saving applies them to the file in order; hot-exit backups record the pending list as JSON.
 */
import * as vscode from 'vscode';

export type SnapshotEdit = { kind: 'create'; name: string } | { kind: 'delete'; name: string };

/** Applies pending edits to an image file (the engine's snapshot writers; injected for testing). */
export type EditApplier = (path: string, edits: readonly SnapshotEdit[], signal?: AbortSignal) => Promise<void>;

interface BackupFile {
  version: 1;
  uri: string;
  pending: SnapshotEdit[];
}

export function describeEdit(e: SnapshotEdit): string {
  return e.kind === 'create' ? `Create snapshot "${e.name}"` : `Delete snapshot "${e.name}"`;
}

export class Qcow2Document implements vscode.CustomDocument {
  private pendingEdits: SnapshotEdit[] = [];
  private readonly changed = new vscode.EventEmitter<vscode.CustomDocumentEditEvent<Qcow2Document>>();
  /** For the provider: VS Code's dirty state and undo stack. */
  readonly onDidChange = this.changed.event;
  private readonly contentChanged = new vscode.EventEmitter<void>();
  /** The file or the pending edits changed: views should reload. */
  readonly onDidChangeContent = this.contentChanged.event;
  private readonly disposed = new vscode.EventEmitter<void>();
  readonly onDidDispose = this.disposed.event;
  private isDisposed = false;

  private constructor(readonly uri: vscode.Uri, private readonly applier: EditApplier) {}

  static async create(uri: vscode.Uri, backupId: string | undefined, applier: EditApplier): Promise<Qcow2Document> {
    const doc = new Qcow2Document(uri, applier);
    if (backupId) {
      const raw = await vscode.workspace.fs.readFile(vscode.Uri.parse(backupId));
      const backup = JSON.parse(Buffer.from(raw).toString('utf8')) as BackupFile;
      if (backup.version === 1 && Array.isArray(backup.pending)) doc.pendingEdits = backup.pending.filter(isEdit);
    }
    return doc;
  }

  get path(): string {
    return this.uri.fsPath;
  }

  /** Edits not yet written to the file, oldest first. */
  get pending(): readonly SnapshotEdit[] {
    return this.pendingEdits;
  }

  get dirty(): boolean {
    return this.pendingEdits.length > 0;
  }

  /** The snapshot names as they will be after saving: on-disk names with pending edits applied. */
  namesAfterSave(onDisk: readonly string[]): string[] {
    const names = [...onDisk];
    for (const e of this.pendingEdits) {
      if (e.kind === 'create') names.push(e.name);
      else {
        const i = names.indexOf(e.name);
        if (i >= 0) names.splice(i, 1);
      }
    }
    return names;
  }

  /** Records an edit: VS Code marks the tab dirty and puts undo/redo on its stack. */
  edit(e: SnapshotEdit): void {
    this.pendingEdits.push(e);
    this.contentChanged.fire();
    this.changed.fire({
      document: this,
      label: describeEdit(e),
      undo: () => {
        const i = this.pendingEdits.lastIndexOf(e);
        if (i >= 0) this.pendingEdits.splice(i, 1);
        else if (e.kind === 'create') this.pendingEdits.push({ kind: 'delete', name: e.name }); // saved already: undo = delete on next save
        else void vscode.window.showWarningMessage(`Snapshot "${e.name}" was already deleted from the file; that cannot be undone.`);
        this.contentChanged.fire();
      },
      redo: () => {
        this.pendingEdits.push(e);
        this.contentChanged.fire();
      },
    });
  }

  async save(cancellation?: vscode.CancellationToken): Promise<void> {
    await this.saveTo(this.uri, cancellation);
  }

  async saveAs(target: vscode.Uri, cancellation?: vscode.CancellationToken): Promise<void> {
    if (target.toString() !== this.uri.toString()) {
      await vscode.workspace.fs.copy(this.uri, target, { overwrite: true });
    }
    await this.saveTo(target, cancellation);
  }

  private async saveTo(target: vscode.Uri, cancellation?: vscode.CancellationToken): Promise<void> {
    if (this.pendingEdits.length === 0) return;
    const ac = new AbortController();
    const sub = cancellation?.onCancellationRequested(() => ac.abort());
    try {
      const edits = [...this.pendingEdits];
      await this.applier(target.fsPath, edits, ac.signal);
      if (target.toString() === this.uri.toString()) this.pendingEdits = this.pendingEdits.slice(edits.length);
    } finally {
      sub?.dispose();
    }
    this.contentChanged.fire();
  }

  async revert(): Promise<void> {
    this.pendingEdits = [];
    this.contentChanged.fire();
  }

  async backup(destination: vscode.Uri): Promise<vscode.CustomDocumentBackup> {
    const data: BackupFile = { version: 1, uri: this.uri.toString(), pending: this.pendingEdits };
    await vscode.workspace.fs.writeFile(destination, Buffer.from(JSON.stringify(data)));
    return {
      id: destination.toString(),
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
    this.contentChanged.fire();
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

function isEdit(e: unknown): e is SnapshotEdit {
  const x = e as SnapshotEdit;
  return !!x && (x.kind === 'create' || x.kind === 'delete') && typeof x.name === 'string';
}
