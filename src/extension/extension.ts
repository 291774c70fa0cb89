/**
 * QCOW2 Lens, extension host side: registers the custom editor, the Problems-panel check and the
 * commands. Each command lives in a file named after what the user does; each also accepts the
 * image URI (and an options object) as arguments and returns a result, so tests can drive it.
 */
import { loadStart } from './loadClock'; // first: its clock starts before any other module of the bundle loads
import * as vscode from 'vscode';
import { checkImage } from './checkImage';
import { command, Services } from './commandSupport';
import { isCancelled } from '../engine/cancel';
import { compactImage } from './compactImage';
import { copyClusterAsHex } from './copyAsHex';
import { LiveSettings } from './configuration';
import { CheckService } from './diagnostics';
import { Qcow2EditorProvider, VIEW_TYPE, ViewModelFactory } from './editorProvider';
import { exportImageInfo } from './exportInfo';
import { goToGuestOffset, goToHostOffset } from './goToOffset';
import { repairImage } from './repairImage';
import { ViewModel } from './viewModel';
import { openSampleImage } from './walkthrough';
import { applySnapshot, createSnapshot, deleteSnapshot } from './snapshots';
import { amendImage } from './amendImage';
import { manageBitmaps } from './bitmapCommands';
import { createOverlay, newImage } from './newImage';
import { resizeImage } from './resizeImage';
import { Keyring } from './keyring';
import { lockImage, unlockImage } from './unlockImage';
import { addPassphrase, removePassphrase } from './passphrases';
import { scriptPrompts, ScriptedAnswer } from './prompts';
import { Qcow2Error } from '../engine/errors';
import type { FromWebviewMessage } from '../protocol';
import { convertImage } from './convertImage';
import { commitImage } from './commitImage';
import { backingCandidates, rebaseImage } from './rebaseImage';
import { compareImages } from './compareImages';
import { registerGuest } from './guestCommands';

export interface Qcow2LensApi {
  services: Services;
  /** Milliseconds from the bundle's first statement to the end of activate(): module loading included. */
  activationMs: number;
}

