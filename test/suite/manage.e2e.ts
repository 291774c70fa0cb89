/**
 * The image-management commands inside a real VS Code extension host: New Image, Create Overlay,
 * Resize, Change Image Options and Manage Bitmaps, each driven with its arguments (as a keybinding
 * or another extension would) and judged by qemu-img on the files they write.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { qemuImg, until, ws, wsUri } from './util';

const file = wsUri;
const info = (p: string) => JSON.parse(qemuImg('info', '--output=json', '-U', p)) as {
  'virtual-size': number; 'cluster-size': number; 'backing-filename'?: string; 'backing-filename-format'?: string;
  'format-specific': { data: { compat: string; 'lazy-refcounts': boolean; bitmaps?: { name: string; flags: string[]; granularity: number }[] } };
};
/** qemu-img check's verdict: exit 0 and no leaks or corruptions. */
const checkClean = (p: string) => { qemuImg('check', p); };

function fresh(name: string, size: string): vscode.Uri {
  const p = path.join(ws(), name);
  fs.rmSync(p, { force: true });
  qemuImg('create', '-q', '-f', 'qcow2', p, size);
  return vscode.Uri.file(p);
}

suite('Image management', () => {
  test('New Image writes the image qemu-img would, with the options asked for, and opens it', async () => {
    const out = file('new-disk.qcow2');
    fs.rmSync(out.fsPath, { force: true });
    const r = await vscode.commands.executeCommand<{ output: string; size: number }>('qcow2Lens.newImage', undefined,
      { output: out, size: '96M', options: { cluster_size: '4096', preallocation: 'metadata', lazy_refcounts: 'on' } });
    assert.equal(r.output, out.fsPath);
    const i = info(out.fsPath);
    assert.equal(i['virtual-size'], 96 * 2 ** 20);
    assert.equal(i['cluster-size'], 4096);
    assert.equal(i['format-specific'].data['lazy-refcounts'], true);
    checkClean(out.fsPath);
    // metadata preallocation: every guest cluster mapped (qemu-img map reports it all as allocated zeroes)
    const map = JSON.parse(qemuImg('map', '--output=json', out.fsPath)) as { length: number; zero: boolean }[];
    assert.equal(map.reduce((n, e) => n + e.length, 0), 96 * 2 ** 20);
    await until('the new image open in QCOW2 Lens', () => {
      const tab = vscode.window.tabGroups.activeTabGroup.activeTab;
      return tab?.input instanceof vscode.TabInputCustom && tab.input.uri.fsPath === out.fsPath;
    });
  });

  test('New Image refuses a size qemu-img would not take, and writes nothing', async () => {
    const out = file('bad-size.qcow2');
    fs.rmSync(out.fsPath, { force: true });
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.newImage', undefined, { output: out, size: '12 parsecs' })), /size such as/);
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.newImage', undefined, { output: out, size: '1G', options: { cluster_size: '3000' } })), /cluster/i);
    assert.equal(fs.existsSync(out.fsPath), false);
  });

  test('Create Overlay makes a shallow copy backed by the open image, by a relative name', async () => {
    const base = file('base.qcow2');
    const out = file('base-overlay.qcow2');
    fs.rmSync(out.fsPath, { force: true });
    await vscode.commands.executeCommand('qcow2Lens.createOverlay', base, { output: out, open: false });
    const i = info(out.fsPath);
    assert.equal(i['backing-filename'], 'base.qcow2');
    assert.equal(i['backing-filename-format'], 'qcow2');
    assert.equal(i['virtual-size'], info(base.fsPath)['virtual-size']);
    qemuImg('compare', out.fsPath, base.fsPath); // exit 0: the overlay reads as its base
    checkClean(out.fsPath);
  });

  test('Resize grows, and shrinks only what was asked, keeping the data before the new end', async () => {
    const uri = fresh('resize.qcow2', '32M');
    execFileSync('qemu-io', ['-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0x5b 30M 1M', uri.fsPath], { stdio: 'ignore' });
    const raw = path.join(ws(), 'resize-before.raw');
    qemuImg('convert', '-O', 'raw', uri.fsPath, raw);
    const grown = await vscode.commands.executeCommand<{ oldSize: number; newSize: number }>('qcow2Lens.resizeImage', uri, { size: '+16M' });
    assert.deepEqual(grown, { oldSize: 32 * 2 ** 20, newSize: 48 * 2 ** 20 });
    assert.equal(info(uri.fsPath)['virtual-size'], 48 * 2 ** 20);
    checkClean(uri.fsPath);
    const shrunk = await vscode.commands.executeCommand<{ newSize: number }>('qcow2Lens.resizeImage', uri, { size: '16M', confirm: false });
    assert.equal(shrunk.newSize, 16 * 2 ** 20);
    assert.equal(info(uri.fsPath)['virtual-size'], 16 * 2 ** 20);
    checkClean(uri.fsPath);
    // the first 16 MiB are what they were (qemu-img compare of a shorter image against the longer
    // raw file fails only where the extra part is non-zero, so cut the raw file first)
    fs.truncateSync(raw, 16 * 2 ** 20);
    qemuImg('compare', '-F', 'raw', uri.fsPath, raw);
  });

  test('Change Image Options downgrades to v2 and back and toggles lazy refcounts, as qemu-img amend does', async () => {
    const uri = fresh('amend.qcow2', '16M');
    execFileSync('qemu-io', ['-c', 'write -P 0x42 0 64k', uri.fsPath], { stdio: 'ignore' });
    await vscode.commands.executeCommand('qcow2Lens.amendImage', uri, { options: { compat: '0.10' }, confirm: false });
    assert.equal(info(uri.fsPath)['format-specific'].data.compat, '0.10');
    checkClean(uri.fsPath);
    await vscode.commands.executeCommand('qcow2Lens.amendImage', uri, { options: { compat: '1.1' }, confirm: false });
    await vscode.commands.executeCommand('qcow2Lens.amendImage', uri, { options: { lazy_refcounts: 'on' }, confirm: false });
    const d = info(uri.fsPath)['format-specific'].data;
    assert.equal(d.compat, '1.1');
    assert.equal(d['lazy-refcounts'], true);
    checkClean(uri.fsPath);
    // a change QEMU refuses (v2 cannot have lazy refcounts) is refused before any write
    const before = fs.readFileSync(uri.fsPath);
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.amendImage', uri, { options: { compat: '0.10', lazy_refcounts: 'on' }, confirm: false })), /Lazy refcounts/);
    assert.ok(fs.readFileSync(uri.fsPath).equals(before), 'the file is unchanged');
  });

  test('Manage Bitmaps adds, disables, merges and removes persistent bitmaps as qemu-img bitmap does', async () => {
    const uri = fresh('bitmaps.qcow2', '16M');
    await vscode.commands.executeCommand('qcow2Lens.manageBitmaps', uri, { op: 'add', name: 'nightly', granularity: 65536 });
    await vscode.commands.executeCommand('qcow2Lens.manageBitmaps', uri, { op: 'add', name: 'weekly' });
    await vscode.commands.executeCommand('qcow2Lens.manageBitmaps', uri, { op: 'disable', name: 'weekly' });
    await vscode.commands.executeCommand('qcow2Lens.manageBitmaps', uri, { op: 'merge', name: 'weekly', source: 'nightly' });
    let bitmaps = info(uri.fsPath)['format-specific'].data.bitmaps ?? [];
    assert.deepEqual(bitmaps.map(b => [b.name, b.flags.includes('auto'), b.granularity]).sort(), [['nightly', true, 65536], ['weekly', false, 65536]]);
    checkClean(uri.fsPath);
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.manageBitmaps', uri, { op: 'add', name: 'nightly' })), /exists/);
    await vscode.commands.executeCommand('qcow2Lens.manageBitmaps', uri, { op: 'remove', name: 'nightly', confirm: false });
    bitmaps = info(uri.fsPath)['format-specific'].data.bitmaps ?? [];
    assert.deepEqual(bitmaps.map(b => b.name), ['weekly']);
    checkClean(uri.fsPath);
  });

  test('management writes refuse an image QEMU holds open', async () => {
    const uri = fresh('mlocked.qcow2', '16M');
    const holder = spawn('qemu-io', [uri.fsPath], { stdio: ['pipe', 'ignore', 'ignore'] });
    try {
      await until('QEMU lock', () => fs.readFileSync('/proc/locks', 'utf8').includes(`:${fs.statSync(uri.fsPath).ino} `) || undefined, 10000);
      const before = fs.readFileSync(uri.fsPath);
      for (const [cmd, opts] of [
        ['qcow2Lens.resizeImage', { size: '+1M' }],
        ['qcow2Lens.amendImage', { options: { lazy_refcounts: 'on' }, confirm: false }],
        ['qcow2Lens.manageBitmaps', { op: 'add', name: 'b' }],
      ] as const) {
        await assert.rejects(Promise.resolve(vscode.commands.executeCommand(cmd, uri, opts)), /in use by QEMU/, cmd);
      }
      assert.ok(fs.readFileSync(uri.fsPath).equals(before), 'nothing was written');
    } finally {
      holder.stdin.end('quit\n');
      holder.kill();
    }
  });
});
