/**
 * The guest-disk map: the host's run summaries (getGuestRuns) against `qemu-img map --output=json`
 * on a three-layer chain and a sparse 1 TiB disk (no browser), then the map in chromium against the
 * real ViewModel (test/webview/harness.ts): its runs in words, the summary line, a click selecting
 * the L1/L2 entry and the bytes, zoom and keys, the highlight event, the backing chain's links and
 * a broken one, backing depths coloured in the hex view, legend colours in a light theme.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { ViewModel } from '../../src/extension/viewModel';
import type { GuestRunKind, GuestRunsReply } from '../../src/protocol';
import { MAX_GUEST_BUCKETS } from '../../src/protocol';
import { qemuImg, qemuIo, ROOT, tmpDir } from '../helpers/qemu';
import { passphrase, runOk, secretArgs } from '../crypto/util';
import { CHROMIUM, WebviewHarness } from './harness';

const CS = 65536;
const MIB = 2 ** 20;
const TIB = 2 ** 40;
const haveBrowser = fs.existsSync(CHROMIUM);
interface QemuMapEntry { start: number; length: number; depth: number; present: boolean; zero: boolean; data: boolean; offset?: number }
interface Run { start: number; end: number; kind: GuestRunKind; depth: number }

/** What qemu-img map says a range reads from, in the map's words. */
function qemuKind(e: QemuMapEntry): GuestRunKind {
  if (!e.present) return 'unallocated';
  if (e.zero) return 'zero';
  if (e.depth > 0) return 'backing';
  return e.offset === undefined ? 'compressed' : 'data';
}
const ORDER: GuestRunKind[] = ['data', 'compressed', 'encrypted', 'backing', 'zero', 'unallocated'];

/** qemu-img map's entries as runs of one kind (and one backing depth), adjacent ones merged. */
function qemuRuns(file: string): Run[] {
  const out: Run[] = [];
  for (const e of JSON.parse(qemuImg('map', '--output=json', file)) as QemuMapEntry[]) {
    const kind = qemuKind(e), depth = kind === 'backing' ? e.depth : 0;
    const last = out[out.length - 1];
    if (last && last.kind === kind && last.depth === depth && last.end === e.start) last.end += e.length;
    else out.push({ start: e.start, end: e.start + e.length, kind, depth });
  }
  return out;
}

let rid = 1;
async function runs(vm: ViewModel, start: number, length: number, buckets: number): Promise<GuestRunsReply> {
  const r = await vm.handle({ type: 'getGuestRuns', requestId: rid++, start, length, buckets });
  assert.ok(r && r.type === 'guestRuns', `reply: ${JSON.stringify(r)}`);
  return r;
}

function makeChain(dir: string): { base: string; mid: string; top: string } {
  const base = path.join(dir, 'base.qcow2'), mid = path.join(dir, 'mid.qcow2'), top = path.join(dir, 'top.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', base, '16M');
  qemuIo(base, ['write -P 0x11 0 128k', 'write -P 0x12 8M 64k', 'write -P 0x13 12M 64k']);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', mid);
  qemuIo(mid, ['write -P 0x22 4M 64k', 'write -z 8M 64k']);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', top);
  qemuIo(top, ['write -P 0xab 1M 192k', 'write -c -P 0xcd 2M 64k', 'write -z 3M 64k', 'write -P 0xac 16320k 64k']);
  return { base, mid, top };
}