export function activate(context: vscode.ExtensionContext): Qcow2LensApi {
  const activateStart = performance.now();
  const output = vscode.window.createOutputChannel('QCOW2 Lens');
  let provider: Qcow2EditorProvider | undefined;
  const settings = new LiveSettings(output, () => provider);
  const checks = new CheckService((uri, m) => { settings.checked(uri); provider?.postTo(uri, m); });
  /** One view model per tab, read-only: it answers the webview's requests from the engine, reading the settings at each use. */
  const keyring = new Keyring(context.secrets);
  const openViewModel: ViewModelFactory = async imagePath => {
    const opts = { settings: () => settings.forTab(imagePath), keys: keyring.lookup };
    if (!await keyring.restore(imagePath)) return ViewModel.open(imagePath, opts);
    try {
      return await ViewModel.open(imagePath, opts);
    } catch (e) {
      // a remembered passphrase that no longer opens the image (its key slots changed): forgotten, the tab opens locked
      if (!(e instanceof Qcow2Error && e.code === 'bad-passphrase')) throw e;
      await keyring.forget(imagePath);
      output.appendLine(`${imagePath}: the remembered passphrase no longer opens a key slot; it was forgotten`);
      return ViewModel.open(imagePath, opts);
    }
  };
  const recheck = new Map<string, NodeJS.Timeout>();
  const scheduleCheck = (uri: vscode.Uri, delayMs = 200) => {
    const key = uri.toString();
    clearTimeout(recheck.get(key));
    recheck.set(key, setTimeout(() => {
      recheck.delete(key);
      openChecks.delete(key);
      void checks.check(uri).catch(e => output.appendLine(`check ${uri.fsPath}: ${String(e)}`));
    }, delayMs));
  };
  // The check on open runs on this thread: it starts once the tab has drawn its first screen (the
  // summary and the tree's first level), so it does not hold those answers back; a tab that never
  // says so (hidden, or failed) is checked after FIRST_SCREEN_WAIT_MS all the same.
  const openChecks = new Set<string>();
  const FIRST_SCREEN_WAIT_MS = 3000;
  provider = Qcow2EditorProvider.register(context, openViewModel, {
    onOpen: doc => {
      checks.opened(doc.uri);
      if (settings.autoCheck(doc.uri, true, false)) { // qcow2Lens.checkOnOpen
        openChecks.add(doc.uri.toString());
        scheduleCheck(doc.uri, FIRST_SCREEN_WAIT_MS);
      }
    },
    onFirstScreen: doc => { if (openChecks.delete(doc.uri.toString())) scheduleCheck(doc.uri, 0); },
    onFileChanged: doc => { if (settings.autoCheck(doc.uri, false, !!checks.lastResult(doc.uri))) scheduleCheck(doc.uri); },
    onClose: doc => {
      clearTimeout(recheck.get(doc.uri.toString()));
      openChecks.delete(doc.uri.toString());
      settings.closed(doc.uri);
      checks.closed(doc.uri);
    },
    runCommand: (cmd, uri, args) => void runFromWebview(s, cmd, uri, args ?? {}),
    lastCheck: uri => checks.lastResult(uri),
  });
  const s: Services = { provider, checks, output, keyring };
  context.subscriptions.push(output, checks, settings, keyring);

  // Each command takes what VS Code or a caller passes and checks its own arguments.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const register = (id: string, title: string, fn: (s: Services, ...args: any[]) => Promise<unknown>) =>
    context.subscriptions.push(vscode.commands.registerCommand(id, command(title, (...args: unknown[]) => fn(s, ...args))));
  register('qcow2Lens.checkImage', 'Check Image', checkImage);
  register('qcow2Lens.repairImage', 'Repair Image', repairImage);
  register('qcow2Lens.createSnapshot', 'Create Snapshot', createSnapshot);
  register('qcow2Lens.applySnapshot', 'Apply Snapshot', applySnapshot);
  register('qcow2Lens.deleteSnapshot', 'Delete Snapshot', deleteSnapshot);
  register('qcow2Lens.compactImage', 'Compact Image', compactImage);
  register('qcow2Lens.goToGuestOffset', 'Go to Guest Offset', goToGuestOffset);
  register('qcow2Lens.goToHostOffset', 'Go to Host Offset', goToHostOffset);
  register('qcow2Lens.copyClusterAsHex', 'Copy Cluster as Hex', copyClusterAsHex);
  register('qcow2Lens.exportInfo', 'Export Image Info', exportImageInfo);
  register('qcow2Lens.newImage', 'New Image', newImage);
  register('qcow2Lens.createOverlay', 'Create Overlay', createOverlay);
  register('qcow2Lens.resizeImage', 'Resize Image', resizeImage);
  register('qcow2Lens.amendImage', 'Change Image Options', amendImage);
  register('qcow2Lens.manageBitmaps', 'Manage Bitmaps', manageBitmaps);
  register('qcow2Lens.unlockImage', 'Unlock Image', unlockImage);
  register('qcow2Lens.lockImage', 'Lock Image', lockImage);
  register('qcow2Lens.addPassphrase', 'Add Passphrase', addPassphrase);
  register('qcow2Lens.removePassphrase', 'Remove Passphrase', removePassphrase);
  register('qcow2Lens.convertImage', 'Convert / Export Image', convertImage);
  register('qcow2Lens.commitImage', 'Commit Overlay', commitImage);
  register('qcow2Lens.rebaseImage', 'Rebase', rebaseImage);
  register('qcow2Lens.compareImages', 'Compare Images', compareImages);
  // For tests: the images Rebase's picker offers as a backing file, in its order.
  register('qcow2Lens.internal.backingCandidates', 'Backing Candidates', async (_sv, uri: vscode.Uri, size: number) => (await backingCandidates(uri, size)).map(c => ({ path: c.uri.fsPath, size: c.size })));
  register('qcow2Lens.openInLens', 'Open in QCOW2 Lens', async (sv, uri?: vscode.Uri) => {
    const target = uri ?? vscode.window.activeTextEditor?.document.uri ?? sv.provider.activeUri;
    if (!target) return undefined;
    await vscode.commands.executeCommand('vscode.openWith', target, VIEW_TYPE);
    return target.toString();
  });
  register('qcow2Lens.openSample', 'Open Sample Image', () => openSampleImage(context));
  registerGuest(context, s); // the qcow2-guest file system, Browse Guest Files, Copy Out, Sparsify
  // For tests: which images are open in the editor.
  register('qcow2Lens.internal.state', 'State', async sv => ({ editors: sv.provider.openEditors() }));
  // For tests: a new session's keyring (passphrases in memory wiped, SecretStorage kept).
  register('qcow2Lens.internal.dropSessionKeys', 'Drop Session Keys', async sv => { sv.keyring.dropSession(); });
  // For tests: answers for the next modal confirmations and quick picks, and what those showed (prompts.ts).
  register('qcow2Lens.internal.scriptPrompts', 'Script Prompts', async (_sv, answers?: ScriptedAnswer[]) => scriptPrompts(answers));
  // For tests: a webview request (summary, guest bytes…) answered by the image's tab, as the webview gets it.
  register('qcow2Lens.internal.ask', 'Ask', async (sv, uri: vscode.Uri, m: FromWebviewMessage) => sv.provider.ask(uri, m));
  void reopenTextTabsOfImages();
  // As VS Code counts it: loading the code plus the activate() call, not the host's own wait between them.
  const activateMs = performance.now() - activateStart, loadMs = modulesLoaded - loadStart;
  const activationMs = loadMs + activateMs;
  output.appendLine(`activated in ${activationMs.toFixed(1)} ms (loading ${loadMs.toFixed(1)} ms, activate() ${activateMs.toFixed(1)} ms)`);
  return { services: s, activationMs };
}

