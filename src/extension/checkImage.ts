/** "Check Image": runs the integrity check, fills the Problems panel, returns the outcome. */
import * as vscode from 'vscode';
import { Services, targetUri, withCancellableProgress } from './commandSupport';
import type { CheckOutcome } from './diagnostics';

export async function checkImage(s: Services, uriArg?: unknown, _opts?: object): Promise<CheckOutcome> {
  const uri = targetUri(s, uriArg);
  s.checks.opened(uri); // a check of an image without a tab still lands in the Problems panel
  const out = await withCancellableProgress(`Checking ${vscode.workspace.asRelativePath(uri)}`, (signal, onProgress) => s.checks.check(uri, { signal, onProgress }));
  const { summary } = out;
  const text = summary.clean
    ? `No errors were found on the image (${out.findings.length} note(s)).`
    : `${summary.corruptions} corruption(s), ${summary.leaks} leaked cluster(s), ${summary.checkErrors} check error(s): see the Problems panel.`;
  if (summary.clean) void vscode.window.showInformationMessage(text);
  else void vscode.window.showWarningMessage(text);
  return out;
}
