/**
 * "New Image…" and "Create Overlay…": a new qcow2 file as `qemu-img create` makes it (the engine's
 * create writes a temporary file, syncs and renames it), then opened in QCOW2 Lens. An overlay is a
 * new image whose backing file is the open one (a shallow copy: `qemu-img create -b`).
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { OptionError, parseQcow2CreateOptions, parseQemuSize, type OptionEntry, type Preallocation } from '../engine/ops/options';
import { formatBytes } from '../engine/units';
import { refuseLocked, Services, targetUri, UserError } from './commandSupport';
import { VIEW_TYPE } from './editorProvider';
import { createImageAt } from './engineApi';

export interface NewImageOptions {
  /** Path or URI of the new file. */
  output?: string | vscode.Uri;
  /** qemu-img's size syntax ("20G", "512M", bytes). */
  size?: string;
  /** qemu-img create -o options (cluster_size, preallocation, compat, …). */
  options?: Record<string, string>;
  /** Open the new image in QCOW2 Lens afterwards (default true). */
  open?: boolean;
}

export interface Created { output: string; size: number }

/** The size box: qemu-img's syntax, checked as the user types. */
function sizeError(text: string): string | undefined {
  const n = parseQemuSize(text);
  if (n === undefined) return 'A size such as 20G, 512M or 1073741824 (K, M, G, T, P, E are powers of 1024).';
  if (n === 0) return 'The size must be more than 0 bytes.';
  return undefined;
}

function entries(opts: Record<string, string> | undefined): OptionEntry[] {
  return Object.entries(opts ?? {}).map(([key, value]) => ({ key, value }));
}

async function create(dest: vscode.Uri, size: number | undefined, extra: OptionEntry[], signalTitle: string): Promise<{ size: number }> {
  if (dest.scheme !== 'file') throw new UserError('New images are written to files on this machine (or the remote host VS Code is connected to).');
  refuseLocked(dest);
  let req;
  try {
    req = parseQcow2CreateOptions(size === undefined ? extra : [{ key: 'size', value: String(size) }, ...extra]);
  } catch (e) {
    if (e instanceof OptionError) throw new UserError(e.message.split('\n')[0]);
    throw e;
  }
  return vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: signalTitle, cancellable: true }, async (_p, token) => {
    const ac = new AbortController();
    const sub = token.onCancellationRequested(() => ac.abort());
    try {
      return await createImageAt(dest.fsPath, { ...req, signal: ac.signal });
    } catch (e) {
      if (e instanceof OptionError) throw new UserError(e.message.split('\n')[0]);
      throw e;
    } finally {
      sub.dispose();
    }
  });
}

async function finish(dest: vscode.Uri, size: number, open: boolean | undefined, what: string): Promise<Created> {
  if (open !== false) await vscode.commands.executeCommand('vscode.openWith', dest, VIEW_TYPE);
  void vscode.window.showInformationMessage(`${what} ${vscode.workspace.asRelativePath(dest)} (${formatBytes(size)} virtual disk).`);
  return { output: dest.fsPath, size };
}

const PREALLOCATIONS: { label: string; value: Preallocation; detail: string }[] = [
  { label: 'Sparse', value: 'off', detail: 'The file grows as the guest writes (qemu-img\'s default).' },
  { label: 'Metadata', value: 'metadata', detail: 'Tables for the whole disk written now; data clusters still grow on demand.' },
  { label: 'Allocated (falloc)', value: 'falloc', detail: 'The whole disk reserved on the host file system without writing it.' },
  { label: 'Full', value: 'full', detail: 'The whole disk written with zeros now: slow, but never runs out of host space later.' },
];

/** `uriArg`: the folder the Explorer's context menu was opened on, where the dialog starts. */
export async function newImage(_s: Services, uriArg?: unknown, opts: NewImageOptions = {}): Promise<Created | undefined> {
  let dest = typeof opts.output === 'string' ? vscode.Uri.file(opts.output) : opts.output;
  let sizeText = opts.size;
  let extra = entries(opts.options);
  if (!dest) {
    const folder = uriArg instanceof vscode.Uri ? uriArg : vscode.workspace.workspaceFolders?.[0]?.uri;
    dest = await vscode.window.showSaveDialog({ title: 'New qcow2 image', defaultUri: folder && vscode.Uri.joinPath(folder, 'disk.qcow2'), filters: { 'QCOW2 image': ['qcow2'] }, saveLabel: 'Create' });
    if (!dest) return undefined;
  }
  if (sizeText === undefined) {
    sizeText = await vscode.window.showInputBox({ title: 'New qcow2 image: virtual disk size', value: '20G', prompt: 'The size the guest sees. K, M, G, T mean KiB, MiB, GiB, TiB.', validateInput: sizeError });
    if (sizeText === undefined) return undefined;
    const pick = await vscode.window.showQuickPick(PREALLOCATIONS.map(p => ({ ...p, description: p.value })), { title: 'New qcow2 image: allocation', placeHolder: 'How much of the disk to allocate now?' });
    if (!pick) return undefined;
    extra = [...extra, { key: 'preallocation', value: pick.value }];
  }
  const err = sizeError(sizeText);
  if (err) throw new UserError(err);
  const r = await create(dest, parseQemuSize(sizeText), extra, `Creating ${path.basename(dest.fsPath)}`);
  return finish(dest, r.size, opts.open, 'Created');
}

export interface OverlayOptions {
  output?: string | vscode.Uri;
  options?: Record<string, string>;
  open?: boolean;
}

/** A new image backed by this one: the guest sees this image's content, and writes go to the overlay. */
export async function createOverlay(s: Services, uriArg?: unknown, opts: OverlayOptions = {}): Promise<Created | undefined> {
  const base = targetUri(s, uriArg);
  let dest = typeof opts.output === 'string' ? vscode.Uri.file(opts.output) : opts.output;
  if (!dest) {
    dest = await vscode.window.showSaveDialog({
      title: `Overlay on ${path.basename(base.fsPath)}`, saveLabel: 'Create Overlay',
      defaultUri: base.with({ path: base.path.replace(/(\.qcow2)?$/, '-overlay.qcow2') }), filters: { 'QCOW2 image': ['qcow2'] },
    });
    if (!dest) return undefined;
  }
  if (dest.fsPath === base.fsPath) throw new UserError('The overlay must be a new file, not the image it is backed by.');
  // the backing name as qemu-img records what it is given: relative when beside the overlay
  const rel = path.relative(path.dirname(dest.fsPath), base.fsPath);
  const name = rel.startsWith('..') || path.isAbsolute(rel) ? base.fsPath : rel;
  const r = await create(dest, undefined, [{ key: 'backing_file', value: name }, { key: 'backing_fmt', value: 'qcow2' }, ...entries(opts.options)], `Creating an overlay on ${path.basename(base.fsPath)}`);
  return finish(dest, r.size, opts.open, 'Created overlay');
}
