/**
 * The custom editor: one Qcow2Document per image, one webview per tab. The webview pulls what it
 * shows through the typed protocol (src/protocol.ts); a ViewModel per tab answers from the engine.
 * Host-side work here: webview HTML with a strict CSP, routing messages, the file watcher, and
 * remembering which tab is active so commands know their image.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { HEADER_FIELD, QCOW_MAGIC } from '../engine/qcow2/layout';
import type { CheckResultMessage, FromWebviewMessage, ToWebviewMessage } from '../protocol';
import { Qcow2Document, EditApplier } from './document';

export const VIEW_TYPE = 'qcow2Lens.editor';
/** The same editor offered for any file ("Reopen Editor With…"), for images not named *.qcow2. */
export const VIEW_TYPE_ANY = 'qcow2Lens.editorAny';

/** What a tab needs from its view model (src/extension/viewModel.ts, vscode-free). */
export interface TabViewModel {
  handle(m: FromWebviewMessage): Promise<ToWebviewMessage | undefined | void>;
  close(): Promise<void> | void;
}
export type ViewModelFactory = (imagePath: string) => Promise<TabViewModel>;
type ViewModel = TabViewModel;

interface Editor {
  document: Qcow2Document;
  panel: vscode.WebviewPanel;
  vm: ViewModel | undefined;
  /** Opening the view model (re-opened when the file changes). */
  vmReady: Promise<ViewModel | undefined>;
  selection: { hostOffset?: number; guestOffset?: number };
}

/** Hooks the extension wires in (checks, webview buttons). */
export interface ProviderHooks {
  /** A document was opened (first tab): run the check. */
  onOpen(doc: Qcow2Document): void;
  /** The file changed on disk or was saved. */
  onFileChanged(doc: Qcow2Document): void;
  /** Last tab closed. */
  onClose(doc: Qcow2Document): void;
  /** A webview button asked for a command. */
  runCommand(command: string, uri: vscode.Uri, args: Record<string, string | number | boolean> | undefined): void;
  /** The latest check result to replay into a (re)loaded webview. */
  lastCheck(uri: vscode.Uri): CheckResultMessage | undefined;
}

