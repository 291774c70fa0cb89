/**
 * The editor's error states in the real webview (Debian chromium): files the engine cannot open
 * (empty, random bytes, cut inside the header) show the engine's error in the tab, naming the
 * structure and offset, with a keyboard-reachable "Reopen With…"; a file cut through the snapshot
 * table shows the check's findings and never a "Loading…" that does not end; the check headline
 * says only what the counts show. qemu-img judges the same files (it refuses or reports them too).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { checkForEditor } from '../../src/extension/checkResult';
import { verdict } from '../../webview/checkPanel';
import type { Qcow2Error } from '../../src/engine/errors';
import { pokeBytes, qemuImg, qemuImgStatus, qemuIo, readBE64, ROOT, tmpDir } from '../helpers/qemu';
import { CHROMIUM, WebviewHarness } from './harness';

const haveBrowser = fs.existsSync(CHROMIUM);

/** Bytes from a seeded xorshift generator: "random" content that is the same every run. */
function noise(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

/** An image with data and one internal snapshot, made by QEMU. */
function qemuImage(p: string): void {
  qemuImg('create', '-q', '-f', 'qcow2', p, '16M');
  qemuIo(p, ['write -P 0x11 0 1M']);
  qemuImg('snapshot', '-c', 's1', p);
}

describe('webview error states in chromium', { skip: haveBrowser ? false : `${CHROMIUM} is missing (apt-get install chromium)`, timeout: 180000 }, () => {
  const h = new WebviewHarness();
  let dir: string;
  const files: Record<string, string> = {};
  const errors: Record<string, Qcow2Error> = {};
  let truncatedOpens = false;

  before(async () => {
    dir = tmpDir();
    files.empty = path.join(dir, 'empty.qcow2');
    fs.writeFileSync(files.empty, '');
    files.random = path.join(dir, 'random.qcow2');
    fs.writeFileSync(files.random, noise(65536, 9));
    const good = path.join(dir, 'good.qcow2');
    qemuImage(good);
    files.headerCut = path.join(dir, 'header-cut.qcow2');
    fs.writeFileSync(files.headerCut, fs.readFileSync(good).subarray(0, 50)); // inside the 72-byte v2 header
    files.tableCut = path.join(dir, 'table-cut.qcow2');
    const snapshotsOffset = Number(readBE64(good, 64)); // header.snapshots_offset
    fs.writeFileSync(files.tableCut, fs.readFileSync(good).subarray(0, snapshotsOffset + 20)); // through the first entry
    for (const key of ['empty', 'random', 'headerCut'] as const) {
      assert.notEqual(qemuImgStatus('info', '-f', 'qcow2', files[key]).status, 0, `qemu-img refuses ${key} too`);
      errors[key] = await h.addUnopenable(key, files[key]);
    }
    // the engine may open a file cut through its snapshot table (qemu-img does) or refuse it: both are shown
    try {
      await h.addImage('tableCut', files.tableCut);
      truncatedOpens = true;
    } catch {
      errors.tableCut = await h.addUnopenable('tableCut', files.tableCut);
    }
    await h.start();
  });

  after(() => h.stop({ dir }));

  /** No visible element of the page says it is still loading. */
  const stillLoading = (p: Page) => p.evaluate(() => Array.from(document.querySelectorAll<HTMLElement>('body *'))
    .filter(e => e.offsetParent !== null && e.children.length === 0 && /Loading|Opening image/.test(e.textContent ?? '')).map(e => e.textContent));

  for (const [key, what] of [['empty', 'an empty file'], ['random', 'random bytes'], ['headerCut', 'a file cut inside the header']] as const) {
    it(`${what}: the engine's error in the tab (structure and offset) with Reopen With… reachable by keyboard`, async () => {
      const p = await h.open(key);
      try {
        p.setDefaultTimeout(15000);
        assert.equal(await p.getAttribute('body', 'data-ready'), 'error');
        const e = errors[key];
        const alert = (await p.textContent('.fatal [role=alert]'))!;
        assert.ok(alert.includes(e.message), `the alert carries the engine's message: ${alert}`);
        const where = (await p.textContent('.fatal-where'))!;
        assert.ok(where.includes(e.structure), `names ${e.structure}: ${where}`);
        assert.ok(where.includes(`0x${e.hostOffset!.toString(16)}`), `names offset ${e.hostOffset}: ${where}`);
        for (const pane of ['.tree-pane', '.map-pane', '.hex-pane']) assert.equal(await p.locator(pane).isVisible(), false, `${pane} is hidden`);
        assert.deepEqual(await stillLoading(p), []);
        // keyboard: the first Tab stop is the named button; Enter asks the host for VS Code's picker
        await p.keyboard.press('Tab');
        assert.equal(await p.evaluate(() => document.activeElement?.textContent), 'Reopen With…');
        assert.equal(await p.getByRole('button', { name: 'Reopen With…' }).count(), 1);
        await p.keyboard.press('Enter');
        await p.waitForFunction(() => (window as unknown as { __posted: { type: string; command?: string }[] }).__posted.some(m => m.type === 'runCommand' && m.command === 'reopenWith'));
        // the check's result for such a file: it could not run, and the headline says so
        const r = await checkForEditor(files[key]);
        await h.push(p, { type: 'checkResult', ...r });
        await p.locator('.check-summary').waitFor();
        const headline = (await p.textContent('.check-summary strong'))!;
        assert.equal(headline, 'The check could not run: the image could not be opened');
        assert.doesNotMatch((await p.textContent('.check-summary'))!, /Corruptions found|0 corruption/);
        assert.match((await p.textContent('.finding'))!, new RegExp(e.structure.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
        assert.deepEqual(await p.evaluate(() => (window as unknown as { __cspViolations: string[] }).__cspViolations), []);
        fs.mkdirSync(path.join(ROOT, 'test-out'), { recursive: true });
        await p.screenshot({ path: path.join(ROOT, 'test-out', `webview-error-${key}.png`) });
      } finally {
        await p.close();
      }
    });
  }

  it('a file cut through its snapshot table shows the check\'s findings, never an endless "Loading…"', async () => {
    const theirs = qemuImgStatus('check', files.tableCut);
    assert.notEqual(theirs.status, 0, 'qemu-img check reports the truncated file');
    const p = await h.open('tableCut');
    try {
      p.setDefaultTimeout(20000);
      assert.equal(await p.getAttribute('body', 'data-ready'), truncatedOpens ? 'true' : 'error');
      const r = await checkForEditor(files.tableCut);
      assert.equal(r.summary.clean, false, 'not clean, as qemu-img says');
      assert.ok(r.findings.length > 0);
      await h.push(p, { type: 'checkResult', ...r });
      await p.locator('.finding').first().waitFor();
      assert.equal(await p.locator('.finding').count(), r.findings.length);
      const head = (await p.textContent('.check-summary'))!;
      if (r.summary.corruptions === 0) assert.doesNotMatch(head, /Corruptions found/);
      // whatever was loading ends: in a loaded tree and map, or in the error
      await p.waitForFunction(() => !Array.from(document.querySelectorAll<HTMLElement>('body *'))
        .some(e => e.offsetParent !== null && e.children.length === 0 && /Loading|Opening image/.test(e.textContent ?? '')));
      if (!truncatedOpens) assert.match((await p.textContent('.fatal-where'))!, new RegExp(errors.tableCut.structure.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    } finally {
      await p.close();
    }
    assert.deepEqual(h.pageErrors, []);
  });
});

describe('the check headline says only what the counts show', () => {
  it('clean, leaks, corruptions and an image that cannot be opened, each as qemu-img counts it', async () => {
    const dir = tmpDir();
    try {
      const clean = path.join(dir, 'clean.qcow2');
      qemuImage(clean);
      const leak = path.join(dir, 'leak.qcow2');
      qemuImg('create', '-q', '-f', 'qcow2', leak, '16M');
      qemuIo(leak, ['write -P 0x77 0 64k']);
      // zero L2 entry 0: its data cluster keeps refcount 1 with no user (a leak)
      const l2 = Number(readBE64(leak, Number(readBE64(leak, 40))) & 0x00fffffffffffe00n);
      pokeBytes(leak, l2, Buffer.alloc(8));
      const corrupt = path.join(dir, 'corrupt.qcow2');
      qemuImg('create', '-q', '-f', 'qcow2', corrupt, '16M');
      qemuIo(corrupt, ['write -P 0x77 0 64k']);
      // refcount 0 on the cluster of the L1 table, which is in use (a corruption)
      const l1 = Number(readBE64(corrupt, 40));
      const block = Number(readBE64(corrupt, Number(readBE64(corrupt, 48))));
      pokeBytes(corrupt, block + (l1 / 65536) * 2, [0, 0]);
      const empty = path.join(dir, 'empty.qcow2');
      fs.writeFileSync(empty, '');

      const json = (p: string) => JSON.parse(qemuImgStatus('check', '--output=json', p).stdout) as { leaks?: number; corruptions?: number };
      const expect: Array<[string, string, string]> = [[clean, 'clean', 'No errors found'], [leak, 'leaks', 'Leaked clusters found'], [corrupt, 'corrupt', 'Corruptions found']];
      for (const [p, kind, headline] of expect) {
        const r = await checkForEditor(p);
        const q = json(p);
        assert.equal(r.summary.leaks, q.leaks ?? 0, `${kind}: leaks as qemu-img counts them`);
        assert.equal(r.summary.corruptions, q.corruptions ?? 0, `${kind}: corruptions as qemu-img counts them`);
        assert.deepEqual(verdict(r.summary, r.findings), { kind, headline });
      }
      const r = await checkForEditor(empty);
      assert.equal(verdict(r.summary, r.findings).kind, 'not-run');
      assert.equal(r.findings[0].kind, 'open-failed');
      // a check that hit errors of its own without finding corruptions could not complete
      assert.equal(verdict({ clean: false, leaks: 0, corruptions: 0, checkErrors: 2 }, []).headline, 'The check could not complete');
      assert.equal(verdict({ clean: false, leaks: 0, corruptions: 0, checkErrors: 0 }, [{ kind: 'missing-backing', severity: 'error', structure: 'backing file', message: 'x', explanation: 'y' }]).kind, 'problems');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
