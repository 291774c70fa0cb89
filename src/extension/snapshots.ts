/**
 * Snapshot commands. Create and delete are edits of the open document: pending (undoable, dirty
 * tab) until saved. Without an open tab they are written at once. Apply rewrites the active L1
 * table, so it writes at once after a modal confirmation.
 */
import * as vscode from 'vscode';
import { confirm, refuseDirty, refuseLocked, Services, targetUri, UserError, withCancellableProgress } from './commandSupport';
import { applySnapshotAt, createSnapshotAt, deleteSnapshotAt, listSnapshots } from './engineApi';

export interface SnapshotOptions {
  name?: string;
  /** false: skip confirmations (tests, scripted callers). */
  confirm?: boolean;
  /** Write at once even if the image is open in a tab (default: a pending edit). */
  immediate?: boolean;
}

export interface SnapshotResult {
  name: string;
  /** 'pending': recorded in the open document until save; 'written': in the file. */
  state: 'pending' | 'written';
  /** Snapshot names after the operation (pending edits applied). */
  snapshots: string[];
}

async function currentNames(s: Services, uri: vscode.Uri): Promise<string[]> {
  const onDisk = (await listSnapshots(uri.fsPath)).map(x => x.name);
  return s.provider.document(uri)?.namesAfterSave(onDisk) ?? onDisk;
}

export async function createSnapshot(s: Services, uriArg?: unknown, opts: SnapshotOptions = {}): Promise<SnapshotResult | undefined> {
  const uri = targetUri(s, uriArg);
  const names = await currentNames(s, uri);
  const name = opts.name ?? await vscode.window.showInputBox({
    prompt: 'Name of the new internal snapshot',
    value: `snap${names.length + 1}`,
    validateInput: v => !v.trim() ? 'A name is needed' : names.includes(v) ? `A snapshot named "${v}" exists` : undefined,
  });
  if (name === undefined) return undefined;
  if (!name.trim()) throw new UserError('A snapshot needs a name.');
  if (names.includes(name)) throw new UserError(`A snapshot named "${name}" already exists.`);
  const doc = s.provider.document(uri);
  if (doc && !opts.immediate) {
    doc.edit({ kind: 'create', name });
    void vscode.window.setStatusBarMessage(`Snapshot "${name}" will be created when you save (Ctrl+S); Undo removes it.`, 5000);
    return { name, state: 'pending', snapshots: await currentNames(s, uri) };
  }
  refuseLocked(uri);
  await withCancellableProgress(`Creating snapshot "${name}"`, (signal, onProgress) => createSnapshotAt(uri.fsPath, name, { signal, onProgress }));
  doc?.fileChanged();
  return { name, state: 'written', snapshots: await currentNames(s, uri) };
}

async function pickSnapshot(names: string[], placeHolder: string): Promise<string | undefined> {
  if (names.length === 0) throw new UserError('The image has no internal snapshots.');
  return vscode.window.showQuickPick(names, { placeHolder });
}

export async function deleteSnapshot(s: Services, uriArg?: unknown, opts: SnapshotOptions = {}): Promise<SnapshotResult | undefined> {
  const uri = targetUri(s, uriArg);
  const names = await currentNames(s, uri);
  const name = opts.name ?? await pickSnapshot(names, 'Snapshot to delete');
  if (name === undefined) return undefined;
  if (!names.includes(name)) throw new UserError(`There is no snapshot named "${name}".`);
  const doc = s.provider.document(uri);
  if (doc && !opts.immediate) {
    doc.edit({ kind: 'delete', name });
    void vscode.window.setStatusBarMessage(`Snapshot "${name}" will be deleted when you save (Ctrl+S); Undo keeps it.`, 5000);
    return { name, state: 'pending', snapshots: await currentNames(s, uri) };
  }
  refuseLocked(uri);
  if (opts.confirm !== false && !await confirm(`Delete snapshot "${name}"?`, 'Its clusters are freed; this cannot be undone.', 'Delete')) return undefined;
  await withCancellableProgress(`Deleting snapshot "${name}"`, (signal, onProgress) => deleteSnapshotAt(uri.fsPath, name, { signal, onProgress }));
  doc?.fileChanged();
  return { name, state: 'written', snapshots: await currentNames(s, uri) };
}

export async function applySnapshot(s: Services, uriArg?: unknown, opts: SnapshotOptions = {}): Promise<SnapshotResult | undefined> {
  const uri = targetUri(s, uriArg);
  refuseDirty(s, uri);
  const names = await currentNames(s, uri);
  const name = opts.name ?? await pickSnapshot(names, 'Snapshot to revert the disk to');
  if (name === undefined) return undefined;
  if (!names.includes(name)) throw new UserError(`There is no snapshot named "${name}".`);
  refuseLocked(uri);
  if (opts.confirm !== false && !await confirm(`Revert the disk to snapshot "${name}"?`, 'The current disk content is discarded (qemu-img snapshot -a). Create a snapshot first to keep it.', 'Apply')) return undefined;
  await withCancellableProgress(`Applying snapshot "${name}"`, (signal, onProgress) => applySnapshotAt(uri.fsPath, name, { signal, onProgress }));
  s.provider.document(uri)?.fileChanged();
  return { name, state: 'written', snapshots: await currentNames(s, uri) };
}
