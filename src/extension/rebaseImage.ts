/**
 * "Rebase / Change Backing File…", the three things `qemu-img rebase` does:
 *  - safe rebase (-b NEW): wherever the overlay leaves a range to its backing chain and the new
 *    backing file reads differently, the overlay gets the clusters the guest sees now; then the
 *    header names the new file. The guest's disk does not change.
 *  - rename only (-u): the header names another file, nothing is copied: for a backing file that
 *    was moved or renamed. For a missing backing file this is the only choice, and the picker
 *    offers the workspace images of the overlay's virtual size first.
 *  - flatten (-b ""): everything read from the chain copied in; the overlay stands alone.
 * The engine copies first and rewrites the header last (each phase synced). Each is confirmed in a
 * modal dialog.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { probeFormat } from '../engine/formats';
import { resolveBackingPath } from '../engine/image/backing';
import { Qcow2Image } from '../engine/image/image';
import { openImageLayer } from '../engine/ops/compare/open';
import { formatBytes } from '../engine/units';
import { confirm, refuseLocked, sessionKeys, Services, targetUri, UserError, withCancellableProgress } from './commandSupport';
import { chainPaths, rebaseAt } from './engineApi';
import { noticeWritten, optionsArg, refreshViews, rel, uriOf } from './afterWrite';

export type RebaseMode = 'safe' | 'unsafe' | 'flatten';

export interface RebaseImageOptions {
  mode?: RebaseMode;
  /** The new backing file (safe and unsafe). */
  backing?: string | vscode.Uri;
  /** Its format (default: probed as qemu-img probes). */
  backingFormat?: string;
  confirm?: boolean;
}

export interface Rebased { mode: RebaseMode; backingFile?: string; backingFormat?: string; bytesWritten: number }

interface Overlay { virtualSize: number; backingName?: string; backingPath?: string; backingFormat?: string; backingExists: boolean }

async function readOverlay(file: string): Promise<Overlay> {
  const img = await Qcow2Image.open(file, { openBacking: false, openDataFile: false });
  try {
    const name = img.header.backingFile;
    const p = name ? resolveBackingPath(file, name) : undefined;
    return { virtualSize: img.virtualSize, backingName: name, backingPath: p, backingFormat: img.header.backingFormat, backingExists: p !== undefined && fs.existsSync(p) };
  } finally {
    await img.close();
  }
}

/** An image's virtual size without its chain (undefined when it does not open as an image). */
async function virtualSizeOf(file: string): Promise<number | undefined> {
  try {
    if (await probeFormat(file) === 'qcow2') {
      const img = await Qcow2Image.open(file, { openBacking: false, openDataFile: false });
      try { return img.virtualSize; } finally { await img.close(); }
    }
    const l = await openImageLayer(file);
    try { return l.virtualSize; } finally { await l.close(); }
  } catch {
    return undefined;
  }
}

/** Workspace images that could back `overlay`: those of its virtual size first. */
export async function backingCandidates(overlay: vscode.Uri, virtualSize: number): Promise<{ uri: vscode.Uri; size: number }[]> {
  const found = await vscode.workspace.findFiles('**/*.{qcow2,img,raw,vhd,vpc,vmdk}', '**/node_modules/**', 500);
  const candidates: { uri: vscode.Uri; size: number }[] = [];
  for (const u of found.sort((a, b) => a.fsPath.localeCompare(b.fsPath))) {
    if (path.resolve(u.fsPath) === path.resolve(overlay.fsPath)) continue;
    const size = await virtualSizeOf(u.fsPath);
    if (size !== undefined) candidates.push({ uri: u, size });
  }
  return [...candidates.filter(c => c.size === virtualSize), ...candidates.filter(c => c.size !== virtualSize)];
}