/**
 * A .qcow2 opened while VS Code was starting (before this extension registered its editor) lands in
 * the text editor as "binary file". Reopen those tabs in QCOW2 Lens once, at activation.
 */
async function reopenTextTabsOfImages(): Promise<void> {
  for (const group of vscode.window.tabGroups.all) {
    for (const tab of group.tabs) {
      if (!(tab.input instanceof vscode.TabInputText) || !/\.qcow2$/i.test(tab.input.uri.path) || tab.isDirty) continue;
      const uri = tab.input.uri;
      try {
        await vscode.commands.executeCommand('vscode.openWith', uri, VIEW_TYPE, { viewColumn: group.viewColumn, preview: false });
        await vscode.window.tabGroups.close(tab);
      } catch {
        // leave the tab as it is
      }
    }
  }
}

/**
 * Buttons in the webview run the same commands, with the tab's image. The banner says "running"
 * only for what starts at once (the check); the writing commands ask first and say themselves when
 * they write, so the banner never claims work the user has not agreed to.
 */
async function runFromWebview(s: Services, cmd: string, uri: vscode.Uri, args: Record<string, string | number | boolean>): Promise<void> {
  const state = (st: 'running' | 'done' | 'failed', message?: string) => { s.provider.postTo(uri, { type: 'commandState', command: cmd, state: st, message }); };
  const name = typeof args.name === 'string' ? args.name : undefined;
  const unchanged = () => state('done', `Cancelled: ${vscode.workspace.asRelativePath(uri)} was not changed.`);
  try {
    switch (cmd) {
      case 'check': state('running'); await checkImage(s, uri); break;
      case 'repair': if (!await repairImage(s, uri, { mode: args.mode === 'all' || args.mode === 'leaks' ? args.mode : undefined })) return unchanged(); break;
      case 'createSnapshot':
      case 'deleteSnapshot':
      case 'revertSnapshot': {
        // the command's own banner says what the file now has (or that it was not changed)
        await (cmd === 'createSnapshot' ? createSnapshot : cmd === 'deleteSnapshot' ? deleteSnapshot : applySnapshot)(s, uri, { name });
        return;
      }
      case 'compact': if (!await compactImage(s, uri)) return unchanged(); break;
      case 'bitmap': {
        const ops = ['add', 'remove', 'clear', 'enable', 'disable', 'merge'] as const;
        const op = ops.find(o => o === args.op);
        if (!await manageBitmaps(s, uri, { op, name })) return unchanged();
        break;
      }
      case 'refresh': s.provider.document(uri)?.fileChanged(); break;
      case 'unlock': await unlockImage(s, uri); return;
      case 'lock': await lockImage(s, uri); return;
      case 'addPassphrase': if (!await addPassphrase(s, uri)) return unchanged(); break;
      case 'removePassphrase': if (!await removePassphrase(s, uri)) return unchanged(); break;
      case 'reopenWith':
        // VS Code's own picker (text editor, hex editor, …) for the active tab, which is this one
        await vscode.commands.executeCommand('workbench.action.reopenWithEditor');
        return;
      case 'openBacking': {
        const p = typeof args.path === 'string' ? args.path : undefined;
        if (p) await vscode.commands.executeCommand('vscode.openWith', vscode.Uri.file(p), VIEW_TYPE);
        break;
      }
      case 'openGuestFile':
      case 'copyOutGuest':
      case 'sparsify': {
        // the Guest section of the tree: the guest commands, with the tab's image
        const id = cmd === 'sparsify' ? 'qcow2Lens.sparsifyImage' : `qcow2Lens.${cmd}`;
        const opts = cmd === 'openGuestFile' ? { partition: Number(args.partition), path: String(args.path), beside: true } : cmd === 'copyOutGuest' && typeof args.source === 'string' ? { source: args.source } : undefined;
        try {
          await vscode.commands.executeCommand(id, uri, opts);
        } catch (e) {
          return state('failed', e instanceof Error ? e.message : String(e)); // the command has shown the error already
        }
        break;
      }
      case 'copyOffset':
        await vscode.env.clipboard.writeText(String(args.offset ?? args.hostOffset ?? args.guestOffset ?? ''));
        break;
      default:
        throw new Error(`unknown command "${cmd}"`);
    }
    state('done');
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    const announced = cmd === 'createSnapshot' || cmd === 'deleteSnapshot' || cmd === 'revertSnapshot'; // their banner already says how it ended
    if (isCancelled(e)) return void (announced ? undefined : state('done', 'Cancelled.'));
    state('failed', msg);
    void vscode.window.showErrorMessage(msg);
  }
}

/** Evaluated last of the bundle's eagerly loaded modules: the end of code loading. */
const modulesLoaded = performance.now();

export function deactivate(): void {
  // everything is in context.subscriptions
}
