/**
 * The editor as people use it, in chromium against the real ViewModel (test/webview/harness.ts):
 * next/previous allocated range in the Disk view of a sparse 1 TiB chain, the words a guest jump
 * shows and the L1/L2 entries it selects, "allocated only" lists. Expected offsets come from
 * qemu-img map.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { checkForEditor } from '../../src/extension/checkResult';
import { pokeBytes, qemuImg, qemuIo, readBE64, ROOT, tmpDir, type MapEntry, qemuMap } from '../helpers/qemu';
import { CHROMIUM, WebviewHarness } from './harness';

const CS = 65536;
const TIB = 2 ** 40;
const haveBrowser = fs.existsSync(CHROMIUM);

describe('editor in use (chromium)', { skip: haveBrowser ? false : `${CHROMIUM} is missing`, timeout: 120000 }, () => {
  const h = new WebviewHarness();
  let dir: string, top: string, damaged: string, hexImg: string, map: MapEntry[], needleAt: number;
  let page: Page;

  before(async () => {
    dir = tmpDir();
    const base = path.join(dir, 'base.qcow2');
    top = path.join(dir, 'top.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', base, '1T');
    qemuIo(base, [`write -P 0x12 ${300 * 2 ** 30} 64k`]);
    qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
    qemuIo(top, ['write -P 0xab 1M 64k', `write -P 0x5a ${TIB - CS} 64k`]);
    map = qemuMap(top);
    // a data cluster whose refcount is 0: the check reports it on its L2 entry
    damaged = path.join(dir, 'damaged.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', damaged, '64M');
    qemuIo(damaged, ['write -P 0x77 1M 64k']);
    const dm = qemuMap(damaged);
    const dataCluster = dm.find(e => e.present)!.offset! / CS;
    const block = Number(readBE64(damaged, Number(readBE64(damaged, 48))));
    pokeBytes(damaged, block + dataCluster * 2, [0, 0]);
    // the hex tools: a text needle in a data cluster, 48 MiB of data for a search long enough to cancel
    hexImg = path.join(dir, 'hex.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', hexImg, '64M');
    qemuIo(hexImg, ['write -P 0x11 0 48M']);
    const hm = qemuMap(hexImg);
    needleAt = hm[0].offset! + 4000;
    pokeBytes(hexImg, needleAt, [...Buffer.from('HELLO-LENS')]);
    await h.addImage('hex', hexImg);
    await h.addImage('main', top);
    await h.addImage('damaged', damaged);
    await h.start();
    page = await h.open('main');
    page.setDefaultTimeout(10000);
  });

  after(() => h.stop({ page, shot: 'editor-use', dir }));

  const where = () => page.textContent('.hex-where');
  const waitWhere = (re: RegExp) => page.waitForFunction(s => new RegExp(s).test(document.querySelector('.hex-where')?.textContent ?? ''), re.source);

  it('jumps to the next and previous allocated range in the Disk view, with buttons and keys, saying where each lives', async () => {
    const present = map.filter(e => e.present).map(e => e.start);
    assert.deepEqual(present, [2 ** 20, 300 * 2 ** 30, TIB - CS]);
    // the buttons exist only in the Disk view
    assert.equal(await page.isVisible('button[aria-label="Next allocated range"]'), false);
    await page.click('button:text-is("Disk")');
    await page.click('button[aria-label="Next allocated range"]');
    await waitWhere(/^0x100000: data at 0x[0-9a-f]+ in this file — L1\[0\] → L2\[0x10\]$/);
    const host = map.find(e => e.start === 2 ** 20)!.offset!;
    assert.match((await where())!, new RegExp(`data at 0x${host.toString(16)} in this file`));
    await page.waitForFunction(() => document.querySelector('.hex-status')?.textContent?.includes('selected 0x100000'));
    // the L2 entry that maps it is selected in the tree
    await page.waitForFunction(() => document.querySelector('[role=treeitem][aria-selected=true] .tree-label')?.textContent === 'L2[0x10]');
    // the keyboard: N in the hex view is the next range (from the backing file), P goes back
    await page.locator('.hex-scroll').focus();
    await page.keyboard.press('n');
    await waitWhere(/^0x4b00000000: from backing file base\.qcow2 at depth 1/);
    // the L1 entry is selected (this image has no L2 table there)
    await page.waitForFunction(() => document.querySelector('[role=treeitem][aria-selected=true] .tree-label')?.textContent === 'L1[600]');
    await page.keyboard.press('n');
    await waitWhere(new RegExp(`^0x${(TIB - CS).toString(16)}: data at`));
    await page.waitForFunction(() => Array.from(document.querySelectorAll('.hex-row .hb.sel')).some(e => e.textContent === '5a'));
    await page.keyboard.press('n');
    await waitWhere(/^No allocated range after 0xffffff0000\.$/);
    await page.keyboard.press('p');
    await waitWhere(/^0x4b00000000: from backing file/);
    // Go to offset in the Disk view says where the byte lives too
    await page.fill('input.goto', '0x8000000000');
    await page.press('input.goto', 'Enter');
    await waitWhere(/^0x8000000000: unallocated: reads zeros \(no layer of the backing chain holds it\) — L1\[1024\]$/);
  });

  it('a revealGuestOffset from the host (Go to Guest Offset) shows the words and selects the entries', async () => {
    await h.push(page, { type: 'revealGuestOffset', guestOffset: 2 ** 20 + 7 });
    await waitWhere(/^0x100007: data at/);
    await page.waitForFunction(() => document.querySelector('[role=treeitem][aria-selected=true] .tree-label')?.textContent === 'L2[0x10]');
  });

  it('"Allocated only" cuts the L1 list to the entries in use and survives the toggle as state', async () => {
    const toggle = page.locator('button.allocated-only');
    assert.equal(await toggle.getAttribute('aria-pressed'), 'false');
    await toggle.click();
    assert.equal(await toggle.getAttribute('aria-pressed'), 'true');
    await page.waitForFunction(() => document.querySelector('[role=tree]:not([aria-busy])') !== null);
    const l1 = page.locator('[role=treeitem]:has(> .tree-row > .tree-label:text-is("L1 table"))');
    if ((await l1.getAttribute('aria-expanded')) !== 'true') await l1.locator('> .tree-row > .twisty').click();
    // the L1 table's own rows (other expanded nodes have rows too), read once the list has settled
    const l1Labels = () => l1.locator('> [role=group] > [role=treeitem] > .tree-row > .tree-label').allTextContents();
    const settled = async (want: (labels: string[]) => boolean) => {
      for (let i = 0; i < 200 && !want(await l1Labels()); i++) await page.waitForTimeout(50);
      return l1Labels();
    };
    const labels = await settled(l => l.length > 0 && l.length <= 2);
    assert.deepEqual(labels, ['L1[0]', 'L1[2047]']);
    await toggle.click();
    const pages = await settled(l => l.length > 2);
    assert.equal(pages[0], '[0 … 255]');
    assert.deepEqual(h.pageErrors, []);
  });

  it('a finding chosen in the Problems panel opens in the editor: selected in the list, its entry in the tree, its bytes; collapsed ancestors carry a count', async () => {
    const { summary, findings } = await checkForEditor(damaged);
    const k = findings.findIndex(f => f.structure.startsWith('L1[0] → L2[0x10]'));
    assert.ok(k >= 0, `a finding on the L2 entry: ${JSON.stringify(findings.map(f => f.structure))}`);
    const underL1 = findings.filter(f => f.structure.startsWith('L1[')).length;
    const p = await h.open('damaged');
    try {
      p.setDefaultTimeout(10000);
      await h.push(p, { type: 'checkResult', summary, findings });
      // the L1 table is collapsed: it carries the count of findings inside
      const marker = p.locator('[role=treeitem]:has(> .tree-row > .tree-label:text-is("L1 table")) > .tree-row .inner-findings');
      await marker.waitFor();
      assert.equal(await marker.textContent(), `✖ ${underL1}`);
      assert.match((await p.getAttribute('[role=treeitem]:has(> .tree-row > .tree-label:text-is("L1 table"))', 'aria-label'))!, new RegExp(`${underL1} findings? inside$`));
      // what the editor provider posts when the diagnostic's "Show in QCOW2 Lens" line is clicked
      await h.push(p, { type: 'revealFinding', index: k, finding: findings[k] });
      await p.waitForFunction(() => document.querySelector('[role=treeitem][aria-selected=true] .tree-label')?.textContent === 'L2[0x10]');
      assert.equal(await p.getAttribute('.finding.selected', 'data-index'), String(k));
      const off = findings[k].hostOffset!;
      await p.waitForFunction(x => document.querySelector('.hex-status')?.textContent?.includes(`selected 0x${x.toString(16)}`), off);
      assert.equal(await p.getAttribute('button:text-is("File")', 'aria-pressed'), 'true');
      // expanded, the L1 table drops its marker
      assert.equal(await marker.count(), 0);
      await p.screenshot({ path: path.join(ROOT, 'test-out', 'editor-finding.png') });
    } finally {
      await p.close();
    }
  });

  it('hex view: a 00–0f header, Shift+arrow and drag selections with their length, the inspector, Copy as, Find with progress and cancel', async () => {
    await h.context!.grantPermissions(['clipboard-read', 'clipboard-write']);
    const p = await h.open('hex');
    try {
      p.setDefaultTimeout(10000);
      await p.waitForSelector('.hex-header .hb');
      assert.deepEqual(await p.locator('.hex-header .hb').allTextContents(), Array.from({ length: 16 }, (_, i) => i.toString(16).padStart(2, '0')));
      // Shift+arrows: the header's magic, 4 bytes
      await p.locator('.hex-row:not(.hex-header) .hb[data-offset="0"]').click();
      await p.keyboard.press('Shift+ArrowRight');
      await p.keyboard.press('Shift+ArrowRight');
      await p.keyboard.press('Shift+ArrowRight');
      await p.waitForFunction(() => document.querySelector('.hex-status')?.textContent?.includes('selected 0x0 · 4 bytes'));
      await p.waitForFunction(() => document.querySelector('.inspector .pane-title')?.textContent?.endsWith('4 bytes selected'));
      const cell = (type: string, col: number) => p.textContent(`.inspector-table tr[data-type="${type}"] td:nth-child(${col})`);
      const head = fs.readFileSync(hexImg).subarray(0, 64);
      assert.equal(await cell('u32', 3), String(head.readUInt32BE(0)));
      assert.equal(await cell('f32', 2), String(head.readFloatLE(0)));
      assert.equal(await cell('f64', 3), String(head.readDoubleBE(0)));
      assert.equal(await cell('UTF-8', 2), 'QFI\ufffd');
      assert.equal(await cell('selection', 2), '4 bytes (0x4)');
      // drag from 0x10 to 0x1f: one row
      const box = async (off: number) => (await p.locator(`.hex-row:not(.hex-header) .hb[data-offset="${off}"]`).boundingBox())!;
      const a = await box(0x10), b = await box(0x1f);
      await p.mouse.move(a.x + 3, a.y + 3);
      await p.mouse.down();
      await p.mouse.move(b.x + 3, b.y + 3, { steps: 5 });
      await p.mouse.up();
      await p.waitForFunction(() => document.querySelector('.hex-status')?.textContent?.includes('selected 0x10 · 16 bytes'));
      await p.click('button[aria-label="Copy as C array"]');
      await p.waitForFunction(() => document.querySelector('.hex-where')?.textContent === 'Copied 16 bytes as a C array.');
      const clip = await p.evaluate(() => navigator.clipboard.readText());
      const row = [...head.subarray(0x10, 0x20)].map(x => `0x${x.toString(16).padStart(2, '0')}`);
      assert.equal(clip, `unsigned char data[16] = {\n  ${row.slice(0, 12).join(', ')},\n  ${row.slice(12).join(', ')}\n};`);
      await p.click('button[aria-label="Copy as base64"]');
      await p.waitForFunction(() => document.querySelector('.hex-where')?.textContent === 'Copied 16 bytes as base64.');
      assert.equal(await p.evaluate(() => navigator.clipboard.readText()), head.subarray(0x10, 0x20).toString('base64'));
      // Ctrl+F: text, forward from the selection, then backward finds nothing before it
      await p.locator('.hex-scroll').focus();
      await p.keyboard.press('Control+f');
      assert.equal(await p.evaluate(() => document.activeElement?.getAttribute('aria-label')), 'Find in the image file');
      await p.selectOption('select.find-mode', 'text');
      await p.locator('input.find-input').fill('HELLO-LENS');
      await p.locator('input.find-input').press('Enter');
      await p.waitForFunction(x => document.querySelector('.find-status')?.textContent === `Found at 0x${x.toString(16)} (10 bytes).`, needleAt);
      await p.waitForFunction(x => document.querySelector('.hex-status')?.textContent?.includes(`selected 0x${x.toString(16)} · 10 bytes`), needleAt);
      assert.deepEqual(await p.locator('.hex-row .hb.sel').allTextContents(), [...Buffer.from('HELLO-LENS')].map(x => x.toString(16)));
      await p.locator('input.find-input').press('Shift+Enter');
      await p.waitForFunction(x => document.querySelector('.find-status')?.textContent === `Not found before 0x${x.toString(16)}.`, needleAt);
      // hex bytes that are nowhere in the 48 MiB file: progress between windows, then Cancel stops it
      h.findDelayMs = 400;
      const asked = () => (h.received.get('hex') ?? []).filter(m => m.type === 'findBytes').length;
      const before = asked();
      await p.selectOption('select.find-mode', 'hex');
      await p.locator('input.find-input').fill('de ad be ef 01 02 03 04');
      await p.click('button[aria-label="Find next"]');
      await p.waitForFunction(() => /^Searching… \d+% \(at 0x[0-9a-f]+\)$/.test(document.querySelector('.find-status')?.textContent ?? ''));
      await p.click('button.find-cancel');
      await p.waitForFunction(() => /^Cancelled at 0x[0-9a-f]+\.$/.test(document.querySelector('.find-status')?.textContent ?? ''));
      const windows = Math.ceil(fs.statSync(hexImg).size / (16 * 1024 * 1024));
      assert.ok(asked() - before < windows, `cancelled before the last of ${windows} windows (${asked() - before} asked)`);
      h.findDelayMs = 0;
      await p.locator('input.find-input').press('Escape');
      assert.equal(await p.isVisible('.find-bar'), false);
      assert.deepEqual(await p.evaluate(() => (window as unknown as { __cspViolations: string[] }).__cspViolations), []);
      await p.screenshot({ path: path.join(ROOT, 'test-out', 'editor-hex-tools.png') });
    } finally {
      await p.close();
    }
  });
});
