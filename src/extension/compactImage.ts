/**
 * "Compact Image…": rewrite without unused clusters, in place or to a new file, optionally compressed.
 * An encrypted (LUKS) image is compacted with the session's passphrase (the one the tab was unlocked
 * with) and stays encrypted; it is never compressed (QEMU stores compressed clusters unencrypted).
 */
import * as vscode from 'vscode';
import { formatBytes } from '../engine/units';
import { noticeWritten } from './afterWrite';
import { confirm, refuseLocked, sessionKeys, Services, targetUri, UserError, withCancellableProgress } from './commandSupport';
import { readSettings } from './configuration';
import { compactPath } from './engineApi';
import { settingName } from './settings';

export interface CompactOptions {
  /** Path or URI of a new file; absent: in place. */
  output?: string | vscode.Uri;
  compress?: 'none' | 'zlib' | 'zstd';
  confirm?: boolean;
}

export async function compactImage(s: Services, uriArg?: unknown, opts: CompactOptions = {}): Promise<{ output: string; compress: string; sizeBefore: number; sizeAfter: number; result: unknown } | undefined> {
  const uri = targetUri(s, uriArg);
  let output: vscode.Uri | undefined = typeof opts.output === 'string' ? vscode.Uri.file(opts.output) : opts.output;
  let compress = opts.compress;
  const preferred = readSettings(uri).settings.compactCompression; // qcow2Lens.compact.compression, read at each use
  const interactive = opts.compress === undefined && opts.output === undefined;
  const rel = vscode.workspace.asRelativePath(uri);
  const { keys, encrypted } = await sessionKeys(s, uri, 'compact');
  const key = encrypted ? keys({ path: uri.fsPath, depth: 0 }) : undefined;
  if (interactive) {
    const where = await vscode.window.showQuickPick([
      { label: 'To a new file…', inPlace: false },
      { label: 'In place', detail: 'Rewrites this file (a temporary copy is renamed over it at the end).', inPlace: true },
    ], { placeHolder: 'Compact where?' });
    if (!where) return undefined;
    const choices = [
      { label: 'No compression', description: 'clusters already compressed stay so', value: 'none' as const },
      { label: 'zlib', description: 'compatible with every QEMU', value: 'zlib' as const },
      { label: 'zstd', description: 'faster, needs QEMU 5.1+', value: 'zstd' as const },
    ];
    // the default from the settings comes first, so Enter takes it
    const ordered = [...choices.filter(c => c.value === preferred), ...choices.filter(c => c.value !== preferred)]
      .map(c => (c.value === preferred ? { ...c, description: `${c.description} · default (${settingName('compactCompression')})` } : c));
    if (encrypted) {
      compress = 'none'; // the data stays encrypted, so it is not compressed
    } else {
      const pick = await vscode.window.showQuickPick(ordered, { placeHolder: 'Compress the data clusters?' });
      if (!pick) return undefined;
      compress = pick.value;
    }
    if (!where.inPlace) {
      output = await vscode.window.showSaveDialog({ defaultUri: uri.with({ path: uri.path.replace(/(\.qcow2)?$/, '-compact.qcow2') }), filters: { 'QCOW2 image': ['qcow2'] } });
      if (!output) return undefined;
    }
  }
  compress ??= encrypted ? 'none' : preferred; // the setting's default compression does not apply to encrypted data
  if (encrypted && compress !== 'none') throw new UserError(`${rel} is encrypted: it is compacted without compression (QEMU stores compressed clusters unencrypted).`);
  const inPlace = !output || output.fsPath === uri.fsPath;
  if (inPlace) {
    refuseLocked(uri);
    if (opts.confirm !== false && !await confirm(`Compact ${rel} in place?`, 'The file is rewritten. The original is replaced only after the copy is complete.', 'Compact')) return undefined;
  } else if (output) {
    refuseLocked(output);
  }
  const sizeBefore = (await vscode.workspace.fs.stat(uri)).size;
  const result = await withCancellableProgress(`Compacting ${rel}`, (signal, onProgress) =>
    compactPath(uri.fsPath, { output: inPlace ? undefined : output!.fsPath, compress: compress === 'none' ? undefined : compress, key, signal, onProgress }));
  const outUri = inPlace ? uri : output!;
  const sizeAfter = (await vscode.workspace.fs.stat(outUri)).size;
  if (inPlace) s.provider.document(uri)?.fileChanged();
  noticeWritten(`Compacted ${rel}: ${formatBytes(sizeBefore)} → ${formatBytes(sizeAfter)}${inPlace ? '' : ` in ${vscode.workspace.asRelativePath(outUri)}`}.`, outUri, true);
  return { output: outUri.fsPath, compress, sizeBefore, sizeAfter, result };
}
