/**
 * The extension inside a real VS Code extension host: custom editor, Problems panel, snapshots
 * written at once (the tab never dirty), compaction, go-to, copy, export. Every expectation comes from
 * qemu-img / qemu-io run on the same files (the workspace is built by e2e/fixtures.mjs).
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { qemuImg, sleep, until, ws, wsUri } from './util';
import { REPORTER_MARK } from './index';

const file = wsUri;
const snapshotNames = (p: string) => (JSON.parse(qemuImg('info', '--output=json', '-U', p)).snapshots ?? []).map((s: { name: string }) => s.name) as string[];

function copyFixture(name: string, as: string): vscode.Uri {
  fs.copyFileSync(path.join(ws(), name), path.join(ws(), as));
  return file(as);
}

async function openInLens(uri: vscode.Uri): Promise<void> {
  await vscode.commands.executeCommand('vscode.openWith', uri, 'qcow2Lens.editor');
  await until('the custom editor tab', () => {
    const tab = vscode.window.tabGroups.activeTabGroup.activeTab;
    return tab?.input instanceof vscode.TabInputCustom && tab.input.uri.toString() === uri.toString() && tab.input.viewType === 'qcow2Lens.editor';
  });
}

interface State { editors: { uri: string; active: boolean }[] }
const state = () => vscode.commands.executeCommand<State>('qcow2Lens.internal.state');

suite('QCOW2 Lens in VS Code', () => {
  suiteSetup(async () => {
    const ext = vscode.extensions.all.find(e => e.packageJSON.name === 'qcow2-lens');
    assert.ok(ext, 'the extension is installed');
    await ext.activate();
  });

  // The goal is 50 ms; this suite runs beside code-server and chromium on a loaded 2-core machine, where the
  // same bundle measures 3-4x its idle time, so the bound here is a regression guard and the log shows the figure.
  test('activation (loading the bundle and activate(), as VS Code counts it) is measured and bounded', async () => {
    const api = vscode.extensions.all.find(e => e.packageJSON.name === 'qcow2-lens')!.exports as { activationMs: number };
    // with the reporter's mark, so e2e/exthost.mjs prints it among the test lines
    console.log(`${REPORTER_MARK}      activation: ${api.activationMs.toFixed(1)} ms (goal 50 ms)`);
    assert.ok(api.activationMs > 0, 'the bundle recorded its load start');
    assert.ok(api.activationMs < 400, `activation took ${api.activationMs.toFixed(1)} ms`);
  });
  teardown(async () => {
    await vscode.commands.executeCommand('workbench.action.revertAndCloseActiveEditor').then(undefined, () => undefined);
    await vscode.commands.executeCommand('workbench.action.closeAllEditors');
  });

  test('a .qcow2 opens in the custom editor by default, read-only', async () => {
    const uri = file('sample.qcow2');
    const before = fs.readFileSync(uri.fsPath);
    await vscode.commands.executeCommand('vscode.open', uri);
    await until('the qcow2 custom editor', () => {
      const tab = vscode.window.tabGroups.activeTabGroup.activeTab;
      return tab?.input instanceof vscode.TabInputCustom && tab.input.viewType === 'qcow2Lens.editor';
    });
    const st = await until('the editor to register as active', async () => (await state()).editors.find(e => e.active && e.uri === uri.toString()));
    assert.ok(st);
    await sleep(1000);
    assert.ok(fs.readFileSync(uri.fsPath).equals(before), 'opening does not modify the image');
  });

  test('the walkthrough is declared and its Open Sample Image opens a QEMU-clean copy outside the workspace', async () => {
    const ext = vscode.extensions.all.find(e => e.packageJSON.name === 'qcow2-lens')!;
    const walk = ext.packageJSON.contributes.walkthroughs?.[0];
    assert.ok(walk, 'a walkthrough is contributed');
    for (const st of walk.steps as { media: { markdown: string } }[]) assert.ok(fs.existsSync(path.join(ext.extensionPath, st.media.markdown)), `${st.media.markdown} ships`);
    const opened = await vscode.commands.executeCommand<string>('qcow2Lens.openSample');
    assert.ok(!opened.startsWith(ws()), 'the sample is not written into the workspace');
    await until('the sample in the custom editor', () => {
      const tab = vscode.window.tabGroups.activeTabGroup.activeTab;
      return tab?.input instanceof vscode.TabInputCustom && tab.input.uri.fsPath === opened && tab.input.viewType === 'qcow2Lens.editor';
    });
    const info = JSON.parse(qemuImg('info', '--output=json', '-U', opened));
    assert.equal(info['virtual-size'], 64 * 1024 * 1024);
    assert.deepEqual(info.snapshots.map((s: { name: string }) => s.name), ['fresh-install']);
    assert.equal(spawnSync('qemu-img', ['check', '-U', opened]).status, 0, 'qemu-img check finds the sample clean');
  });

  test('Check Image puts qemu-img check\'s leak into the Problems panel and clears it on close', async () => {
    const uri = copyFixture('damaged.qcow2', 'damaged-check.qcow2');
    const expected = JSON.parse(spawnSync('qemu-img', ['check', '--output=json', uri.fsPath], { encoding: 'utf8' }).stdout);
    assert.equal(expected.leaks, 1, 'the fixture has one leaked cluster per qemu-img');
    await openInLens(uri);
    const out = await vscode.commands.executeCommand<{ summary: { leaks: number; corruptions: number }; findings: { kind: string; hostOffset?: number }[] }>('qcow2Lens.checkImage', uri, {});
    assert.equal(out.summary.leaks, expected.leaks);
    assert.equal(out.summary.corruptions, expected.corruptions ?? 0);
    const diags = await until('diagnostics', () => { const d = vscode.languages.getDiagnostics(uri); return d.length ? d : undefined; });
    assert.ok(diags.length >= 1);
    // qemu-img names the leaked cluster by index; our message names its host offset.
    const text = spawnSync('qemu-img', ['check', uri.fsPath], { encoding: 'utf8' });
    const leakedCluster = Number(/Leaked cluster (\d+)/.exec(text.stdout + text.stderr)![1]);
    const offset = '0x' + (leakedCluster * 65536).toString(16);
    assert.ok(diags.some(d => d.message.includes(offset)), `a diagnostic names ${offset}: ${diags.map(d => d.message).join(' | ')}`);
    assert.ok(diags.every(d => d.source === 'qcow2-lens'));
    await vscode.commands.executeCommand('workbench.action.closeActiveEditor');
    await until('diagnostics cleared after the tab closed', () => vscode.languages.getDiagnostics(uri).length === 0);
  });

  test('Repair Image (leaks) leaves an image qemu-img check finds clean', async () => {
    const uri = copyFixture('damaged.qcow2', 'damaged-repair.qcow2');
    await openInLens(uri);
    const r = await vscode.commands.executeCommand<{ after: { summary: { clean: boolean } } }>('qcow2Lens.repairImage', uri, { mode: 'leaks', confirm: false });
    assert.equal(r.after.summary.clean, true);
    const after = spawnSync('qemu-img', ['check', '--output=json', uri.fsPath], { encoding: 'utf8' });
    assert.equal(after.status, 0, after.stdout + after.stderr);
    await until('diagnostics cleared after the repair', () => vscode.languages.getDiagnostics(uri).length === 0);
  });

  test('a change on disk by another tool re-runs the check (file watcher)', async () => {
    const uri = copyFixture('damaged.qcow2', 'damaged-watch.qcow2');
    await openInLens(uri);
    await until('the leak diagnostic from the check on open', () => vscode.languages.getDiagnostics(uri).length > 0);
    qemuImg('check', '-r', 'leaks', uri.fsPath); // QEMU repairs it behind the editor's back
    await until('diagnostics to follow the file', () => vscode.languages.getDiagnostics(uri).length === 0);
  });

  test('a clean image has no error diagnostics', async () => {
    const uri = file('sample.qcow2');
    await openInLens(uri);
    const out = await vscode.commands.executeCommand<{ summary: { clean: boolean } }>('qcow2Lens.checkImage', uri, {});
    assert.equal(out.summary.clean, qemuImg('check', uri.fsPath).includes('No errors were found'));
    assert.equal(vscode.languages.getDiagnostics(uri).filter(d => d.severity === vscode.DiagnosticSeverity.Error).length, 0);
  });

  test('Create and Delete Snapshot write at once (qemu-img snapshot -l); the tab is never dirty and Save writes nothing', async () => {
    const uri = copyFixture('sample.qcow2', 'snap-now.qcow2');
    await openInLens(uri);
    const r1 = await vscode.commands.executeCommand<{ snapshots: string[]; message: string }>('qcow2Lens.createSnapshot', uri, { name: 'e2e-one' });
    assert.deepEqual(r1.snapshots, ['base', 'e2e-one']);
    assert.deepEqual(snapshotNames(uri.fsPath), ['base', 'e2e-one'], 'in the file when the command returns');
    assert.match(r1.message, /^Snapshot "e2e-one" created in snap-now\.qcow2\.$/);
    const r2 = await vscode.commands.executeCommand<{ snapshots: string[]; message: string }>('qcow2Lens.deleteSnapshot', uri, { name: 'base', confirm: false });
    assert.deepEqual(r2.snapshots, ['e2e-one']);
    assert.deepEqual(snapshotNames(uri.fsPath), ['e2e-one']);
    assert.match(r2.message, /^Snapshot "base" deleted from snap-now\.qcow2\.$/);
    assert.match(qemuImg('check', uri.fsPath), /No errors were found/);
    const tab = vscode.window.tabGroups.activeTabGroup.activeTab!;
    assert.ok(tab.input instanceof vscode.TabInputCustom && tab.input.uri.toString() === uri.toString());
    assert.equal(tab.isDirty, false, 'the document has no edits');
    const before = fs.readFileSync(uri.fsPath);
    await vscode.commands.executeCommand('workbench.action.files.save');
    assert.ok(fs.readFileSync(uri.fsPath).equals(before), 'Save has nothing to write');
  });

  test('Apply Snapshot reverts the guest data to the snapshot (qemu-img compare)', async () => {
    const uri = copyFixture('sample.qcow2', 'snap-apply.qcow2');
    const expected = path.join(ws(), 'snap-apply-expected.qcow2');
    fs.copyFileSync(uri.fsPath, expected);
    qemuImg('snapshot', '-a', 'base', expected);
    await vscode.commands.executeCommand('qcow2Lens.applySnapshot', uri, { name: 'base', confirm: false });
    const cmp = spawnSync('qemu-img', ['compare', uri.fsPath, expected], { encoding: 'utf8' });
    assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
    assert.match(qemuImg('check', uri.fsPath), /No errors were found/);
  });

  test('Compact Image to a new zlib-compressed file keeps the guest data (qemu-img compare)', async () => {
    const src = file('sparse.qcow2');
    const out = path.join(ws(), 'sparse-compact.qcow2');
    const r = await vscode.commands.executeCommand<{ output: string; sizeAfter: number; sizeBefore: number }>('qcow2Lens.compactImage', src, { output: out, compress: 'zlib' });
    assert.equal(r.output, out);
    const cmp = spawnSync('qemu-img', ['compare', src.fsPath, out], { encoding: 'utf8' });
    assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
    assert.match(qemuImg('check', out), /No errors were found/);
    assert.ok(r.sizeAfter < r.sizeBefore, `${r.sizeAfter} < ${r.sizeBefore}`);
  });

  test('Compact Image with zstd: QEMU reads the result (qemu-img compare, compression-type zstd)', async () => {
    const src = file('sample.qcow2');
    const out = path.join(ws(), 'sample-zstd.qcow2');
    await vscode.commands.executeCommand('qcow2Lens.compactImage', src, { output: out, compress: 'zstd' });
    const cmp = spawnSync('qemu-img', ['compare', src.fsPath, out], { encoding: 'utf8' });
    assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
    assert.equal(JSON.parse(qemuImg('info', '--output=json', out))['format-specific'].data['compression-type'], 'zstd');
    assert.deepEqual(snapshotNames(out), ['base'], 'snapshots are kept');
  });

  test('Compact Image in place keeps the guest data', async () => {
    const uri = copyFixture('sparse.qcow2', 'sparse-inplace.qcow2');
    const ref = file('sparse.qcow2').fsPath;
    await vscode.commands.executeCommand('qcow2Lens.compactImage', uri, { compress: 'none', confirm: false });
    const cmp = spawnSync('qemu-img', ['compare', ref, uri.fsPath], { encoding: 'utf8' });
    assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
  });

  test('Go to Guest Offset resolves the host offset qemu-img map reports', async () => {
    const uri = file('sample.qcow2');
    await openInLens(uri);
    const map = JSON.parse(qemuImg('map', '--output=json', uri.fsPath)) as { start: number; length: number; data: boolean; offset?: number }[];
    const guest = 8 * 1024 * 1024 + 4096;
    const ext = map.find(e => e.start <= guest && guest < e.start + e.length && e.data)!;
    const loc = await vscode.commands.executeCommand<{ hostOffset: number; type: string; revealedIn: number }>('qcow2Lens.goToGuestOffset', uri, guest);
    assert.equal(loc.hostOffset, ext.offset! + (guest - ext.start));
    assert.equal(loc.type, 'data');
    assert.ok(loc.revealedIn >= 1, 'the open tab was asked to reveal it');
  });

  test('Go to Host Offset takes hex text and names the host cluster; bad text is refused', async () => {
    const uri = file('sample.qcow2');
    await openInLens(uri);
    const l1TableOffset = Number(fs.readFileSync(uri.fsPath).readBigUInt64BE(40)); // header.l1_table_offset
    const clusterSize = JSON.parse(qemuImg('info', '--output=json', uri.fsPath))['cluster-size'];
    const r = await vscode.commands.executeCommand<{ hostOffset: number; hostCluster: number; revealedIn: number }>('qcow2Lens.goToHostOffset', uri, '0x' + l1TableOffset.toString(16));
    assert.equal(r.hostOffset, l1TableOffset);
    assert.equal(r.hostCluster, l1TableOffset / clusterSize);
    assert.ok(r.revealedIn >= 1);
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.goToHostOffset', uri, 'twelve')), /not an offset/);
  });

  test('Copy Cluster as Hex copies the file bytes of that cluster', async () => {
    const uri = file('sample.qcow2');
    const r = await vscode.commands.executeCommand<{ clusterOffset: number; text: string }>('qcow2Lens.copyClusterAsHex', uri, 0x10);
    assert.equal(r.clusterOffset, 0);
    assert.equal(await vscode.env.clipboard.readText(), r.text);
    const bytes = fs.readFileSync(uri.fsPath).subarray(0, 65536);
    const fromText = Buffer.from(r.text.split('\n').filter(Boolean).map(l => l.slice(10, 57).replace(/ /g, '')).join(''), 'hex');
    assert.ok(fromText.equals(bytes), 'hex text decodes to the file bytes');
  });

  test('Export Image Info writes what qemu-img info --output=json prints', async () => {
    const uri = file('overlay.qcow2');
    const out = path.join(ws(), 'overlay-info.json');
    await vscode.commands.executeCommand('qcow2Lens.exportInfo', uri, { output: out });
    const ours = JSON.parse(fs.readFileSync(out, 'utf8'));
    const theirs = JSON.parse(qemuImg('info', '--output=json', uri.fsPath));
    for (const k of ['virtual-size', 'cluster-size', 'format', 'backing-filename', 'full-backing-filename', 'backing-filename-format', 'format-specific', 'dirty-flag']) {
      assert.deepEqual(ours[k], theirs[k], k);
    }
  });

  test('an image not named *.qcow2 opens with "Reopen Editor With… QCOW2 Lens (any file)" (magic)', async () => {
    const uri = copyFixture('sample.qcow2', 'disk.img');
    await vscode.commands.executeCommand('vscode.openWith', uri, 'qcow2Lens.editorAny');
    await until('the any-file editor tab', async () => (await state()).editors.find(e => e.uri === uri.toString() && e.active));
    const out = await vscode.commands.executeCommand<{ summary: { clean: boolean } }>('qcow2Lens.checkImage', undefined, {});
    assert.equal(out.summary.clean, true, 'commands act on the active QCOW2 Lens tab');
  });

  test('a file that is not qcow2 opens to the engine\'s error in the tab (the check names header.magic), unchanged', async () => {
    const uri = file('notes.txt');
    const before = fs.readFileSync(uri.fsPath);
    await vscode.commands.executeCommand('vscode.openWith', uri, 'qcow2Lens.editorAny');
    await until('the any-file editor tab', async () => (await state()).editors.find(e => e.uri === uri.toString()));
    const diags = await until('the check\'s diagnostic', () => { const d = vscode.languages.getDiagnostics(uri); return d.length ? d : undefined; });
    assert.ok(diags.some(d => d.code === 'open-failed' && /header\.magic at 0x0/.test(d.message)), diags.map(d => d.message).join(' | '));
    assert.ok(fs.readFileSync(uri.fsPath).equals(before));
  });

  test('write commands refuse an image locked by QEMU', async function () {
    const uri = copyFixture('sample.qcow2', 'locked.qcow2');
    // qemu-io holds the image open (and locked) while it waits on stdin
    const holder = spawn('qemu-io', [uri.fsPath], { stdio: ['pipe', 'ignore', 'ignore'] });
    try {
      await until('QEMU lock', () => fs.readFileSync('/proc/locks', 'utf8').includes(`:${fs.statSync(uri.fsPath).ino} `) || undefined, 10000);
      await assert.rejects(
        Promise.resolve(vscode.commands.executeCommand('qcow2Lens.compactImage', uri, { compress: 'none', confirm: false })),
        /in use by QEMU/,
      );
      await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.createSnapshot', uri, { name: 'no' })), /in use by QEMU/);
      await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.deleteSnapshot', uri, { name: 'base', confirm: false })), /in use by QEMU/);
      assert.deepEqual(snapshotNames(uri.fsPath), ['base']);
    } finally {
      holder.stdin.end('quit\n');
      holder.kill();
    }
  });
});
