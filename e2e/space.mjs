/* global document -- page.evaluate callbacks run in the browser */
// The space summary in a real VS Code (code-server, the packaged .vsix, headless chromium): a GPT
// disk with an ext4 partition made by mkfs.ext4 -d opens with its space bar, whose legend has the
// figures `qcow2-lens space --json` prints (in use by guest files, guest free space …), the bar's
// accessible name, and the guest disk-usage panel listing the largest file. Screenshots in dark,
// light and high-contrast themes go to e2e-out/space-*.png.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OUT, startCodeServer, launchChromium } from './harness.mjs';
import { packageVsix, installVsix } from './vsix.mjs';

const t0 = Date.now();
const mark = what => console.log(`[${((Date.now() - t0) / 1000).toFixed(2)}s] ${what}`);
fs.mkdirSync(OUT, { recursive: true });
const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'qcow2-lens-space-e2e-'));
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'qcow2-lens-space-src-'));
const run = (cmd, args) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
fs.mkdirSync(path.join(work, 'src', 'etc'), { recursive: true });
fs.writeFileSync(path.join(work, 'src', 'etc', 'fstab'), 'UUID=42 / ext4 defaults 0 1\n');
fs.writeFileSync(path.join(work, 'src', 'big.bin'), Buffer.alloc(2 * 1024 * 1024, 0x5a));
run('mkfs.ext4', ['-q', '-F', '-d', path.join(work, 'src'), path.join(work, 'p1.ext4'), '16M']);
const raw = path.join(work, 'disk.raw');
fs.writeFileSync(raw, '');
fs.truncateSync(raw, 20 * 1024 * 1024);
run('sgdisk', ['-n', `1:2048:${2048 + 16 * 2048 - 1}`, '-t', '1:8300', raw]);
run('dd', [`if=${path.join(work, 'p1.ext4')}`, `of=${raw}`, 'bs=512', 'seek=2048', 'conv=notrunc,sparse', 'status=none']);
const image = path.join(folder, 'guest.qcow2');
run('qemu-img', ['convert', '-q', '-O', 'qcow2', raw, image]);
fs.rmSync(work, { recursive: true, force: true });
const truth = JSON.parse(run('node', ['dist/cli.js', 'space', '--json', image]));
const usedBytes = truth.parts.find(p => p.name === 'active').parts.find(p => p.name === 'in use by files').bytes;
assert.ok(usedBytes >= 2 * 1024 * 1024, 'big.bin is in use');

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
  await row('guest.qcow2').waitFor({ timeout: 60000 });
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

  await openImage('guest.qcow2');
  const space = webview().locator('.space-summary[data-state=ready]');
  await space.waitFor({ timeout: 60000 });
  const used = webview().locator('.space-legend .space-item[data-key=used]');
  assert.equal(Number(await used.getAttribute('data-bytes')), usedBytes, 'the legend has the CLI\'s figure');
  const label = await webview().locator('.space-bar').getAttribute('aria-label');
  assert.match(label, /in use by guest files/);
  mark(`space bar: ${label}`);
  await webview().locator('.disk-usage > summary').click();
  await webview().locator('.du-item[data-path="/big.bin"]').waitFor({ timeout: 30000 });
  mark('disk usage lists /big.bin');
  for (const [theme, cls, file] of [['Dark Modern', 'dark_modern', 'space-dark.png'], ['Light Modern', 'light_modern', 'space-light.png'], ['Dark High Contrast', 'hc-black', 'space-hc.png']]) {
    await setTheme(theme, cls);
    await page.screenshot({ path: path.join(OUT, file) });
  }
  mark('screenshots: e2e-out/space-{dark,light,hc}.png');
  ok = true;
} catch (e) {
  console.error('FAIL:', e && e.stack || e);
  const page = browser?.page;
  if (page) await page.screenshot({ path: path.join(OUT, 'space-failure.png'), timeout: 10000 }).catch(err => console.error('no screenshot:', err.message));
  if (server) console.error('--- code-server output (tail) ---\n' + server.output().slice(-3000));
} finally {
  await browser?.close();
  await server?.stop();
  if (!process.env.E2E_KEEP) fs.rmSync(folder, { recursive: true, force: true });
}
console.log(`space: ${ok ? '1 passed, 0 failed' : '0 passed, 1 failed'} in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
process.exit(ok ? 0 : 1);