async function pickBacking(overlay: vscode.Uri, info: Overlay, title: string): Promise<vscode.Uri | undefined> {
  const candidates = await backingCandidates(overlay, info.virtualSize);
  const same = candidates.filter(c => c.size === info.virtualSize), other = candidates.filter(c => c.size !== info.virtualSize);
  type Item = vscode.QuickPickItem & { uri?: vscode.Uri; browse?: boolean };
  const items: Item[] = [];
  const add = (c: { uri: vscode.Uri; size: number }) => items.push({ label: path.basename(c.uri.fsPath), description: `${formatBytes(c.size)}${c.size === info.virtualSize ? '' : c.size < info.virtualSize ? ' (smaller)' : ' (larger)'}`, detail: rel(c.uri), uri: c.uri });
  if (same.length) items.push({ label: `Virtual size ${formatBytes(info.virtualSize)}, as the overlay`, kind: vscode.QuickPickItemKind.Separator });
  same.forEach(add);
  if (other.length) items.push({ label: 'Other sizes', kind: vscode.QuickPickItemKind.Separator });
  other.forEach(add);
  items.push({ label: '$(folder-opened) Browse…', browse: true, alwaysShow: true });
  const pick = await vscode.window.showQuickPick(items, { title, placeHolder: info.backingName ? `Now: ${info.backingName}${info.backingExists ? '' : ' (missing)'}` : 'No backing file now', matchOnDetail: true });
  if (!pick) return undefined;
  if (!pick.browse) return pick.uri;
  const chosen = await vscode.window.showOpenDialog({ title, canSelectMany: false, defaultUri: vscode.Uri.file(path.dirname(overlay.fsPath)), openLabel: 'Use as Backing File' });
  return chosen?.[0];
}

/** The name written in the header: relative when the file lies at or below the overlay's folder, as qemu-img records what it is given. */
function backingName(overlay: string, backing: string): string {
  const r = path.relative(path.dirname(overlay), backing);
  return r.startsWith('..') || path.isAbsolute(r) ? backing : r;
}

