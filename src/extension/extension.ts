/**
 * QCOW2 Lens, extension host side: registers the custom editor, the Problems-panel check and the
 * commands. Each command lives in a file named after what the user does; each also accepts the
 * image URI (and an options object) as arguments and returns a result, so tests can drive it.
 */
import { loadStart } from './loadClock'; // first: its clock starts before any other module of the bundle loads
import * as vscode from 'vscode';
import { checkImage } from './checkImage';
import { command, Services } from './commandSupport';
import { compactImage } from './compactImage';
import { copyClusterAsHex } from './copyAsHex';
import { LiveSettings } from './configuration';
import { CheckService } from './diagnostics';
import { Qcow2EditorProvider, VIEW_TYPE, ViewModelFactory } from './editorProvider';
import { exportImageInfo } from './exportInfo';
import { goToGuestOffset, goToHostOffset } from './goToOffset';
import { repairImage } from './repairImage';
import { applyWithEngine } from './snapshotEdits';
import { ViewModel } from './viewModel';
import { openSampleImage } from './walkthrough';
import { applySnapshot, createSnapshot, deleteSnapshot } from './snapshots';

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
  const openViewModel: ViewModelFactory = imagePath => ViewModel.open(imagePath, { settings: () => settings.forTab(imagePath) });
  const recheck = new Map<string, NodeJS.Timeout>();
  const scheduleCheck = (uri: vscode.Uri) => {
    const key = uri.toString();
    clearTimeout(recheck.get(key));
    recheck.set(key, setTimeout(() => {
      recheck.delete(key);
      void checks.check(uri).catch(e => output.appendLine(`check ${uri.fsPath}: ${String(e)}`));
    }, 200));
  };
  provider = Qcow2EditorProvider.register(context, applyWithEngine, openViewModel, {
    onOpen: doc => {
      checks.opened(doc.uri);
      if (settings.autoCheck(doc.uri, true, false)) scheduleCheck(doc.uri); // qcow2Lens.checkOnOpen
    },
    onFileChanged: doc => { if (settings.autoCheck(doc.uri, false, !!checks.lastResult(doc.uri))) scheduleCheck(doc.uri); },
    onClose: doc => {
      clearTimeout(recheck.get(doc.uri.toString()));
      settings.closed(doc.uri);
      checks.closed(doc.uri);
    },
    runCommand: (cmd, uri, args) => void runFromWebview(s, cmd, uri, args ?? {}),
    lastCheck: uri => checks.lastResult(uri),
  });
  const s: Services = { provider, checks, output };
  context.subscriptions.push(output, checks, settings);

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
  register('qcow2Lens.openInLens', 'Open in QCOW2 Lens', async (sv, uri?: vscode.Uri) => {
    const target = uri ?? vscode.window.activeTextEditor?.document.uri ?? sv.provider.activeUri;
    if (!target) return undefined;
    await vscode.commands.executeCommand('vscode.openWith', target, VIEW_TYPE);
    return target.toString();
  });
  register('qcow2Lens.openSample', 'Open Sample Image', () => openSampleImage(context));
  // For tests: which images are open in the editor, and the pending edits of one.
  register('qcow2Lens.internal.state', 'State', async (sv, uri?: vscode.Uri) => ({
    editors: sv.provider.openEditors(),
    pending: uri ? sv.provider.document(uri)?.pending ?? null : null,
  }));
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

/** Buttons in the webview run the same commands, with the tab's image. */
async function runFromWebview(s: Services, cmd: string, uri: vscode.Uri, args: Record<string, string | number | boolean>): Promise<void> {
  const state = (st: 'running' | 'done' | 'failed', message?: string) => s.provider.postTo(uri, { type: 'commandState', command: cmd, state: st, message });
  const name = typeof args.name === 'string' ? args.name : undefined;
  state('running');
  try {
    switch (cmd) {
      case 'check': await checkImage(s, uri); break;
      case 'repair': await repairImage(s, uri, { mode: args.mode === 'all' || args.mode === 'leaks' ? args.mode : undefined }); break;
      case 'createSnapshot':
      case 'deleteSnapshot': {
        const r = await (cmd === 'createSnapshot' ? createSnapshot : deleteSnapshot)(s, uri, { name });
        if (r?.state === 'pending') return; // the banner lists the pending edits
        if (!r) return void state('done', 'Cancelled.');
        break;
      }
      case 'revertSnapshot': await applySnapshot(s, uri, { name }); break;
      case 'compact': await compactImage(s, uri); break;
      case 'refresh': s.provider.document(uri)?.fileChanged(); break;
      case 'openBacking': {
        const p = typeof args.path === 'string' ? args.path : undefined;
        if (p) await vscode.commands.executeCommand('vscode.openWith', vscode.Uri.file(p), VIEW_TYPE);
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
    state('failed', msg);
    void vscode.window.showErrorMessage(msg);
  }
}

/** Evaluated last of the bundle's eagerly loaded modules: the end of code loading. */
const modulesLoaded = performance.now();

export function deactivate(): void {
  // everything is in context.subscriptions
}