describe('guest runs (host side)', { timeout: 120000 }, () => {
  let dir: string, chain: ReturnType<typeof makeChain>, sparse: string;
  let vm: ViewModel, big: ViewModel;
  before(async () => {
    dir = tmpDir();
    chain = makeChain(dir);
    sparse = path.join(dir, 'sparse.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', sparse, '1T');
    qemuIo(sparse, ['write -P 0x01 1M 64k', 'write -P 0x02 1088k 64k', `write -P 0x03 ${300 * 2 ** 30} 128k`, 'write -c -P 0x04 5G 64k', `write -P 0x05 ${TIB - CS} 64k`]);
    vm = await ViewModel.open(chain.top);
    big = await ViewModel.open(sparse);
  });
  after(async () => {
    await vm?.close();
    await big?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('at one cluster per cell, the cells are qemu-img map\'s entries: this file, compressed, zero, each backing depth, unallocated', async () => {
    const r = await runs(vm, 0, 16 * MIB, 256);
    assert.equal(r.bucketBytes, CS);
    assert.equal(r.buckets.length, 256);
    const expected = qemuRuns(chain.top);
    const got: Run[] = [];
    for (const c of r.buckets) {
      const s = c.at - (c.at % CS), last = got[got.length - 1];
      const depth = c.kind === 'backing' ? c.depth : 0;
      if (last && last.kind === c.kind && last.depth === depth && last.end === s) last.end += CS;
      else got.push({ start: s, end: s + CS, kind: c.kind, depth });
    }
    assert.deepEqual(got, expected);
    // the chain is what the image says: both backing depths, the zero cluster of mid masking base's data
    assert.ok(expected.some(x => x.kind === 'backing' && x.depth === 1) && expected.some(x => x.kind === 'backing' && x.depth === 2));
    assert.equal(expected.find(x => x.start === 8 * MIB)?.kind, 'zero');
    assert.equal(r.chainDepth, 2);
  });

  it('byte counts and this file\'s runs match qemu-img map', async () => {
    const map = JSON.parse(qemuImg('map', '--output=json', chain.top)) as QemuMapEntry[];
    const r = await runs(vm, 0, 16 * MIB, 7);
    const sum = (f: (e: QemuMapEntry) => boolean) => map.filter(f).reduce((a, e) => a + e.length, 0);
    assert.equal(r.bytes.data, sum(e => qemuKind(e) === 'data'));
    assert.equal(r.bytes.compressed, sum(e => qemuKind(e) === 'compressed'));
    assert.equal(r.bytes.zero, sum(e => qemuKind(e) === 'zero'));
    assert.equal(r.bytes.unallocated, sum(e => !e.present));
    assert.equal(r.backingByDepth[1], sum(e => qemuKind(e) === 'backing' && e.depth === 1));
    assert.equal(r.backingByDepth[2], sum(e => qemuKind(e) === 'backing' && e.depth === 2));
    assert.equal(r.allocatedBytes, 192 * 1024 + CS + CS); // 1M+192k, the compressed cluster, the last cluster
    assert.equal(r.allocatedRuns, 3); // 1M…1M+192k, the compressed cluster at 2M, the last cluster
  });

  it('a 1 TiB sparse disk in a few thousand cells: each cell shows what matters most in it, per qemu-img map', async () => {
    const map = JSON.parse(qemuImg('map', '--output=json', sparse)) as QemuMapEntry[];
    const r = await runs(big, 0, TIB, 4096);
    assert.equal(r.bucketBytes, TIB / 4096);
    assert.equal(r.buckets.length, 4096);
    for (let i = 0; i < 4096; i++) {
      const s = i * r.bucketBytes, e = s + r.bucketBytes;
      const inCell = map.filter(m => m.start < e && m.start + m.length > s);
      const best = inCell.map(qemuKind).sort((a, b) => ORDER.indexOf(a) - ORDER.indexOf(b))[0];
      assert.equal(r.buckets[i].kind, best, `cell ${i}`);
      const first = inCell.find(m => qemuKind(m) === best)!;
      assert.equal(r.buckets[i].at, Math.max(s, first.start), `cell ${i} starts its kind`);
    }
    const present = map.filter(m => m.present);
    assert.equal(r.allocatedBytes, present.reduce((a, m) => a + m.length, 0));
    // 1M and 1088k touch: one run; then 300 GiB, 5 GiB (compressed), the last cluster
    assert.equal(r.allocatedRuns, 4);
    assert.equal(r.bytes.compressed, CS);
  });

  it('an encrypted image\'s allocated data is shown as encrypted (per qemu-img map with the key)', async () => {
    const enc = path.join(dir, 'enc.qcow2'), pass = passphrase('guestmap');
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...secretArgs(['sec0', pass]), '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', enc, '4M']);
    const opts = `driver=qcow2,file.filename=${enc},encrypt.key-secret=sec0`;
    await runOk('qemu-io', [...secretArgs(['sec0', pass]), '--image-opts', opts, '-c', 'write -P 0x71 1M 128k']);
    const map = JSON.parse(await runOk('qemu-img', ['map', '--output=json', ...secretArgs(['sec0', pass]), '--image-opts', opts])) as QemuMapEntry[];
    const o = await ViewModel.open(enc); // locked: the mapping needs no key
    try {
      const r = await runs(o, 0, 4 * MIB, 64);
      const data = map.filter(e => e.present && e.data);
      assert.deepEqual(data.map(e => [e.start, e.length]), [[MIB, 128 * 1024]]);
      assert.equal(r.bytes.encrypted, 128 * 1024);
      assert.equal(r.bytes.data, 0);
      assert.deepEqual(r.buckets.map((c, i) => c.kind === 'encrypted' ? i : -1).filter(i => i >= 0), [16, 17]);
      assert.equal(r.allocatedRuns, 1);
    } finally {
      await o.close();
    }
  });

  it('never answers with more cells than MAX_GUEST_BUCKETS, nor cells under a sector, and clamps to the disk', async () => {
    const r = await runs(big, 0, TIB, 10 ** 9);
    assert.ok(r.buckets.length <= MAX_GUEST_BUCKETS);
    const tiny = await runs(vm, 0, 4096, 4096);
    assert.equal(tiny.bucketBytes, 512);
    assert.equal(tiny.buckets.length, 8);
    // cells keep the size asked for at the disk's end: 10 MiB in 2 cells from 15 MiB is one 5 MiB cell cut to 1 MiB
    const past = await runs(vm, 15 * MIB, 10 * MIB, 2);
    assert.equal(past.length, MIB);
    assert.equal(past.bucketBytes, 5 * MIB);
    assert.equal(past.buckets.length, 1);
    assert.equal(past.buckets[0].kind, 'data'); // the last cluster, written in top.qcow2
    // a disk that is not a whole number of clusters: its last cell is cut, the others keep one cluster
    const odd = path.join(dir, 'odd.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', odd, String(MIB + 512));
    qemuIo(odd, [`write -P 0x77 ${MIB} 512`]);
    const o = await ViewModel.open(odd);
    try {
      const r = await runs(o, 0, 17 * CS, 17);
      assert.equal(r.bucketBytes, CS);
      assert.equal(r.length, MIB + 512);
      assert.deepEqual(r.buckets.map(c => [c.at, c.kind]), [...Array.from({ length: 16 }, (_, i) => [i * CS, 'unallocated']), [MIB, 'data']]);
    } finally {
      await o.close();
    }
    const none = await runs(vm, 20 * MIB, MIB, 4);
    assert.equal(none.buckets.length, 0);
  });
});

