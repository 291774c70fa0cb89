/**
 * The Guest section in the real webview (Debian chromium, the real ViewModel behind it, as
 * test/webview/ does): expanding it by keyboard shows the partitions and the files mkfs.ext4 -d
 * stored, with sizes; clicking a file asks the host to open it in a tab (runCommand openGuestFile
 * with its partition and path), and its details offer Copy Out… for that path.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { formatBytes } from '../../src/engine/units';
import { qemuImg, tmpDir } from '../helpers/qemu';
import { buildDisk, run } from '../guest/common';
import { CHROMIUM, WebviewHarness } from './harness';

const haveBrowser = fs.existsSync(CHROMIUM);
type Posted = { type: string; command?: string; args?: Record<string, unknown> };

describe('Guest section in the webview', { skip: haveBrowser ? false : `${CHROMIUM} is missing`, timeout: 120000 }, () => {
  const h = new WebviewHarness();
  let dir: string, page: Page;
  const fstab = 'UUID=42 / ext4 defaults 0 1\n';

  before(async () => {
    dir = tmpDir('qcow2-lens-guest-webview-');
    const src = path.join(dir, 'src');
    fs.mkdirSync(path.join(src, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(src, 'etc', 'fstab'), fstab);
    const fsImg = path.join(dir, 'p1.ext4');
    run('mkfs.ext4', ['-q', '-F', '-d', src, fsImg, '16M']);
    const raw = path.join(dir, 'disk.raw');
    buildDisk(raw, 20, 'gpt', [{ start: 2048, size: 16 * 2048, type: '8300', image: fsImg }]);
    const image = path.join(dir, 'disk.qcow2');
    qemuImg('convert', '-q', '-O', 'qcow2', raw, image);
    await h.addImage('main', image);
    await h.start();
    page = await h.open('main');
    page.setDefaultTimeout(15000);
  });
  after(async () => {
    await h.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const treeItem = (label: string) => page.locator('[role=treeitem] > .tree-row', { has: page.locator(`.tree-label:text-is("${label}")`) }).first();
  const posted = () => page.evaluate(() => (window as unknown as { __posted: Posted[] }).__posted);

  it('expands to the guest files with their sizes; a click opens the file through the host, Copy Out… names its path', async () => {
    await treeItem('Guest').click();
    await page.keyboard.press('ArrowRight');
    await treeItem('partition 1').waitFor();
    assert.match((await treeItem('GPT partition table').locator('.tree-desc').textContent())!, /^1 partition\(s\), disk 20 MiB$/);
    assert.match((await treeItem('partition 1').locator('.tree-desc').textContent())!, /^ext4 · 16 MiB$/);
    await treeItem('partition 1').click();
    await page.keyboard.press('ArrowRight');
    await treeItem('etc').waitFor();
    await treeItem('etc').click();
    await page.keyboard.press('ArrowRight');
    await treeItem('fstab').waitFor();
    assert.equal(await treeItem('fstab').locator('.tree-desc').textContent(), formatBytes(Buffer.byteLength(fstab)));
    await treeItem('fstab').click();
    await page.waitForFunction(() => (window as unknown as { __posted: Posted[] }).__posted.some(m => m.type === 'runCommand' && m.command === 'openGuestFile'));
    const open = (await posted()).find(m => m.type === 'runCommand' && m.command === 'openGuestFile')!;
    assert.deepEqual(open.args, { partition: 1, path: '/etc/fstab' });
    await page.getByRole('button', { name: 'Copy Out…' }).click();
    await page.waitForFunction(() => (window as unknown as { __posted: Posted[] }).__posted.some(m => m.type === 'runCommand' && m.command === 'copyOutGuest'));
    assert.deepEqual((await posted()).find(m => m.command === 'copyOutGuest')!.args, { source: '1:/etc/fstab' });
    assert.deepEqual(h.pageErrors, []);
  });
});
