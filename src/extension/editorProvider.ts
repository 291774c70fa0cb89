/**
 * The custom editor, read-only as VS Code sees it (CustomReadonlyEditorProvider): a document has no
 * edits, is never dirty, and Save or auto-save have nothing to write. Writes are commands that ask
 * first and write at once (snapshots.ts, repairImage.ts, compactImage.ts).
 * One Qcow2Document per image, one webview per tab. The webview pulls what it shows through the
 * typed protocol (src/protocol.ts); a ViewModel per tab answers from the engine. Host-side work
 * here: webview HTML with a strict CSP, routing messages, the file watcher, and remembering which
 * tab is active so commands know their image. A file the engine cannot open (not qcow2, truncated
 * in the header) still opens: the webview shows the engine's error and offers "Reopen With…".
 */
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { FIRST_EXPANDED, ROOT_NODE_ID } from '../protocol';
import type { CheckResultMessage, ErrorMessage, FromWebviewMessage, NodeId, ToWebviewMessage, TreeNode } from '../protocol';
import { FINDING_SCHEME, findingsText, imageOfFindings } from './diagnostics';
import { Qcow2Document } from './document';

export const VIEW_TYPE = 'qcow2Lens.editor';
/** The same editor offered for any file ("Reopen Editor With…"), for images not named *.qcow2. */
export const VIEW_TYPE_ANY = 'qcow2Lens.editorAny';

/** What a tab needs from its view model (src/extension/viewModel.ts, vscode-free). */
export interface TabViewModel {
  handle(m: FromWebviewMessage): Promise<ToWebviewMessage | undefined | void>;
  /** Closes the image; `wait`: after the requests being answered (a reload), else at once (the tab closed: no one reads the answers). */
  close(opts?: { wait?: boolean }): Promise<void> | void;
}
export type ViewModelFactory = (imagePath: string) => Promise<TabViewModel>;
type ViewModel = TabViewModel;

interface Editor {
  document: Qcow2Document;
  panel: vscode.WebviewPanel;
  vm: ViewModel | undefined;
  /** Opening the view model (re-opened when the file changes). */
  vmReady: Promise<ViewModel | undefined>;
  /** Why the view model did not open (the engine's error: structure, offset), for the webview's requests. */
  openError?: Omit<ErrorMessage, 'type' | 'requestId'>;
  selection: { hostOffset?: number; guestOffset?: number };
}

/** Hooks the extension wires in (checks, webview buttons). */
export interface ProviderHooks {
  /** A document was opened (first tab): run the check. */
  onOpen(doc: Qcow2Document): void;
  /** A webview of the document has drawn its first screen (summary and the tree's first level). */
  onFirstScreen?(doc: Qcow2Document): void;
  /** The file changed on disk or a command wrote it. */
  onFileChanged(doc: Qcow2Document): void;
  /** Last tab closed. */
  onClose(doc: Qcow2Document): void;
  /** A webview button asked for a command. */
  runCommand(command: string, uri: vscode.Uri, args: Record<string, string | number | boolean> | undefined): void;
  /** The latest check result to replay into a (re)loaded webview. */
  lastCheck(uri: vscode.Uri): CheckResultMessage | undefined;
}

