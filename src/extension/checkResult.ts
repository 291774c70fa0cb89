/**
 * One integrity check as the editor shows it (the check panel's summary and findings), without
 * VS Code: the engine's check of the file alone, or, when the image cannot even be opened, that one
 * problem as the finding (kind 'open-failed', naming the structure and offset of the engine's error).
 * diagnostics.ts publishes it; test/webview shows it in the real webview.
 */
import type { CheckResult } from '../engine/check/check';
import type { CheckFinding, CheckSummary } from '../protocol';
import { checkPath, WriteOpts } from './engineApi';

export async function checkForEditor(path: string, opts: WriteOpts = {}): Promise<{ summary: CheckSummary; findings: CheckFinding[] }> {
  const t0 = Date.now();
  let report: CheckResult;
  try {
    report = await checkPath(path, opts);
  } catch (e) {
    const x = e as { structure?: string; hostOffset?: number; detail?: string; message?: string; code?: string };
    if (x?.code === 'cancelled') throw e;
    report = {
      filename: path, format: 'qcow2', 'check-errors': 1,
      findings: [{
        kind: 'open-failed', severity: 'error', structure: x?.structure ?? 'image', hostOffset: x?.hostOffset,
        message: x?.detail ?? x?.message ?? String(e),
        explanation: 'The image could not be opened for checking, so nothing else was checked.',
      }],
    };
  }
  const summary: CheckSummary = {
    clean: (report.leaks ?? 0) === 0 && (report.corruptions ?? 0) === 0 && (report['check-errors'] ?? 0) === 0 && report.findings.every(f => f.severity !== 'error'),
    leaks: report.leaks ?? 0,
    corruptions: report.corruptions ?? 0,
    checkErrors: report['check-errors'] ?? 0,
    imageEnd: report['image-end-offset'],
    allocatedClusters: report['allocated-clusters'],
    totalClusters: report['total-clusters'],
    fragmentedClusters: report['fragmented-clusters'],
    compressedClusters: report['compressed-clusters'],
    note: `check took ${Date.now() - t0} ms`,
  };
  const findings: CheckFinding[] = report.findings.map(f => ({
    kind: f.kind, severity: f.severity, hostOffset: f.hostOffset, structure: f.structure, message: f.message, explanation: f.explanation,
  }));
  return { summary, findings };
}