describe('guest-disk map and backing chain (chromium)', { skip: haveBrowser ? false : `${CHROMIUM} is missing`, timeout: 120000 }, () => {
  const h = new WebviewHarness();
  let dir: string, chain: ReturnType<typeof makeChain>, broken: string;
  let page: Page;

  before(async () => {
    dir = tmpDir();
    chain = makeChain(dir);
    const gone = path.join(dir, 'gone.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', gone, '16M');
    broken = path.join(dir, 'broken.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', gone, '-F', 'qcow2', broken);
    fs.rmSync(gone);
    await h.addImage('main', chain.top);
    await h.addImage('broken', broken);
    await h.start();
    page = await h.open('main');
    page.setDefaultTimeout(10000);
    await page.waitForFunction(() => document.querySelectorAll('.guest-runs li').length > 0);
  });

  after(async () => {
    if (page) {
      fs.mkdirSync(path.join(ROOT, 'test-out'), { recursive: true });
      await page.screenshot({ path: path.join(ROOT, 'test-out', 'guest-map.png') }).catch(() => undefined);
    }
    await h.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const textRuns = () => page.$$eval('.guest-runs li[data-kind]', lis => lis.map(li => ({
    start: Number((li as HTMLElement).dataset.start), end: Number((li as HTMLElement).dataset.end),
    kind: (li as HTMLElement).dataset.kind, depth: Number((li as HTMLElement).dataset.depth),
  })));
  const canvasData = () => page.$eval('canvas.guest-canvas', c => ({ ...(c as HTMLCanvasElement).dataset }));

  it('draws the whole disk, its text alternative matching qemu-img map, with a summary line', async () => {
    const d = await canvasData();
    assert.equal(Number(d.bucketBytes), CS, `a 16 MiB disk fits at one cluster a cell (cols ${d.cols})`);
    assert.deepEqual(await textRuns(), qemuRuns(chain.top));
    // the summary is its own request: wait until it has answered
    await page.waitForFunction(() => !document.querySelector('.guest-summary')?.textContent?.startsWith('Reading'));
    assert.equal(await page.textContent('.guest-summary'), '320 KiB of 16 MiB allocated in 3 runs · 128 KiB zero · 256 KiB from backing files');
    assert.equal(await page.getAttribute('canvas.guest-canvas', 'role'), 'img');
    assert.ok(await page.getAttribute('.guest-scroll', 'aria-label'));
    assert.equal(await page.getAttribute('.guest-scroll', 'aria-describedby'), 'guest-map-runs');
    const legend = await page.$$eval('.guest-legend .legend-item', items => items.map(i => (i as HTMLElement).dataset.kind));
    assert.deepEqual(legend, ['data', 'compressed', 'backing-1', 'backing-2', 'zero', 'unallocated']);
    assert.match((await page.textContent('.guest-legend'))!, /Backing depth 1 \(mid\.qcow2\).*Backing depth 2 \(base\.qcow2\)/);
  });

  it('a click on a cell shows its bytes in the Disk view and selects its L2 entry in the tree', async () => {
    const d = await canvasData();
    const cols = Number(d.cols), cell = Number(d.cell);
    const i = (2 * MIB) / CS; // the compressed cluster
    await page.click('canvas.guest-canvas', { position: { x: (i % cols) * cell + cell / 2, y: Math.floor(i / cols) * cell + cell / 2 } });
    await page.waitForFunction(() => /^0x200000: compressed cluster at 0x[0-9a-f]+ in this file — L1\[0\] → L2\[0x20\]$/.test(document.querySelector('.hex-where')?.textContent ?? ''));
    await page.waitForSelector('[role=treeitem][aria-selected=true] >> .tree-label:text-is("L2[0x20]")');
    assert.equal(await page.getAttribute('button:text-is("Disk")', 'aria-pressed'), 'true');
    assert.match((await page.textContent('.guest-hover'))!, /^0x200000 – 0x210000 \(64 KiB\): compressed$/);
  });

  it('zooms with + and -, Fit shows the whole disk, arrows move and Enter picks', async () => {
    await page.waitForFunction(() => document.querySelector<HTMLCanvasElement>('canvas.guest-canvas')?.dataset.selectedCell === String(0x20));
    await page.waitForFunction(() => !(document.querySelector('.hex-status')?.textContent ?? '').includes('Loading'));
    await page.focus('.guest-scroll');
    // the whole 16 MiB disk is shown at one cluster a cell: - does not go further out, + not under a cluster
    await page.keyboard.press('-');
    await page.keyboard.press('+');
    assert.equal(Number((await canvasData()).bucketBytes), CS);
    await page.keyboard.press('ArrowRight');
    assert.equal(await page.textContent('.guest-hover'), '0x210000 – 0x220000 (64 KiB): unallocated (reads zeros)');
    // the canvas is redrawn on the next frame: its dataset follows the hover text a frame later
    await page.waitForFunction(() => document.querySelector<HTMLCanvasElement>('canvas.guest-canvas')?.dataset.selectedCell === String(0x21));
    await page.keyboard.press('ArrowLeft');
    assert.equal(await page.textContent('.guest-hover'), '0x200000 – 0x210000 (64 KiB): compressed');
    await page.keyboard.press('Home');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => (document.querySelector('.hex-where')?.textContent ?? '').startsWith('0x0: from backing file base.qcow2 at depth 2'));
    await page.keyboard.press('End');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => /^0xff0000: data at 0x[0-9a-f]+ in this file — L1\[0\] → L2\[0xff\]$/.test(document.querySelector('.hex-where')?.textContent ?? ''));
    await page.waitForSelector('[role=treeitem][aria-selected=true] >> .tree-label:text-is("L2[0xff]")');
  });

  it('zooms in on a large disk down to one cluster a cell', async () => {
    const big = path.join(dir, 'big.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', big, '1T');
    qemuIo(big, ['write -P 0x01 1M 64k', `write -P 0x05 ${TIB - CS} 64k`]);
    await h.addImage('big', big);
    const p = await h.open('big');
    try {
      await p.waitForFunction(() => document.querySelectorAll('.guest-runs li').length > 0);
      await p.waitForFunction(() => !document.querySelector('.guest-summary')?.textContent?.startsWith('Reading'));
      assert.equal(await p.textContent('.guest-summary'), '128 KiB of 1 TiB allocated in 2 runs');
      const d0 = await p.$eval('canvas.guest-canvas', c => ({ ...(c as HTMLCanvasElement).dataset }));
      const cells = Number(d0.cols) * 4;
      assert.ok(Number(d0.bucketBytes) * cells >= TIB && Number(d0.bucketBytes) * cells / 2 < TIB, 'Fit: the smallest power of two that shows the disk');
      // pick the first cell: its first allocated byte (1 MiB) is where the zoom stays
      await p.click('canvas.guest-canvas', { position: { x: 3, y: 3 } });
      await p.waitForFunction(() => (document.querySelector('.hex-where')?.textContent ?? '').startsWith('0x100000: data at'));
      await p.focus('.guest-scroll');
      // the fitted cell size as it stands now: the map re-fits when its width changes (the panels
      // beside it fill in as their replies arrive, sooner or later on a loaded machine)
      const fitted = () => p.$eval('canvas.guest-canvas', c => ({ bucketBytes: Number((c as HTMLCanvasElement).dataset.bucketBytes), cells: Number((c as HTMLCanvasElement).dataset.cols) * 4 }));
      const f0 = await fitted();
      assert.ok(f0.bucketBytes * f0.cells >= TIB && f0.bucketBytes * f0.cells / 2 < TIB, `Fit: ${JSON.stringify(f0)}`);
      let steps = 0;
      while (Number(await p.$eval('canvas.guest-canvas', c => (c as HTMLCanvasElement).dataset.bucketBytes)) > CS) {
        await p.click('button[aria-label="Zoom in the disk map"]');
        assert.ok(++steps < 40);
      }
      assert.equal(steps, Math.log2(f0.bucketBytes / CS));
      // the runs shown are a window of the disk at cluster cells, around the disk's start
      await p.waitForFunction(m => document.querySelector(`.guest-runs li[data-kind="data"][data-start="${m}"][data-end="${m + 65536}"]`) !== null, MIB);
      const shown = await p.$$eval('.guest-runs li[data-kind]', lis => lis.map(li => `${(li as HTMLElement).dataset.kind}@${(li as HTMLElement).dataset.start}`));
      assert.ok(shown.includes(`data@${MIB}`), shown.join(' '));
      // a highlighted range away from the window zoomed in on brings itself into view
      await p.evaluate(t => document.dispatchEvent(new CustomEvent('qcow2lens:highlightGuest', { detail: { ranges: [{ start: t, length: 4096 }], label: 'end' } })), TIB - CS);
      await p.waitForFunction(() => document.querySelector<HTMLCanvasElement>('canvas.guest-canvas')?.dataset.highlighted === '1');
      assert.ok(Number(await p.$eval('canvas.guest-canvas', c => (c as HTMLCanvasElement).dataset.start)) > TIB / 2);
      await p.focus('.guest-scroll');
      await p.keyboard.press('Home');
      await p.waitForFunction(() => document.querySelector<HTMLCanvasElement>('canvas.guest-canvas')?.dataset.start === '0');
      await p.waitForFunction(() => document.querySelectorAll('.guest-runs li').length > 0); // Home's window has arrived
      await p.keyboard.press('End');
      const lastShown = (t: number) => document.querySelector<HTMLCanvasElement>('canvas.guest-canvas')!.dataset.start !== '0' && Array.from(document.querySelectorAll<HTMLElement>('.guest-runs li[data-kind="data"]')).some(li => li.dataset.start === String(t));
      await p.waitForFunction(lastShown, TIB - CS);
      // a narrower map (fewer cells a row, as when a scrollbar comes and goes) keeps the selected last cluster in view
      const cols0 = Number(await p.$eval('canvas.guest-canvas', c => (c as HTMLCanvasElement).dataset.cols));
      const vp = p.viewportSize()!;
      await p.setViewportSize({ width: vp.width - 160, height: vp.height });
      await p.waitForFunction(c => Number(document.querySelector<HTMLCanvasElement>('canvas.guest-canvas')!.dataset.cols) < c, cols0);
      const w = await p.$eval('canvas.guest-canvas', c => ({ start: Number((c as HTMLCanvasElement).dataset.start), cols: Number((c as HTMLCanvasElement).dataset.cols) }));
      assert.ok(w.start + w.cols * 4 * CS >= TIB, `the window ${JSON.stringify(w)} still reaches the disk's last cluster`);
      await p.waitForFunction(lastShown, TIB - CS);
      await p.setViewportSize(vp);
      await p.click('button[aria-label="Show the whole disk"]');
      const f1 = await fitted();
      assert.ok(f1.bucketBytes * f1.cells >= TIB && f1.bucketBytes * f1.cells / 2 < TIB, `Show the whole disk: ${JSON.stringify(f1)}`);
    } finally {
      await p.close();
    }
  });

  it('draws the ranges of a qcow2lens:highlightGuest event, and clears them on an empty one', async () => {
    await page.evaluate(() => document.dispatchEvent(new CustomEvent('qcow2lens:highlightGuest', { detail: { ranges: [{ start: 4 * 1024 * 1024, length: 65536 }, { start: 8 * 1024 * 1024 - 100, length: 200 }], label: '/etc/hostname' } })));
    await page.waitForFunction(() => document.querySelector<HTMLCanvasElement>('canvas.guest-canvas')?.dataset.highlighted === '3');
    assert.equal(await page.textContent('.guest-highlight-line'), 'Highlighted /etc/hostname: 2 ranges, 64.2 KiB');
    assert.ok(await page.isVisible('.guest-legend [data-kind="highlight"]'));
    await page.evaluate(() => document.dispatchEvent(new CustomEvent('qcow2lens:highlightGuest', { detail: { ranges: [], label: '' } })));
    await page.waitForFunction(() => document.querySelector<HTMLCanvasElement>('canvas.guest-canvas')?.dataset.highlighted === '0');
    assert.equal(await page.isVisible('.guest-highlight-line'), false);
    assert.equal(await page.$('.guest-legend [data-kind="highlight"]'), null);
  });

  it('colours the hex view\'s bytes by backing depth', async () => {
    await page.fill('input.goto', '0x400000');
    await page.press('input.goto', 'Enter');
    await page.waitForSelector('.hb.src-depth-1[data-offset="4194304"]');
    // the disk map marks the cell of the byte selected in the Disk view
    await page.waitForFunction(() => document.querySelector<HTMLCanvasElement>('canvas.guest-canvas')?.dataset.selectedCell === '64');
    await page.fill('input.goto', '0x0');
    await page.press('input.goto', 'Enter');
    await page.waitForSelector('.hb.src-depth-2[data-offset="0"]');
    const [c1, c2] = await page.evaluate(() => [4194304, 0].map(o => getComputedStyle(document.querySelector(`.hb[data-offset="${o}"]`) ?? document.body).color));
    assert.notEqual(c1, c2);
  });

  it('draws the backing chain as links that open each image, and a missing file as a broken link with the reason', async () => {
    const links = await page.$$eval('.chain-link', lis => lis.map(li => li.textContent));
    assert.deepEqual(links, ['top.qcow2qcow2 · 16 MiB · depth 0 (this image)', 'mid.qcow2qcow2 · 16 MiB · depth 1', 'base.qcow2qcow2 · 16 MiB · depth 2']);
    await page.click('.chain-link[data-depth="2"] button');
    await page.waitForFunction(() => (window as unknown as { __posted: Array<{ type: string; command?: string }> }).__posted.some(m => m.type === 'runCommand' && m.command === 'openBacking'));
    const posted = (h.received.get('main') ?? []).filter(m => m.type === 'runCommand');
    assert.deepEqual(posted.at(-1), { type: 'runCommand', command: 'openBacking', args: { path: chain.base } });
    const p = await h.open('broken');
    try {
      await p.waitForSelector('.chain-broken');
      const text = (await p.textContent('.chain-broken'))!;
      assert.match(text, /✖ gone\.qcow2/);
      assert.match(text, /broken: .*gone\.qcow2.*(No such file|not found|Could not open)/i);
      assert.equal(await p.$('.chain-broken button'), null);
    } finally {
      await p.close();
    }
  });

  it('keeps every legend colour distinct in a light theme', async () => {
    // VS Code's Light Modern values for the variables the legend uses
    await page.evaluate(() => {
      const s = document.documentElement.style;
      const light: Record<string, string> = {
        '--vscode-charts-blue': '#1a85ff', '--vscode-terminal-ansiCyan': '#0598bc', '--vscode-charts-purple': '#652d90', '--vscode-charts-orange': '#d18616',
        '--vscode-charts-green': '#388a34', '--vscode-charts-yellow': '#bf8803', '--vscode-terminal-ansiMagenta': '#bc05bc', '--vscode-disabledForeground': 'rgba(97, 97, 97, 0.5)',
        '--vscode-editorWidget-background': '#f8f8f8', '--vscode-editor-background': '#ffffff', '--vscode-foreground': '#3b3b3b',
      };
      for (const [k, v] of Object.entries(light)) s.setProperty(k, v);
      document.body.className = 'vscode-light';
    });
    const colours = await page.evaluate(() => ['data', 'compressed', 'encrypted', 'backing-1', 'backing-2', 'backing-3', 'backing-4', 'zero', 'unallocated'].map(k => {
      const sw = document.createElement('span');
      sw.className = `swatch guest-${k}`;
      document.querySelector('.guest-legend')!.append(sw);
      const c = getComputedStyle(sw).backgroundColor;
      sw.remove();
      return c;
    }));
    assert.equal(new Set(colours).size, colours.length, colours.join(' '));
    assert.ok(!colours.includes('rgb(255, 255, 255)'), 'no legend colour is the editor background');
    assert.deepEqual(h.pageErrors, []);
  });
});