export class Qcow2EditorProvider implements vscode.CustomReadonlyEditorProvider<Qcow2Document> {
  private readonly editors = new Set<Editor>();
  private activeEditor: Editor | undefined;
  private readonly docs = new Map<string, Qcow2Document>();

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly openModel: ViewModelFactory,
    private readonly hooks: ProviderHooks,
  ) {}

  static register(context: vscode.ExtensionContext, openModel: ViewModelFactory, hooks: ProviderHooks): Qcow2EditorProvider {
    const provider = new Qcow2EditorProvider(context, openModel, hooks);
    provider.watchFindingLinks();
    for (const viewType of [VIEW_TYPE, VIEW_TYPE_ANY]) {
      context.subscriptions.push(
        vscode.window.registerCustomEditorProvider(viewType, provider, {
          // The webview restores its own state (vscode.getState) and re-requests what it shows.
          webviewOptions: { retainContextWhenHidden: false },
          supportsMultipleEditorsPerDocument: true,
        }),
      );
    }
    return provider;
  }

  // ---- Problems panel → finding ------------------------------------------------------------------

  /**
   * A click on a diagnostic's "Show in QCOW2 Lens" line opens line k of the image's findings
   * document (diagnostics.ts): close that text tab, bring up the image's editor and reveal finding k.
   */
  private watchFindingLinks(): void {
    const lastCheck = this.hooks.lastCheck;
    const changed = new vscode.EventEmitter<vscode.Uri>();
    const content: vscode.TextDocumentContentProvider = {
      onDidChange: changed.event,
      provideTextDocumentContent: uri => {
        const last = lastCheck(imageOfFindings(uri));
        return last ? findingsText(last.findings) : 'No check result for this image: open it in QCOW2 Lens and run Check Image.\n';
      },
    };
    let pending: NodeJS.Timeout | undefined;
    const onEditor = (ed: vscode.TextEditor | undefined) => {
      if (ed?.document.uri.scheme !== FINDING_SCHEME) return;
      clearTimeout(pending);
      // the selection is set as the editor opens; read it once the open has settled
      pending = setTimeout(() => void this.followFindingLink(ed), 50);
    };
    this.context.subscriptions.push(
      changed,
      vscode.workspace.registerTextDocumentContentProvider(FINDING_SCHEME, content),
      vscode.window.onDidChangeActiveTextEditor(onEditor),
      vscode.window.onDidChangeTextEditorSelection(e => onEditor(e.textEditor)),
    );
  }

  private async followFindingLink(ed: vscode.TextEditor): Promise<void> {
    const image = imageOfFindings(ed.document.uri);
    const index = ed.selection.active.line;
    const finding = this.hooks.lastCheck(image)?.findings[index];
    for (const group of vscode.window.tabGroups.all) {
      for (const tab of group.tabs) {
        if (tab.input instanceof vscode.TabInputText && tab.input.uri.toString() === ed.document.uri.toString()) await vscode.window.tabGroups.close(tab).then(undefined, () => undefined);
      }
    }
    const open = [...this.editors].find(e => e.document.uri.toString() === image.toString());
    if (open) open.panel.reveal(open.panel.viewColumn);
    else await vscode.commands.executeCommand('vscode.openWith', image, VIEW_TYPE);
    if (finding) this.postTo(image, { type: 'revealFinding', index, finding });
  }

  // ---- documents -------------------------------------------------------------------------------

  openCustomDocument(uri: vscode.Uri): Qcow2Document {
    if (uri.scheme !== 'file') throw new Error(`QCOW2 Lens opens local files only (got ${uri.scheme}:)`);
    const doc = new Qcow2Document(uri);
    // VS Code keeps one document per URI; a second one does not replace it.
    const primary = !this.docs.has(uri.toString());
    if (primary) this.docs.set(uri.toString(), doc);
    const listeners: vscode.Disposable[] = [];
    // Watch the image: another tool (qemu-img, a VM) may change it while it is open.
    const watcher = vscode.workspace.createFileSystemWatcher(new vscode.RelativePattern(vscode.Uri.file(path.dirname(uri.fsPath)), path.basename(uri.fsPath)));
    let timer: NodeJS.Timeout | undefined;
    const onDisk = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (!doc.isClosed) doc.fileChanged();
      }, 300);
    };
    listeners.push(watcher, watcher.onDidChange(onDisk), watcher.onDidCreate(onDisk));
    listeners.push(doc.onDidChangeContent(() => this.reloadViews(doc)));
    doc.onDidDispose(() => {
      clearTimeout(timer);
      for (const l of listeners) l.dispose();
      if (this.docs.get(uri.toString()) !== doc) return;
      this.docs.delete(uri.toString());
      this.hooks.onClose(doc);
    });
    if (primary) this.hooks.onOpen(doc);
    return doc;
  }

  // ---- webviews --------------------------------------------------------------------------------

  async resolveCustomEditor(doc: Qcow2Document, panel: vscode.WebviewPanel): Promise<void> {
    const media = vscode.Uri.joinPath(this.context.extensionUri, 'media');
    panel.webview.options = { enableScripts: true, localResourceRoots: [media] };
    panel.webview.html = webviewHtml(panel.webview, media, path.basename(doc.path));
    const ed: Editor = { document: doc, panel, vm: undefined, vmReady: Promise.resolve(undefined), selection: {} };
    this.editors.add(ed);
    ed.vmReady = this.openViewModel(ed);
    void ed.vmReady.then(vm => vm && this.pushFirstScreen(ed, vm));
    if (panel.active) this.activeEditor = ed;
    panel.onDidChangeViewState(() => {
      if (panel.active) this.activeEditor = ed;
      else if (this.activeEditor === ed) this.activeEditor = undefined;
      // a settings change while the tab was hidden or covered (the Settings editor opens as a modal
      // over it) may not have reached its webview: it gets the current settings when it shows again
      if (panel.visible) void this.resendSettings(ed);
    });
    panel.webview.onDidReceiveMessage((m: FromWebviewMessage) => void this.onMessage(ed, m));
    panel.onDidDispose(() => {
      this.editors.delete(ed);
      if (this.activeEditor === ed) this.activeEditor = undefined;
      void ed.vmReady.then(vm => vm?.close({ wait: false })).catch(() => undefined); // long requests (maps, space) stop at their next read
    });
  }

  /**
   * The first screen's answers (summary, settings, the first tree levels), posted as soon as the
   * image is open rather than when the webview asks (FirstScreenDataMessage): the webview's script
   * starts while the image opens, and its requests would each wait for a round trip to this host.
   */
  private async pushFirstScreen(ed: Editor, vm: ViewModel): Promise<void> {
    const ask = (m: FromWebviewMessage) => vm.handle(m).catch(() => undefined);
    const [summary, settings, ...levels] = await Promise.all([
      ask({ type: 'getSummary', requestId: 0 }), ask({ type: 'getSettings', requestId: 0 }),
      ...[ROOT_NODE_ID, ...FIRST_EXPANDED].map(nodeId => ask({ type: 'getTreeChildren', requestId: 0, nodeId }))]);
    if (summary?.type !== 'summary' || settings?.type !== 'settings' || ed.vm !== vm) return; // the webview's own requests answer
    const children: Record<NodeId, TreeNode[]> = {};
    for (const r of levels) if (r?.type === 'treeChildren') children[r.nodeId] = r.children;
    this.post(ed, { type: 'firstScreenData', summary: summary.summary, settings: settings.settings, children });
  }

  private async resendSettings(ed: Editor): Promise<void> {
    const vm = await ed.vmReady;
    const reply = await vm?.handle({ type: 'getSettings', requestId: 0 }).catch(() => undefined);
    if (!reply || reply.type !== 'settings' || !this.editors.has(ed)) return;
    const { requestId: _, ...live } = reply;
    this.post(ed, live);
  }

  private async openViewModel(ed: Editor): Promise<ViewModel | undefined> {
    try {
      const vm = await this.openModel(ed.document.path);
      if (!this.editors.has(ed)) {
        await vm.close({ wait: false }); // the tab closed while opening
        return undefined;
      }
      ed.vm = vm;
      ed.openError = undefined;
      return vm;
    } catch (e) {
      // the webview's requests are answered with this error (it shows it in the tab, not a modal)
      ed.openError = { message: errorMessage(e), ...errorLocation(e) };
      return undefined;
    }
  }

  private async onMessage(ed: Editor, m: FromWebviewMessage): Promise<void> {
    switch (m.type) {
      case 'ready': {
        const last = this.hooks.lastCheck(ed.document.uri);
        if (last) this.post(ed, last);
        return;
      }
      case 'firstScreen':
        this.hooks.onFirstScreen?.(ed.document);
        return;
      case 'runCommand':
        this.hooks.runCommand(m.command, ed.document.uri, m.args);
        return;
      case 'selectionChanged':
        ed.selection = { hostOffset: m.hostOffset, guestOffset: m.guestOffset };
        return;
    }
    const vm = await ed.vmReady;
    if (!vm) {
      if ('requestId' in m) this.post(ed, { type: 'error', requestId: m.requestId, ...(ed.openError ?? { message: 'The image could not be opened.' }) });
      return;
    }
    try {
      const reply = await vm.handle(m);
      if (reply) this.post(ed, reply);
    } catch (e) {
      this.post(ed, { type: 'error', requestId: 'requestId' in m ? m.requestId : undefined, message: errorMessage(e), ...errorLocation(e) });
    }
  }

  private post(ed: Editor, m: ToWebviewMessage): void {
    if (!this.editors.has(ed)) return; // the tab closed
    try {
      void ed.panel.webview.postMessage(m).then(undefined, () => undefined);
    } catch {
      // disposed between the check and the post
    }
  }

  /** The file changed: re-open the view models and tell the webviews. */
  private reloadViews(doc: Qcow2Document): void {
    for (const ed of this.editors) {
      if (ed.document !== doc) continue;
      const old = ed.vmReady;
      ed.vmReady = old.then(vm => vm?.close()).catch(() => undefined).then(() => this.openViewModel(ed));
      void ed.vmReady.then(() => this.post(ed, { type: 'refresh' }));
    }
    this.hooks.onFileChanged(doc);
  }

  // ---- for commands ------------------------------------------------------------------------------

  /** Sends a message to every tab showing the image. */
  postTo(uri: vscode.Uri, m: ToWebviewMessage): number {
    let n = 0;
    for (const ed of this.editors) {
      if (ed.document.uri.toString() === uri.toString()) {
        this.post(ed, m);
        n++;
      }
    }
    return n;
  }

  get activeUri(): vscode.Uri | undefined {
    return this.activeEditor?.document.uri;
  }

  /** The active tab's selection (what the webview last reported) for the image. */
  selectionOf(uri: vscode.Uri): { hostOffset?: number; guestOffset?: number } {
    if (this.activeEditor?.document.uri.toString() === uri.toString()) return this.activeEditor.selection;
    for (const ed of this.editors) if (ed.document.uri.toString() === uri.toString()) return ed.selection;
    return {};
  }

  document(uri: vscode.Uri): Qcow2Document | undefined {
    return this.docs.get(uri.toString());
  }

  /** A webview request answered by the image's tab's view model, as that tab would get it (tests). */
  async ask(uri: vscode.Uri, m: FromWebviewMessage): Promise<ToWebviewMessage | undefined> {
    for (const ed of this.editors) {
      if (ed.document.uri.toString() !== uri.toString()) continue;
      const vm = await ed.vmReady;
      return vm ? (await vm.handle(m)) ?? undefined : undefined;
    }
    return undefined;
  }

  /** Number of open tabs per image (tests). */
  openEditors(): { uri: string; active: boolean }[] {
    return [...this.editors].map(ed => ({ uri: ed.document.uri.toString(), active: ed === this.activeEditor }));
  }
}

