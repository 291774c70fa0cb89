/**
 * Settings inside a real extension host, written through VS Code's configuration API (the Settings
 * editor's path is e2e/settings.mjs): Compact Image takes its default compression from
 * qcow2Lens.compact.compression at each use, and a value VS Code stores but the schema refuses
 * falls back to the default. Checked with qemu-img check's compressed-cluster count and compare.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import * as vscode from 'vscode';

const ws = () => vscode.workspace.workspaceFolders![0].uri.fsPath;
const compressedClusters = (p: string) =>
  (JSON.parse(execFileSync('qemu-img', ['check', '--output=json', p], { encoding: 'utf8' })) as { 'compressed-clusters'?: number })['compressed-clusters'] ?? 0;
const config = () => vscode.workspace.getConfiguration('qcow2Lens');

suite('QCOW2 Lens settings', () => {
  suiteSetup(async () => {
    await vscode.extensions.all.find(e => e.packageJSON.name === 'qcow2-lens')!.activate();
  });
  suiteTeardown(async () => {
    await config().update('compact.compression', undefined, vscode.ConfigurationTarget.Global);
  });

  test('Compact Image compresses as qcow2Lens.compact.compression says when the caller names no compression', async () => {
    const src = path.join(ws(), 'sparse.qcow2');
    assert.equal(compressedClusters(src), 0, 'the source has no compressed clusters');
    const compact = async (setting: unknown, out: string) => {
      await config().update('compact.compression', setting, vscode.ConfigurationTarget.Global);
      const r = await vscode.commands.executeCommand<{ compress: string }>('qcow2Lens.compactImage', vscode.Uri.file(src), { output: path.join(ws(), out) });
      const cmp = spawnSync('qemu-img', ['compare', src, path.join(ws(), out)], { encoding: 'utf8' });
      assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
      return { compress: r.compress, compressed: compressedClusters(path.join(ws(), out)) };
    };
    const zlib = await compact('zlib', 'setting-zlib.qcow2');
    assert.equal(zlib.compress, 'zlib');
    assert.ok(zlib.compressed > 0, `qemu-img check counts ${zlib.compressed} compressed clusters`);
    const none = await compact('none', 'setting-none.qcow2'); // read again at this use
    assert.deepEqual(none, { compress: 'none', compressed: 0 });
    const bad = await compact('lz4', 'setting-bad.qcow2'); // not in the enum: the default, none
    assert.deepEqual(bad, { compress: 'none', compressed: 0 });
  });
});