export async function rebaseImage(s: Services, uriArg?: unknown, optsArg?: unknown): Promise<Rebased | undefined> {
  const opts = optionsArg<RebaseImageOptions>(optsArg);
  const uri = targetUri(s, uriArg);
  const info = await readOverlay(uri.fsPath);
  let mode = opts.mode;
  if (!mode) {
    type Item = vscode.QuickPickItem & { mode: RebaseMode };
    const items: Item[] = [];
    if (info.backingName && !info.backingExists) {
      items.push({ mode: 'unsafe', label: 'Point to the moved or renamed backing file…', description: 'rename only (-u)', detail: `${info.backingName} is missing: name the file that holds its content now. Nothing is copied.` });
    } else {
      items.push({ mode: 'safe', label: 'Change the backing file…', description: 'safe rebase', detail: 'Copies into this image whatever reads differently in the new file, so the guest sees the same disk.' });
      if (info.backingName) items.push({ mode: 'flatten', label: 'Flatten: remove the backing file', description: '-b ""', detail: `Copies everything read from ${info.backingName} into this image, which then stands alone.` });
      items.push({ mode: 'unsafe', label: 'Rename only…', description: 'unsafe (-u)', detail: 'Only rewrites the name in the header, for a backing file that was moved. The guest sees whatever the new file holds.' });
    }
    const pick = await vscode.window.showQuickPick(items, { title: `Rebase ${rel(uri)}`, placeHolder: info.backingName ? `Backing file: ${info.backingName}${info.backingExists ? '' : ' (missing)'}` : 'No backing file' });
    if (!pick) return undefined;
    mode = pick.mode;
  }
  if (mode !== 'unsafe' && info.backingName && !info.backingExists) {
    throw new UserError(`The backing file ${info.backingName} is missing, so its content cannot be copied: point ${rel(uri)} to where it is now (rename only) first.`);
  }
  if (mode === 'flatten' && !info.backingName) throw new UserError(`${rel(uri)} has no backing file: it stands alone already.`);
  let newBacking: vscode.Uri | undefined;
  let format = opts.backingFormat;
  if (mode !== 'flatten') {
    newBacking = opts.backing === undefined ? await pickBacking(uri, info, mode === 'safe' ? `New backing file for ${rel(uri)}` : `Backing file ${info.backingName ?? ''} is now…`) : uriOf(opts.backing);
    if (!newBacking) return undefined;
    if (path.resolve(newBacking.fsPath) === path.resolve(uri.fsPath)) throw new UserError('An image cannot be its own backing file.');
    if (!fs.existsSync(newBacking.fsPath)) throw new UserError(`${newBacking.fsPath} does not exist.`);
    if ((await chainPaths(newBacking.fsPath)).some(p => path.resolve(p) === path.resolve(uri.fsPath))) throw new UserError(`${rel(newBacking)} is backed by ${rel(uri)}: the chain would loop.`);
    format ??= await probeFormat(newBacking.fsPath);
  }
  refuseLocked(uri);
  // a safe rebase or a flatten reads the chain and writes this image: encrypted ones with the session's passphrases
  const { keys } = mode === 'unsafe' ? { keys: undefined } : await sessionKeys(s, uri, mode === 'flatten' ? 'flatten' : 'rebase', await chainPaths(uri.fsPath));
  const newSize = newBacking ? await virtualSizeOf(newBacking.fsPath) : undefined;
  const sizeNote = newSize !== undefined && newSize !== info.virtualSize ? ` It is ${formatBytes(newSize)} and this image ${formatBytes(info.virtualSize)}: ${newSize < info.virtualSize ? 'past its end the guest reads zeros.' : 'the guest sees only the first ' + formatBytes(info.virtualSize) + '.'}` : '';
  const target = newBacking ? rel(newBacking) : '';
  const [message, detail, action] = mode === 'safe'
    ? [`Rebase ${rel(uri)} onto ${target}?`, `Wherever ${target} reads differently from ${info.backingName ?? 'nothing (no backing file now)'}, the clusters are copied into ${rel(uri)} first, so the guest's disk stays the same; then the header names ${target}.${sizeNote}`, 'Rebase']
    : mode === 'unsafe'
      ? [`Point ${rel(uri)} to ${target} without copying?`, `Only the backing file name in the header is rewritten${info.backingName ? ` (now ${info.backingName})` : ''}. If ${target} does not hold what the old backing file held, the guest sees a different, possibly broken disk.${sizeNote}`, 'Change Name']
      : [`Flatten ${rel(uri)}?`, `Everything the guest reads from ${info.backingName ?? 'its backing file'} is copied into ${rel(uri)}, which grows by up to ${formatBytes(info.virtualSize)} and then has no backing file.`, 'Flatten'];
  if (opts.confirm !== false && !await confirm(message, detail, action)) return undefined;
  const name = newBacking ? backingName(uri.fsPath, newBacking.fsPath) : '';
  const r = await withCancellableProgress(mode === 'flatten' ? `Flattening ${rel(uri)}` : `Rebasing ${rel(uri)} onto ${path.basename(newBacking!.fsPath)}`, (signal, onProgress) =>
    rebaseAt(uri.fsPath, { backing: name, backingFormat: mode === 'flatten' ? undefined : format, unsafe: mode === 'unsafe', keys, signal, onProgress }, newBacking?.fsPath));
  refreshViews(s, uri);
  const copied = mode === 'unsafe' ? 'nothing copied' : `${formatBytes(r.bytesWritten)} copied in`;
  noticeWritten(mode === 'flatten' ? `Flattened ${rel(uri)}: ${copied}; it has no backing file now.` : `${rel(uri)} is backed by ${name} (${format ?? 'probed'}) now: ${copied}.`, uri, true);
  return { mode, backingFile: r.backingFile, backingFormat: r.backingFormat, bytesWritten: r.bytesWritten };
}
