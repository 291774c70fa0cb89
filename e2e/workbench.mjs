/* global document -- page.evaluate callbacks run in the browser */
// What every playwright suite (ui, settings, editor) does in the workbench, in one place: a clock for
// the log, polling, code-server with the packaged .vsix in headless chromium on a folder, and the
// person's moves — the command palette, an input box, the colour theme picker, opening an image from
// the explorer in QCOW2 Lens, and finding that image's webview frame.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OUT, startCodeServer, launchChromium } from './harness.mjs';
import { packageVsix, installVsix } from './vsix.mjs';

/** `mark(what)` prints what with the seconds since this suite started. */
export function clock() {
  const t0 = Date.now();
  const seconds = () => (Date.now() - t0) / 1000;
  const mark = what => console.log(`[${seconds().toFixed(2)}s] ${what}`);
  mark.seconds = seconds;
  return mark;
}

/** The suite's last line, which e2e/run.sh counts, and its exit code. */
export function finish(suite, ok, mark) {
  console.log(`${suite}: ${ok ? '1 passed, 0 failed' : '0 passed, 1 failed'} in ${mark.seconds().toFixed(1)}s`);
  process.exit(ok ? 0 : 1);
}

/** Waits until probe() gives a truthy value, and returns it; throws naming `what` after `ms`. */
export async function poll(what, probe, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise(r => setTimeout(r, 200));
  }
}

/**
 * code-server with the packaged .vsix installed (user `settings` added), chromium on `folder`, ready
 * when the explorer shows `firstRow`. Returns { server, browser, page, row(name), close() }.
 */
export async function openWorkbench({ folder, firstRow, settings = {}, mark }) {
  let server, browser;
  try {
    const vsixDir = fs.mkdtempSync(path.join(os.tmpdir(), 'qcow2-lens-vsix-'));
    try {
      const vsix = packageVsix(vsixDir);
      server = await startCodeServer({ prepare: dirs => { installVsix(vsix, dirs.extensions); }, settings });
    } finally {
      fs.rmSync(vsixDir, { recursive: true, force: true });
    }
    mark(`code-server up at ${server.url} with the .vsix installed`);
    browser = await launchChromium();
  } catch (e) {
    if (server) e.message += `\n--- code-server output (tail) ---\n${server.output().slice(-3000)}`;
    await server?.stop();
    throw e;
  }
  const page = browser.page;
  const close = async () => { await browser.close(); await server.stop(); };
  const wb = { server, browser, page, close };
  try {
    await page.goto(`${server.url}/?folder=${encodeURIComponent(folder)}`);
    const row = name => page.locator('.explorer-folders-view .monaco-list-row', { hasText: name }).first();
    await row(firstRow).waitFor({ timeout: 60000 });
    mark('workbench ready');
    return { ...wb, row };
  } catch (e) {
    await reportFailure(wb, 'workbench', e);
    await close();
    throw new Error('the workbench did not start (above)', { cause: e });
  }
}

/**
 * What a failed suite leaves to read: the error, the workbench's tabs and webviews, a screenshot
 * (e2e-out/<suite>-failure.png) and the tail of code-server's output.
 */
export async function reportFailure(wb, suite, e) {
  console.error('FAIL:', e && e.stack || e);
  const page = wb?.page;
  if (page) {
    const info = await page.evaluate(() => ({
      tabs: [...document.querySelectorAll('.tab')].map(t => t.getAttribute('aria-label')),
      webviews: [...document.querySelectorAll('iframe.webview')].map(f => `${f.className} visible=${f.offsetParent !== null}`),
    })).catch(err => String(err));
    console.error('workbench state:', JSON.stringify(info));
    const shot = path.join(OUT, `${suite}-failure.png`);
    fs.rmSync(shot, { force: true });
    await page.screenshot({ path: shot, timeout: 10000 }).catch(err => console.error('no screenshot:', err.message));
  }
  if (wb?.server) console.error('--- code-server output (tail) ---\n' + wb.server.output().slice(-3000));
}

/** The moves a person makes in the workbench `page` (explorer rows from `row`). */
// The themes the screenshots are taken in: the picker's label, the workbench's class, the file suffix.
const THEMES = [['Dark Modern', 'dark_modern', 'dark'], ['Light Modern', 'light_modern', 'light'], ['Dark High Contrast', 'hc-black', 'hc']];

export function workbenchActions(page, { row, mark }) {
  // Runs a command from the palette, choosing the row whose label is exactly `pick` (the top row is
  // not always the one wanted: recently used commands move up).
  const palette = async (text, pick = text) => {
    const input = page.locator('.quick-input-widget:visible .quick-input-box input').first();
    for (let attempt = 1; ; attempt++) {
      await page.keyboard.press('Escape');
      // focus the workbench (not a webview, not a closing widget) before F1
      await page.locator('.part.statusbar').click({ position: { x: 5, y: 5 }, timeout: 5000 }).catch(() => {});
      await page.keyboard.press('F1');
      if (await input.fill('>' + text, { timeout: 5000 }).then(() => true, () => false)) break;
      if (attempt >= 4) throw new Error(`the command palette did not take input for "${text}"`);
    }
    const item = page.locator('.quick-input-widget:visible .quick-input-list .monaco-list-row')
      .filter({ has: page.locator('.label-name').getByText(pick, { exact: true }) }).first();
    await item.waitFor({ timeout: 15000 });
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
  // Themes through the colour theme picker (Ctrl+K Ctrl+T), like a person would.
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
    await page.waitForTimeout(1500); // the webview picks the new --vscode-* variables up
  };
  // Screenshots in the three themes a person checks (dark, light, high contrast), or the ones named:
  // `shoot(suffix)` takes them once each theme is on. Leaves the last theme on.
  const screenshotThemes = async (shoot, which = ['dark', 'light', 'hc']) => {
    for (const [theme, cls, suffix] of THEMES) {
      if (!which.includes(suffix)) continue;
      await setTheme(theme, cls);
      await shoot(suffix);
    }
  };
  // The visible webview: <iframe class="webview ready"> (host document) -> <iframe id="active-frame">
  const webview = () => page.frameLocator('iframe.webview.ready:visible').frameLocator('#active-frame');
  // The webview document of image `name`, as a playwright Frame (so a live update of this document can
  // be told from a reload). A closed tab's frame can linger in the page for a while, so the frame is
  // chosen by the file name in its header, not by being the first one ready.
  const imageFrame = async name => poll(`the webview of ${name}`, async () => {
    for (const f of page.frames()) {
      if (await f.evaluate(n => !!document.querySelector('.hex-view') && document.body.dataset.ready === 'true'
        && document.querySelector('.file-name')?.textContent === n, name).catch(() => false)) return f;
    }
    return undefined;
  }, 60000);
  // Opens an image from the explorer. The customEditors contribution goes live slightly after the
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
        if (await webview().locator('.tree .tree-label').first().waitFor({ timeout: 30000 }).then(() => true, () => false)) return;
        which = 'custom editor without a tree';
      }
      if (attempt >= 5) throw new Error(`${name} did not open in the custom editor (got: ${which})`);
      mark(`attempt ${attempt}: ${name} opened in the ${which} editor, retrying`);
      await palette('View: Close All Editors');
      await page.waitForTimeout(1000);
    }
  };
  return { palette, quickInput, setTheme, screenshotThemes, webview, imageFrame, openImage };
}
