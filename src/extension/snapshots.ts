/**
 * Snapshot commands. Each one writes the image at once, only after the user's word: Create after
 * the name is entered (the input box says Enter writes it; Escape cancels), Delete and Apply after
 * a modal confirmation. Nothing is ever pending in the open document and its tab is never dirty,
 * so Save or auto-save (files.autoSave) have nothing to write. The write runs with cancellable
 * progress (the engine honours cancel until its first write); the engine's snapshot writers are
 * ordered and crash-safe. Afterwards the tabs reload and their banner says what the file now has.
 */
import * as vscode from 'vscode';
import { isCancelled } from '../engine/cancel';
import { announce, confirm, refuseLocked, Services, targetUri, UserError, withCancellableProgress } from './commandSupport';
import { applySnapshotAt, createSnapshotAt, deleteSnapshotAt, listSnapshots, WriteOpts } from './engineApi';

export interface SnapshotOptions {
  name?: string;
  /** false: skip the modal confirmation of Delete and Apply (tests, scripted callers). */
  confirm?: boolean;
}

export interface SnapshotResult {
  name: string;
  /** Snapshot names in the file after the write. */
  snapshots: string[];
  /** What the banner and the status bar said, e.g. 'Snapshot "a" deleted from x.qcow2.' */
  message: string;
}

type Command = 'createSnapshot' | 'deleteSnapshot' | 'revertSnapshot';

/** The user said no (Escape in the name box or the picker, Cancel in the dialog): nothing was written. */
function declined(s: Services, uri: vscode.Uri, command: Command): undefined {
  announce(s, uri, command, 'done', `Cancelled: ${vscode.workspace.asRelativePath(uri)} was not changed.`);
  return undefined;
}

async function namesOnDisk(uri: vscode.Uri): Promise<string[]> {
  return (await listSnapshots(uri.fsPath)).map(x => x.name);
}

/** Writes with progress, then reloads the image's tabs and says what the file now has. */
async function write(s: Services, uri: vscode.Uri, command: Command, name: string, title: string, done: string, op: (path: string, name: string, opts: WriteOpts) => Promise<unknown>): Promise<SnapshotResult> {
  announce(s, uri, command, 'running', `${title}…`);
  try {
    await withCancellableProgress(title, (signal, onProgress) => op(uri.fsPath, name, { signal, onProgress }));
  } catch (e) {
    // the engine stops on cancel only before its first write: then the file is as it was
    announce(s, uri, command, isCancelled(e) ? 'done' : 'failed', isCancelled(e) ? `Cancelled: ${vscode.workspace.asRelativePath(uri)} was not changed.` : `${title} failed: ${e instanceof Error ? e.message : String(e)}`);
    throw e;
  } finally {
    s.provider.document(uri)?.fileChanged(); // the views show what the file has now, whatever happened
  }
  const message = `${done} ${vscode.workspace.asRelativePath(uri)}.`;
  announce(s, uri, command, 'done', message);
  return { name, snapshots: await namesOnDisk(uri), message };
}

export async function createSnapshot(s: Services, uriArg?: unknown, opts: SnapshotOptions = {}): Promise<SnapshotResult | undefined> {
  const uri = targetUri(s, uriArg);
  refuseLocked(uri); // before asking for a name that could not be written
  const names = await namesOnDisk(uri);
  const name = opts.name ?? await vscode.window.showInputBox({
    title: `Create a snapshot in ${vscode.workspace.asRelativePath(uri)}`,
    prompt: 'Name of the new internal snapshot. Enter writes it to the image now (qemu-img snapshot -c); Escape cancels.',
    value: `snap${names.length + 1}`,
    validateInput: v => !v.trim() ? 'A name is needed' : names.includes(v) ? `A snapshot named "${v}" exists` : undefined,
  });
  if (name === undefined) return declined(s, uri, 'createSnapshot');
  if (!name.trim()) throw new UserError('A snapshot needs a name.');
  if (names.includes(name)) throw new UserError(`A snapshot named "${name}" already exists.`);
  return write(s, uri, 'createSnapshot', name, `Creating snapshot "${name}"`, `Snapshot "${name}" created in`, createSnapshotAt);
}

async function pickSnapshot(names: string[], placeHolder: string): Promise<string | undefined> {
  if (names.length === 0) throw new UserError('The image has no internal snapshots.');
  return vscode.window.showQuickPick(names, { placeHolder });
}

export async function deleteSnapshot(s: Services, uriArg?: unknown, opts: SnapshotOptions = {}): Promise<SnapshotResult | undefined> {
  const uri = targetUri(s, uriArg);
  const names = await namesOnDisk(uri);
  const name = opts.name ?? await pickSnapshot(names, 'Snapshot to delete (you are asked to confirm)');
  if (name === undefined) return declined(s, uri, 'deleteSnapshot');
  if (!names.includes(name)) throw new UserError(`There is no snapshot named "${name}".`);
  refuseLocked(uri);
  if (opts.confirm !== false && !await confirm(`Delete snapshot "${name}"?`, 'Its clusters are freed; this cannot be undone.', 'Delete')) return declined(s, uri, 'deleteSnapshot');
  return write(s, uri, 'deleteSnapshot', name, `Deleting snapshot "${name}"`, `Snapshot "${name}" deleted from`, deleteSnapshotAt);
}

export async function applySnapshot(s: Services, uriArg?: unknown, opts: SnapshotOptions = {}): Promise<SnapshotResult | undefined> {
  const uri = targetUri(s, uriArg);
  const names = await namesOnDisk(uri);
  const name = opts.name ?? await pickSnapshot(names, 'Snapshot to revert the disk to');
  if (name === undefined) return declined(s, uri, 'revertSnapshot');
  if (!names.includes(name)) throw new UserError(`There is no snapshot named "${name}".`);
  refuseLocked(uri);
  if (opts.confirm !== false && !await confirm(`Revert the disk to snapshot "${name}"?`, 'The current disk content is discarded (qemu-img snapshot -a). Create a snapshot first to keep it.', 'Apply')) return declined(s, uri, 'revertSnapshot');
  return write(s, uri, 'revertSnapshot', name, `Applying snapshot "${name}"`, `Disk reverted to snapshot "${name}" in`, applySnapshotAt);
}
