/**
 * The first screen from the host's push (FirstScreenDataMessage): the editor provider posts the
 * summary, the settings and the first tree levels as soon as the image is open, so a new tab draws
 * its badges and tree without waiting for a round trip per request. Here every reply of the host is
 * held back while the push is delivered: the badges and the Header's fields appear all the same, and
 * the webview's own requests (made as before) are answered afterwards without changing what it
 * shows. A second push is ignored (only the first start uses one), and a refresh asks the host.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import type { ViewModel } from '../../src/extension/viewModel';
import { FIRST_EXPANDED, ROOT_NODE_ID } from '../../src/protocol';
import type { FirstScreenDataMessage, FromWebviewMessage, ToWebviewMessage } from '../../src/protocol';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu';
import { CHROMIUM, WebviewHarness } from './harness';

const haveBrowser = fs.existsSync(CHROMIUM);

async function ask<T extends ToWebviewMessage['type']>(vm: ViewModel, m: FromWebviewMessage, type: T): Promise<Extract<ToWebviewMessage, { type: T }>> {
  const r = await vm.handle(m);
  assert.ok(r && r.type === type, JSON.stringify(r));
  return r as Extract<ToWebviewMessage, { type: T }>;
}

/** What the editor provider pushes (src/extension/editorProvider.ts pushFirstScreen), from the real ViewModel. */
async function firstScreenData(vm: ViewModel): Promise<FirstScreenDataMessage> {
  const summary = (await ask(vm, { type: 'getSummary', requestId: 0 }, 'summary')).summary;
  const settings = (await ask(vm, { type: 'getSettings', requestId: 0 }, 'settings')).settings;
  const children: FirstScreenDataMessage['children'] = {};
  for (const nodeId of [ROOT_NODE_ID, ...FIRST_EXPANDED]) children[nodeId] = (await ask(vm, { type: 'getTreeChildren', requestId: 0, nodeId }, 'treeChildren')).children;
  return { type: 'firstScreenData', summary, settings, children };
}

describe('the first screen from the host\'s push (chromium)', { skip: haveBrowser ? false : `${CHROMIUM} is missing`, timeout: 60000 }, () => {
  let h: WebviewHarness, dir: string, vm: ViewModel, page: Page | undefined;

  before(async () => {
    dir = tmpDir('qcow2-lens-first-screen-');
    const img = path.join(dir, 'first.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '64M');
    qemuIo(img, ['write -P 0x2a 0 128k']);
    h = new WebviewHarness();
    await h.start();
    vm = await h.addImage('first', img);
  });
  after(() => h.stop({ page, shot: 'first-screen', dir }));

  it('draws the badges and the Header\'s fields from the push while every host reply is held back', async () => {
    let release!: () => void;
    h.replyGate = new Promise(r => { release = r; });
    try {
      page = await h.open('first', { waitReady: false });
      // the webview asks as before (the push may come first or not): its requests are in, unanswered
      await page.waitForFunction(() => (window as unknown as { __posted: { type: string }[] }).__posted.some(m => m.type === 'getSummary'));
      const data = await firstScreenData(vm);
      await h.push(page, data);
      await page.waitForSelector('[role=treeitem] >> .tree-label:text-is("magic")', { timeout: 10000 });
      assert.equal(await page.textContent('.summary-bar .file-name'), 'first.qcow2');
      assert.ok((await page.textContent('.summary-bar'))!.includes('64 MiB disk'));
      const top = await page.$$eval('[role=treeitem][aria-level="1"] > .tree-row .tree-label', els => els.map(e => e.textContent));
      assert.deepEqual(top, data.children[ROOT_NODE_ID].map(n => n.label));
      // the space report is not in the push: it is still loading, its request held
      await page.waitForSelector('.space-loading', { timeout: 10000 });
    } finally {
      release();
      h.replyGate = undefined;
    }
    await page.waitForSelector('body[data-ready]', { timeout: 15000 });
    assert.equal(await page.textContent('.summary-bar .file-name'), 'first.qcow2');
    assert.deepEqual(h.pageErrors, []);
  });

  it('uses one push only: a later one is ignored, and a refresh asks the host', async () => {
    const stale = await firstScreenData(vm);
    stale.summary = { ...stale.summary, fileName: 'stale.qcow2', virtualSize: 2 ** 30 };
    await h.push(page!, stale);
    await h.push(page!, { type: 'refresh' });
    await page!.waitForFunction(() => document.querySelector('.summary-bar .file-name')?.textContent === 'first.qcow2'
      && (document.querySelector('.summary-bar')?.textContent ?? '').includes('64 MiB disk'));
    // give a late use of the stale push a chance to show before looking again
    await page!.evaluate(() => new Promise(r => setTimeout(r, 300)));
    assert.equal(await page!.textContent('.summary-bar .file-name'), 'first.qcow2');
    assert.ok(!(await page!.textContent('.summary-bar'))!.includes('1 GiB disk'));
    assert.deepEqual(h.pageErrors, []);
  });
});
