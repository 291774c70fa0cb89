/**
 * "Compare with…": the guest contents of two images (each read through its backing chain) as
 * `qemu-img compare` judges them, read-only. The verdict comes as a notification (identical, or
 * the first differing offset); every differing range, with the sizes and offsets in both hex and
 * human units, opens in a read-only text document on request, not in a modal dialog. Encrypted
 * images are compared decrypted, with the passphrases the session unlocked them with.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { CompareError, type CompareRange, type CompareResult } from '../engine/ops/compare';
import { formatBytes } from '../engine/units';
import { sessionKeys, Services, targetUri, UserError, withCancellableProgress } from './commandSupport';
import { compareAt } from './engineApi';
import { optionsArg, rel, selectionArg, uriOf } from './afterWrite';

export interface CompareImagesOptions {
  /** The image compared with (path or URI). */
  other?: string | vscode.Uri;
  /** qemu-img compare -s: sizes and block status must match too. */
  strict?: boolean;
  /** Open the report of every differing range (default: offered as a button). */
  showReport?: boolean;
}

export interface Compared {
  identical: boolean;
  firstMismatch?: number;
  differences: CompareRange[];
  sizeA: number;
  sizeB: number;
  messages: string[];
  report: string;
}

/** At most this many ranges are listed in the report (the count and the total are always exact). */
const REPORT_LIMIT = 5000;

const hex = (n: number) => '0x' + n.toString(16);

export function compareReport(a: string, b: string, r: CompareResult): string {
  const lines = [`Compare ${a}`, `   with ${b}`, ''];
  lines.push(`Virtual sizes: ${formatBytes(r.sizeA)} and ${formatBytes(r.sizeB)}${r.sizeA === r.sizeB ? '' : ' (different: the extra part of the larger one must read as zeros)'}`);
  if (r.identical) {
    lines.push('', 'Identical: the guest sees the same bytes in both.');
    return lines.join('\n') + '\n';
  }
  const total = r.differences.reduce((n, d) => n + d.length, 0);
  lines.push('', `Different. First difference at guest offset ${r.firstMismatch === undefined ? '(none: ' + r.messages[0] + ')' : `${r.firstMismatch} (${hex(r.firstMismatch)}, ${formatBytes(r.firstMismatch)} in)`}.`);
  if (r.statusMismatches.length) lines.push(`Strict mode: block status differs at ${r.statusMismatches.length} offset${r.statusMismatches.length === 1 ? '' : 's'} (first ${r.statusMismatches[0]}).`);
  lines.push(`${r.differences.length} differing range${r.differences.length === 1 ? '' : 's'}, ${formatBytes(total)} in all (compared 512 bytes at a time):`, '');
  const w = Math.max(18, hex(Math.max(r.sizeA, r.sizeB)).length + 2);
  lines.push(`${'start'.padEnd(w)}${'end (exclusive)'.padEnd(w)}length`);
  for (const d of r.differences.slice(0, REPORT_LIMIT)) lines.push(`${hex(d.start).padEnd(w)}${hex(d.start + d.length).padEnd(w)}${formatBytes(d.length)}   (at ${formatBytes(d.start)})`);
  if (r.differences.length > REPORT_LIMIT) lines.push(`… and ${r.differences.length - REPORT_LIMIT} more ranges.`);
  return lines.join('\n') + '\n';
}

async function pickOther(first: vscode.Uri): Promise<vscode.Uri | undefined> {
  const found = (await vscode.workspace.findFiles('**/*.{qcow2,img,raw,vhd,vpc,vmdk}', '**/node_modules/**', 500))
    .filter(u => path.resolve(u.fsPath) !== path.resolve(first.fsPath));
  type Item = vscode.QuickPickItem & { uri?: vscode.Uri };
  const items: Item[] = found.map(u => ({ label: path.basename(u.fsPath), detail: rel(u), uri: u }));
  items.push({ label: '$(folder-opened) Browse…', alwaysShow: true });
  const pick = await vscode.window.showQuickPick(items, { title: `Compare ${rel(first)} with…`, matchOnDetail: true });
  if (!pick) return undefined;
  if (pick.uri) return pick.uri;
  return (await vscode.window.showOpenDialog({ title: `Compare ${rel(first)} with`, canSelectMany: false, defaultUri: vscode.Uri.file(path.dirname(first.fsPath)), openLabel: 'Compare' }))?.[0];
}

async function showReport(text: string): Promise<void> {
  const doc = await vscode.workspace.openTextDocument({ content: text, language: 'plaintext' });
  await vscode.window.showTextDocument(doc, { preview: true });
}

export async function compareImages(s: Services, uriArg?: unknown, optsArg?: unknown): Promise<Compared | undefined> {
  const opts = optionsArg<CompareImagesOptions>(optsArg);
  const selected = selectionArg(optsArg);
  const a = targetUri(s, uriArg);
  let b = opts.other === undefined ? undefined : uriOf(opts.other);
  // two images selected in the Explorer: compare them with each other
  if (!b && selected.length === 2) b = selected.find(u => u.toString() !== a.toString());
  b ??= await pickOther(a);
  if (!b) return undefined;
  if (a.scheme !== 'file' || b.scheme !== 'file') throw new UserError('Images are compared from files on this machine (or the remote host VS Code is connected to).');
  const other = b;
  // encrypted images are compared decrypted, with the session's passphrases (locked ones refused)
  const keysA = (await sessionKeys(s, a, 'compare')).keys, keysB = (await sessionKeys(s, b, 'compare')).keys;
  const r = await withCancellableProgress(`Comparing ${path.basename(a.fsPath)} with ${path.basename(b.fsPath)}`, (signal, onProgress) =>
    compareAt(a.fsPath, other.fsPath, { all: true, strict: opts.strict, keysA, keysB, signal, onProgress }).catch((e: unknown) => {
      // an image that does not open or read: qemu-img's words, on one line; a cancel stays a cancel
      throw e instanceof CompareError ? new UserError(e.message.split('\n')[0]) : e;
    }));
  const report = compareReport(rel(a), rel(b), r);
  const total = r.differences.reduce((n, d) => n + d.length, 0);
  const summary = r.identical
    ? `${rel(a)} and ${rel(b)} are identical${r.sizeA === r.sizeB ? '' : ` (sizes ${formatBytes(r.sizeA)} and ${formatBytes(r.sizeB)}; the extra part reads as zeros)`}.`
    : `${rel(a)} and ${rel(b)} differ: first at offset ${r.firstMismatch ?? '?'}${r.firstMismatch === undefined ? '' : ` (${hex(r.firstMismatch)})`}; ${r.differences.length} range${r.differences.length === 1 ? '' : 's'}, ${formatBytes(total)} in all.`;
  s.output.appendLine(report);
  if (opts.showReport) await showReport(report);
  else if (r.identical) void vscode.window.showInformationMessage(summary);
  else {
    void Promise.resolve(vscode.window.showInformationMessage(summary, 'Show Differences')).then(c => (c ? showReport(report) : undefined), () => undefined);
  }
  return { identical: r.identical, firstMismatch: r.firstMismatch, differences: r.differences, sizeA: r.sizeA, sizeB: r.sizeB, messages: r.messages, report };
}
