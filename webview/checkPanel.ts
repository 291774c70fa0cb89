/** The check panel: the last integrity check's counters and its findings; a finding reveals its structure and bytes. */
import type { CheckFinding, CheckSummary } from '../src/protocol';
import { button, clear, el, hex } from './dom';

export interface CheckHost {
  runCheck(): void;
  runRepair(): void;
  onFinding(f: CheckFinding): void;
}

export class CheckPanel {
  readonly element: HTMLElement;
  private readonly body: HTMLDivElement;
  private readonly status: HTMLSpanElement;
  private findings: CheckFinding[] = [];
  summary: CheckSummary | undefined;

  constructor(private readonly host: CheckHost) {
    this.status = el('span', { className: 'check-state', attrs: { 'aria-live': 'polite' } });
    this.body = el('div', { className: 'check-body' });
    this.element = el('div', { className: 'check-panel', attrs: { role: 'region', 'aria-label': 'Integrity check' } },
      el('div', { className: 'pane-toolbar' },
        el('span', { className: 'pane-title', text: 'Integrity check' }),
        button('Run check', () => host.runCheck(), { className: 'run-check' }),
        button('Repair…', () => host.runRepair(), { className: 'run-repair' }),
        this.status),
      this.body);
    this.showEmpty();
  }

  showEmpty(): void {
    clear(this.body);
    this.body.append(el('div', { className: 'empty', text: 'No check has run yet. "Run check" compares every refcount with the structures that use the cluster, like qemu-img check.' }));
  }

  /** No check has run, and the host says why (qcow2Lens.checkOnOpen): shown in place of the empty text. */
  showNote(note: string): void {
    clear(this.body);
    this.body.append(el('div', { className: 'empty check-note', text: note }));
  }

  setRunning(running: boolean, message?: string): void {
    this.status.textContent = running ? 'Checking…' : message ?? '';
    this.element.setAttribute('aria-busy', String(running));
  }

  show(summary: CheckSummary, findings: CheckFinding[]): void {
    this.summary = summary;
    this.findings = findings;
    this.setRunning(false);
    clear(this.body);
    const v = verdict(summary, findings);
    const head = el('div', { className: `check-summary verdict-${v.kind}` }, el('strong', { text: v.headline }));
    // an image that could not be opened was not checked at all: counters of zero would say otherwise
    if (v.kind !== 'not-run') head.append(el('span', { text: ` · ${summary.corruptions} corruption(s) · ${summary.leaks} leak(s) · ${summary.checkErrors} check error(s)` }));
    if (summary.allocatedClusters !== undefined && summary.totalClusters !== undefined) {
      head.append(el('span', { text: ` · ${summary.allocatedClusters}/${summary.totalClusters} clusters allocated` }));
    }
    if (summary.imageEnd !== undefined) head.append(el('span', { text: ` · image end ${hex(summary.imageEnd)}` }));
    if (summary.note) head.append(el('div', { className: 'note', text: summary.note }));
    this.body.append(head);
    if (!findings.length) {
      this.body.append(el('div', { className: 'empty', text: summary.clean ? 'Every cluster is referenced exactly as its refcount says.' : 'No individual findings were reported.' }));
      return;
    }
    const list = el('ul', { className: 'findings', attrs: { 'aria-label': 'Findings' } });
    findings.forEach((f, i) => {
      const b = el('button', { className: `finding sev-${f.severity}`, attrs: { type: 'button' } },
        el('span', { className: `sev sev-${f.severity}`, text: f.severity === 'error' ? '✖' : f.severity === 'warning' ? '⚠' : 'ℹ', attrs: { 'aria-label': f.severity } }),
        el('span', { className: 'finding-msg', text: f.count && f.count > 1 ? `${f.message} (×${f.count})` : f.message }),
        el('span', { className: 'finding-where', text: `${f.structure}${f.hostOffset !== undefined ? ' @ ' + hex(f.hostOffset) : ''}` }),
        el('span', { className: 'finding-expl', text: f.explanation }));
      b.dataset.index = String(i);
      b.addEventListener('click', () => {
        list.querySelectorAll('.finding.selected').forEach(x => x.classList.remove('selected'));
        b.classList.add('selected');
        this.host.onFinding(f);
      });
      list.append(el('li', {}, b));
    });
    this.body.append(list);
  }

  /** Marks finding `index` as chosen (a click in VS Code's Problems panel) and scrolls it into view. */
  select(index: number): void {
    const b = this.body.querySelector<HTMLButtonElement>(`.finding[data-index="${index}"]`);
    if (!b) return;
    this.body.querySelectorAll('.finding.selected').forEach(x => x.classList.remove('selected'));
    b.classList.add('selected');
    b.scrollIntoView({ block: 'nearest' });
  }
}

/**
 * The headline says only what the counts and findings show: corruptions only when there are some;
 * a check that hit errors of its own "could not complete"; one that could not open the image "could
 * not run"; leaks alone are leaks; other error findings (a broken backing chain) are "problems".
 */
export function verdict(summary: CheckSummary, findings: readonly CheckFinding[]): { kind: 'clean' | 'corrupt' | 'incomplete' | 'not-run' | 'leaks' | 'problems'; headline: string } {
  if (summary.clean) return { kind: 'clean', headline: 'No errors found' };
  if (findings.some(f => f.kind === 'open-failed')) return { kind: 'not-run', headline: 'The check could not run: the image could not be opened' };
  if (summary.corruptions > 0) return { kind: 'corrupt', headline: 'Corruptions found' };
  if (summary.checkErrors > 0) return { kind: 'incomplete', headline: 'The check could not complete' };
  if (summary.leaks > 0) return { kind: 'leaks', headline: 'Leaked clusters found' };
  return { kind: 'problems', headline: 'Problems found (see below)' };
}
