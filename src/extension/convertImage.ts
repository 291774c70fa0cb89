/**
 * "Convert / Export Image…": a deep copy of the image (its backing chain read through) into a new
 * standalone qcow2, raw, VHD (vpc: dynamic or fixed, what Hyper-V and Azure take) or VMDK
 * (monolithicSparse for VMware and VirtualBox, streamOptimized for OVA), as `qemu-img convert`
 * writes it. The engine writes a temporary file beside the destination and renames it at the end,
 * so a cancel or a failure leaves the destination as it was; replacing an existing file is
 * confirmed in a modal dialog.
 *
 * An encrypted image is read with the session's passphrase (it must be unlocked first). Its qcow2
 * copy stays encrypted: a new LUKS header and master key, opened by the same passphrase, which the
 * session keeps for it. A raw, VHD or VMDK copy cannot be encrypted; the modal says the copy holds
 * the guest unencrypted, and nothing is written unless it is accepted.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { Secret } from '../engine/crypto/secret';
import type { ConvertResult } from '../engine/ops/convert';
import type { OptionEntry } from '../engine/ops/options';
import { formatBytes } from '../engine/units';
import { confirm, refuseLocked, sessionKeys, Services, targetUri, UserError, withCancellableProgress } from './commandSupport';
import { convertAt } from './engineApi';
import { noticeWritten, optionsArg, refreshViews, rel, uriOf } from './afterWrite';

export type ExportFormat = 'qcow2' | 'raw' | 'vpc' | 'vmdk';

export interface ConvertImageOptions {
  /** Path or URI of the new file. */
  output?: string | vscode.Uri;
  format?: ExportFormat;
  /** vpc: dynamic | fixed; vmdk: monolithicSparse | streamOptimized. */
  subformat?: string;
  /** qcow2 only: compress every data cluster (-c), with this compression type. */
  compress?: 'none' | 'zlib' | 'zstd';
  /** Ask before replacing an existing file or writing an encrypted image's guest unencrypted (default true). */
  confirm?: boolean;
  /** An encrypted image's qcow2 copy: PBKDF2 milliseconds for its key slot (default QEMU's 2000). */
  iterTimeMs?: number;
}

export interface Converted { output: string; format: ExportFormat; subformat?: string; virtualSize: number; fileSize: number }

interface FormatChoice { label: string; format: ExportFormat; ext: string; detail: string }
const FORMATS: FormatChoice[] = [
  { label: 'QCOW2 (standalone copy)', format: 'qcow2', ext: 'qcow2', detail: 'The backing chain merged into one image; snapshots and bitmaps are not copied.' },
  { label: 'Raw disk image', format: 'raw', ext: 'img', detail: 'Byte for byte the guest disk (sparse where it reads as zeros).' },
  { label: 'VHD (vpc)', format: 'vpc', ext: 'vhd', detail: 'Hyper-V, Azure, Virtual PC.' },
  { label: 'VMDK', format: 'vmdk', ext: 'vmdk', detail: 'VMware, VirtualBox; streamOptimized for OVA appliances.' },
];

const SUBFORMATS: Partial<Record<ExportFormat, { label: string; value: string; detail: string }[]>> = {
  vpc: [
    { label: 'Dynamic', value: 'dynamic', detail: 'Grows as the guest writes (qemu-img\'s default).' },
    { label: 'Fixed', value: 'fixed', detail: 'The whole disk allocated, as Azure requires.' },
  ],
  vmdk: [
    { label: 'monolithicSparse', value: 'monolithicSparse', detail: 'One growable file (qemu-img\'s default): VMware Workstation, VirtualBox.' },
    { label: 'streamOptimized', value: 'streamOptimized', detail: 'Compressed, read front to back: for OVA/OVF appliances and vSphere import.' },
  ],
};

export const EXTENSIONS: Record<ExportFormat, string> = { qcow2: 'qcow2', raw: 'img', vpc: 'vhd', vmdk: 'vmdk' };

function defaultOutput(src: vscode.Uri, format: ExportFormat, subformat?: string): vscode.Uri {
  const stem = src.path.replace(/\.[^./]*$/, '');
  const tag = format === 'qcow2' ? '-standalone' : subformat === 'fixed' || subformat === 'streamOptimized' ? `-${subformat}` : '';
  return src.with({ path: `${stem}${tag}.${EXTENSIONS[format]}` });
}

