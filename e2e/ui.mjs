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
import { OUT, startCodeServer, launchChromium } from './harness.mjs';
import { makeFixtures } from './fixtures.mjs';
import { packageVsix, installVsix } from './vsix.mjs';

const t0 = Date.now();
const mark = what => console.log(`[${((Date.now() - t0) / 1000).toFixed(2)}s] ${what}`);
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
    // auto-save on, as in code-server's and VS Code for the Web's defaults: it must find nothing to write
    server = await startCodeServer({ prepare: dirs => { installVsix(vsix, dirs.extensions); }, settings: { 'files.autoSave': 'afterDelay', 'files.autoSaveDelay': 100 } });
  } finally {
    fs.rmSync(vsixDir, { recursive: true, force: true });
  }
  mark(`code-server up at ${server.url} with the .vsix installed`);
  browser = await launchChromium();
  const page = browser.page;
  await page.goto(`${server.url}/?folder=${encodeURIComponent(folder)}`);
  const row = name => page.locator('.explorer-folders-view .monaco-list-row', { hasText: name }).first();
  await row('sample.qcow2').waitFor({ timeout: 60000 });
  mark('workbench ready');

  // Runs a command from the palette, clicking the row whose label is exactly `pick` (the top row
  // is not always the one wanted: recently used commands move up).
  const palette = async (text, pick = text) => {
    const input = page.locator('.quick-input-widget:visible .quick-input-box input').first();
    for (let attempt = 1; ; attempt++) {
      await page.keyboard.press('Escape');
      // focus the workbench (not a webview, not a closing widget) before F1
      await page.locator('.part.statusbar').click({ position: { x: 5, y: 5 }, timeout: 5000 }).catch(() => {});
      await page.keyboard.press('F1');
      const ok = await input.fill('>' + text, { timeout: 5000 }).then(() => true, () => false);
      if (ok) break;
      if (attempt >= 4) throw new Error(`the command palette did not take input for "${text}"`);
    }
    const item = page.locator('.quick-input-widget:visible .quick-input-list .monaco-list-row')
      .filter({ has: page.locator('.label-name').getByText(pick, { exact: true }) }).first();
    await item.waitFor({ timeout: 10000 });
    // keyboard, not a click: the list re-renders while results stream in, which defeats clicks
    const index = Number(await item.getAttribute('data-index'));
    for (let i = 0; i < index; i++) await page.keyboard.press('ArrowDown');
    await page.keyboard.press('Enter');
  };
  // The input a command opened (an input box or a quick pick) has the focus: type into it.
  const quickInput = async (text, pick) => {
    await page.locator('.quick-input-widget:visible .quick-input-box input').first().waitFor({ timeout: 10000 });
    await page.waitForTimeout(300);
    await page.keyboard.press('Control+A');
    await page.keyboard.type(text);
    if (pick) await page.locator('.quick-input-widget:visible .quick-input-list .monaco-list-row', { hasText: pick }).first().waitFor({ timeout: 10000 });
    await page.keyboard.press('Enter');
  };
  // Themes through the color theme picker (Ctrl+K Ctrl+T), like a person would.
  const setTheme = async (theme, themeClass) => {
    await page.locator('.part.statusbar').click({ position: { x: 5, y: 5 } }).catch(() => {});
    await page.keyboard.press('Control+K');
    await page.keyboard.press('Control+T');
    await page.locator('.quick-input-widget:visible .quick-input-list .monaco-list-row', { hasText: theme }).first().waitFor({ timeout: 10000 });
    await page.keyboard.type(theme);
    await page.waitForTimeout(500);
    await page.keyboard.press('Enter');
    await poll(`theme ${theme}`, () => page.evaluate(c => document.querySelector('.monaco-workbench')?.className.includes(c), themeClass), 15000);
    await page.waitForTimeout(1500); // the webview picks the new --vscode-* variables up
  };
  // The visible webview: <iframe class="webview ready"> (host document) -> <iframe id="active-frame">
  const webview = () => page.frameLocator('iframe.webview.ready:visible').frameLocator('#active-frame');
  // Open an image from the explorer. The customEditors contribution goes live slightly after the
  // workbench shows; a file opened before that lands in the text editor, so close it and retry.
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
        // the webview of this tab shows the structure tree (it pulls it from the host)
        const shown = await webview().locator('.tree .tree-label').first().waitFor({ timeout: 30000 }).then(() => true, () => false);
        if (shown) return;
        which = 'custom editor without a tree';
      }
      if (attempt >= 5) throw new Error(`${name} did not open in the custom editor (got: ${which})`);
      mark(`attempt ${attempt}: ${name} opened in the ${which} editor, retrying`);
      await palette('View: Close All Editors');
      await page.waitForTimeout(1000);
    }
  };

  await openImage('sample.qcow2');
  const labels = webview().locator('.tree .tree-label');
  await labels.first().waitFor({ timeout: 30000 });
  await poll('tree rows', async () => (await labels.count()) >= 3);
  const texts = await labels.allTextContents();
  mark(`custom editor tree rendered: ${texts.slice(0, 8).join(' | ')}`);
  assert.ok(texts.some(t => /header/i.test(t)), `the tree shows the header: ${texts.join(' | ')}`);
  assert.ok(texts.some(t => /snapshot/i.test(t)), `the tree shows the snapshot table: ${texts.join(' | ')}`);
  await page.waitForTimeout(1500); // let the cluster map paint
  await setTheme('Dark Modern', 'dark_modern');
  await page.screenshot({ path: path.join(OUT, 'editor-dark.png') });
  await setTheme('Light Modern', 'light_modern');
  await page.screenshot({ path: path.join(OUT, 'editor-light.png') });
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
  console.error('FAIL:', e && e.stack || e);
  const page = browser?.page;
  if (page) {
    const info = await page.evaluate(() => ({
      tabs: [...document.querySelectorAll('.tab')].map(t => t.getAttribute('aria-label')),
      webviews: [...document.querySelectorAll('iframe.webview')].map(f => `${f.className} visible=${f.offsetParent !== null}`),
    })).catch(err => String(err));
    console.error('workbench state:', JSON.stringify(info));
    fs.rmSync(path.join(OUT, 'ui-failure.png'), { force: true });
    await page.screenshot({ path: path.join(OUT, 'ui-failure.png'), timeout: 10000 }).catch(err => console.error('no screenshot:', err.message));
  }
  if (server) console.error('--- code-server output (tail) ---\n' + server.output().slice(-3000));
} finally {
  await browser?.close();
  await server?.stop();
  if (!process.env.E2E_KEEP) fs.rmSync(folder, { recursive: true, force: true });
}
console.log(`ui: ${ok ? '1 passed, 0 failed' : '0 passed, 1 failed'} in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
process.exit(ok ? 0 : 1);
