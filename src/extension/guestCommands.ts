/**
 * The guest commands: *Browse Guest Files* (the guest's root in the Explorer, or a quick pick of its
 * files), *Copy Out…* (a guest file or folder to a host folder), *Sparsify Image…* (a compaction that
 * also drops guest free space, after a modal confirmation that shows the forecast), and the
 * internal "open this guest file" the structure tree's Guest section uses. Each takes the image (or
 * a `qcow2-guest` URI) and an options object, and returns what it did, so tests can drive it.
 *
 * Copy Out never overwrites in place: it copies into a temporary folder beside the destination and
 * only after the whole copy succeeded (and the user confirmed replacing an existing entry) moves the
 * old entry away and renames the copy in. Cancel or failure removes the temporary copy only.
 */
import * as fs from 'node:fs';
import * as nodePath from 'node:path';
import { Transform, type Readable } from 'node:stream';
import * as vscode from 'vscode';
import { copyOut, type CopyResult } from '../guest/copyOut';
import type { GuestFileSystem } from '../guest/fs';
import type { Guest, GuestPartition } from '../guest/guest';
import { parsePartitionPath } from '../guest/guest';
import { listPath } from '../guest/list';
import { LOCKED_NOTE, spaceReport } from '../guest/space/report';
import { formatBytes } from '../engine/units';
import { command, confirm, refuseLocked, Services, targetUri, UserError, withCancellableProgress } from './commandSupport';
import { sparsifyPath } from './engineApi';
import { GUEST_SCHEME, guestUri, GuestFileSystemProvider, parseGuestUri } from './guestFileSystem';
import { guestLocationLabel, type GuestLocation } from './guestUri';

function partLabel(p: GuestPartition): string {
  const where = p.number === 0 ? 'whole disk' : `partition ${p.number}`;
  return `${where}: ${p.fs ?? 'unknown'}${p.fileSystem?.label ? ` "${p.fileSystem.label}"` : ''}, ${formatBytes(p.size)}`;
}

function browsable(g: Guest): GuestPartition[] {
  return g.partitions.filter(p => p.fileSystem);
}

function noneBrowsable(image: string, g: Guest): UserError {
  const found = g.partitions.map(p => `${p.number === 0 ? 'whole disk' : `partition ${p.number}`} ${p.fs ?? 'unknown'}${p.error ? ` (${p.error})` : ''}`).join(', ');
  return new UserError(`${nodePath.basename(image)} has no file system QCOW2 Lens can browse (ext2/3/4, FAT)${found ? `: found ${found}` : ': the disk has no partitions'}.`);
}

/** The image a guest command acts on: a qcow2-guest URI's image, else targetUri's. */
function imageOf(s: Services, arg: unknown): { image: string; loc?: GuestLocation } {
  if (arg instanceof vscode.Uri && arg.scheme === GUEST_SCHEME) {
    const loc = parseGuestUri(arg);
    return { image: loc.image, loc };
  }
  return { image: targetUri(s, arg).fsPath };
}

export interface BrowseOptions {
  /** The partition number (0: a disk without a table); absent: the only one, or asked. */
  partition?: number;
  /** 'workspace' (default when a folder is open): add the guest root to the Explorer; 'pick': a quick pick of files. */
  via?: 'workspace' | 'pick';
}