export async function convertImage(s: Services, uriArg?: unknown, optsArg?: unknown): Promise<Converted | undefined> {
  const opts = optionsArg<ConvertImageOptions>(optsArg);
  const src = targetUri(s, uriArg);
  let format = opts.format, subformat = opts.subformat, compress = opts.compress;
  const { keys, encrypted } = await sessionKeys(s, src, 'export');
  if (!format) {
    const pick = await vscode.window.showQuickPick(FORMATS.map(f => ({ ...f, description: f.format })), { title: `Convert / Export ${rel(src)}`, placeHolder: 'Into which format?' });
    if (!pick) return undefined;
    format = pick.format;
  }
  if (!FORMATS.some(f => f.format === format)) throw new UserError(`Unknown format "${format}" (qcow2, raw, vpc or vmdk).`);
  const subs = SUBFORMATS[format];
  if (subs && subformat === undefined && opts.output === undefined) {
    const pick = await vscode.window.showQuickPick(subs.map(x => ({ ...x, description: x.value })), { title: `Convert to ${format}`, placeHolder: 'Which kind?' });
    if (!pick) return undefined;
    subformat = pick.value;
  }
  if (subformat !== undefined && !subs?.some(x => x.value === subformat)) throw new UserError(`The ${format} format has no subformat "${subformat}"${subs ? ` (${subs.map(x => x.value).join(' or ')})` : ''}.`);
  if (encrypted && format === 'qcow2') {
    // the copy stays encrypted, and QEMU stores compressed clusters unencrypted
    if (compress !== undefined && compress !== 'none') throw new UserError(`${rel(src)} is encrypted: its qcow2 copy stays encrypted, without compression (QEMU stores compressed clusters unencrypted).`);
    compress = 'none';
  }
  if (format === 'qcow2' && compress === undefined && opts.output === undefined) {
    const pick = await vscode.window.showQuickPick([
      { label: 'No compression', value: 'none' as const, detail: 'Fastest; the copy takes what the guest data takes.' },
      { label: 'zlib', value: 'zlib' as const, detail: 'Compressed clusters every QEMU reads.' },
      { label: 'zstd', value: 'zstd' as const, detail: 'Faster compression; QEMU 5.1 or later reads it.' },
    ], { title: 'Convert to qcow2', placeHolder: 'Compress the data clusters?' });
    if (!pick) return undefined;
    compress = pick.value;
  }
  if (compress !== undefined && compress !== 'none' && format !== 'qcow2') throw new UserError('Compression is offered for qcow2 outputs only.');
  let out = opts.output === undefined ? undefined : uriOf(opts.output);
  if (!out) {
    const f = FORMATS.find(x => x.format === format)!;
    out = await vscode.window.showSaveDialog({ title: `Export ${path.basename(src.fsPath)} as ${f.label}`, saveLabel: 'Export', defaultUri: defaultOutput(src, format, subformat), filters: { [f.label]: [f.ext, ...(format === 'raw' ? ['raw'] : [])] } });
    if (!out) return undefined;
  }
  if (out.scheme !== 'file') throw new UserError('Images are written to files on this machine (or the remote host VS Code is connected to).');
  if (path.resolve(out.fsPath) === path.resolve(src.fsPath)) throw new UserError('The output must be a different file from the image converted.');
  const exists = fs.existsSync(out.fsPath);
  if (exists) refuseLocked(out);
  const keepEncrypted = encrypted && format === 'qcow2';
  const what = `${format}${subformat ? ` (${subformat})` : ''}${compress && compress !== 'none' ? `, ${compress}-compressed` : ''}${keepEncrypted ? ', encrypted' : ''}`;
  const plainCopy = encrypted && !keepEncrypted
    ? `${rel(src)} is encrypted; a ${format} file cannot be, so the copy holds its guest disk unencrypted: anyone who can read ${rel(out)} reads the disk without the passphrase.` : undefined;
  if (exists && opts.confirm !== false && !await confirm(`Replace ${rel(out)} with a ${what} copy of ${rel(src)}?`,
    `${rel(out)} exists and is overwritten once the copy is complete (until then it stays as it is).${plainCopy ? `\n\n${plainCopy}` : ''}`, 'Replace')) return undefined;
  if (!exists && plainCopy && opts.confirm !== false && !await confirm(`Export ${rel(src)} unencrypted?`, plainCopy, 'Export Unencrypted')) return undefined;
  const entries: OptionEntry[] = [];
  if (subformat) entries.push({ key: 'subformat', value: subformat });
  if (compress === 'zstd') entries.push({ key: 'compression_type', value: 'zstd' });
  // the session's passphrase opens the copy too (the id names it only inside this call)
  const sessionKey = keepEncrypted ? keys({ path: src.fsPath, depth: 0 }) : undefined;
  if (sessionKey) {
    entries.push({ key: 'encrypt.format', value: 'luks' }, { key: 'encrypt.key-secret', value: 'session' });
    if (opts.iterTimeMs !== undefined) entries.push({ key: 'encrypt.iter-time', value: String(opts.iterTimeMs) });
  }
  const dest = out;
  const r: ConvertResult = await withCancellableProgress(`Exporting ${rel(src)} as ${what}`, (signal, onProgress) =>
    convertAt({ sources: [src.fsPath], output: dest.fsPath, outputFormat: format, options: entries, compress: compress !== undefined && compress !== 'none', sourceKeys: [keys], encryptSecret: sessionKey }, { signal, onProgress }));
  // the encrypted copy opens with the session's passphrase (in key slot 0): it is unlocked for the session too
  if (sessionKey) await s.keyring.set(dest.fsPath, Secret.fromBytes(sessionKey.bytes()), false, 0);
  const fileSize = fs.statSync(dest.fsPath).size;
  refreshViews(s, dest);
  noticeWritten(`Exported ${rel(src)} to ${rel(dest)} (${what}): ${formatBytes(r.virtualSize)} virtual disk, ${formatBytes(fileSize)} file.`, dest, format === 'qcow2');
  return { output: dest.fsPath, format, subformat, virtualSize: r.virtualSize, fileSize };
}
