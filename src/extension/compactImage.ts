/** "Compact Image…": rewrite without unused clusters, in place or to a new file, optionally compressed. */
import * as vscode from 'vscode';
import { confirm, refuseLocked, Services, targetUri, withCancellableProgress } from './commandSupport';
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
    const pick = await vscode.window.showQuickPick(ordered, { placeHolder: 'Compress the data clusters?' });
    if (!pick) return undefined;
    compress = pick.value;
    if (!where.inPlace) {
      output = await vscode.window.showSaveDialog({ defaultUri: uri.with({ path: uri.path.replace(/(\.qcow2)?$/, '-compact.qcow2') }), filters: { 'QCOW2 image': ['qcow2'] } });
      if (!output) return undefined;
    }
  }
  compress ??= preferred;
  const inPlace = !output || output.fsPath === uri.fsPath;
  if (inPlace) {
    refuseLocked(uri);
    if (opts.confirm !== false && !await confirm(`Compact ${vscode.workspace.asRelativePath(uri)} in place?`, 'The file is rewritten. The original is replaced only after the copy is complete.', 'Compact')) return undefined;
  } else if (output) {
    refuseLocked(output);
  }
  const sizeBefore = (await vscode.workspace.fs.stat(uri)).size;
  const result = await withCancellableProgress(`Compacting ${vscode.workspace.asRelativePath(uri)}`, (signal, onProgress) =>
    compactPath(uri.fsPath, { output: inPlace ? undefined : output!.fsPath, compress: compress === 'none' ? undefined : compress, signal, onProgress }));
  const outUri = inPlace ? uri : output!;
  const sizeAfter = (await vscode.workspace.fs.stat(outUri)).size;
  if (inPlace) s.provider.document(uri)?.fileChanged();
  void vscode.window.showInformationMessage(`Compacted: ${sizeBefore} → ${sizeAfter} bytes${inPlace ? '' : ` in ${vscode.workspace.asRelativePath(outUri)}`}.`);
  return { output: outUri.fsPath, compress, sizeBefore, sizeAfter, result };
}