export async function browseGuestFiles(s: Services, gfs: GuestFileSystemProvider, arg?: unknown, opts: BrowseOptions = {}): Promise<{ uri: string; via: string; opened?: string } | undefined> {
  const { image } = imageOf(s, arg);
  const parts = await gfs.pool.use(image, async g => {
    const b = browsable(g);
    if (!b.length) throw noneBrowsable(image, g);
    return b.map(p => ({ number: p.number, label: partLabel(p), warnings: [...(p.fileSystem?.warnings ?? [])] }));
  });
  let partition: number | undefined = opts.partition;
  if (partition !== undefined && !parts.some(p => p.number === partition)) {
    throw new UserError(`${nodePath.basename(image)} has no browsable partition ${partition} (browsable: ${parts.map(p => p.number).join(', ')}).`);
  }
  const via = opts.via ?? (vscode.workspace.workspaceFolders?.length ? 'workspace' : 'pick');
  if (partition === undefined) {
    if (parts.length === 1) partition = parts[0].number;
    else {
      const items: Array<vscode.QuickPickItem & { n?: number }> = parts.map(p => ({ label: p.label, n: p.number, detail: p.warnings.join('; ') || undefined }));
      if (via === 'workspace') items.push({ label: 'All of them', description: 'one folder per partition' });
      const pick = await vscode.window.showQuickPick(items, { placeHolder: `Which file system of ${nodePath.basename(image)}?` });
      if (!pick) return undefined;
      partition = pick.n;
    }
  }
  const warnings = parts.filter(p => partition === undefined || p.number === partition).flatMap(p => p.warnings);
  if (warnings.length) void vscode.window.showWarningMessage(`${nodePath.basename(image)}: ${warnings.join('; ')}`);
  const loc: GuestLocation = { image, partition, path: '/' };
  const root = guestUri(loc);
  if (via === 'pick') {
    const opened = await pickGuestFile(root);
    return { uri: root.toString(), via, opened: opened?.toString() };
  }
  const folders = vscode.workspace.workspaceFolders ?? [];
  if (!folders.some(f => f.uri.toString() === root.toString())) {
    const added = new Promise<void>(resolve => {
      const sub = vscode.workspace.onDidChangeWorkspaceFolders(() => { sub.dispose(); resolve(); });
    });
    if (!vscode.workspace.updateWorkspaceFolders(folders.length, 0, { uri: root, name: guestLocationLabel(loc) })) {
      throw new UserError('VS Code did not add the guest folder to the workspace.');
    }
    await added;
  }
  await vscode.commands.executeCommand('workbench.view.explorer');
  return { uri: root.toString(), via };
}

/** A quick pick that walks the guest's folders; picking a file opens it. */
async function pickGuestFile(root: vscode.Uri): Promise<vscode.Uri | undefined> {
  let dir = root;
  for (;;) {
    const entries = await vscode.workspace.fs.readDirectory(dir);
    const loc = parseGuestUri(dir);
    const items: Array<vscode.QuickPickItem & { uri: vscode.Uri; isDir: boolean }> = [];
    if (dir.toString() !== root.toString()) items.push({ label: '..', description: 'up', uri: vscode.Uri.joinPath(dir, '..'), isDir: true });
    for (const [name, type] of entries.sort((a, b) => Number(!(b[1] & vscode.FileType.Directory)) - Number(!(a[1] & vscode.FileType.Directory)) || a[0].localeCompare(b[0]))) {
      const isDir = (type & vscode.FileType.Directory) !== 0;
      items.push({ label: `${isDir ? '$(folder)' : '$(file)'} ${name}`, uri: vscode.Uri.joinPath(dir, name), isDir, description: type & vscode.FileType.SymbolicLink ? 'symlink' : undefined });
    }
    const pick = await vscode.window.showQuickPick(items, { placeHolder: guestLocationLabel(loc), matchOnDescription: true });
    if (!pick) return undefined;
    if (pick.isDir) { dir = pick.uri; continue; }
    await vscode.commands.executeCommand('vscode.open', pick.uri);
    return pick.uri;
  }
}

/** From the structure tree: open one guest file in an ordinary tab. */
export async function openGuestFile(s: Services, arg: unknown, opts: { partition?: number; path?: string; beside?: boolean } = {}): Promise<string> {
  const { image } = imageOf(s, arg);
  if (typeof opts.partition !== 'number' || typeof opts.path !== 'string') throw new UserError('openGuestFile needs { partition, path }.');
  const uri = guestUri({ image, partition: opts.partition, path: opts.path });
  // from the tree: beside the image's tab, the focus left in the tree so arrow keys go on browsing
  await vscode.commands.executeCommand('vscode.open', uri, opts.beside ? { preview: true, preserveFocus: true, viewColumn: vscode.ViewColumn.Beside } : { preview: true });
  return uri.toString();
}