export class Qcow2EditorProvider implements vscode.CustomEditorProvider<Qcow2Document> {
  private readonly editors = new Set<Editor>();
  private activeEditor: Editor | undefined;
  private readonly docs = new Map<string, Qcow2Document>();
  private readonly changed = new vscode.EventEmitter<vscode.CustomDocumentEditEvent<Qcow2Document>>();
  readonly onDidChangeCustomDocument = this.changed.event;

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly applier: EditApplier,
    private readonly openModel: ViewModelFactory,
    private readonly hooks: ProviderHooks,
  ) {}

  static register(context: vscode.ExtensionContext, applier: EditApplier, openModel: ViewModelFactory, hooks: ProviderHooks): Qcow2EditorProvider {
    const provider = new Qcow2EditorProvider(context, applier, openModel, hooks);
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

  // ---- documents -------------------------------------------------------------------------------

  async openCustomDocument(uri: vscode.Uri, openContext: vscode.CustomDocumentOpenContext): Promise<Qcow2Document> {
    if (uri.scheme !== 'file') throw new Error(`QCOW2 Lens opens local files only (got ${uri.scheme}:)`);
    await checkMagic(uri.fsPath);
    const doc = await Qcow2Document.create(uri, openContext.backupId, this.applier);
    // VS Code keeps one document per URI; a second one (a restore probe) does not replace it.
    const primary = !this.docs.has(uri.toString());
    if (primary) this.docs.set(uri.toString(), doc);
    const listeners: vscode.Disposable[] = [doc.onDidChange(e => this.changed.fire(e))];
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
    listeners.push(doc.onDidChangeContent(what => (what === 'disk' ? this.reloadViews(doc) : this.showPendingEdits(doc))));
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

  saveCustomDocument(doc: Qcow2Document, cancellation: vscode.CancellationToken): Thenable<void> {
    return doc.save(cancellation).then(() => this.hooks.onFileChanged(doc));
  }
  saveCustomDocumentAs(doc: Qcow2Document, destination: vscode.Uri, cancellation: vscode.CancellationToken): Thenable<void> {
    return doc.saveAs(destination, cancellation);
  }
  revertCustomDocument(doc: Qcow2Document): Thenable<void> {
    return doc.revert();
  }
  backupCustomDocument(doc: Qcow2Document, context: vscode.CustomDocumentBackupContext): Thenable<vscode.CustomDocumentBackup> {
    return doc.backup(context.destination);
  }

  // ---- webviews --------------------------------------------------------------------------------

  async resolveCustomEditor(doc: Qcow2Document, panel: vscode.WebviewPanel): Promise<void> {
    const media = vscode.Uri.joinPath(this.context.extensionUri, 'media');
    panel.webview.options = { enableScripts: true, localResourceRoots: [media] };
    panel.webview.html = webviewHtml(panel.webview, media, path.basename(doc.path));
    const ed: Editor = { document: doc, panel, vm: undefined, vmReady: Promise.resolve(undefined), selection: {} };
    this.editors.add(ed);
    ed.vmReady = this.openViewModel(ed);
    if (panel.active) this.activeEditor = ed;
    panel.onDidChangeViewState(() => {
      if (panel.active) this.activeEditor = ed;
      else if (this.activeEditor === ed) this.activeEditor = undefined;
    });
    panel.webview.onDidReceiveMessage((m: FromWebviewMessage) => void this.onMessage(ed, m));
    panel.onDidDispose(() => {
      this.editors.delete(ed);
      if (this.activeEditor === ed) this.activeEditor = undefined;
      void ed.vmReady.then(vm => vm?.close()).catch(() => undefined);
    });
  }

  private async openViewModel(ed: Editor): Promise<ViewModel | undefined> {
    try {
      const vm = await this.openModel(ed.document.path);
      if (!this.editors.has(ed)) {
        await vm.close(); // the tab closed while opening
        return undefined;
      }
      ed.vm = vm;
      return vm;
    } catch (e) {
      this.post(ed, { type: 'error', message: errorMessage(e), ...errorLocation(e) });
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
      case 'runCommand':
        this.hooks.runCommand(m.command, ed.document.uri, m.args);
        return;
      case 'selectionChanged':
        ed.selection = { hostOffset: m.hostOffset, guestOffset: m.guestOffset };
        return;
    }
    const vm = await ed.vmReady;
    if (!vm) {
      if ('requestId' in m) this.post(ed, { type: 'error', requestId: m.requestId, message: 'The image could not be opened.' });
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

  /** The file or the pending edits changed: re-open the view models and tell the webviews. */
  private reloadViews(doc: Qcow2Document): void {
    for (const ed of this.editors) {
      if (ed.document !== doc) continue;
      const old = ed.vmReady;
      ed.vmReady = old.then(vm => vm?.close()).catch(() => undefined).then(() => this.openViewModel(ed));
      void ed.vmReady.then(() => this.post(ed, { type: 'refresh' }));
    }
    this.hooks.onFileChanged(doc);
  }

  /** The webview shows the image as it is on disk; its banner says what saving will change. */
  private showPendingEdits(doc: Qcow2Document): void {
    const n = doc.pending.length;
    const message = n === 0
      ? 'No unsaved snapshot edits.'
      : `Unsaved: ${doc.pending.map(e => `${e.kind} snapshot "${e.name}"`).join('; ')}. Save (Ctrl+S) writes ${n === 1 ? 'it' : 'them'}; Undo takes ${n === 1 ? 'it' : 'them'} back.`;
    this.postTo(doc.uri, { type: 'commandState', command: 'snapshotEdits', state: 'done', message });
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

/** Refuses files that are not qcow2 images before any view is built ("Reopen Editor With…" on anything). */
async function checkMagic(file: string): Promise<void> {
  const fh = await fs.open(file, 'r');
  try {
    const buf = Buffer.alloc(4);
    const { bytesRead } = await fh.read(buf, 0, 4, 0);
    if (bytesRead < HEADER_FIELD.magic.size || buf.readUInt32BE(HEADER_FIELD.magic.offset) !== QCOW_MAGIC) {
      throw new Error(`${path.basename(file)} is not a qcow2 image (it does not start with "QFI\\xfb").`);
    }
  } finally {
    await fh.close();
  }
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
