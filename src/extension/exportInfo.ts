/** "Export Image Info (JSON)": `qemu-img info --output=json` of the image, to a file or a new tab. */
import * as vscode from 'vscode';
import { Qcow2Image } from '../engine/image/image';
import { formatInfoJson, imageInfo, ImageInfo } from '../engine/image/info';
import { Services, targetUri } from './commandSupport';

export async function exportImageInfo(s: Services, uriArg?: unknown, opts: { output?: string | vscode.Uri } = {}): Promise<{ info: ImageInfo; output?: string } | undefined> {
  const uri = targetUri(s, uriArg);
  const img = await Qcow2Image.open(uri.fsPath, { openBacking: false });
  let info: ImageInfo;
  try {
    info = await imageInfo(img);
  } finally {
    await img.close();
  }
  const json = formatInfoJson(info);
  if (opts.output) {
    const out = typeof opts.output === 'string' ? vscode.Uri.file(opts.output) : opts.output;
    await vscode.workspace.fs.writeFile(out, Buffer.from(json));
    return { info, output: out.fsPath };
  }
  const doc = await vscode.workspace.openTextDocument({ language: 'json', content: json });
  await vscode.window.showTextDocument(doc, { preview: false });
  return { info };
}
