/**
 * What every command needs: which image it acts on (a URI argument, else the active qcow2 tab),
 * modal confirmation, cancellable progress bridged to an AbortSignal, the banner in the image's
 * tabs, and the refusal to write an image that QEMU holds open.
 */
import * as vscode from 'vscode';
import type { CheckService } from './diagnostics';
import type { Qcow2EditorProvider } from './editorProvider';
import type { Keyring } from './keyring';
import { isCancelled } from '../engine/cancel';
import type { KeyLookup } from '../engine/image/encryption';
import { Qcow2Image } from '../engine/image/image';
import { scriptedConfirm } from './prompts';
import { UserError } from './userError';

export { refuseLocked, UserError } from './userError';

export interface Services {
  provider: Qcow2EditorProvider;
  checks: CheckService;
  output: vscode.OutputChannel;
  /** Passphrases of encrypted images (session memory, SecretStorage when remembered). */
  keyring: Keyring;
}

/** Whether the image's header says it is encrypted (read alone: no chain, no key); false for a file that does not open as qcow2 (the command's engine call judges it). */
export async function isEncrypted(path: string): Promise<boolean> {
  let img: Qcow2Image;
  try {
    img = await Qcow2Image.open(path, { openBacking: false, openDataFile: false });
  } catch {
    return false;
  }
  try {
    return img.encrypted;
  } finally {
    await img.close();
  }
}

/**
 * The session's passphrases for a command that reads the guest of `uri` (and of `chain`, the other
 * images it reads or writes: each encrypted layer finds its own image's passphrase); an encrypted
 * image that is locked is refused in words saying what to do, `verb` naming the command ("compact",
 * "export"). `encrypted`: whether `uri` itself is.
 */
export async function sessionKeys(s: Services, uri: vscode.Uri, verb: string, chain: readonly string[] = []): Promise<{ keys: KeyLookup; encrypted: boolean }> {
  let encrypted = false;
  for (const p of [uri.fsPath, ...chain.filter(c => c !== uri.fsPath)]) {
    if (!await isEncrypted(p)) continue;
    if (p === uri.fsPath) encrypted = true;
    if (!s.keyring.lookup({ path: p, depth: 0 })) {
      throw new UserError(`${vscode.workspace.asRelativePath(p)} is encrypted and locked: unlock it (Unlock…) first, then ${verb} ${p === uri.fsPath ? 'it' : vscode.workspace.asRelativePath(uri)}.`);
    }
  }
  return { keys: s.keyring.lookup, encrypted };
}

/** The image a command acts on: its URI argument (Uri or path string), else the active qcow2 tab. */
export function targetUri(s: Services, arg: unknown): vscode.Uri {
  if (arg instanceof vscode.Uri) return arg;
  if (typeof arg === 'string' && arg) return arg.includes('://') ? vscode.Uri.parse(arg) : vscode.Uri.file(arg);
  const active = s.provider.activeUri;
  if (active) return active;
  throw new UserError('Open a qcow2 image in QCOW2 Lens first (or pass the image to the command).');
}

/**
 * Tells the image's tabs what a command is doing, in the banner: only once it is true (after the
 * user confirmed, while writing; after the write, what is now in the file).
 */
export function announce(s: Services, uri: vscode.Uri, command: string, state: 'running' | 'done' | 'failed', message: string): void {
  s.provider.postTo(uri, { type: 'commandState', command, state, message });
  if (state === 'done') void vscode.window.setStatusBarMessage(message, 8000);
}

export async function confirm(message: string, detail: string, action: string): Promise<boolean> {
  const scripted = scriptedConfirm(message, detail); // extension-host tests answer here (prompts.ts)
  if (scripted !== undefined) return scripted;
  const choice = await vscode.window.showWarningMessage(message, { modal: true, detail }, action);
  return choice === action;
}

/** Runs a long operation with a cancellable notification; cancel aborts the signal. */
export function withCancellableProgress<T>(title: string, work: (signal: AbortSignal, onProgress: (done: number, total: number) => void) => Promise<T>): Promise<T> {
  return Promise.resolve(vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, async (progress, token) => {
    const ac = new AbortController();
    const sub = token.onCancellationRequested(() => ac.abort());
    let reported = 0;
    const onProgress = (done: number, total: number) => {
      if (total <= 0) return;
      const pct = Math.min(100, (done / total) * 100);
      if (pct - reported >= 1 || done === total) {
        progress.report({ increment: pct - reported, message: `${Math.floor(pct)}%` });
        reported = pct;
      }
    };
    try {
      return await work(ac.signal, onProgress);
    } finally {
      sub.dispose();
    }
  }));
}

/**
 * Wraps a command: errors become messages. Callers passing an options argument (tests, other
 * extensions) also get the throw; the palette and the editor title menu (which passes the URI and
 * its own { groupId } context) do not, so VS Code does not show the error twice.
 */
export function command<A extends unknown[], R>(name: string, fn: (...args: A) => Promise<R>): (...args: A) => Promise<R | undefined> {
  return async (...args: A) => {
    try {
      return await fn(...args);
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      // an AbortSignal's own reason (a DOMException named AbortError) also means the user stopped it
      const cancelled = isCancelled(e) || (e as { name?: string } | undefined)?.name === 'AbortError';
      if (cancelled) void vscode.window.showInformationMessage(`${name} cancelled.`);
      else void vscode.window.showErrorMessage(`${name}: ${msg}`);
      const opts = args[1];
      const fromEditorMenu = typeof opts === 'object' && opts !== null && 'groupId' in opts; // VS Code's editor context
      const fromExplorer = Array.isArray(opts); // the Explorer's context menu passes the selected URIs
      if (opts !== undefined && !fromEditorMenu && !fromExplorer) throw e;
      return undefined;
    }
  };
}
