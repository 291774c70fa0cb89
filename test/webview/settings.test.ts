/**
 * The webview applies the host's settings (qcow2Lens.hexView.bytesPerRow, clusterMap.maxClusters,
 * the check-on-open note) at start and live, on a SettingsMessage, in chromium against the real
 * ViewModel on a QEMU-made image. The bytes shown are the ones qemu-io wrote.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { ViewModel, type ViewModelSettings } from '../../src/extension/viewModel';
import { DEFAULT_SETTINGS, webviewSettings } from '../../src/extension/settings';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu';
import { CHROMIUM, WebviewHarness } from './harness';

describe('webview settings in chromium', { skip: fs.existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (apt-get install chromium)`, timeout: 120000 }, () => {
  const h = new WebviewHarness();
  let dir: string, img: string, clusters: number;
  const s: ViewModelSettings = { ...webviewSettings(DEFAULT_SETTINGS), followBackingFiles: true, hexBytesPerRow: 8, clusterMapMaxClusters: 2, checkNote: 'Not checked on open (test).' };
  let page: Page;

  before(async () => {
    dir = tmpDir();
    img = path.join(dir, 'img.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '16M');
    // 0x00..0x3f at guest 0: row widths are visible in the bytes each row starts with
    const pattern = path.join(dir, 'pattern.bin');
    fs.writeFileSync(pattern, Buffer.from(Array.from({ length: 64 }, (_, i) => i)));
    qemuIo(img, [`write -s ${pattern} 0 64`, 'write -P 0x77 64k 64k']);
    clusters = Math.ceil(fs.statSync(img).size / 65536);
    h.models.set('img', await ViewModel.open(img, { settings: () => s }));
    await h.start();
    page = await h.open('img');
    page.setDefaultTimeout(15000);
  });
  after(async () => {
    await h.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const rowStarts = () => page.evaluate(() => Array.from(document.querySelectorAll('.hex-row')).slice(0, 3).map(r => [r.querySelector('.hex-off')?.textContent, r.querySelectorAll('.hb').length]));
  const settingsNow = () => ({ hexBytesPerRow: s.hexBytesPerRow, clusterMapMaxClusters: s.clusterMapMaxClusters });

  it('starts with the row width the settings give, and changes it live', async () => {
    await page.locator('.seg button', { hasText: 'Disk' }).click();
    await page.waitForFunction(() => document.querySelector('.hex-row .hb')?.textContent === '00');
    assert.deepEqual(await rowStarts(), [['0000000000', 8], ['0000000008', 8], ['0000000010', 8]]);
    assert.equal(await page.locator('.hex-row').first().locator('.hb').nth(7).textContent(), '07');
    for (const n of [32, 16] as const) {
      s.hexBytesPerRow = n;
      await h.push(page, { type: 'settings', settings: settingsNow() });
      await page.waitForFunction(w => document.querySelector('.hex-rows')?.getAttribute('data-bytes-per-row') === String(w) && document.querySelectorAll('.hex-row')[0]?.querySelectorAll('.hb').length === w, n);
      const rows = await rowStarts();
      assert.deepEqual(rows, [0, 1, 2].map(r => [(r * n).toString(16).padStart(10, '0'), n]));
      assert.equal(await page.locator('.hex-row').nth(1).locator('.hb').first().textContent(), n.toString(16).padStart(2, '0'), 'row 1 starts with byte n');
    }
  });

  it('shows why the check did not run on open, until a check result arrives', async () => {
    assert.equal(await page.locator('.check-note').textContent(), 'Not checked on open (test).');
    await h.push(page, { type: 'checkResult', summary: { clean: true, leaks: 0, corruptions: 0, checkErrors: 0 }, findings: [] });
    await page.locator('.check-summary').waitFor();
    assert.equal(await page.locator('.check-note').count(), 0);
    // the row width changes with the same message: once it has, the message was applied
    await h.push(page, { type: 'settings', settings: { ...settingsNow(), hexBytesPerRow: 8, checkNote: 'Not checked on open (test).' } });
    await page.locator('.hex-rows[data-bytes-per-row="8"]').waitFor({ state: 'attached' });
    assert.equal(await page.locator('.check-note').count(), 0, 'a late note does not hide a result');
  });

  it('refuses the cluster map over the limit, naming the setting, and draws it when the limit is raised', async () => {
    await page.waitForFunction(() => /Cannot build the cluster map/.test(document.querySelector('.map-message')?.textContent ?? ''));
    assert.match((await page.locator('.map-message').textContent())!, new RegExp(`${clusters} host clusters .*qcow2Lens\\.clusterMap\\.maxClusters: 2`));
    s.clusterMapMaxClusters = clusters;
    await h.push(page, { type: 'settings', settings: settingsNow() });
    await page.locator('.legend-item[data-role="data"]').waitFor();
    assert.equal(await page.locator('.map-message').isHidden(), true);
    assert.deepEqual(h.pageErrors, []);
  });
});
