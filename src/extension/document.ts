/**
 * The custom document behind a qcow2 editor tab. The image is opened read-only and the document has
 * no edits: VS Code never sees it dirty, so neither Save nor auto-save (files.autoSave) can write
 * anything. Every write (snapshot create/delete/apply, repair, compaction in place) is a command
 * that asks first and writes at once with progress; afterwards it calls fileChanged().
 */
import * as vscode from 'vscode';

export class Qcow2Document implements vscode.CustomDocument {
  private readonly contentChanged = new vscode.EventEmitter<void>();
  /** The file changed (on disk, or a command wrote it): views reload, the check re-runs. */
  readonly onDidChangeContent = this.contentChanged.event;
  private readonly disposed = new vscode.EventEmitter<void>();
  readonly onDidDispose = this.disposed.event;
  private isDisposed = false;

  constructor(readonly uri: vscode.Uri) {}

  get path(): string {
    return this.uri.fsPath;
  }

  /** The file changed on disk (watcher) or a command wrote it: reload views. */
  fileChanged(): void {
    if (!this.isDisposed) this.contentChanged.fire();
  }

  get isClosed(): boolean {
    return this.isDisposed;
  }

  dispose(): void {
    if (this.isDisposed) return;
    this.isDisposed = true;
    this.disposed.fire();
    this.contentChanged.dispose();
    this.disposed.dispose();
  }
}
