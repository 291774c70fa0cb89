/* global document, window, MutationObserver -- page.evaluate callbacks run in the browser */
// UI end-to-end test, driven like a person would: the packaged .vsix installed into a real VS Code
// workbench (code-server) in headless chromium. Opens a QEMU-made image from the explorer and
// reads the structure tree inside the webview's nested iframes; runs Check on a damaged image and
// reads the finding from the Problems view; with files.autoSave on, creates a snapshot (webview
// button + name box) and deletes one (palette + modal), checking with qemu-img that nothing is
// written before the user's word and that no tab turns dirty; opens a file that is not an image
// (the error in the tab, Reopen With…); screenshots the editor in a dark and a light theme.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OUT } from './harness.mjs';
import { makeFixtures } from './fixtures.mjs';
import { clock, finish, openWorkbench, poll, reportFailure, workbenchActions } from './workbench.mjs';

const mark = clock();
fs.mkdirSync(OUT, { recursive: true });
const folder = makeFixtures(fs.mkdtempSync(path.join(os.tmpdir(), 'qcow2-lens-ui-')), { only: ['sample.qcow2', 'damaged.qcow2'] });
fs.copyFileSync(path.join(folder, 'sample.qcow2'), path.join(folder, 'snap-ui.qcow2'));
fs.writeFileSync(path.join(folder, 'broken.qcow2'), 'Not a disk image: the editor shows why, in the tab.\n');
const snapshots = f => (JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', path.join(folder, f)], { encoding: 'utf8' })).snapshots ?? []).map(s => s.name);
const checked = spawnSync('qemu-img', ['check', path.join(folder, 'damaged.qcow2')], { encoding: 'utf8' });
const leakedCluster = Number(/Leaked cluster (\d+)/.exec(checked.stdout + checked.stderr)?.[1]);
assert.ok(Number.isInteger(leakedCluster), `qemu-img check names the leaked cluster: ${checked.stdout}${checked.stderr}`);

const stamp = file => { const st = fs.statSync(path.join(folder, file)); return `${st.size}:${st.mtimeMs}`; };
// -U: read without taking QEMU's lock (the extension refuses to write an image something locks)
const snapshotList = file => execFileSync('qemu-img', ['snapshot', '-l', '-U', path.join(folder, file)], { encoding: 'utf8' });
const assertCheckClean = file => {
  const r = spawnSync('qemu-img', ['check', path.join(folder, file)], { encoding: 'utf8' });
  assert.equal(r.status, 0, `qemu-img check ${file}: ${r.stdout}${r.stderr}`);
};

let wb, ok = false;
try {
  // auto-save on, as in code-server's and VS Code for the Web's defaults: it must find nothing to write
  wb = await openWorkbench({ folder, firstRow: 'sample.qcow2', settings: { 'files.autoSave': 'afterDelay', 'files.autoSaveDelay': 100 }, mark });
  const { page, row } = wb;
  const { palette, quickInput, setTheme, screenshotThemes, webview, openImage } = workbenchActions(page, { row, mark });

  await openImage('sample.qcow2');
  const labels = webview().locator('.tree .tree-label');
  await labels.first().waitFor({ timeout: 30000 });
  await poll('tree rows', async () => (await labels.count()) >= 3);
  const texts = await labels.allTextContents();
  mark(`custom editor tree rendered: ${texts.slice(0, 8).join(' | ')}`);
  assert.ok(texts.some(t => /header/i.test(t)), `the tree shows the header: ${texts.join(' | ')}`);
  assert.ok(texts.some(t => /snapshot/i.test(t)), `the tree shows the snapshot table: ${texts.join(' | ')}`);
  await page.waitForTimeout(1500); // let the cluster map paint
  await screenshotThemes(suffix => page.screenshot({ path: path.join(OUT, `editor-${suffix}.png`) }), ['dark', 'light']);
  await setTheme('Dark Modern', 'dark_modern');
  mark('screenshots: e2e-out/editor-dark.png, e2e-out/editor-light.png');

  // Check on a damaged image: the finding appears in the Problems view on screen.
  await openImage('damaged.qcow2');
  await palette('QCOW2: Check Image');
  // the command's own answer (the check on open filled the Problems panel already)
  await page.locator('.notification-toast', { hasText: '1 leaked cluster(s)' }).first().waitFor({ timeout: 30000 });
  // the webview's own Check button runs the same command through the host, which reports back
  await webview().getByRole('button', { name: 'Check', exact: true }).click();
  await webview().locator('.banner', { hasText: 'check: done' }).waitFor({ timeout: 30000 });
  await palette('View: Focus Problems', 'View: Focus Problems');
  const offset = '0x' + (leakedCluster * 65536).toString(16);
  const problems = page.locator('.markers-panel');
  await problems.getByText(offset, { exact: false }).first().waitFor({ timeout: 30000 });
  const problemText = (await problems.innerText()).replace(/\s+/g, ' ');
  assert.match(problemText, /damaged\.qcow2/);
  assert.match(problemText, /leak/i);
  mark(`Problems view: ${problemText.slice(0, 200)}`);
  await page.screenshot({ path: path.join(OUT, 'problems.png') });

  // Snapshots with auto-save on (files.autoSave afterDelay, 100 ms, set for this server): every write
  // waits for the user's word, is in the file when the banner says so, and the tab never turns dirty.
  await openImage('snap-ui.qcow2');
  await page.evaluate(() => {
    window.__dirtyTabs = [];
    const look = () => document.querySelectorAll('.tab.dirty').forEach(t => window.__dirtyTabs.push(t.getAttribute('aria-label')));
    new MutationObserver(look).observe(document.querySelector('.monaco-workbench'), { subtree: true, childList: true, attributes: true, attributeFilter: ['class'] });
    look();
  });
  const listed = () => snapshotList('snap-ui.qcow2');
  const unchanged = (what, list, sig) => {
    assert.equal(stamp('snap-ui.qcow2'), sig, `${what}: the file is untouched`);
    assert.equal(listed(), list, `${what}: qemu-img snapshot -l is unchanged`);
  };
  const banner = text => webview().locator('.banner', { hasText: text }).waitFor({ timeout: 30000 });
  let list = listed(), before = stamp('snap-ui.qcow2');
  assert.deepEqual(snapshots('snap-ui.qcow2'), ['base']);
  // Create from the webview's button: the name box is the confirmation. Open, then Escape: nothing.
  const nameBox = page.locator('.quick-input-widget:visible .quick-input-box input').first();
  await webview().getByRole('button', { name: 'Snapshot…', exact: true }).click();
  await nameBox.waitFor({ timeout: 10000 });
  assert.match(await page.locator('.quick-input-widget:visible').innerText(), /Enter writes it to the image now/);
  unchanged('while the name box is open', list, before);
  await page.keyboard.press('Escape');
  await banner('Cancelled: snap-ui.qcow2 was not changed.');
  unchanged('after Escape', list, before);
  await webview().getByRole('button', { name: 'Snapshot…', exact: true }).click();
  await quickInput('ui-snap');
  await banner('Snapshot "ui-snap" created in snap-ui.qcow2.');
  assert.deepEqual(snapshots('snap-ui.qcow2'), ['base', 'ui-snap'], 'written when the banner says so');
  assertCheckClean('snap-ui.qcow2');
  await webview().locator('.badge', { hasText: '2 snapshot(s)' }).waitFor({ timeout: 30000 }); // the view reloaded
  mark(`created after the name was entered: ${snapshots('snap-ui.qcow2').join(', ')}`);

  // Delete from the palette: a modal asks first; Cancel writes nothing, Delete writes at once.
  const dialog = page.locator('.monaco-dialog-box');
  const askDelete = async () => {
    await palette('QCOW2: Delete Snapshot', 'QCOW2: Delete Snapshot…');
    await quickInput('ui-snap', 'ui-snap');
    await dialog.waitFor({ timeout: 10000 });
    const text = await dialog.innerText();
    assert.match(text, /Delete snapshot "ui-snap"\?/);
    assert.match(text, /Its clusters are freed; this cannot be undone\./);
  };
  list = listed(); before = stamp('snap-ui.qcow2');
  await askDelete();
  unchanged('while the dialog is open', list, before);
  await dialog.getByRole('button', { name: 'Cancel' }).click();
  await dialog.waitFor({ state: 'hidden', timeout: 10000 });
  await banner('Cancelled: snap-ui.qcow2 was not changed.');
  unchanged('after Cancel', list, before);
  await askDelete();
  unchanged('while the dialog is open again', list, before);
  await dialog.getByRole('button', { name: 'Delete', exact: true }).click();
  await banner('Snapshot "ui-snap" deleted from snap-ui.qcow2.');
  assert.deepEqual(snapshots('snap-ui.qcow2'), ['base'], 'deleted when the banner says so');
  assert.notEqual(listed(), list);
  assertCheckClean('snap-ui.qcow2');
  await webview().locator('.badge', { hasText: '1 snapshot(s)' }).waitFor({ timeout: 30000 });
  assert.deepEqual(await page.evaluate(() => window.__dirtyTabs), [], 'no tab was ever dirty');
  mark('deleted after the modal confirmation; no tab was ever dirty; qemu-img check is clean');

  // Apply Snapshot writes at once, after a modal confirmation.
  const expected = path.join(folder, 'expected-after-apply.qcow2');
  fs.copyFileSync(path.join(folder, 'snap-ui.qcow2'), expected);
  execFileSync('qemu-img', ['snapshot', '-a', 'base', expected]);
  const same = () => spawnSync('qemu-img', ['compare', '-U', path.join(folder, 'snap-ui.qcow2'), expected]).status === 0;
  assert.equal(same(), false, 'the disk differs from the snapshot before applying it');
  await palette('QCOW2: Apply Snapshot', 'QCOW2: Apply Snapshot…');
  await quickInput('base', 'base');
  await dialog.waitFor({ timeout: 10000 });
  assert.match(await dialog.innerText(), /Revert the disk to snapshot "base"/);
  await dialog.getByRole('button', { name: 'Apply' }).click();
  await banner('Disk reverted to snapshot "base" in snap-ui.qcow2.');
  assert.equal(same(), true, 'qemu-img compare: the disk equals the snapshot');
  mark('applied through a modal confirmation: qemu-img compare matches');

  // A file the engine cannot open: its error in the tab (no modal), and Reopen With… offers VS Code's editors.
  await row('broken.qcow2').dblclick();
  const fatal = webview().locator('.fatal [role=alert]');
  await fatal.waitFor({ timeout: 30000 });
  assert.match(await fatal.innerText(), /broken\.qcow2: header\.magic at 0x0: not a qcow2 image/);
  assert.match(await webview().locator('.fatal-where').innerText(), /header\.magic[\s\S]*0x0/);
  assert.equal(await page.locator('.monaco-dialog-box').count(), 0, 'no modal');
  await page.screenshot({ path: path.join(OUT, 'editor-error.png') });
  await webview().getByRole('button', { name: 'Reopen With…' }).click();
  await page.locator('.quick-input-widget:visible .quick-input-list .monaco-list-row', { hasText: 'Text Editor' }).first().waitFor({ timeout: 15000 });
  await page.keyboard.press('Escape');
  mark('an unreadable file shows the engine\'s error in the tab; Reopen With… opens VS Code\'s editor picker');
  ok = true;
} catch (e) {
  await reportFailure(wb, 'ui', e);
} finally {
  await wb?.close();
  if (!process.env.E2E_KEEP) fs.rmSync(folder, { recursive: true, force: true });
}
finish('ui', ok, mark);
