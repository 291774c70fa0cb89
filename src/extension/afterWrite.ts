/**
 * What the convert, commit, rebase and compare commands share: their options argument (the
 * Explorer passes the selected URIs there instead), the refresh of the tabs showing a file they
 * wrote, and the notice after a write with buttons to open the file or reveal it in the Explorer.
 */
import * as vscode from 'vscode';
import type { Services } from './commandSupport';
import { VIEW_TYPE } from './editorProvider';

/** The options object a caller passed; the Explorer's multi-selection (an array of URIs) is not one. */
export function optionsArg<T extends object>(arg: unknown): T {
  return (typeof arg === 'object' && arg !== null && !Array.isArray(arg) && !(arg instanceof vscode.Uri) && !('groupId' in arg) ? arg : {}) as T;
}

/** The Explorer's multi-selection, when the command was run on several files. */
export function selectionArg(arg: unknown): vscode.Uri[] {
  return Array.isArray(arg) ? arg.filter((u): u is vscode.Uri => u instanceof vscode.Uri) : [];
}

/** Every open QCOW2 Lens tab of these files re-reads them. */
export function refreshViews(s: Services, ...uris: vscode.Uri[]): void {
  for (const u of uris) s.provider.document(u)?.fileChanged();
}

export function uriOf(p: string | vscode.Uri): vscode.Uri {
  return typeof p === 'string' ? vscode.Uri.file(p) : p;
}

/** The notice after a write; Open opens `file` (in QCOW2 Lens when it is qcow2), Reveal shows it in the Explorer. */
export function noticeWritten(message: string, file: vscode.Uri, qcow2: boolean): void {
  const open = qcow2 ? 'Open' : undefined;
  const reveal = 'Reveal in Explorer';
  void Promise.resolve(vscode.window.showInformationMessage(message, ...(open ? [open] : []), reveal)).then(async choice => {
    if (choice === open && open) await vscode.commands.executeCommand('vscode.openWith', file, VIEW_TYPE);
    else if (choice === reveal) await vscode.commands.executeCommand('revealInExplorer', file);
  }, () => undefined);
}

export function rel(u: vscode.Uri): string {
  return vscode.workspace.asRelativePath(u);
}
