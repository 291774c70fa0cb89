/**
 * The webview in a real browser (Debian chromium driven by playwright-core), talking to the real
 * ViewModel over the harness's HTTP bridge, on images made by qemu-img/qemu-io. Expected values
 * come from QEMU (qemu-img map offsets, the bytes qemu-io wrote, qemu-img check's leaks).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import type { CheckFinding } from '../../src/protocol';
import { pokeBytes, qemuImg, qemuImgStatus, qemuIo, readBE64, ROOT, tmpDir, qemuMap } from '../helpers/qemu';
import { CHROMIUM, WebviewHarness } from './harness';

const CS = 65536;
const haveBrowser = fs.existsSync(CHROMIUM);


describe('webview in chromium', { skip: haveBrowser ? false : `${CHROMIUM} is missing (apt-get install chromium)`, timeout: 120000 }, () => {
  const h = new WebviewHarness();
  let dir: string, top: string, big: string;
  let dataHost: number; // host offset of guest 1 MiB in top.qcow2, from qemu-img map
  let leakCluster: number;
  let page: Page;

  before(async () => {
    dir = tmpDir();
    const base = path.join(dir, 'base.qcow2');
    top = path.join(dir, 'top.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', base, '64M');
    qemuIo(base, ['write -P 0x11 0 64k']);
    qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
    qemuIo(top, ['write -P 0xab 1M 64k', 'write -c -P 0xcd 2M 64k']);
    qemuImg('snapshot', '-c', 's1', top);
    qemuIo(top, ['write -P 0xef 3M 4k']);
    // A real leak: one more cluster at the end of the file with refcount 1 and no user.
    const size = fs.statSync(top).size;
    leakCluster = Math.ceil(size / CS);
    fs.truncateSync(top, (leakCluster + 1) * CS);
    const reftable = Number(readBE64(top, 48));
    const block = Number(readBE64(top, reftable));
    pokeBytes(top, block + leakCluster * 2, [0, 1]);
    const map = qemuMap(top);
    dataHost = map.find(e => e.start === 1024 * 1024 && e.depth === 0)!.offset!;
    assert.ok(dataHost > 0);

    big = path.join(dir, 'big.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', big, '1T');
    qemuIo(big, [`write -P 0x5a ${2 ** 40 - 65536} 4k`]);

    await h.addImage('main', top);
    await h.addImage('big', big);
    await h.start();
    page = await h.open('main');
    page.setDefaultTimeout(10000);
  });

  after(() => h.stop({ page, shot: 'webview', dir }));

  const selectedLabel = () => page.$eval('[role=treeitem][aria-selected=true] > .tree-row > .tree-label', e => e.textContent);
  const treeItem = (label: string) => page.locator('[role=treeitem] > .tree-row', { has: page.locator(`.tree-label:text-is("${label}")`) }).first();

  it('renders the header fields with their meaning', async () => {
    const info = JSON.parse(qemuImg('info', '--output=json', top)) as { 'cluster-size': number; 'virtual-size': number };
    await treeItem('cluster_bits').waitFor();
    const desc = await treeItem('cluster_bits').locator('.tree-desc').textContent();
    assert.equal(desc, `${Math.log2(info['cluster-size'])} — 64 KiB clusters`);
    // a description cut short in a narrow pane is whole in the row's tooltip
    assert.equal(await treeItem('cluster_bits').getAttribute('title'), `cluster_bits — ${desc}`);
    assert.match((await treeItem('size').locator('.tree-desc').textContent())!, new RegExp(`^${info['virtual-size']} — 64 MiB`));
    assert.equal(await page.getAttribute('[role=tree]', 'aria-label'), 'Image structure');
    const summary = await page.textContent('.summary-bar');
    assert.match(summary!, /top\.qcow2/);
    assert.match(summary!, /backing chain of 2/);
    assert.match(summary!, /1 snapshot/);
  });

  it('expands L1 → L2 → entries with the keyboard (ARIA tree)', async () => {
    await treeItem('L1 table').click();
    assert.equal(await selectedLabel(), 'L1 table');
    await page.keyboard.press('ArrowRight');
    await treeItem('L1[0]').waitFor();
    assert.equal(await page.getAttribute('[role=treeitem][aria-selected=true]', 'aria-expanded'), 'true');
    await page.keyboard.press('ArrowDown');
    assert.equal(await selectedLabel(), 'L1[0]');
    await page.keyboard.press('ArrowRight');
    await treeItem('[0 … 255]').waitFor();
    await page.keyboard.press('ArrowDown');
    assert.equal(await selectedLabel(), '[0 … 255]');
    await page.keyboard.press('ArrowRight');
    await treeItem('L2[0x0]').waitFor();
    await page.keyboard.press('ArrowDown');
    assert.equal(await selectedLabel(), 'L2[0x0]');
    for (let i = 0; i < 16; i++) await page.keyboard.press('ArrowDown');
    assert.equal(await selectedLabel(), 'L2[0x10]');
    const desc = await treeItem('L2[0x10]').locator('.tree-desc').textContent();
    assert.equal(desc, `data at 0x${dataHost.toString(16)}`, 'the L2 entry for guest 1 MiB points where qemu-img map says');
    // Left goes to the parent page, Home/End to the first/last visible items
    await page.keyboard.press('ArrowLeft');
    assert.equal(await selectedLabel(), '[0 … 255]');
    await page.keyboard.press('Home');
    assert.equal(await selectedLabel(), 'Header');
    await page.keyboard.press('End');
    assert.equal(await selectedLabel(), 'Bitmaps');
    const level = await page.getAttribute('[role=treeitem]:has(> .tree-row > .tree-label:text-is("L2[0x10]"))', 'aria-level');
    assert.equal(level, '4');
  });

  it('Enter on an L2 entry shows its bytes in the file and decodes them in the inspector', async () => {
    await treeItem('L2[0x10]').click();
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelector('.inspector .pane-title')?.textContent?.startsWith('Inspector · file')
      && /^0x[0-9a-f]+$/.test(document.querySelector('.inspector-table tr[data-type="u64 hex"] td:nth-child(3)')?.textContent ?? ''));
    const be = BigInt((await page.textContent('.inspector-table tr[data-type="u64 hex"] td:nth-child(3)'))!);
    assert.equal(be & 0x00fffffffffffe00n, BigInt(dataHost), 'the L2 entry holds the host offset qemu-img map reports');
    assert.equal(be >> 63n, 0n, 'the cluster is shared with snapshot s1, so the COPIED flag is clear');
  });

  it('hex view shows the guest bytes qemu-io wrote, with their source layer', async () => {
    await page.click('button:text-is("Disk")');
    await page.fill('input.goto', '0x100000');
    await page.press('input.goto', 'Enter');
    const row = page.locator('.hex-row', { has: page.locator('.hex-off:text-is("0000100000")') });
    await page.waitForFunction(() => Array.from(document.querySelectorAll('.hex-row .hex-off')).some(e => e.textContent === '0000100000' && e.parentElement!.querySelector('.hb')!.textContent !== '··'));
    const bytes = await row.locator('.hb').allTextContents();
    assert.deepEqual(bytes, Array(16).fill('ab'));
    assert.equal(await row.locator('.hex-src').textContent(), `this image @ 0x${dataHost.toString(16)}`);
    assert.equal(await page.textContent('.inspector-table tr[data-type="u8"] td:nth-child(2)'), '171');
    await row.locator('.hb').nth(2).click(); // clicking a byte selects it
    await page.waitForFunction(() => document.querySelector('.hex-status')?.textContent?.includes('selected 0x100002'));
    assert.equal(await page.textContent('.inspector .pane-title'), 'Inspector · disk 0x100002');
    // guest 0 comes from the backing file
    await page.fill('input.goto', '0');
    await page.press('input.goto', 'Enter');
    await page.waitForFunction(() => document.querySelector('.hex-row .hb')?.textContent === '11');
    assert.match((await page.locator('.hex-row .hex-src').first().textContent())!, /^backing depth 1 \(base\.qcow2\)/);
    assert.match((await page.locator('.hex-row .hb').first().getAttribute('class'))!, /src-data src-backing/, 'bytes from a backing file are marked');
    // the arrow keys move the selection byte by byte
    await page.locator('.hex-scroll').focus();
    await page.keyboard.press('ArrowRight');
    await page.waitForFunction(() => document.querySelector('.hex-status')?.textContent?.includes('selected 0x1'));
    assert.ok(h.maxReadLength <= 4096, `hex reads are bounded (max ${h.maxReadLength})`);
  });

  it('draws the cluster map; hover names the owner, click opens the cluster', async () => {
    await page.waitForFunction(() => {
      const c = document.querySelector<HTMLCanvasElement>('.map-canvas');
      if (!c || !c.width) return false;
      const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
      let painted = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] === 255) painted++;
      return painted > 100;
    });
    const hover = async (cluster: number) => {
      const { cell, cols, zoom } = await page.$eval('.map-canvas', e => ({ cell: Number((e as HTMLElement).dataset.cell), cols: Number((e as HTMLElement).dataset.cols), zoom: Number((e as HTMLElement).dataset.zoom) }));
      assert.equal(zoom, 1);
      const box = (await page.locator('.map-canvas').boundingBox())!;
      await page.mouse.move(box.x + (cluster % cols) * cell + cell / 2, box.y + Math.floor(cluster / cols) * cell + cell / 2);
    };
    await hover(dataHost / CS);
    await page.waitForFunction(() => document.querySelector('.map-hover')?.textContent?.includes('Guest data'));
    const text = await page.textContent('.map-hover');
    assert.match(text!, new RegExp(`^Cluster ${dataHost / CS} at 0x${dataHost.toString(16)}: Guest data — L1\\[0\\] → L2\\[0x10\\] \\(guest 0x100000\\)`));
    await hover(leakCluster);
    await page.waitForFunction(() => document.querySelector('.map-hover')?.textContent?.includes('Leaked'));
    assert.match((await page.textContent('.map-hover'))!, /refcount 1$/);
    await hover(dataHost / CS);
    await page.waitForFunction(() => document.querySelector('.map-hover')?.textContent?.includes('Guest data'));
    await page.mouse.down();
    await page.mouse.up();
    await page.waitForFunction(x => document.querySelector('.hex-status')?.textContent?.includes(`selected 0x${x.toString(16)}`), dataHost);
    assert.equal(await page.getAttribute('button:text-is("File")', 'aria-pressed'), 'true');
    await page.waitForFunction(() => document.querySelector('.inspector-table tr[data-type="u8"] td:nth-child(2)')?.textContent === '171');
    const row = page.locator('.hex-row', { has: page.locator(`.hex-off:text-is("${dataHost.toString(16).padStart(8, '0')}")`) });
    assert.equal(await row.locator('.hex-src').textContent(), 'L1[0] → L2[0x10]', 'host bytes name their owner');
    const legend = await page.locator('.legend-item').allTextContents();
    assert.ok(legend.includes('Guest data') && legend.includes('Leaked'));
  });

  it('the cluster map zooms and works from the keyboard', async () => {
    await page.click('button[aria-label="Zoom out"]');
    await page.waitForFunction(() => document.querySelector('.map-zoom')?.textContent?.startsWith('2 clusters per cell'));
    await page.waitForFunction(() => document.querySelector<HTMLElement>('.map-canvas')?.dataset.zoom === '2');
    await page.click('button:text-is("Fit")');
    await page.waitForFunction(() => document.querySelector('.map-zoom')?.textContent?.startsWith('1 cluster per cell'));
    await page.locator('.map-scroll').focus();
    await page.keyboard.press('ArrowLeft'); // from the selected data cluster
    await page.waitForFunction(x => document.querySelector('.map-hover')?.textContent?.startsWith(`Cluster ${x} `), dataHost / CS - 1);
    await page.keyboard.press('Enter');
    await page.waitForFunction(x => document.querySelector('.hex-status')?.textContent?.includes(`selected 0x${x.toString(16)}`), dataHost - CS);
  });

  it('the map follows a theme change (colours come from the theme variables)', async () => {
    const pixelAt = (cluster: number) => page.$eval('.map-canvas', (c, k) => {
      const e = c as HTMLCanvasElement;
      const cell = Number(e.dataset.cell), cols = Number(e.dataset.cols), dpr = e.width / e.clientWidth;
      const d = e.getContext('2d')!.getImageData(Math.floor(((k % cols) * cell + 2) * dpr), Math.floor((Math.floor(k / cols) * cell + 2) * dpr), 1, 1).data;
      return [d[0], d[1], d[2]];
    }, cluster);
    await page.evaluate(() => document.documentElement.style.setProperty('--vscode-charts-blue', 'rgb(255, 0, 0)'));
    await page.waitForFunction(k => {
      const e = document.querySelector<HTMLCanvasElement>('.map-canvas')!;
      const cell = Number(e.dataset.cell), cols = Number(e.dataset.cols), dpr = e.width / e.clientWidth;
      const d = e.getContext('2d')!.getImageData(Math.floor(((k % cols) * cell + 2) * dpr), Math.floor((Math.floor(k / cols) * cell + 2) * dpr), 1, 1).data;
      return d[0] === 255 && d[1] === 0 && d[2] === 0;
    }, dataHost / CS);
    assert.deepEqual(await pixelAt(dataHost / CS), [255, 0, 0], 'guest data cells use --vscode-charts-blue');
    assert.notDeepEqual(await pixelAt(0), [255, 0, 0], 'the header cell does not');
    await page.evaluate(() => document.documentElement.style.removeProperty('--vscode-charts-blue'));
  });

  it('renders a check result from qemu-img check and a finding click reveals its bytes', async () => {
    const chk = qemuImgStatus('check', top);
    const leaks = [...(chk.stdout + chk.stderr).matchAll(/Leaked cluster (\d+) refcount=(\d+) reference=(\d+)/g)];
    assert.equal(leaks.length, 1, chk.stdout);
    assert.equal(Number(leaks[0][1]), leakCluster);
    const findings: CheckFinding[] = leaks.map(m => ({
      kind: 'leak', severity: 'warning', hostOffset: Number(m[1]) * CS, structure: `cluster ${m[1]}`,
      message: `Leaked cluster ${m[1]} (refcount ${m[2]}, ${m[3]} references)`, explanation: 'Nothing uses the cluster; repair sets its refcount to 0.',
    }));
    await h.push(page, { type: 'checkResult', summary: { clean: false, leaks: leaks.length, corruptions: 0, checkErrors: 0 }, findings });
    await page.locator('.finding').first().waitFor();
    assert.equal(await page.locator('.finding').count(), 1);
    assert.match((await page.textContent('.check-summary'))!, /Leaked clusters found · 0 corruption\(s\) · 1 leak\(s\)/);
    await page.locator('.hex-scroll').click({ position: { x: 5, y: 5 } }); // move the selection elsewhere first
    await page.click('.finding');
    await page.waitForFunction(x => document.querySelector('.hex-status')?.textContent?.includes(`selected 0x${x.toString(16)}`), leakCluster * CS);
    assert.equal(await page.getAttribute('.finding', 'class'), 'finding sev-warning selected');
    // the tree shows the leaked cluster's refcount entry (refcount 1 with no user)
    await page.waitForFunction(x => document.querySelector('[role=treeitem][aria-selected=true] > .tree-row > .tree-label')?.textContent === `cluster 0x${x.toString(16)}`, leakCluster);
    assert.equal(await page.textContent('[role=treeitem][aria-selected=true] > .tree-row > .tree-desc'), 'refcount 1');
    // and marks it with the finding's severity
    assert.equal(await page.locator('[role=treeitem][aria-selected=true] > .tree-row .sev-warning').count(), 1);
    assert.match((await page.getAttribute('[role=treeitem][aria-selected=true]', 'aria-label'))!, /, warning$/);
  });

  it('revealHostOffset from the host selects the owning L2 entry in the tree', async () => {
    await h.push(page, { type: 'revealHostOffset', hostOffset: dataHost + 5 });
    await page.waitForFunction(() => document.querySelector('[role=treeitem][aria-selected=true] > .tree-row > .tree-label')?.textContent === 'L2[0x10]');
    await page.waitForFunction(x => document.querySelector('.hex-status')?.textContent?.includes(`selected 0x${x.toString(16)}`), dataHost + 5);
  });

  it('runCommand buttons reach the host; state survives a reload; no CSP violations', async () => {
    await page.click('.run-check');
    await page.waitForFunction(() => (window as unknown as { __posted: Array<{ type: string; command?: string }> }).__posted.some(m => m.type === 'runCommand' && m.command === 'check'));
    assert.ok(h.received.get('main')!.some(m => m.type === 'runCommand' && m.command === 'check'));
    // a snapshot node offers revert/delete with the snapshot's name
    await treeItem('Snapshots').click();
    await page.keyboard.press('ArrowRight');
    await treeItem('1: s1').click();
    await page.click('.details-actions button:text-is("Revert to…")');
    await page.waitForFunction(() => (window as unknown as { __posted: Array<{ type: string; command?: string; args?: { name?: string } }> }).__posted.some(m => m.command === 'revertSnapshot' && m.args?.name === 's1'));
    await page.waitForTimeout(250); // state is saved debounced
    await page.reload();
    await page.waitForSelector('body[data-ready]');
    await treeItem('1: s1').waitFor();
    assert.equal(await selectedLabel(), '1: s1');
    await treeItem('L2[0x10]').waitFor(); // expanded nodes are restored too
    await page.locator('.finding').first().waitFor();
    assert.deepEqual(await page.evaluate(() => (window as unknown as { __cspViolations: string[] }).__cspViolations), []);
    assert.deepEqual(h.pageErrors, []);
  });

  it('revealStructure with a snapshot path (as the check names it) expands the snapshot\'s tables', async () => {
    await h.push(page, { type: 'revealStructure', structure: 'snapshot[0] "s1" → L1[0] → L2[0x20]' });
    await page.waitForFunction(() => document.querySelector('[role=treeitem][aria-selected=true] > .tree-row > .tree-label')?.textContent === 'L2[0x20]');
    const ids = await page.$$eval('[role=treeitem][aria-expanded=true]', els => els.map(e => (e as HTMLElement).dataset.nodeId));
    assert.ok(ids.includes('snap:0') && ids.includes('l1:0') && ids.includes('l1e:0:0'), ids.join(','));
    assert.match((await treeItem('L2[0x20]').locator('.tree-desc').last().textContent())!, /^compressed at 0x/);
  });

  it('refresh after the file changed on disk shows the new bytes', async () => {
    qemuIo(top, ['write -P 0x3c 1M 4k']);
    await h.models.get('main')!.reload();
    await page.click('button:text-is("Disk")');
    await page.fill('input.goto', '0x100000');
    await page.press('input.goto', 'Enter');
    await h.push(page, { type: 'refresh' });
    await page.waitForFunction(() => Array.from(document.querySelectorAll('.hex-row')).some(r => r.querySelector('.hex-off')?.textContent === '0000100000' && r.querySelector('.hb')?.textContent === '3c'));
    await treeItem('L1[0]').waitFor(); // the tree was reloaded with its expanded nodes
  });

  it('settles at narrow and wide sizes (no resize/render loop)', async () => {
    const counts = () => page.evaluate(() => [document.querySelector<HTMLElement>('.map-canvas')!.dataset.draws, document.querySelector<HTMLElement>('.hex-rows')!.dataset.renders]);
    for (const size of [{ width: 820, height: 560 }, { width: 640, height: 700 }, { width: 1280, height: 860 }]) {
      await page.setViewportSize(size);
      await page.waitForTimeout(500);
      await page.waitForFunction(() => !document.querySelector('.hex-status')?.textContent?.includes('Loading'));
      const a = await counts();
      await page.waitForTimeout(400);
      assert.deepEqual(await counts(), a, `idle at ${size.width}x${size.height}`);
    }
  });

  it('a reveal that arrives before the webview has started is applied once it has', async () => {
    h.summaryDelayMs = 400;
    const p = await h.open('big', { waitReady: false });
    try {
      await h.push(p, { type: 'revealStructure', structure: 'L1[2047]' });
      assert.equal(await p.getAttribute('body', 'data-ready'), null, 'still starting');
      await p.waitForSelector('body[data-ready]');
      await p.waitForFunction(() => document.querySelector('[role=treeitem][aria-selected=true] > .tree-row > .tree-label')?.textContent === 'L1[2047]');
    } finally {
      h.summaryDelayMs = 0;
      await p.close();
    }
  });

  it('shows an error state when the image cannot be read', async () => {
    const p = await h.open('no-such-image');
    try {
      assert.equal(await p.getAttribute('body', 'data-ready'), 'error');
      assert.match((await p.textContent('[role=alert]'))!, /cannot be opened.*no image no-such-image/s);
    } finally {
      await p.close();
    }
  });

  it('navigates a 1 TiB guest: the last cluster, bounded reads', async () => {
    const p = await h.open('big');
    try {
      p.setDefaultTimeout(10000);
      await p.click('button:text-is("Disk")');
      const off = 2 ** 40 - 65536;
      await p.fill('input.goto', '0x' + off.toString(16));
      await p.press('input.goto', 'Enter');
      await p.waitForFunction(() => Array.from(document.querySelectorAll('.hex-row .hb')).some(e => e.textContent === '5a'));
      const first = p.locator('.hex-row', { has: p.locator(`.hex-off:text-is("${off.toString(16).padStart(10, '0')}")`) });
      assert.deepEqual(await first.locator('.hb').allTextContents(), Array(16).fill('5a'));
      // the wheel scrolls by rows even though the scrollbar is scaled (68 G rows)
      const topOf = async () => parseInt(/disk (0x[0-9a-f]+) of/.exec((await p.textContent('.hex-status'))!)![1], 16);
      const before = await topOf();
      const box = (await p.locator('.hex-scroll').boundingBox())!;
      await p.mouse.move(box.x + 100, box.y + 100);
      await p.mouse.wheel(0, 180);
      await p.waitForFunction(b => { const m = /disk (0x[0-9a-f]+) of/.exec(document.querySelector('.hex-status')?.textContent ?? ''); return !!m && parseInt(m[1], 16) !== b; }, before);
      assert.equal(await topOf(), before + 10 * 16);
      await p.locator('.hex-scroll').focus();
      await p.keyboard.press('Control+End');
      await p.waitForFunction(x => document.querySelector('.hex-status')?.textContent?.includes(`selected 0x${x.toString(16)}`), 2 ** 40 - 1);
      assert.ok(h.maxReadLength <= 4096);
      const rows = await p.locator('.hex-row').count();
      assert.ok(rows < 200, `only visible rows are rendered (${rows})`);
      assert.deepEqual(await p.evaluate(() => (window as unknown as { __cspViolations: string[] }).__cspViolations), []);
      await p.screenshot({ path: path.join(ROOT, 'test-out', 'webview-1tib.png') });
    } finally {
      await p.close();
    }
  });
});
