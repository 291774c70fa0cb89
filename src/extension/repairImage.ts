/** "Repair Image": qemu-img check -r leaks|all, after a modal confirmation, then re-check. */
import * as vscode from 'vscode';
import { confirm, refuseLocked, Services, targetUri, withCancellableProgress } from './commandSupport';
import { repairPath } from './engineApi';

export interface RepairOptions {
  mode?: 'leaks' | 'all';
  /** false: skip the confirmation (tests, scripted callers). */
  confirm?: boolean;
}

export async function repairImage(s: Services, uriArg?: unknown, opts: RepairOptions = {}): Promise<{ mode: string; result: unknown; after: unknown } | undefined> {
  const uri = targetUri(s, uriArg);
  let mode = opts.mode;
  if (!mode) {
    const pick = await vscode.window.showQuickPick([
      { label: 'Leaks only', description: 'qemu-img check -r leaks', detail: 'Frees clusters that have a refcount but are not used. Safe.', mode: 'leaks' as const },
      { label: 'All errors', description: 'qemu-img check -r all', detail: 'Also rebuilds wrong refcounts. Guest data referenced twice may be copied.', mode: 'all' as const },
    ], { placeHolder: 'What to repair' });
    if (!pick) return undefined;
    mode = pick.mode;
  }
  refuseLocked(uri);
  if (opts.confirm !== false && !await confirm(`Repair ${vscode.workspace.asRelativePath(uri)} (${mode})?`, 'The image file is modified in place. Make a copy first if it matters.', 'Repair')) return undefined;
  const result = await withCancellableProgress(`Repairing ${vscode.workspace.asRelativePath(uri)}`, (signal, onProgress) => repairPath(uri.fsPath, mode, { signal, onProgress }));
  s.provider.document(uri)?.fileChanged();
  const after = await s.checks.check(uri);
  void vscode.window.showInformationMessage(after.summary.clean ? 'Repair done: the image is clean.' : 'Repair done; problems remain (see the Problems panel).');
  return { mode, result, after };
}
