/**
 * The integrity check in the Problems panel: each finding of the engine's check becomes a
 * diagnostic on the image's URI (line 0: the file is binary), naming the structure and the host
 * offset. Runs on open, on "Check Image" and after saves/writes; cleared when the last tab closes.
 */
import * as vscode from 'vscode';
import type { CheckFinding, CheckResultMessage, CheckSummary } from '../protocol';
import type { Finding, Severity } from '../engine/check/check';
import { checkForEditor } from './checkResult';

export interface CheckOutcome {
  uri: string;
  summary: CheckSummary;
  findings: CheckFinding[];
  /** What went into the Problems panel, for tests and the caller. */
  diagnostics: { severity: string; message: string }[];
}

const SEVERITY: Record<Severity, vscode.DiagnosticSeverity> = {
  error: vscode.DiagnosticSeverity.Error,
  warning: vscode.DiagnosticSeverity.Warning,
  info: vscode.DiagnosticSeverity.Information,
};

/**
 * The Problems panel opens a custom editor without the diagnostic's range (VS Code passes only the
 * URI), so each diagnostic carries related information pointing at line k of a read-only text
 * document of this scheme (the findings, one per line); opening it is redirected by the editor
 * provider to the image's tab with finding k revealed (editorProvider.ts, watchFindingLinks).
 */
export const FINDING_SCHEME = 'qcow2-lens-finding';

/** Ends the findings document's path: "x.qcow2.findings" (a name ending in .qcow2 would select the custom editor). */
const FINDINGS_SUFFIX = '.findings';

/** The findings document of an image, named after it in the Problems panel. */
export function findingsUri(image: vscode.Uri): vscode.Uri {
  return vscode.Uri.from({ scheme: FINDING_SCHEME, path: image.path + FINDINGS_SUFFIX });
}

/** The image a findings document belongs to. */
export function imageOfFindings(doc: vscode.Uri): vscode.Uri {
  return vscode.Uri.from({ scheme: 'file', path: doc.path.endsWith(FINDINGS_SUFFIX) ? doc.path.slice(0, -FINDINGS_SUFFIX.length) : doc.path });
}

/** The text of the findings document: line k is finding k. */
export function findingsText(findings: readonly Finding[]): string {
  return findings.map((f, k) => `${k + 1}. ${diagnosticMessage(f)}`).join('\n') + '\n';
}

export function diagnosticMessage(f: Finding): string {
  const at = f.hostOffset === undefined ? '' : `0x${f.hostOffset.toString(16)}`;
  const where = !at || f.structure.includes(at) ? f.structure : `${f.structure} at ${at}`;
  return `${where}: ${f.message}`;
}

export class CheckService implements vscode.Disposable {
  readonly collection = vscode.languages.createDiagnosticCollection('qcow2-lens');
  private readonly last = new Map<string, CheckResultMessage>();
  private readonly running = new Map<string, Promise<CheckOutcome>>();
  private readonly open = new Set<string>();

  constructor(private readonly publish: (uri: vscode.Uri, m: CheckResultMessage) => void) {}

  lastResult(uri: vscode.Uri): CheckResultMessage | undefined {
    return this.last.get(uri.toString());
  }

  opened(uri: vscode.Uri): void {
    this.open.add(uri.toString());
  }

  /** Last tab closed: its problems go away. */
  closed(uri: vscode.Uri): void {
    this.open.delete(uri.toString());
    this.last.delete(uri.toString());
    this.collection.delete(uri);
  }

  /** Runs the check (coalescing concurrent requests for one image) and publishes the result. */
  check(uri: vscode.Uri, opts: { signal?: AbortSignal; onProgress?(done: number, total: number): void } = {}): Promise<CheckOutcome> {
    const key = uri.toString();
    const inFlight = this.running.get(key);
    if (inFlight) return inFlight;
    const p = this.run(uri, opts).finally(() => this.running.delete(key));
    this.running.set(key, p);
    return p;
  }

  private async run(uri: vscode.Uri, opts: { signal?: AbortSignal; onProgress?(done: number, total: number): void }): Promise<CheckOutcome> {
    const { summary, findings } = await checkForEditor(uri.fsPath, opts);
    const diags = findings.map((f, k) => {
      const d = new vscode.Diagnostic(new vscode.Range(0, 0, 0, 0), diagnosticMessage(f), SEVERITY[f.severity] ?? vscode.DiagnosticSeverity.Warning);
      d.source = 'qcow2-lens';
      d.code = f.kind;
      d.relatedInformation = [new vscode.DiagnosticRelatedInformation(
        new vscode.Location(findingsUri(uri), new vscode.Range(k, 0, k, 0)), `Show in QCOW2 Lens: ${f.structure}${f.hostOffset === undefined ? '' : ` at 0x${f.hostOffset.toString(16)}`}`)];
      return d;
    });
    const key = uri.toString();
    // A tab closed while checking: publish nothing.
    if (this.open.has(key)) {
      this.collection.set(uri, diags);
      const msg: CheckResultMessage = { type: 'checkResult', summary, findings };
      this.last.set(key, msg);
      this.publish(uri, msg);
    }
    return {
      uri: key, summary, findings,
      diagnostics: diags.map(d => ({ severity: vscode.DiagnosticSeverity[d.severity], message: d.message })),
    };
  }

  dispose(): void {
    this.collection.dispose();
  }
}
