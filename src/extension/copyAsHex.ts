/**
 * "Copy Cluster as Hex": the host cluster holding the selected (or given) host offset, as an
 * offset-prefixed hex dump (16 bytes a line, like `xxd -g1`), to the clipboard.
 */
import * as fs from 'node:fs/promises';
import * as vscode from 'vscode';
import { Qcow2Image } from '../engine/image/image';
import { parseOffset } from '../engine/units';
import { Services, targetUri, UserError } from './commandSupport';

export function hexDump(buf: Uint8Array, base: number): string {
  const lines: string[] = [];
  for (let i = 0; i < buf.length; i += 16) {
    const row = buf.subarray(i, i + 16);
    const hexPart = Array.from(row, b => b.toString(16).padStart(2, '0')).join(' ').padEnd(47);
    const ascii = Array.from(row, b => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${(base + i).toString(16).padStart(8, '0')}: ${hexPart}  ${ascii}`);
  }
  return lines.join('\n') + '\n';
}

export async function copyClusterAsHex(s: Services, uriArg?: unknown, hostOffsetArg?: unknown): Promise<{ hostOffset: number; clusterOffset: number; length: number; text: string } | undefined> {
  const uri = targetUri(s, uriArg);
  let hostOffset = typeof hostOffsetArg === 'number' ? hostOffsetArg : typeof hostOffsetArg === 'string' ? parseOffset(hostOffsetArg) : s.provider.selectionOf(uri).hostOffset;
  if (hostOffset === undefined) {
    const text = await vscode.window.showInputBox({ prompt: 'Host offset of a byte in the cluster to copy', placeHolder: '0x30000', validateInput: v => parseOffset(v) === undefined ? 'Enter a number (decimal or 0x…)' : undefined });
    if (text === undefined) return undefined;
    hostOffset = parseOffset(text)!;
  }
  const img = await Qcow2Image.open(uri.fsPath, { openBacking: false, openDataFile: false });
  const clusterSize = img.clusterSize;
  await img.close();
  const fh = await fs.open(uri.fsPath, 'r');
  try {
    const size = (await fh.stat()).size;
    if (!(hostOffset >= 0 && hostOffset < size)) throw new UserError(`Host offset ${hostOffset} is outside the ${size}-byte file.`);
    const clusterOffset = hostOffset - (hostOffset % clusterSize);
    const length = Math.min(clusterSize, size - clusterOffset);
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, clusterOffset);
    const text = hexDump(buf, clusterOffset);
    await vscode.env.clipboard.writeText(text);
    void vscode.window.setStatusBarMessage(`Copied cluster at 0x${clusterOffset.toString(16)} (${length} bytes) as hex`, 4000);
    return { hostOffset, clusterOffset, length, text };
  } finally {
    await fh.close();
  }
}
