/**
 * What the extension-host suites share: the workspace folder, QEMU's tools (their chatter kept out of
 * the log; QEMU's PBKDF2 calibration failures retried by the one rule in test/helpers/qemuTiming.ts),
 * and waiting for a condition.
 */
import { spawnSync } from 'node:child_process';
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
