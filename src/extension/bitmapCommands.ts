/**
 * "Manage Bitmaps…": persistent dirty bitmaps (what incremental backups read) added, removed,
 * cleared, enabled, disabled or merged, as `qemu-img bitmap` does (the engine's editBitmap writes
 * new tables first and switches the header last). Removing and clearing lose the record of changed
 * blocks a backup tool relies on, so they are confirmed in a modal dialog.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { BitmapOp } from '../engine/ops/bitmaps';
import { formatBytes } from '../engine/units';
import { confirm, refuseLocked, Services, targetUri, UserError } from './commandSupport';
import { editBitmapAt } from './engineApi';
import { imageFacts } from './imageFacts';

export interface BitmapCommandOptions {
  op?: BitmapOp['op'];
  name?: string;
  /** add: bytes per bit (a power of two, 512 B to 2 GiB; default 64 KiB) and whether it starts disabled */
  granularity?: number;
  disabled?: boolean;
  /** merge: the bitmap merged into `name` (from this image) */
  source?: string;
  confirm?: boolean;
}

const OPS: { op: BitmapOp['op']; label: string; detail: string; needsExisting: boolean }[] = [
  { op: 'add', label: 'Add Bitmap…', detail: 'Start recording which clusters the guest writes (for incremental backups).', needsExisting: false },
  { op: 'remove', label: 'Remove Bitmap…', detail: 'Delete a bitmap and the record it holds.', needsExisting: true },
  { op: 'clear', label: 'Clear Bitmap…', detail: 'Forget every recorded change (after a full backup).', needsExisting: true },
  { op: 'enable', label: 'Enable Bitmap…', detail: 'Record guest writes in it again.', needsExisting: true },
  { op: 'disable', label: 'Disable Bitmap…', detail: 'Stop recording; its content stays.', needsExisting: true },
  { op: 'merge', label: 'Merge Bitmaps…', detail: 'Add the changes recorded in one bitmap to another.', needsExisting: true },
];

/** QEMU's rule for bitmap names: 1 to 1023 bytes. */
function nameError(v: string, taken: readonly string[]): string | undefined {
  if (!v) return 'A name is needed.';
  if (Buffer.byteLength(v) > 1023) return 'At most 1023 bytes.';
  return taken.includes(v) ? 'A bitmap of this name exists.' : undefined;
}

export async function manageBitmaps(s: Services, uriArg?: unknown, opts: BitmapCommandOptions = {}): Promise<{ op: BitmapOp['op']; name: string } | undefined> {
  const uri = targetUri(s, uriArg);
  const facts = await imageFacts(uri.fsPath);
  if (facts.version < 3) throw new UserError('Persistent bitmaps need a qcow2 v3 image (Change Image Options… upgrades it).');
  const names = facts.bitmaps.map(b => b.name);
  let kind = opts.op;
  if (!kind) {
    const pick = await vscode.window.showQuickPick(OPS.filter(o => !o.needsExisting || names.length > 0 && (o.op !== 'merge' || names.length > 1)),
      { title: `Bitmaps of ${path.basename(uri.fsPath)}`, placeHolder: names.length ? `${names.length} bitmap${names.length === 1 ? '' : 's'}: ${names.join(', ')}` : 'No bitmaps yet' });
    if (!pick) return undefined;
    kind = pick.op;
  }
  let name = opts.name;
  if (name === undefined) {
    if (kind === 'add') {
      name = await vscode.window.showInputBox({ title: 'New bitmap name', validateInput: v => nameError(v, names) });
    } else {
      const items = facts.bitmaps.map(b => ({ label: b.name, description: `${b.enabled ? 'enabled' : 'disabled'}, ${formatBytes(b.granularity)} per bit` }));
      name = (await vscode.window.showQuickPick(items, { title: kind === 'merge' ? 'Merge into which bitmap?' : 'Which bitmap?' }))?.label;
    }
    if (name === undefined) return undefined;
  }
  let op: BitmapOp;
  switch (kind) {
    case 'add': {
      const err = nameError(name, names);
      if (err) throw new UserError(`Bitmap "${name}": ${err}`);
      op = { op: 'add', granularity: opts.granularity, disabled: opts.disabled };
      break;
    }
    case 'merge': {
      let source = opts.source;
      if (source === undefined) {
        source = (await vscode.window.showQuickPick(names.filter(n => n !== name), { title: `Merge which bitmap into "${name}"?` }));
        if (source === undefined) return undefined;
      }
      op = { op: 'merge', source };
      break;
    }
    default: op = { op: kind };
  }
  if (kind !== 'add' && !names.includes(name)) throw new UserError(`No bitmap named "${name}" in this image.`);
  refuseLocked(uri);
  if ((kind === 'remove' || kind === 'clear') && opts.confirm !== false && !await confirm(
    `${kind === 'remove' ? 'Remove' : 'Clear'} bitmap "${name}"?`,
    'The record of changed clusters it holds is lost: the next backup that relies on it must be a full one. This cannot be undone.',
    kind === 'remove' ? 'Remove' : 'Clear')) return undefined;
  await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Bitmap "${name}"` }, () => editBitmapAt(uri.fsPath, name, op));
  s.provider.document(uri)?.fileChanged();
  const done = { add: 'added', remove: 'removed', clear: 'cleared', enable: 'enabled', disable: 'disabled', merge: 'merged into' }[kind];
  void vscode.window.showInformationMessage(kind === 'merge' ? `Bitmap "${(op as { source: string }).source}" merged into "${name}".` : `Bitmap "${name}" ${done}.`);
  return { op: kind, name };
}
