/**
 * "Commit Overlay into Backing File…": what the overlay holds written into its backing file (or a
 * deeper image of the chain), in place, as `qemu-img commit` does; then the overlay is emptied so
 * it reads everything from the base again, unless the user keeps it (-d). The engine writes the
 * base completely (data, refcounts, tables, each synced) before it touches the overlay, so the
 * guest content survives a crash. Changing the base is confirmed in a modal dialog: every other
 * image backed by it sees the change too.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { Qcow2Image } from '../engine/image/image';
import type { BlockLayer } from '../engine/formats';
import { formatBytes } from '../engine/units';
import { confirm, refuseLocked, sessionKeys, Services, targetUri, UserError, withCancellableProgress } from './commandSupport';
import { commitAt } from './engineApi';
import { noticeWritten, optionsArg, refreshViews, rel } from './afterWrite';

export interface CommitImageOptions {
  /** Commit into this image of the chain (path); default the immediate backing file. A deeper base leaves the overlay as it is (qemu-img's -b). */
  base?: string | vscode.Uri;
  /** Leave the overlay as it is after the commit (qemu-img's -d); default: emptied. */
  keepOverlay?: boolean;
  confirm?: boolean;
}

export interface Committed { base: string; bytesWritten: number; emptied: boolean; baseSize: { before: number; after: number } }

export interface ChainLayer { path: string; format: string; virtualSize: number }

/** The backing chain below `file`, nearest first; throws a UserError naming a missing backing file. */
export async function backingChain(file: string): Promise<ChainLayer[]> {
  let img: Qcow2Image;
  try {
    img = await Qcow2Image.open(file);
  } catch (e) {
    throw new UserError(`${path.basename(file)}: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
  }
  try {
    const out: ChainLayer[] = [];
    for (let l: BlockLayer | null = img.backing; l; l = l.backing) out.push({ path: l.path, format: l.format, virtualSize: l.virtualSize });
    return out;
  } finally {
    await img.close();
  }
}

export async function commitImage(s: Services, uriArg?: unknown, optsArg?: unknown): Promise<Committed | undefined> {
  const opts = optionsArg<CommitImageOptions>(optsArg);
  const top = targetUri(s, uriArg);
  const chain = await backingChain(top.fsPath);
  if (!chain.length) throw new UserError(`${rel(top)} has no backing file: there is nothing to commit it into.`);
  let base: ChainLayer | undefined = chain[0];
  let keep = opts.keepOverlay;
  if (opts.base !== undefined) {
    const want = path.resolve(typeof opts.base === 'string' ? opts.base : opts.base.fsPath);
    base = chain.find(l => path.resolve(l.path) === want);
    if (!base) throw new UserError(`${want} is not in the backing chain of ${rel(top)} (${chain.map(l => path.basename(l.path)).join(' → ')}).`);
  } else if (chain.length > 1 && keep === undefined) {
    const pick = await vscode.window.showQuickPick(chain.map((l, i) => ({
      label: path.basename(l.path), description: i === 0 ? 'backing file' : `${i + 1} levels down`, detail: `${l.format}, ${formatBytes(l.virtualSize)} — ${l.path}`, layer: l,
    })), { title: `Commit ${rel(top)} into which image?`, placeHolder: 'Everything above the chosen image is written into it' });
    if (!pick) return undefined;
    base = pick.layer;
  }
  const deeper = base !== chain[0];
  if (deeper) keep = true; // qemu-img commit -b leaves the overlay as it is (the images between would no longer match it)
  if (keep === undefined) {
    const pick = await vscode.window.showQuickPick([
      { label: 'Empty the overlay afterwards', keep: false, detail: 'It then reads everything from the backing file: the usual end of a commit.' },
      { label: 'Keep the overlay as it is', keep: true, detail: 'Its clusters stay (qemu-img commit -d).' },
    ], { title: `Commit ${rel(top)}`, placeHolder: 'And the overlay?' });
    if (!pick) return undefined;
    keep = pick.keep;
  }
  const baseUri = vscode.Uri.file(base.path);
  refuseLocked(top);
  refuseLocked(baseUri);
  // encrypted layers are read (and an encrypted base written) with the session's passphrases
  const { keys } = await sessionKeys(s, top, 'commit', chain.map(l => l.path));
  const grows = base.virtualSize < (await topSize(top.fsPath));
  if (opts.confirm !== false && !await confirm(
    `Commit ${rel(top)} into ${rel(baseUri)}?`,
    `${rel(baseUri)} is changed in place: every cluster the ${deeper ? 'images above it hold' : 'overlay holds'} is written into it${grows ? ', and it is grown to the overlay\'s size' : ''}. `
      + `Any other image backed by ${path.basename(base.path)} sees this change, and its snapshots or backups of the old content no longer match. `
      + (keep ? 'The overlay is left as it is.' : 'Afterwards the overlay is emptied (its guest content stays the same, read from the backing file).') + ' This cannot be undone.',
    'Commit')) return undefined;
  const b = base;
  const r = await withCancellableProgress(`Committing ${rel(top)} into ${path.basename(b.path)}`, (signal, onProgress) =>
    commitAt(top.fsPath, { base: deeper ? b.path : undefined, drop: keep, keys, signal, onProgress }));
  refreshViews(s, top, baseUri);
  noticeWritten(`Committed ${rel(top)} into ${rel(baseUri)}: ${formatBytes(r.bytesWritten)} written${r.baseSize.after > r.baseSize.before ? `, grown to ${formatBytes(r.baseSize.after)}` : ''}${r.emptied ? '; the overlay is now empty' : ''}.`, baseUri, b.format === 'qcow2');
  return { base: r.base, bytesWritten: r.bytesWritten, emptied: r.emptied, baseSize: r.baseSize };
}

async function topSize(file: string): Promise<number> {
  const img = await Qcow2Image.open(file, { openBacking: false, openDataFile: false });
  try { return img.virtualSize; } finally { await img.close(); }
}
