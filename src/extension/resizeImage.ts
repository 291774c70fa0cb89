/**
 * "Resize Image…": the virtual disk grown or shrunk as `qemu-img resize` does (the engine's
 * resizeQcow2 writes in its documented order). Growing adds space the guest must still claim (its
 * partition and file system); shrinking discards everything past the new end, so it is asked for
 * in a modal dialog naming how much is lost. What QEMU 7.2 refuses (a v2 image with snapshots) the
 * engine refuses, with QEMU's words.
 */
import * as vscode from 'vscode';
import { ResizeRefused } from '../engine/ops/resize';
import { parseQemuSize } from '../engine/ops/options';
import { formatBytes } from '../engine/units';
import { confirm, refuseLocked, Services, targetUri, UserError } from './commandSupport';
import { resizeImageAt } from './engineApi';
import { imageFacts } from './imageFacts';

export interface ResizeImageOptions {
  /** qemu-img resize's SIZE: "30G", "+10G", "-1G" (shrinking also needs `shrink`). */
  size?: string;
  shrink?: boolean;
  confirm?: boolean;
}

/** "+10G" → { delta }, "30G" → { absolute }, as qemu-img resize reads its SIZE. */
export function parseResizeSize(text: string): { absolute: number } | { delta: number } | undefined {
  const t = text.trim();
  const sign = t[0] === '+' ? 1 : t[0] === '-' ? -1 : 0;
  const n = parseQemuSize(sign ? t.slice(1) : t);
  if (n === undefined) return undefined;
  return sign ? { delta: sign * n } : { absolute: n };
}

export async function resizeImage(s: Services, uriArg?: unknown, opts: ResizeImageOptions = {}): Promise<{ oldSize: number; newSize: number } | undefined> {
  const uri = targetUri(s, uriArg);
  const facts = await imageFacts(uri.fsPath);
  const target = (spec: { absolute: number } | { delta: number }) => ('absolute' in spec ? spec.absolute : facts.virtualSize + spec.delta);
  let text = opts.size;
  if (text === undefined) {
    text = await vscode.window.showInputBox({
      title: `Resize ${vscode.workspace.asRelativePath(uri)} (now ${formatBytes(facts.virtualSize)})`,
      value: '+10G',
      prompt: 'The new virtual size (30G), or a change (+10G, -1G). K, M, G, T mean KiB, MiB, GiB, TiB.',
      validateInput: v => {
        const spec = parseResizeSize(v);
        if (!spec) return 'A size such as 30G, +10G or -512M.';
        const n = target(spec);
        if (n <= 0) return 'The new size must be more than 0 bytes.';
        return n === facts.virtualSize ? 'That is the current size.' : undefined;
      },
    });
    if (text === undefined) return undefined;
  }
  const spec = parseResizeSize(text);
  if (!spec) throw new UserError('The size must be like 30G, +10G or -512M.');
  const newSize = target(spec);
  const shrinking = newSize < facts.virtualSize;
  refuseLocked(uri);
  if (shrinking) {
    if (opts.confirm !== false && !await confirm(
      `Shrink ${vscode.workspace.asRelativePath(uri)} from ${formatBytes(facts.virtualSize)} to ${formatBytes(newSize)}?`,
      `Everything in the last ${formatBytes(facts.virtualSize - newSize)} of the disk is deleted. Shrink the guest's partitions and file systems first; this cannot be undone.`, 'Shrink')) return undefined;
  }
  try {
    const r = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Resizing ${vscode.workspace.asRelativePath(uri)}` },
      () => resizeImageAt(uri.fsPath, spec, { shrink: shrinking && (opts.shrink ?? true) }));
    s.provider.document(uri)?.fileChanged();
    void vscode.window.showInformationMessage(`Resized ${vscode.workspace.asRelativePath(uri)}: ${formatBytes(r.oldSize)} → ${formatBytes(r.newSize)}.${shrinking ? '' : ' Grow the guest\'s partition and file system to use the new space.'}`);
    return r;
  } catch (e) {
    if (e instanceof ResizeRefused) throw new UserError(e.message.split('\n')[0]);
    throw e;
  }
}
