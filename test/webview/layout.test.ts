/**
 * The editor's layout in chromium against the real ViewModel (test/webview/harness.ts): the split
 * between the tree and the views dragged with the mouse and moved with the keys, remembered in the
 * webview state across a reload; type-ahead in the tree (letters move to the next row whose label
 * starts with them; the same letter again cycles; the prefix is forgotten after a pause).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { qemuImg, qemuIo, ROOT, tmpDir } from '../helpers/qemu';
import { CHROMIUM, WebviewHarness } from './harness';

const haveBrowser = fs.existsSync(CHROMIUM);

describe('layout: split and type-ahead (chromium)', { skip: haveBrowser ? false : `${CHROMIUM} is missing`, timeout: 120000 }, () => {
  const h = new WebviewHarness();
  let dir: string;
  let page: Page;

  before(async () => {
    dir = tmpDir();
    const img = path.join(dir, 'plain.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '64M');
    qemuIo(img, ['write -P 0x11 0 64k']);
    await h.addImage('main', img);
    await h.start();
    page = await h.open('main');
    page.setDefaultTimeout(10000);
  });

  after(async () => {
    if (page) {
      fs.mkdirSync(path.join(ROOT, 'test-out'), { recursive: true });
      await page.screenshot({ path: path.join(ROOT, 'test-out', 'layout.png') }).catch(() => undefined);
    }
    await h.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const treeWidth = () => page.$eval('.tree-pane', e => Math.round(e.getBoundingClientRect().width));
  const valueNow = async () => Number(await page.getAttribute('[role=separator]', 'aria-valuenow'));

  it('is a focusable separator that says how wide the structure pane is', async () => {
    const sep = page.locator('[role=separator]');
    assert.equal(await sep.getAttribute('tabindex'), '0');
    assert.equal(await sep.getAttribute('aria-orientation'), 'vertical');
    assert.equal(await sep.getAttribute('aria-label'), 'Resize the structure pane');
    assert.equal(await valueNow(), await treeWidth());
  });

  it('drags with the mouse', async () => {
    const box = (await page.locator('[role=separator]').boundingBox())!;
    const before = await treeWidth();
    await page.mouse.move(box.x + box.width / 2, box.y + 200);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width / 2 + 60, box.y + 200, { steps: 4 });
    await page.mouse.move(box.x + box.width / 2 + 120, box.y + 200, { steps: 4 });
    await page.mouse.up();
    const after = await treeWidth();
    assert.ok(Math.abs(after - (before + 120)) <= 3, `${before} → ${after}`);
    assert.equal(await valueNow(), after);
    // the views on the right got narrower by as much
    const right = await page.$eval('.right', e => Math.round(e.getBoundingClientRect().left));
    assert.ok(right >= after, `the views start after the tree (${right} ≥ ${after})`);
  });

  it('moves with the arrow keys (Shift: larger steps), Home and End', async () => {
    await page.focus('[role=separator]');
    const w0 = await treeWidth();
    await page.keyboard.press('ArrowLeft');
    assert.equal(await treeWidth(), w0 - 16);
    await page.keyboard.press('Shift+ArrowRight');
    assert.equal(await treeWidth(), w0 - 16 + 64);
    assert.equal(await valueNow(), w0 + 48);
    await page.keyboard.press('Home');
    assert.equal(await treeWidth(), 160);
    assert.equal(await valueNow(), 160);
    await page.keyboard.press('End');
    const max = Number(await page.getAttribute('[role=separator]', 'aria-valuemax'));
    assert.equal(await treeWidth(), max);
    for (let i = 0; i < 10; i++) await page.keyboard.press('ArrowLeft');
    assert.equal(await treeWidth(), max - 160);
  });

  it('is remembered in the webview state: a reload comes back at the same width', async () => {
    await page.focus('[role=separator]');
    await page.keyboard.press('Home');
    await page.keyboard.press('Shift+ArrowRight');
    const want = 160 + 64;
    await page.waitForFunction(w => JSON.parse(sessionStorage.getItem('state-main') ?? '{}').split === w, want);
    await page.reload();
    await page.waitForSelector('body[data-ready]');
    assert.equal(await treeWidth(), want);
    assert.equal(await valueNow(), want);
  });

  it('remembers the disk map\'s zoom across a reload', async () => {
    const bucket = () => page.$eval('canvas.guest-canvas', c => Number((c as HTMLCanvasElement).dataset.bucketBytes));
    await page.waitForFunction(() => document.querySelectorAll('.guest-runs li').length > 0);
    const fitted = await bucket();
    assert.ok(fitted > 65536, `a 64 MiB disk is fitted at more than one cluster a cell here (${fitted})`);
    await page.click('button[aria-label="Zoom in the disk map"]');
    assert.equal(await bucket(), fitted / 2);
    await page.waitForFunction(b => JSON.parse(sessionStorage.getItem('state-main') ?? '{}').guestMap?.bucketBytes === b, fitted / 2);
    await page.reload();
    await page.waitForSelector('body[data-ready]');
    assert.equal(await bucket(), fitted / 2);
    await page.click('button[aria-label="Show the whole disk"]');
    assert.equal(await bucket(), fitted);
  });

  it('type-ahead moves to the next row whose label starts with the letters typed', async () => {
    const focused = () => page.evaluate(() => document.activeElement?.querySelector('.tree-label')?.textContent);
    await page.click('[role=treeitem] >> .tree-label:text-is("Header")');
    // only visible rows count: with Header expanded, "b" would find its field backing_file_offset
    if (await page.getAttribute('[role=treeitem][aria-selected=true]', 'aria-expanded') === 'true') await page.keyboard.press('ArrowLeft');
    await page.keyboard.press('b');
    assert.equal(await focused(), 'Backing chain');
    assert.equal(await page.getAttribute('[role=treeitem][aria-selected=true]', 'aria-label').then(l => l?.split(',')[0]), 'Backing chain');
    // the same letter again: the next row starting with it
    await page.keyboard.press('b');
    assert.equal(await focused(), 'Bitmaps');
    await page.waitForTimeout(700); // the prefix is forgotten after 500 ms without typing
    await page.keyboard.type('re');
    assert.equal(await focused(), 'Refcount table');
    await page.waitForTimeout(700);
    // a longer prefix, with a space in it
    await page.keyboard.type('header e');
    assert.equal(await focused(), 'Header extensions');
    await page.waitForTimeout(700);
    await page.keyboard.type('l1');
    assert.equal(await focused(), 'L1 table');
    await page.waitForTimeout(700);
    // no row starts with it: the focus stays
    await page.keyboard.type('zz');
    assert.equal(await focused(), 'L1 table');
    assert.deepEqual(h.pageErrors, []);
  });
});
