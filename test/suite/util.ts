/**
 * What the extension-host suites share: the workspace folder, QEMU's tools (their chatter kept out of
 * the log; QEMU's PBKDF2 calibration failures retried by the one rule in test/helpers/qemuTiming.ts),
 * LUKS-encrypted images made by qemu-img, and waiting for a condition.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { FromWebviewMessage, ImageSummary } from '../../src/protocol';
import { calibrationFailed, timingPause } from '../helpers/qemuTiming';

/** The workspace folder (the test workspace e2e/fixtures.mjs builds). */
export const ws = () => vscode.workspace.workspaceFolders![0].uri.fsPath;
export const wsPath = (name: string) => path.join(ws(), name);
export const wsUri = (name: string) => vscode.Uri.file(wsPath(name));

export const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

/** Runs qemu-img / qemu-io and returns how it ended (its own failures included, never thrown). */
export function qemuRun(cmd: string, ...args: string[]): { status: number | null; stdout: string; stderr: string; error?: Error } {
  for (let i = 1; ; i++) {
    const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, stdio: ['ignore', 'pipe', 'pipe'] });
    if (r.status === 0 || !calibrationFailed(r.status, r.stderr, i)) return r;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, timingPause(i));
  }
}

/** Runs qemu-img / qemu-io and returns stdout; throws with its stderr when it fails. */
export function qemu(cmd: string, ...args: string[]): string {
  const r = qemuRun(cmd, ...args);
  if (r.status === 0) return r.stdout;
  const shown = args.map(a => (a.startsWith('secret,') ? 'secret,…' : a)).join(' ');
  throw new Error(`${cmd} ${shown} failed: ${r.stderr || r.stdout || r.error?.message}`);
}
export const qemuImg = (...args: string[]) => qemu('qemu-img', ...args);

/** qemu-img's --image-opts for an encrypted qcow2 image opened with the secret object `secretId`. */
export const luksOpts = (file: string, secretId: string) => `driver=qcow2,file.filename=${file},encrypt.key-secret=${secretId}`;

/**
 * A LUKS-encrypted 8 MiB qcow2 image in the workspace, made by qemu-img create (one key slot, PBKDF2
 * iter-time 10 ms so unlocking is quick), with data qemu-io writes at 0 (64 KiB of 0x5a) and 3 MiB
 * (128 KiB of 0xa5); and its guest bytes as qemu-img convert decrypts them.
 */
export function luksImage(name: string, passphrase: string): { file: string; plain: Buffer } {
  const file = wsPath(name);
  fs.rmSync(file, { force: true });
  const secret = ['--object', `secret,id=s0,data=${passphrase}`];
  qemu('qemu-img', 'create', '-q', '-f', 'qcow2', ...secret, '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10', file, '8M');
  qemu('qemu-io', ...secret, '--image-opts', '-c', 'write -P 0x5a 0 64k', '-c', 'write -P 0xa5 3M 128k', luksOpts(file, 's0'));
  const raw = `${file}.raw`;
  try {
    qemu('qemu-img', 'convert', ...secret, '--image-opts', luksOpts(file, 's0'), '-O', 'raw', raw);
    return { file, plain: fs.readFileSync(raw) };
  } finally {
    fs.rmSync(raw, { force: true });
  }
}

let requestId = 1;
/** A request to the open tab's view model, as its webview would send it (qcow2Lens.internal.ask). */
export const askTab = <T>(uri: vscode.Uri, m: Omit<FromWebviewMessage, 'requestId'> & { type: string }) =>
  vscode.commands.executeCommand<T>('qcow2Lens.internal.ask', uri, { ...m, requestId: requestId++ });
export const tabSummary = async (uri: vscode.Uri) => (await askTab<{ summary: ImageSummary }>(uri, { type: 'getSummary' })).summary;

/** Opens the image in QCOW2 Lens and waits until its view model answers. */
export async function openTab(uri: vscode.Uri): Promise<void> {
  await vscode.commands.executeCommand('vscode.openWith', uri, 'qcow2Lens.editor');
  for (let i = 0; i < 100 && !(await tabSummary(uri).catch(() => undefined)); i++) await sleep(100);
}

/** Waits until probe() gives something other than undefined or false, and returns it. */
export async function until<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, ms = 20000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}
