/**
 * "Change Image Options…": `qemu-img amend` of the qcow2 version (compat 0.10 / 1.1) and lazy
 * refcounts, the options people change on an existing image. The engine's amendQcow2 rewrites the
 * header; a downgrade to v2 it cannot perform (features v2 lacks) is refused before any write.
 * Each change is confirmed in a modal dialog saying what it means for the QEMU versions that can
 * open the image.
 */
import * as vscode from 'vscode';
import { confirm, refuseLocked, Services, targetUri } from './commandSupport';
import { amendImageAt } from './engineApi';
import { imageFacts } from './imageFacts';

export interface AmendImageOptions {
  /** qemu-img amend -o options, e.g. { compat: '1.1', lazy_refcounts: 'on' }. */
  options?: Record<string, string>;
  confirm?: boolean;
}

interface Choice { label: string; detail: string; options: Record<string, string>; warning: string }

export async function amendImage(s: Services, uriArg?: unknown, opts: AmendImageOptions = {}): Promise<{ options: Record<string, string> } | undefined> {
  const uri = targetUri(s, uriArg);
  const facts = await imageFacts(uri.fsPath);
  let options = opts.options;
  let warning = 'The image header is rewritten.';
  if (!options) {
    const choices: Choice[] = [];
    if (facts.version === 2) choices.push({ label: 'Upgrade to qcow2 v3 (compat 1.1)', detail: 'Zero clusters, lazy refcounts, bitmaps; QEMU 1.1 or later can open it.', options: { compat: '1.1' }, warning: 'QEMU older than 1.1 will no longer open the image.' });
    else choices.push({ label: 'Downgrade to qcow2 v2 (compat 0.10)', detail: 'For very old QEMU; refused if the image uses v3-only features.', options: { compat: '0.10' }, warning: 'Only QEMU\'s v2 header remains; an image using v3-only features (zero clusters, internal snapshots, lazy refcounts) is refused and left as it is.' });
    if (facts.version === 3) {
      choices.push(facts.lazyRefcounts
        ? { label: 'Turn lazy refcounts off', detail: 'Refcounts written with every allocation: no repair needed after a crash.', options: { lazy_refcounts: 'off' }, warning: 'QEMU then writes refcounts with every allocation again.' }
        : { label: 'Turn lazy refcounts on', detail: 'Faster writes; after a host crash the image needs a repair (qemu-img check -r all).', options: { lazy_refcounts: 'on' }, warning: 'After a host crash the image must be repaired before use.' });
    }
    const pick = await vscode.window.showQuickPick(choices, { title: `Change options of ${vscode.workspace.asRelativePath(uri)}`, placeHolder: `qcow2 v${facts.version}${facts.version === 3 ? `, lazy refcounts ${facts.lazyRefcounts ? 'on' : 'off'}` : ''}` });
    if (!pick) return undefined;
    options = pick.options;
    warning = pick.warning;
  }
  refuseLocked(uri);
  const what = Object.entries(options).map(([k, v]) => `${k}=${v}`).join(', ');
  if (opts.confirm !== false && !await confirm(`Change ${vscode.workspace.asRelativePath(uri)} (${what})?`, warning, 'Change')) return undefined;
  // a change the engine cannot make is refused before anything is written, with QEMU's words
  await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Changing ${vscode.workspace.asRelativePath(uri)}` },
    () => amendImageAt(uri.fsPath, Object.entries(options).map(([key, value]) => ({ key, value }))));
  s.provider.document(uri)?.fileChanged();
  void vscode.window.showInformationMessage(`Changed ${vscode.workspace.asRelativePath(uri)}: ${what}.`);
  return { options };
}
