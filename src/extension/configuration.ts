/**
 * The settings, live: read from VS Code's configuration at each use (per image: most are
 * resource-scoped, so a folder can set its own), and when one changes, open editors follow without
 * a reload — the webviews get a `settings` message (hex row width, cluster map limit), tabs re-open
 * their image when `followBackingFiles` changes. Parsing and validation are in settings.ts.
 */
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import type { Qcow2EditorProvider } from './editorProvider';
import type { ViewModelSettings } from './viewModel';
import { checkOnOpen, parseSettings, SECTION, settingName, Settings, webviewSettings } from './settings';

/** The settings for one image (its folder's, else the user's), with what was wrong with them. */
export function readSettings(uri?: vscode.Uri): { settings: Settings; problems: string[] } {
  const config = vscode.workspace.getConfiguration(SECTION, uri);
  return parseSettings(key => config.get(key));
}

export class LiveSettings implements vscode.Disposable {
  /** Why an image's check did not run when it opened (by path), until a check of it runs. */
  private readonly checkNotes = new Map<string, string>();
  private readonly reported = new Set<string>();
  private readonly sub: vscode.Disposable;

  constructor(private readonly output: vscode.OutputChannel, private readonly provider: () => Qcow2EditorProvider | undefined) {
    this.sub = vscode.workspace.onDidChangeConfiguration(e => this.changed(e));
  }

  /** The settings for one image (its folder's, else the user's). A bad value is reported once in the output channel. */
  get(uri?: vscode.Uri): Settings {
    const { settings, problems } = readSettings(uri);
    for (const p of problems) {
      if (this.reported.has(p)) continue;
      this.reported.add(p);
      this.output.appendLine(`settings: ${p}`);
    }
    return settings;
  }

  /** What a tab's view model reads, each time it needs it. */
  forTab(imagePath: string): ViewModelSettings {
    const s = this.get(vscode.Uri.file(imagePath));
    return { ...webviewSettings(s, this.checkNotes.get(imagePath)), followBackingFiles: s.followBackingFiles };
  }

  /**
   * Whether the check runs by itself for this image now (on open; on a change of the file only when
   * it ran before or would run on open). Records the reason when it does not, for the webview.
   */
  autoCheck(uri: vscode.Uri, opening: boolean, checkedBefore: boolean): boolean {
    if (!opening && checkedBefore) return true; // keep a shown result current
    let size: number;
    try {
      size = fs.statSync(uri.fsPath).size;
    } catch {
      return true; // the check reports why the file cannot be read
    }
    const d = checkOnOpen(this.get(uri), size);
    if (d.check) this.checkNotes.delete(uri.fsPath);
    else this.checkNotes.set(uri.fsPath, d.note);
    return d.check;
  }

  /** A check of the image ran: its result replaces the note. */
  checked(uri: vscode.Uri): void {
    this.checkNotes.delete(uri.fsPath);
  }

  closed(uri: vscode.Uri): void {
    this.checkNotes.delete(uri.fsPath);
  }

  private changed(e: vscode.ConfigurationChangeEvent): void {
    if (!e.affectsConfiguration(SECTION)) return;
    const provider = this.provider();
    if (!provider) return;
    const uris = [...new Set(provider.openEditors().map(ed => ed.uri))].map(u => vscode.Uri.parse(u));
    for (const uri of uris) {
      if (e.affectsConfiguration(settingName('followBackingFiles'), uri)) {
        provider.document(uri)?.fileChanged(); // re-opens the tab's image with or without its chain
      }
      if (['hexBytesPerRow', 'clusterMapMaxClusters', 'spaceLargestEntries'].some(k => e.affectsConfiguration(settingName(k as keyof Settings), uri))) {
        const { followBackingFiles: _, ...settings } = this.forTab(uri.fsPath);
        provider.postTo(uri, { type: 'settings', settings });
      }
    }
  }

  dispose(): void {
    this.sub.dispose();
  }
}
