/* global document -- page.evaluate callbacks run in the browser */
// The editor as people use it, in a real VS Code (code-server, the packaged .vsix, headless
// chromium), driven with the mouse and keyboard: in a sparse 1 TiB disk the Disk view's "next
// allocated range" button and N key jump to the ranges qemu-img map reports and say in words where
// each lives; in the Problems panel, the "Show in QCOW2 Lens" line under a finding lands on that
// finding in the editor (selected in the list, its bytes selected in the hex view); the guest-disk
// map says how much of the disk the file holds and a click on a cell selects its L2 entry and its
// bytes; the split between the tree and the views drags with the mouse and moves with the keys;
// Go to Guest Offset from the palette says where the byte lives, selects its L2 entry and marks its
// host cluster on the map; Shift+arrows select a range (its length shown); Ctrl+F in the Disk view
// finds hex bytes across the sparse disk.
// Screenshots in dark, light and high-contrast themes go to e2e-out/.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OUT } from './harness.mjs';
import { makeFixtures } from './fixtures.mjs';
import { clock, finish, openWorkbench, reportFailure, workbenchActions } from './workbench.mjs';

const mark = clock();
fs.mkdirSync(OUT, { recursive: true });
const folder = makeFixtures(fs.mkdtempSync(path.join(os.tmpdir(), 'qcow2-lens-editor-')), { only: ['damaged.qcow2'] });
const TIB = 2 ** 40, CS = 65536;
const qimg = (...a) => execFileSync('qemu-img', a, { encoding: 'utf8' });
qimg('create', '-q', '-f', 'qcow2', path.join(folder, 'base.qcow2'), '1T');
execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x12 ${300 * 2 ** 30} 64k`, path.join(folder, 'base.qcow2')], { stdio: 'ignore' });
qimg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', path.join(folder, 'sparse.qcow2'));
execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 1M 64k', '-c', `write -P 0x5a ${TIB - CS} 64k`, path.join(folder, 'sparse.qcow2')], { stdio: 'ignore' });
const map = JSON.parse(qimg('map', '--output=json', path.join(folder, 'sparse.qcow2')));
const present = map.filter(e => e.present);
assert.deepEqual(present.map(e => e.start), [2 ** 20, 300 * 2 ** 30, TIB - CS], 'qemu-img map: three allocated ranges');
const checked = spawnSync('qemu-img', ['check', path.join(folder, 'damaged.qcow2')], { encoding: 'utf8' });
const leakedCluster = Number(/Leaked cluster (\d+)/.exec(checked.stdout + checked.stderr)?.[1]);
assert.ok(Number.isInteger(leakedCluster), `qemu-img check names the leaked cluster: ${checked.stdout}`);

let wb, ok = false;
try {
  wb = await openWorkbench({ folder, firstRow: 'sparse.qcow2', mark });
  const { page, row } = wb;
  const { palette, quickInput, screenshotThemes, webview, openImage } = workbenchActions(page, { row, mark });

  // 1. A sparse 1 TiB disk: next allocated range with the button, then the N key.
  await openImage('sparse.qcow2');
  const where = webview().locator('.hex-where');
  await webview().getByRole('button', { name: 'Disk', exact: true }).click();
  await webview().getByRole('button', { name: 'Next allocated range' }).click();
  await where.filter({ hasText: `0x100000: data at 0x${present[0].offset.toString(16)} in this file` }).waitFor({ timeout: 20000 });
  mark(`next allocated: ${await where.innerText()}`);
  await webview().locator('.hex-scroll').focus();
  await page.keyboard.press('n');
  await where.filter({ hasText: /^0x4b00000000: from backing file base\.qcow2 at depth 1/ }).waitFor({ timeout: 20000 });
  await page.keyboard.press('n');
  await where.filter({ hasText: `0x${(TIB - CS).toString(16)}: data at` }).waitFor({ timeout: 20000 });
  mark(`N, N: ${await where.innerText()}`);
  await webview().locator('[role=treeitem][aria-selected=true] .tree-label', { hasText: 'L2[0x1fff]' }).waitFor({ timeout: 20000 });

  // 1b. The guest-disk map: its summary line, then a click on its first cell (the first allocated byte, 1 MiB).
  const summary = webview().locator('.guest-summary');
  await summary.filter({ hasText: '128 KiB of 1 TiB allocated in 2 runs · 64 KiB from the backing file' }).waitFor({ timeout: 20000 });
  mark(`guest map: ${await summary.innerText()}`);
  await webview().locator('canvas.guest-canvas').click({ position: { x: 3, y: 3 } });
  await where.filter({ hasText: `0x100000: data at 0x${present[0].offset.toString(16)} in this file — L1[0] → L2[0x10]` }).waitFor({ timeout: 20000 });
  await webview().locator('[role=treeitem][aria-selected=true] .tree-label', { hasText: 'L2[0x10]' }).waitFor({ timeout: 20000 });
  mark(`guest map click: ${await where.innerText()}`);
  // the chain: this image, then base.qcow2
  const links = await webview().locator('.chain-link').allInnerTexts();
  assert.equal(links.length, 2, `chain links: ${links.join(' | ')}`);
  assert.match(links[1], /base\.qcow2[\s\S]*qcow2 · 1 TiB · depth 1/);

  // 1c. The split: dragged 100 px wider with the mouse, then 16 px narrower with the left arrow key.
  const sep = webview().locator('[role=separator]');
  const paneWidth = async () => Math.round((await webview().locator('.tree-pane').boundingBox()).width);
  const w0 = await paneWidth();
  const box = await sep.boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + 300);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width / 2 + 50, box.y + 300, { steps: 5 });
  await page.mouse.move(box.x + box.width / 2 + 100, box.y + 300, { steps: 5 });
  await page.mouse.up();
  const w1 = await paneWidth();
  assert.ok(Math.abs(w1 - (w0 + 100)) <= 4, `dragged the split: ${w0} → ${w1}`);
  await sep.focus();
  await page.keyboard.press('ArrowLeft');
  const w2 = await paneWidth();
  assert.equal(w2, w1 - 16, 'the left arrow key moves the split 16 px');
  assert.equal(Number(await sep.getAttribute('aria-valuenow')), w2);
  mark(`split: ${w0} → ${w1} (mouse) → ${w2} (key)`);

  // 1d. Go to Guest Offset from the palette: the words, the L1/L2 entries selected, the host
  // cluster marked on the cluster map (the one qemu-img map gives for that guest byte).
  const last = present[2];
  await palette('QCOW2: Go to Guest Offset', 'QCOW2: Go to Guest Offset…');
  await quickInput(`0x${(last.start + 0x123).toString(16)}`);
  await where.filter({ hasText: `0x${(last.start + 0x123).toString(16)}: data at 0x${(last.offset + 0x123).toString(16)} in this file — L1[2047] → L2[0x1fff]` }).waitFor({ timeout: 20000 });
  await webview().locator('[role=treeitem][aria-selected=true] .tree-label', { hasText: 'L2[0x1fff]' }).waitFor({ timeout: 20000 });
  await webview().locator(`canvas.map-canvas[data-selected-cluster="${last.offset / CS}"]`).waitFor({ timeout: 20000 });
  mark(`Go to Guest Offset: ${await where.innerText()}; host cluster ${last.offset / CS} marked on the map`);

  // 1e. Range selection with Shift+arrows, and Find (Ctrl+F) for hex bytes in the Disk view.
  await webview().getByRole('button', { name: 'Disk', exact: true }).click();
  const status = webview().locator('.hex-status');
  const cell = webview().locator(`.hex-row:not(.hex-header) .hb[data-offset="${last.start + 0x123}"]`);
  await cell.waitFor({ timeout: 20000 });
  await cell.click();
  for (let i = 0; i < 7; i++) await page.keyboard.press('Shift+ArrowRight');
  await status.filter({ hasText: `selected 0x${(last.start + 0x123).toString(16)} · 8 bytes` }).waitFor({ timeout: 20000 });
  mark(`range selection: ${await status.innerText()}`);
  await webview().locator('.hex-scroll').focus();
  await page.keyboard.press('Control+f');
  const find = webview().locator('input.find-input');
  await find.waitFor({ timeout: 10000 });
  assert.equal(await find.getAttribute('aria-label'), 'Find in the guest disk');
  await webview().locator('select.find-mode').selectOption('hex');
  // the last run (qemu-io -P 0x5a at 1 TiB − 64 KiB), found from the disk's start across the sparse
  // disk and the backing file's run at 300 GiB
  await page.keyboard.press('Escape');
  await palette('QCOW2: Go to Guest Offset', 'QCOW2: Go to Guest Offset…');
  await quickInput('0');
  await where.filter({ hasText: /^0x0: / }).waitFor({ timeout: 20000 });
  await webview().locator('.hex-scroll').focus();
  await page.keyboard.press('Control+f');
  await find.fill('5a 5a 5a 5a');
  await find.press('Enter');
  const found = webview().locator('.find-status');
  await found.filter({ hasText: `Found at 0x${(TIB - CS).toString(16)} (4 bytes).` }).waitFor({ timeout: 30000 });
  await status.filter({ hasText: `selected 0x${(TIB - CS).toString(16)} · 4 bytes` }).waitFor({ timeout: 20000 });
  mark(`Find: ${await found.innerText()}; ${await status.innerText()}`);
  await find.press('Escape');

  await screenshotThemes(async suffix => {
    await page.screenshot({ path: path.join(OUT, `editor-next-allocated-${suffix}.png`) });
    await webview().locator('.guest-map').screenshot({ path: path.join(OUT, `editor-guest-map-${suffix}.png`) });
  });
  mark('screenshots: e2e-out/editor-next-allocated-{dark,light,hc}.png, editor-guest-map-{dark,light,hc}.png');

  // 2. The Problems panel: the line under the leak's diagnostic opens the finding in the editor.
  await openImage('damaged.qcow2');
  await palette('View: Focus Problems', 'View: Focus Problems');
  const problems = page.locator('.markers-panel');
  const link = problems.locator('.monaco-list-row', { hasText: 'Show in QCOW2 Lens' }).first();
  await link.waitFor({ timeout: 30000 });
  mark(`Problems panel: ${(await problems.innerText()).replace(/\s+/g, ' ').slice(0, 200)}`);
  await link.click();
  const offset = '0x' + (leakedCluster * CS).toString(16);
  await webview().locator('.finding.selected').waitFor({ timeout: 20000 });
  assert.match(await webview().locator('.finding.selected').innerText(), new RegExp(offset));
  await webview().locator('.hex-status', { hasText: `selected ${offset}` }).waitFor({ timeout: 20000 });
  const tabs = await page.evaluate(() => [...document.querySelectorAll('.tab')].map(t => t.getAttribute('aria-label')));
  assert.ok(!tabs.some(t => /findings|qcow2-lens-finding/i.test(t ?? '') && !/damaged\.qcow2$/.test(t ?? '')), `no text tab stays open: ${tabs.join(' | ')}`);
  await screenshotThemes(suffix => page.screenshot({ path: path.join(OUT, `editor-problem-landed-${suffix}.png`) }));
  mark(`the Problems panel's link landed on the finding at ${offset} (tabs: ${tabs.join(' | ')})`);
  ok = true;
} catch (e) {
  await reportFailure(wb, 'editor', e);
} finally {
  await wb?.close();
  if (!process.env.E2E_KEEP) fs.rmSync(folder, { recursive: true, force: true });
}
finish('editor', ok, mark);
