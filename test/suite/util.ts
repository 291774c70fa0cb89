/**
 * What the extension-host suites share: the workspace folder, QEMU's tools (their chatter kept out of
 * the log; QEMU's PBKDF2 calibration failures retried by the one rule in test/helpers/qemuTiming.ts),
 * and waiting for a condition.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { calibrationFailed, timingPause } from '../helpers/qemuTiming';

/** The workspace folder (the test workspace e2e/fixtures.mjs builds). */
export const ws = () => vscode.workspace.workspaceFolders![0].uri.fsPath;
export const wsPath = (name: string) => path.join(ws(), name);
export const wsUri = (name: string) => vscode.Uri.file(wsPath(name));

export const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

/** Runs qemu-img / qemu-io and returns stdout; throws with its stderr when it fails. */
export function qemu(cmd: string, ...args: string[]): string {
  for (let i = 1; ; i++) {
    const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, stdio: ['ignore', 'pipe', 'pipe'] });
    if (r.status === 0) return r.stdout;
    if (!calibrationFailed(r.status, r.stderr, i)) {
      const shown = args.map(a => (a.startsWith('secret,') ? 'secret,…' : a)).join(' ');
      throw new Error(`${cmd} ${shown} failed: ${r.stderr || r.stdout || r.error?.message}`);
    }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, timingPause(i));
  }
}
export const qemuImg = (...args: string[]) => qemu('qemu-img', ...args);

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
