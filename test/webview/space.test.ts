/**
 * The guest lens in the real webview (Debian chromium, the real ViewModel behind it): a GPT disk
 * with one ext4 partition made by mkfs.ext4 -d, a deleted file's data left in guest free space
 * (debugfs -w rm), converted by qemu-img. The space bar's figures must be what `qcow2-lens space
 * --json` prints and add up to the file's size; the disk-usage panel's sizes what debugfs counts;
 * selecting a guest file outlines exactly the host clusters qemu-img map gives for the blocks
 * debugfs lists (and announces its guest ranges); the owner line names the file, guest free space
 * and file-system metadata for bytes picked in the Disk and File views; the disk-usage tree lists
 * qcow2Lens.space.largestEntries entries per folder and is added up again when the setting changes.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { formatBytes } from '../../src/engine/units';
import { DEFAULT_SETTINGS, webviewSettings } from '../../src/extension/settings';
import { cliJson, qemuImg, tmpDir } from '../helpers/qemu';
import { buildDisk, bytes, run } from '../guest/common';
import { CHROMIUM, WebviewHarness } from './harness';

const haveBrowser = fs.existsSync(CHROMIUM);
const PART_START = 2048 * 512;

interface Part { name: string; bytes: number; parts?: Part[] }

describe('Space summary, disk usage and guest-file highlights in the webview', { skip: haveBrowser ? false : `${CHROMIUM} is missing`, timeout: 180000 }, () => {
  const h = new WebviewHarness();
  let dir: string, page: Page, image: string, fsImg: string;
  let blockSize = 0, junkBlock = 0;

  /** debugfs's data blocks of a file, as guest offsets. */
  const blocksOf = (p: string) => run('debugfs', ['-R', `blocks ${p}`, fsImg]).trim().split(/\s+/).map(Number).map(b => PART_START + b * blockSize);
  /** The host offset qemu-img map gives for a guest offset. */
  const hostOf = (guest: number): number => {
    const map = JSON.parse(qemuImg('map', '--output=json', image)) as { start: number; length: number; data: boolean; offset?: number }[];
    const e = map.find(m => guest >= m.start && guest < m.start + m.length && m.data && m.offset !== undefined)!;
    return e.offset! + (guest - e.start);
  };

  before(async () => {
    dir = tmpDir('qcow2-lens-space-webview-');
    const src = path.join(dir, 'src');
    fs.mkdirSync(path.join(src, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(src, 'etc', 'fstab'), 'UUID=42 / ext4 defaults 0 1\n');
    fs.writeFileSync(path.join(src, 'big.bin'), bytes(1024 * 1024 + 5, 'big'));
    fs.writeFileSync(path.join(src, 'junk.bin'), bytes(512 * 1024, 'junk'));
    fsImg = path.join(dir, 'p1.ext4');
    run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', src, fsImg, '16M']);
    junkBlock = Number(run('debugfs', ['-R', 'blocks /junk.bin', fsImg]).trim().split(/\s+/)[0]);
    run('debugfs', ['-w', '-R', 'rm /junk.bin', fsImg]); // its blocks are free now, their bytes still there
    blockSize = Number(/Block size:\s+(\d+)/.exec(run('dumpe2fs', ['-h', fsImg]))![1]);
    const raw = path.join(dir, 'disk.raw');
    buildDisk(raw, 20, 'gpt', [{ start: 2048, size: 16 * 2048, type: '8300', image: fsImg }]);
    image = path.join(dir, 'disk.qcow2');
    qemuImg('convert', '-q', '-O', 'qcow2', '-o', 'cluster_size=4096', raw, image);
    await h.addImage('main', image);
    await h.start();
    page = await h.open('main');
    page.setDefaultTimeout(20000);
  });
  after(async () => {
    await h.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const treeItem = (label: string) => page.locator('[role=treeitem] > .tree-row', { has: page.locator(`.tree-label:text-is("${label}")`) }).first();

  it('the space bar shows the figures of `qcow2-lens space --json`, adding up to the file size, with a text alternative', async () => {
    await page.locator('.space-summary[data-state=ready]').waitFor();
    const truth = cliJson<{ fileSize: number; parts: Part[]; reclaim: { compact: number; sparsify: number } }>('space', '--json', image);
    assert.equal(truth.fileSize, fs.statSync(image).size);
    const part = (name: string) => truth.parts.find(p => p.name === name)!;
    const sub = (p: string, name: string) => part(p).parts!.find(q => q.name === name)!.bytes;
    const items = await page.locator('.space-legend .space-item').evaluateAll(els => els.map(e => ({ key: (e as HTMLElement).dataset.key!, bytes: Number((e as HTMLElement).dataset.bytes), text: e.textContent ?? '' })));
    const got = Object.fromEntries(items.map(i => [i.key, i.bytes]));
    assert.equal(got.metadata, part('metadata').bytes);
    assert.equal(got.used, sub('active', 'in use by files'));
    assert.equal(got.guestfree, sub('active', 'guest free space'));
    assert.ok(got.used > 1024 * 1024, 'big.bin is in use');
    assert.ok(got.guestfree >= 512 * 1024 - 4096, 'the deleted file\'s bytes lie in guest free space');
    assert.equal(items.reduce((s, i) => s + i.bytes, 0), truth.fileSize, 'the segments make up the file');
    const segs = await page.locator('.space-bar .space-seg').evaluateAll(els => els.map(e => Number((e as HTMLElement).dataset.bytes)));
    assert.equal(segs.reduce((a, b) => a + b, 0), truth.fileSize);
    // the numbers are in the DOM, human-readable, and in the bar's accessible name
    const usedItem = items.find(i => i.key === 'used')!;
    assert.match(usedItem.text, /in use by guest files\d+(\.\d)? (KiB|MiB)\d+(\.\d)?%/);
    const label = await page.locator('.space-bar').getAttribute('aria-label');
    assert.match(label!, /^Image file .+ of a 20 MiB disk: qcow2 metadata/);
    assert.match(label!, /guest free space/);
    const reclaim = await page.locator('.space-reclaim').textContent();
    assert.ok(truth.reclaim.sparsify > truth.reclaim.compact, 'sparsify drops the free-space clusters compact keeps');
    assert.match(reclaim!, /^Compact would reclaim .+ · Sparsify .+$/);
    // asked for after the tree's first rows, never before them
    const posted = await page.evaluate(() => (window as unknown as { __posted: { type: string }[] }).__posted.map(m => m.type));
    assert.ok(posted.indexOf('getSpaceReport') > posted.indexOf('getTreeChildren') && posted.indexOf('getTreeChildren') >= 0, posted.join(','));
    assert.ok(!posted.includes('getDiskUsage'), 'disk usage waits until its panel is opened');
    assert.deepEqual(h.pageErrors, []);
  });

  it('the bar takes its colours from the theme (dark, light, high contrast: borders between segments too)', async () => {
    const themes: Array<[string, Record<string, string>]> = [
      ['vscode-dark', { '--vscode-charts-blue': 'rgb(1, 2, 3)', '--vscode-charts-yellow': 'rgb(4, 5, 6)', '--vscode-charts-purple': 'rgb(7, 8, 9)' }],
      ['vscode-light', { '--vscode-charts-blue': 'rgb(11, 12, 13)', '--vscode-charts-yellow': 'rgb(14, 15, 16)', '--vscode-charts-purple': 'rgb(17, 18, 19)' }],
      ['vscode-high-contrast', { '--vscode-charts-blue': 'rgb(21, 22, 23)', '--vscode-charts-yellow': 'rgb(24, 25, 26)', '--vscode-charts-purple': 'rgb(27, 28, 29)', '--vscode-contrastBorder': 'rgb(250, 251, 252)' }],
    ];
    for (const [cls, vars] of themes) {
      const got = await page.evaluate(([c, v]) => {
        document.body.className = c;
        for (const [k, x] of Object.entries(v)) document.documentElement.style.setProperty(k, x);
        const bg = (k: string) => getComputedStyle(document.querySelector(`.space-bar .space-${k}`)!).backgroundColor;
        return { used: bg('used'), free: bg('guestfree'), meta: bg('metadata'), border: getComputedStyle(document.querySelector('.space-bar .space-seg')!).borderRightColor, width: getComputedStyle(document.querySelector('.space-bar .space-seg')!).borderRightWidth };
      }, [cls, vars] as const);
      assert.equal(got.used, vars['--vscode-charts-blue'], cls);
      assert.equal(got.free, vars['--vscode-charts-yellow'], cls);
      assert.equal(got.meta, vars['--vscode-charts-purple'], cls);
      if (cls === 'vscode-high-contrast') { assert.equal(got.border, vars['--vscode-contrastBorder']); assert.equal(got.width, '1px'); } else assert.equal(got.width, '0px', cls);
    }
    await page.evaluate(() => { document.body.className = ''; });
  });

  it('an encrypted image without its key says why the summary cannot be computed', async () => {
    const img = path.join(dir, 'luks.qcow2');
    const secret = ['--object', 'secret,id=sec0,data=lens'];
    qemuImg('create', '-q', '-f', 'qcow2', ...secret, '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', img, '16M');
    await h.addImage('luks', img);
    const p = await h.open('luks');
    try {
      await p.locator('.space-summary[data-state=unavailable]').waitFor({ timeout: 20000 });
      assert.match((await p.locator('.space-unavailable').textContent())!, /^Space summary: The image is encrypted and locked: unlock it/);
      await p.locator('.disk-usage > summary').click();
      await p.locator('.disk-usage[data-state=unavailable]').waitFor({ timeout: 20000 });
      assert.match((await p.locator('.du-unavailable').textContent())!, /encrypted and locked/);
    } finally {
      await p.close();
    }
  });

  it('the disk-usage panel, opened, lists the largest entries with the sizes debugfs counts and their shares', async () => {
    await page.locator('.disk-usage > summary').click();
    await page.locator('.disk-usage[data-state=ready]').waitFor();
    const blockcount = (p: string) => Number(/Blockcount: (\d+)/.exec(run('debugfs', ['-R', `stat ${p}`, fsImg]))![1]) * 512;
    const big = page.locator('.du-item[data-path="/big.bin"]');
    assert.equal(Number(await big.getAttribute('data-bytes')), blockcount('/big.bin'));
    const rows = await page.locator('.du-tree > .du-item > ul > .du-item').evaluateAll(els => els.map(e => ({ path: (e as HTMLElement).dataset.path, bytes: Number((e as HTMLElement).dataset.bytes) })));
    assert.equal(rows[0].path, '/big.bin', 'largest first');
    for (let i = 1; i < rows.length; i++) assert.ok(rows[i - 1].bytes >= rows[i].bytes);
    assert.ok(!rows.some(r => r.path === '/junk.bin'), 'the deleted file is gone');
    const root = Number(await page.locator('.du-tree > .du-item').first().getAttribute('data-bytes'));
    assert.match((await big.locator('.du-share').first().textContent())!, new RegExp(`^${Math.round(blockcount('/big.bin') / root * 100)}%$`));
    // folders expand: /etc shows fstab
    const etc = page.locator('.du-item[data-path="/etc"]');
    await etc.locator('.du-toggle').first().click();
    assert.equal(await etc.getAttribute('aria-expanded'), 'true');
    assert.equal(Number(await page.locator('.du-item[data-path="/etc/fstab"]').getAttribute('data-bytes')), blockcount('/etc/fstab'));
  });

  it('the disk-usage tree lists as many entries per folder as qcow2Lens.space.largestEntries says, and follows a change live', async () => {
    const settings = webviewSettings(DEFAULT_SETTINGS);
    const firstLevel = '.du-tree > .du-item > ul > .du-item';
    const rows = () => page.locator(`${firstLevel}:not(.du-others)`).evaluateAll(els => els.map(e => (e as HTMLElement).dataset.path));
    const bytesOf = () => page.locator(`${firstLevel}:not(.du-others)`).evaluateAll(els => els.map(e => Number((e as HTMLElement).dataset.bytes)));
    const asked = () => page.evaluate(() => (window as unknown as { __posted: { type: string; top?: number }[] }).__posted.filter(m => m.type === 'getDiskUsage').map(m => m.top));
    // the default (10) lists every entry of this root: big.bin, etc, lost+found
    const all = await rows(), allBytes = await bytesOf();
    assert.ok(all.length >= 3 && all.length <= DEFAULT_SETTINGS.spaceLargestEntries, all.join(','));
    assert.equal(await page.locator(`${firstLevel}.du-others`).count(), 0);
    assert.deepEqual(await asked(), [DEFAULT_SETTINGS.spaceLargestEntries], 'the webview asks for the setting\'s number');
    await h.push(page, { type: 'settings', settings: { ...settings, diskUsageTop: 1 } });
    await page.waitForFunction(sel => document.querySelector('.disk-usage')?.getAttribute('data-state') === 'ready' && document.querySelectorAll(sel).length === 1, `${firstLevel}:not(.du-others)`);
    assert.deepEqual(await rows(), ['/big.bin'], 'the largest one only');
    // the rest summed in one row: the bytes of the entries no longer listed
    assert.match((await page.locator(`${firstLevel}.du-others .du-name`).textContent())!, /^\d+ other entr/);
    assert.equal(await page.locator(`${firstLevel}.du-others .du-bytes`).textContent(), formatBytes(allBytes.slice(1).reduce((a, b) => a + b, 0)));
    await h.push(page, { type: 'settings', settings });
    await page.waitForFunction(([sel, n]) => document.querySelector('.disk-usage')?.getAttribute('data-state') === 'ready' && document.querySelectorAll(sel as string).length === n, [`${firstLevel}:not(.du-others)`, all.length] as const);
    assert.deepEqual(await rows(), all);
    assert.deepEqual(await asked(), [DEFAULT_SETTINGS.spaceLargestEntries, 1, DEFAULT_SETTINGS.spaceLargestEntries]);
  });

  it('selecting a guest file outlines its host clusters and announces its guest ranges; another selection clears both', async () => {
    await page.evaluate(() => {
      const w = window as unknown as { __hl: unknown[] };
      w.__hl = [];
      document.addEventListener('qcow2lens:highlightGuest', e => w.__hl.push((e as CustomEvent).detail));
      window.addEventListener('message', e => { if ((e.data as { type?: string }).type === 'guestFileMap') (window as unknown as { __map: unknown }).__map = e.data; });
    });
    await treeItem('Guest').click();
    await page.keyboard.press('ArrowRight');
    await treeItem('partition 1').click();
    await page.keyboard.press('ArrowRight');
    await treeItem('big.bin').click();
    await page.waitForFunction(() => (window as unknown as { __hl: unknown[] }).__hl.length > 0);
    const blocks = blocksOf('/big.bin');
    const want = [...new Set(blocks.map(g => Math.floor(hostOf(g) / 4096)))].sort((a, b) => a - b);
    assert.equal(want.length, Math.ceil((1024 * 1024 + 5) / 4096));
    // the outline is drawn when the file map's reply has come and a frame has passed: wait for both
    // (on a loaded machine they come after the guest highlight's event)
    await page.waitForFunction(n => document.querySelector('.map-canvas')?.getAttribute('data-highlighted') === n
      && (window as unknown as { __map?: unknown }).__map !== undefined, String(want.length), { timeout: 20000 })
      .catch(async e => { throw new Error(`the cluster map outlines ${await page.locator('.map-canvas').getAttribute('data-highlighted')} clusters, not ${want.length}: ${String(e)}`); });
    const reply = await page.evaluate(() => (window as unknown as { __map: { hostClusters: number[] } }).__map);
    assert.deepEqual(reply.hostClusters, want, 'the outlined clusters are the ones qemu-img map gives for debugfs\'s blocks');
    const hl = await page.evaluate(() => (window as unknown as { __hl: { ranges: { start: number; length: number }[]; label: string }[] }).__hl);
    const last = hl[hl.length - 1];
    assert.equal(last.label, '/big.bin, partition 1');
    const covered = new Set<number>();
    for (const r of last.ranges) for (let o = r.start; o < r.start + r.length; o += blockSize) covered.add(o);
    for (const g of blocks) assert.ok(covered.has(g), `block at ${g} announced`);
    await treeItem('partition 1').click();
    await page.waitForFunction(() => document.querySelector('.map-canvas')?.getAttribute('data-highlighted') === '0');
    const after = await page.evaluate(() => (window as unknown as { __hl: { ranges: unknown[] }[] }).__hl);
    assert.deepEqual(after[after.length - 1].ranges, []);
  });

  it('the owner line names the guest file, guest free space or file-system metadata of a picked byte (Disk and File views)', async () => {
    const owner = page.locator('.hex-owner');
    const fstab = blocksOf('/etc/fstab')[0];
    await h.push(page, { type: 'revealGuestOffset', guestOffset: fstab + 3 });
    await page.waitForFunction(() => document.querySelector('.hex-owner')?.textContent === 'Owner: /etc/fstab, partition 1');
    // the same byte through the File view: host offset → its L2 entry → guest offset → whose
    await h.push(page, { type: 'revealHostOffset', hostOffset: hostOf(fstab + 3) });
    await page.waitForFunction(() => document.querySelector('.hex-owner')?.textContent === 'Owner: /etc/fstab, partition 1');
    // a byte of the deleted file: free space (its data still in the image)
    await h.push(page, { type: 'revealGuestOffset', guestOffset: PART_START + junkBlock * blockSize + 7 });
    await page.waitForFunction(() => document.querySelector('.hex-owner')?.textContent === 'Owner: guest free space, partition 1');
    const itable = Number(/Inode table at (\d+)/.exec(run('dumpe2fs', [fsImg]))![1]);
    await h.push(page, { type: 'revealGuestOffset', guestOffset: PART_START + itable * blockSize });
    await page.waitForFunction(() => /^Owner: file-system metadata: inode table/.test(document.querySelector('.hex-owner')?.textContent ?? ''));
    // a metadata cluster of the image file is not guest data: the line goes
    await h.push(page, { type: 'revealHostOffset', hostOffset: 0 });
    await page.waitForFunction(() => document.querySelector<HTMLElement>('.hex-owner')?.hidden === true);
    assert.ok(await owner.isHidden());
    assert.deepEqual(h.pageErrors, []);
  });

  it('a disk-usage row opens its guest file in a tab, and shows it in the structure tree (expanded down to it, its clusters outlined)', async () => {
    await page.locator('.disk-usage[data-state=ready]').waitFor();
    type Posted = { type: string; command?: string; args?: { partition?: number; path?: string } };
    const opens = () => page.evaluate(() => (window as unknown as { __posted: Posted[] }).__posted.filter(m => m.type === 'runCommand' && m.command === 'openGuestFile').map(m => m.args));
    const before = (await opens()).length; // the structure tree's own clicks ask too
    await page.locator('.du-item[data-path="/big.bin"] > .du-row .du-open').click();
    await page.waitForFunction(n => (window as unknown as { __posted: Posted[] }).__posted.filter(m => m.command === 'openGuestFile').length > n, before);
    assert.deepEqual((await opens()).slice(before), [{ partition: 1, path: '/big.bin' }]);
    assert.equal(await page.locator('.du-item[data-path="/etc"] > .du-row .du-open').count(), 0, 'a folder\'s name opens nothing');
    // /etc/fstab: its folder is not loaded in the tree yet
    assert.equal(await page.locator('[role=treeitem][aria-selected=true] .tree-label:text-is("fstab")').count(), 0);
    await page.evaluate(() => {
      window.addEventListener('message', e => { if ((e.data as { type?: string }).type === 'guestFileMap') (window as unknown as { __duMap: unknown }).__duMap = e.data; });
    });
    await page.locator('.du-item[data-path="/etc"] > .du-row .du-toggle').click();
    await page.locator('.du-item[data-path="/etc/fstab"] > .du-row .du-reveal').click();
    await page.locator('[role=treeitem][aria-selected=true] > .tree-row .tree-label:text-is("fstab")').waitFor();
    const want = Math.floor(hostOf(blocksOf('/etc/fstab')[0]) / 4096);
    await page.waitForFunction(() => document.querySelector('.map-canvas')?.getAttribute('data-highlighted') === '1');
    const reply = await page.evaluate(() => (window as unknown as { __duMap?: { hostClusters: number[]; label: string } }).__duMap);
    assert.equal(reply?.label, '/etc/fstab, partition 1');
    assert.deepEqual(reply?.hostClusters, [want], 'fstab\'s one cluster, as qemu-img map gives for debugfs\'s block');
    // a folder too: its node is selected
    await page.locator('.du-item[data-path="/etc"] > .du-row .du-reveal').click();
    await page.locator('[role=treeitem][aria-selected=true] > .tree-row .tree-label:text-is("etc")').waitFor();
    await page.waitForFunction(() => document.querySelector('.map-canvas')?.getAttribute('data-highlighted') === '0');
    assert.deepEqual(h.pageErrors, []);
  });
});