export interface CopyOutOptions {
  /** What to copy, "[PARTITION:]PATH" (as the CLI's cp); absent: the qcow2-guest URI argument, else asked. */
  source?: string;
  /** The host folder to copy into; absent: asked in a dialog. */
  dest?: string | vscode.Uri;
  /** Replace an existing entry of the same name: true without asking, false refuses; absent: a modal question. */
  overwrite?: boolean;
}

/** Wraps a file system so every byte read by createReadStream is counted. */
function counting(gfs: GuestFileSystem, onBytes: (n: number) => void): GuestFileSystem {
  return new Proxy(gfs, {
    get(target, prop, receiver) {
      if (prop === 'createReadStream') {
        return async (p: string): Promise<Readable> => (await target.createReadStream(p)).pipe(new Transform({
          transform(chunk: Buffer, _enc, cb) { onBytes(chunk.length); cb(null, chunk); },
        }));
      }
      const v = Reflect.get(target, prop, receiver) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

async function exists(p: string): Promise<boolean> {
  return fs.promises.lstat(p).then(() => true, () => false);
}

export async function copyOutGuest(s: Services, gfs: GuestFileSystemProvider, arg?: unknown, opts: CopyOutOptions = {}): Promise<(CopyResult & { target: string }) | undefined> {
  const { image, loc } = imageOf(s, arg);
  let partition: number | undefined, guestPath: string;
  if (opts.source !== undefined) ({ partition, path: guestPath } = parsePartitionPath(opts.source));
  else if (loc?.partition !== undefined) ({ partition, path: guestPath } = loc);
  else {
    const typed = await vscode.window.showInputBox({ prompt: `What to copy out of ${nodePath.basename(image)}: [PARTITION:]PATH`, value: '/', placeHolder: '1:/etc' });
    if (typed === undefined) return undefined;
    ({ partition, path: guestPath } = parsePartitionPath(typed.trim()));
  }
  let destDir: string;
  if (opts.dest !== undefined) destDir = typeof opts.dest === 'string' ? opts.dest : opts.dest.fsPath;
  else {
    const picked = await vscode.window.showOpenDialog({ canSelectFolders: true, canSelectFiles: false, canSelectMany: false, openLabel: 'Copy Here', title: `Copy ${guestPath} out of ${nodePath.basename(image)} into…` });
    if (!picked?.[0]) return undefined;
    destDir = picked[0].fsPath;
  }
  const dirSt = await fs.promises.stat(destDir).catch(() => undefined);
  if (!dirSt?.isDirectory()) throw new UserError(`${destDir} is not a folder.`);

  return gfs.pool.use(image, async guest => {
    const fsys = guest.fileSystem(partition);
    const number = partition ?? guest.partitions.find(p => p.fileSystem === fsys)?.number ?? 0;
    const st = await fsys.stat(guestPath);
    const normal = '/' + guestPath.split('/').filter(x => x && x !== '.').join('/');
    const name = normal === '/' ? `${nodePath.basename(image).replace(/\.[^.]*$/, '')}-${number === 0 ? 'disk' : `partition${number}`}` : normal.slice(normal.lastIndexOf('/') + 1);
    const target = nodePath.join(destDir, name);
    if (await exists(target)) {
      if (opts.overwrite === false) throw new UserError(`${target} already exists; nothing was copied.`);
      if (opts.overwrite !== true && !await confirm(`${name} already exists in ${destDir}. Replace it?`,
        `The existing ${name} is deleted once the copy out of the guest is complete; until then it is left as it is.`, 'Replace')) return undefined;
    }
    // the total, for the progress bar: file sizes from the directory listing (metadata reads only)
    let total = 0;
    if (st.type === 'dir') { for await (const e of listPath(fsys, normal, { recursive: true })) if (e.type === 'file') total += e.size; }
    else total = st.size;
    const tmp = await fs.promises.mkdtemp(nodePath.join(destDir, `.${name}.qcow2-lens-`));
    try {
      const r = await withCancellableProgress(`Copying ${guestLocationLabel({ image, partition: number, path: normal })} to ${destDir}`, async (signal, onProgress) => {
        let done = 0;
        onProgress(0, total);
        return copyOut(counting(fsys, n => { done += n; onProgress(done, total); }), normal, nodePath.join(tmp, name), signal);
      });
      // the copy is complete: only now is an existing entry of the same name replaced
      if (await exists(target)) await fs.promises.rm(target, { recursive: true, force: true });
      await fs.promises.rename(nodePath.join(tmp, name), target);
      const note = r.skipped.length ? ` ${r.skipped.length} not copied (${r.skipped.slice(0, 3).join('; ')}${r.skipped.length > 3 ? '; …' : ''}).` : '';
      void vscode.window.showInformationMessage(`Copied ${r.files} file(s), ${r.dirs} folder(s), ${r.symlinks} symlink(s), ${formatBytes(r.bytes)} to ${target}.${note}`);
      return { ...r, target };
    } finally {
      await fs.promises.rm(tmp, { recursive: true, force: true });
    }
  });
}

export interface SparsifyOptions {
  /** A new file (path or URI); absent: in place (after the quick pick, when nothing else is given). */
  output?: string | vscode.Uri;
  /** Also drop swap partitions' contents. */
  swap?: boolean;
  compress?: 'zlib' | 'zstd';
  /** false: no modal question (tests, callers that asked themselves). */
  confirm?: boolean;
  inPlace?: boolean;
}

export interface SparsifyCommandResult {
  output: string;
  sizeBefore: number;
  sizeAfter: number;
  /** What the forecast said sparsify would reclaim, in bytes. */
  forecast: number;
  forecastCompact: number;
  droppedClusters: number;
}

export async function sparsifyImageCommand(s: Services, gfs: GuestFileSystemProvider, arg?: unknown, opts: SparsifyOptions = {}): Promise<SparsifyCommandResult | undefined> {
  const uri = vscode.Uri.file(imageOf(s, arg).image);
  const rel = vscode.workspace.asRelativePath(uri);
  let output = typeof opts.output === 'string' ? vscode.Uri.file(opts.output) : opts.output;
  if (output === undefined && opts.inPlace === undefined && opts.confirm === undefined) {
    const where = await vscode.window.showQuickPick([
      { label: 'To a new file…', inPlace: false },
      { label: 'In place', detail: 'Rewrites this file (a temporary copy is renamed over it at the end).', inPlace: true },
    ], { placeHolder: 'Sparsify where?' });
    if (!where) return undefined;
    if (!where.inPlace) {
      output = await vscode.window.showSaveDialog({ defaultUri: uri.with({ path: uri.path.replace(/(\.qcow2)?$/, '-sparse.qcow2') }), filters: { 'QCOW2 image': ['qcow2'] } });
      if (!output) return undefined;
    }
  }
  const inPlace = !output || output.fsPath === uri.fsPath;
  if (inPlace) refuseLocked(uri); else refuseLocked(output!);
  // the forecast: the compaction's own layout code over the guest's free-space map (metadata reads only)
  const report = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Measuring what sparsifying ${rel} reclaims…`, cancellable: true }, (_p, token) => {
    const ac = new AbortController();
    token.onCancellationRequested(() => ac.abort());
    // an encrypted image: measured and sparsified with the session's passphrase (the keyring the tab unlocked with)
    return spaceReport(uri.fsPath, { swap: opts.swap, keys: s.keyring.lookup, signal: ac.signal });
  });
  if (report.notes.includes(LOCKED_NOTE)) throw new UserError(`${rel} is encrypted and locked: unlock it (Unlock…) first, then sparsify it.`);
  const refusal = report.notes.find(n => n.startsWith('sparsify would refuse:') || n.startsWith('compact would refuse:'));
  if (refusal) throw new UserError(`Sparsify ${rel} refused: ${refusal.replace(/^(sparsify|compact) would refuse: /, '')}`);
  const fsCount = report.guest.fileSystems.length;
  const forecast = report.reclaim.sparsify;
  if (opts.confirm !== false) {
    const detail = [
      `Forecast: ${formatBytes(forecast)} reclaimed (${formatBytes(report.fileSize)} → about ${formatBytes(Math.max(0, report.fileSize - forecast))}); compact alone would reclaim ${formatBytes(report.reclaim.compact)}.`,
      fsCount ? `Guest free space: ${formatBytes(report.guest.freeBytes)} in ${fsCount} file system(s). Only clusters wholly in free space are dropped: every guest file reads as before.` : 'No browsable file system (ext2/3/4, FAT) was found: only what compact drops is dropped.',
      inPlace ? 'The file is rewritten; the original is replaced only after the copy is complete.' : `The result is written to ${vscode.workspace.asRelativePath(output!)}; ${rel} is only read.`,
      'Shut the VM down first: a running guest changes its free space.',
    ].join('\n\n');
    if (!await confirm(`Sparsify ${rel}${inPlace ? ' in place' : ''}? About ${formatBytes(forecast)} will be reclaimed.`, detail, 'Sparsify')) return undefined;
  }
  const sizeBefore = (await fs.promises.stat(uri.fsPath)).size;
  const r = await withCancellableProgress(`Sparsifying ${rel}`, (signal, onProgress) =>
    sparsifyPath(uri.fsPath, { output: inPlace ? undefined : output!.fsPath, compress: opts.compress, swap: opts.swap, keys: s.keyring.lookup, signal, onProgress }));
  const outPath = inPlace ? uri.fsPath : output!.fsPath;
  const sizeAfter = (await fs.promises.stat(outPath)).size;
  if (inPlace) {
    s.provider.document(uri)?.fileChanged();
    gfs.imageChanged(uri.fsPath);
  }
  void vscode.window.showInformationMessage(`Sparsified: ${sizeBefore} → ${sizeAfter} bytes${inPlace ? '' : ` in ${vscode.workspace.asRelativePath(outPath)}`}; ${r.droppedClusters} cluster(s) of guest free space dropped.`);
  return { output: outPath, sizeBefore, sizeAfter, forecast, forecastCompact: report.reclaim.compact, droppedClusters: r.droppedClusters };
}

/** Registers the guest file system and the guest commands; the provider is returned for the view's refresh. */
export function registerGuest(context: vscode.ExtensionContext, s: Services): GuestFileSystemProvider {
  const gfs = GuestFileSystemProvider.register(context);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const reg = (id: string, title: string, fn: (...args: any[]) => Promise<unknown>) => {
    const wrapped = command(title, fn);
    // the Explorer's context menu passes (uri, [selected uris]): that is no options object
    context.subscriptions.push(vscode.commands.registerCommand(id, (...args: unknown[]) => wrapped(...(Array.isArray(args[1]) ? [args[0]] : args))));
  };
  reg('qcow2Lens.browseGuestFiles', 'Browse Guest Files', (a?: unknown, o?: BrowseOptions) => browseGuestFiles(s, gfs, a, o));
  reg('qcow2Lens.copyOutGuest', 'Copy Out', (a?: unknown, o?: CopyOutOptions) => copyOutGuest(s, gfs, a, o));
  reg('qcow2Lens.sparsifyImage', 'Sparsify Image', (a?: unknown, o?: SparsifyOptions) => sparsifyImageCommand(s, gfs, a, o));
  reg('qcow2Lens.openGuestFile', 'Open Guest File', (a?: unknown, o?: { partition?: number; path?: string; beside?: boolean }) => openGuestFile(s, a, o));
  return gfs;
}
