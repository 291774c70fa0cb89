/**
 * The getting-started walkthrough's "Open Sample Image": a small QEMU-made image (scripts/make-sample.sh)
 * shipped gzipped in media/, inflated into the extension's global storage — never into the user's
 * workspace — and opened in QCOW2 Lens, so a first-time user can try check, offsets and compaction on
 * an image whose loss costs nothing.
 */
import * as fs from 'node:fs/promises';
import * as zlib from 'node:zlib';
import { promisify } from 'node:util';
import * as vscode from 'vscode';
import { VIEW_TYPE } from './editorProvider';

const gunzip = promisify(zlib.gunzip);

export async function openSampleImage(context: vscode.ExtensionContext): Promise<string> {
  const packed = await fs.readFile(vscode.Uri.joinPath(context.extensionUri, 'media', 'sample.qcow2.gz').fsPath);
  const dir = context.globalStorageUri;
  await fs.mkdir(dir.fsPath, { recursive: true });
  const target = vscode.Uri.joinPath(dir, 'sample.qcow2');
  // A fresh copy each time: the walkthrough's later steps (compaction) may have rewritten the last one.
  const tmp = target.fsPath + '.tmp';
  await fs.writeFile(tmp, await gunzip(packed));
  await fs.rename(tmp, target.fsPath);
  await vscode.commands.executeCommand('vscode.openWith', target, VIEW_TYPE);
  return target.fsPath;
}
