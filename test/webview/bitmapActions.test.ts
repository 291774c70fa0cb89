/**
 * The Bitmaps node's actions in the webview (a real chromium over the harness's bridge, on an
 * image whose bitmaps qemu-img made): the directory node offers Add and Merge, each bitmap's node
 * Enable or Disable (by its auto flag as qemu-img reports it), Merge into, Clear and Remove, and
 * each button asks the host for the bitmap command with the bitmap's name.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { qemuImg, tmpDir } from '../helpers/qemu';
import { CHROMIUM, WebviewHarness } from './harness';

const haveBrowser = fs.existsSync(CHROMIUM);

describe('webview: bitmap actions', { skip: haveBrowser ? false : `${CHROMIUM} is missing (apt-get install chromium)`, timeout: 120000 }, () => {
  const h = new WebviewHarness();
  let dir: string;
  let page: Page;

  before(async () => {
    dir = tmpDir();
    const img = path.join(dir, 'bm.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '16M');
    qemuImg('bitmap', '--add', img, 'nightly');
    qemuImg('bitmap', '--add', '--disable', img, 'weekly');
    await h.addImage('bm', img);
    await h.start();
    page = await h.open('bm');
    page.setDefaultTimeout(10000);
  });

  after(async () => {
    await h.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const treeItem = (label: string) => page.locator('[role=treeitem] > .tree-row', { has: page.locator(`.tree-label:text-is("${label}")`) }).first();
  const actions = () => page.$$eval('.details-actions button', els => els.map(e => e.textContent));
  const posted = () => page.evaluate(() => (window as unknown as { __posted: { type: string; command?: string; args?: Record<string, unknown> }[] }).__posted
    .filter(m => m.type === 'runCommand' && m.command === 'bitmap').map(m => m.args));

  it('the Bitmaps node adds and merges; each bitmap node acts on that bitmap', async () => {
    await treeItem('Bitmaps').click();
    await page.waitForFunction(() => Array.from(document.querySelectorAll('.details-actions button')).some(b => b.textContent === 'Add bitmap…'));
    assert.deepEqual((await actions()).filter(a => a === 'Add bitmap…' || a === 'Merge…'), ['Add bitmap…', 'Merge…']);
    await page.click('.details-actions button:text-is("Add bitmap…")');
    await treeItem('Bitmaps').click(); // the tree has the focus again: expand the node
    await page.keyboard.press('ArrowRight');
    await treeItem('nightly').click();
    await page.waitForFunction(() => Array.from(document.querySelectorAll('.details-actions button')).some(b => b.textContent === 'Remove…'));
    const enabledActions = await actions();
    assert.ok(enabledActions.includes('Disable') && !enabledActions.includes('Enable'), enabledActions.join(', '));
    assert.ok(['Merge into…', 'Clear…', 'Remove…'].every(a => enabledActions.includes(a)), enabledActions.join(', '));
    await page.click('.details-actions button:text-is("Disable")');
    await page.click('.details-actions button:text-is("Remove…")');
    await treeItem('weekly').click();
    await page.waitForFunction(() => Array.from(document.querySelectorAll('.details-actions button')).some(b => b.textContent === 'Enable'));
    await page.click('.details-actions button:text-is("Enable")');
    await page.click('.details-actions button:text-is("Merge into…")');
    await page.waitForFunction(() => (window as unknown as { __posted: { command?: string }[] }).__posted.filter(m => m.command === 'bitmap').length >= 5);
    assert.deepEqual(await posted(), [
      { op: 'add' },
      { op: 'disable', name: 'nightly' },
      { op: 'remove', name: 'nightly' },
      { op: 'enable', name: 'weekly' },
      { op: 'merge', name: 'weekly' },
    ]);
    assert.deepEqual(h.pageErrors, []);
  });
});