export function webviewHtml(webview: vscode.Webview, media: vscode.Uri, title: string): string {
  const nonce = makeNonce();
  const script = webview.asWebviewUri(vscode.Uri.joinPath(media, 'webview.js'));
  const style = webview.asWebviewUri(vscode.Uri.joinPath(media, 'webview.css'));
  const csp = [
    "default-src 'none'",
    `img-src ${webview.cspSource} data:`,
    `style-src ${webview.cspSource}`,
    `font-src ${webview.cspSource}`,
    `script-src 'nonce-${nonce}'`,
  ].join('; ');
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link href="${style.toString()}" rel="stylesheet">
<title>${escapeHtml(title)}</title>
</head>
<body>
<div id="app" data-file="${escapeHtml(title)}"></div>
<script nonce="${nonce}" src="${script.toString()}"></script>
</body>
</html>`;
}

function makeNonce(): string {
  const chars = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  let s = '';
  for (const b of randomBytes(32)) s += chars[b % chars.length];
  return s;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`);
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function errorLocation(e: unknown): { structure?: string; hostOffset?: number; code?: string } {
  const x = e as { structure?: unknown; hostOffset?: unknown; code?: unknown };
  return {
    structure: typeof x?.structure === 'string' ? x.structure : undefined,
    hostOffset: typeof x?.hostOffset === 'number' ? x.hostOffset : undefined,
    code: typeof x?.code === 'string' ? x.code : undefined,
  };
}
