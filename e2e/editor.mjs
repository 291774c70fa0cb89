/* global document -- page.evaluate callbacks run in the browser */
// The editor as people use it, in a real VS Code (code-server, the packaged .vsix, headless
// chromium), driven with the mouse and keyboard: in a sparse 1 TiB disk the Disk view's "next
// allocated range" button and N key jump to the ranges qemu-img map reports and say in words where
// each lives; in the Problems panel, the "Show in QCOW2 Lens" line under a finding lands on that
// finding in the editor (selected in the list, its bytes selected in the hex view); the guest-disk
// map says how much of the disk the file holds and a click on a cell selects its L2 entry and its
// bytes; the split between the tree and the views drags with the mouse and moves with the keys.
// Screenshots in dark, light and high-contrast themes go to e2e-out/.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OUT, startCodeServer, launchChromium } from './harness.mjs';
import { makeFixtures } from './fixtures.mjs';
import { packageVsix, installVsix } from './vsix.mjs';

const t0 = Date.now();
const mark = what => console.log(`[${((Date.now() - t0) / 1000).toFixed(2)}s] ${what}`);
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

async function poll(what, probe, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise(r => setTimeout(r, 200));
  }
}

let server, browser, ok = false;
try {
  const vsixDir = fs.mkdtempSync(path.join(os.tmpdir(), 'qcow2-lens-vsix-'));
  try {
    const vsix = packageVsix(vsixDir);
    server = await startCodeServer({ prepare: dirs => { installVsix(vsix, dirs.extensions); } });
  } finally {
    fs.rmSync(vsixDir, { recursive: true, force: true });
  }
  browser = await launchChromium();
  const page = browser.page;
  await page.goto(`${server.url}/?folder=${encodeURIComponent(folder)}`);
  const row = name => page.locator('.explorer-folders-view .monaco-list-row', { hasText: name }).first();
  await row('sparse.qcow2').waitFor({ timeout: 60000 });
  mark('workbench ready');

  const palette = async (text, pick = text) => {
    const input = page.locator('.quick-input-widget:visible .quick-input-box input').first();
    for (let attempt = 1; ; attempt++) {
      await page.keyboard.press('Escape');
      await page.locator('.part.statusbar').click({ position: { x: 5, y: 5 }, timeout: 5000 }).catch(() => {});
      await page.keyboard.press('F1');
      if (await input.fill('>' + text, { timeout: 5000 }).then(() => true, () => false)) break;
      if (attempt >= 4) throw new Error(`the command palette did not take input for "${text}"`);
    }
    const item = page.locator('.quick-input-widget:visible .quick-input-list .monaco-list-row')
      .filter({ has: page.locator('.label-name').getByText(pick, { exact: true }) }).first();
    await item.waitFor({ timeout: 10000 });
    const index = Number(await item.getAttribute('data-index'));
    for (let i = 0; i < index; i++) await page.keyboard.press('ArrowDown');
    await page.keyboard.press('Enter');
  };
  const setTheme = async (theme, themeClass) => {
    await page.locator('.part.statusbar').click({ position: { x: 5, y: 5 } }).catch(() => {});
    await page.keyboard.press('Control+K');
    await page.keyboard.press('Control+T');
    await page.locator('.quick-input-widget:visible .quick-input-list .monaco-list-row').first().waitFor({ timeout: 10000 });
    await page.keyboard.type(theme);
    // the list is virtual: a theme far down shows once the filter has narrowed it
    await page.locator('.quick-input-widget:visible .quick-input-list .monaco-list-row', { hasText: theme }).first().waitFor({ timeout: 10000 });
    await page.waitForTimeout(500);
    await page.keyboard.press('Enter');
    await poll(`theme ${theme}`, () => page.evaluate(c => document.querySelector('.monaco-workbench')?.className.includes(c), themeClass), 15000);
    await page.waitForTimeout(1500);
  };
  const webview = () => page.frameLocator('iframe.webview.ready:visible').frameLocator('#active-frame');
  const never = () => new Promise(() => {});
  const openImage = async name => {
    for (let attempt = 1; ; attempt++) {
      await row(name).dblclick();
      let which = await Promise.race([
        page.locator(`.tab.active[aria-label*="${name}"]`).first().waitFor({ timeout: 15000 }).then(() =>
          page.locator('iframe.webview.ready').last().waitFor({ timeout: 15000 }).then(() => 'custom', () => 'tab'), never),
        page.getByText('The file is not displayed in the text editor').waitFor({ timeout: 15000 }).then(() => 'text', never),
        new Promise(r => setTimeout(() => r('nothing'), 31000)),
      ]);
      if (which === 'custom') {
        if (await webview().locator('.tree .tree-label').first().waitFor({ timeout: 30000 }).then(() => true, () => false)) return;
        which = 'custom editor without a tree';
      }
      if (attempt >= 5) throw new Error(`${name} did not open in the custom editor (got: ${which})`);
      mark(`attempt ${attempt}: ${name} opened in the ${which} editor, retrying`);
      await palette('View: Close All Editors');
      await page.waitForTimeout(1000);
    }
  };

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

  for (const [theme, cls, suffix] of [['Dark Modern', 'dark_modern', 'dark'], ['Light Modern', 'light_modern', 'light'], ['Dark High Contrast', 'hc-black', 'hc']]) {
    await setTheme(theme, cls);
    await page.screenshot({ path: path.join(OUT, `editor-next-allocated-${suffix}.png`) });
    await webview().locator('.guest-map').screenshot({ path: path.join(OUT, `editor-guest-map-${suffix}.png`) });
  }
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
  await page.screenshot({ path: path.join(OUT, 'editor-problem-landed-hc.png') });
  await setTheme('Dark Modern', 'dark_modern');
  await page.screenshot({ path: path.join(OUT, 'editor-problem-landed-dark.png') });
  await setTheme('Light Modern', 'light_modern');
  await page.screenshot({ path: path.join(OUT, 'editor-problem-landed-light.png') });
  mark(`the Problems panel's link landed on the finding at ${offset} (tabs: ${tabs.join(' | ')})`);
  ok = true;
} catch (e) {
  console.error('FAIL:', e && e.stack || e);
  const page = browser?.page;
  if (page) {
    fs.rmSync(path.join(OUT, 'editor-failure.png'), { force: true });
    await page.screenshot({ path: path.join(OUT, 'editor-failure.png'), timeout: 10000 }).catch(err => console.error('no screenshot:', err.message));
  }
  if (server) console.error('--- code-server output (tail) ---\n' + server.output().slice(-3000));
} finally {
  await browser?.close();
  await server?.stop();
  if (!process.env.E2E_KEEP) fs.rmSync(folder, { recursive: true, force: true });
}
console.log(`editor: ${ok ? '1 passed, 0 failed' : '0 passed, 1 failed'} in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
process.exit(ok ? 0 : 1);
