// The space summary in a real VS Code (code-server, the packaged .vsix, headless chromium): a GPT
// disk with an ext4 partition made by mkfs.ext4 -d opens with its space bar, whose legend has the
// figures `qcow2-lens space --json` prints (in use by guest files, guest free space …), the bar's
// accessible name, and the guest disk-usage panel listing the largest file. Screenshots in dark,
// light and high-contrast themes go to e2e-out/space-*.png.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OUT } from './harness.mjs';
import { clock, finish, openWorkbench, reportFailure, workbenchActions } from './workbench.mjs';

const mark = clock();
fs.mkdirSync(OUT, { recursive: true });
const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'qcow2-lens-space-e2e-'));
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'qcow2-lens-space-src-'));
const run = (cmd, args) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
fs.mkdirSync(path.join(work, 'src', 'etc'), { recursive: true });
fs.writeFileSync(path.join(work, 'src', 'etc', 'fstab'), 'UUID=42 / ext4 defaults 0 1\n');
fs.writeFileSync(path.join(work, 'src', 'big.bin'), Buffer.alloc(2 * 1024 * 1024, 0x5a));
run('mkfs.ext4', ['-q', '-F', '-d', path.join(work, 'src'), path.join(work, 'p1.ext4'), '16M']);
const raw = path.join(work, 'disk.raw');
fs.writeFileSync(raw, '');
fs.truncateSync(raw, 20 * 1024 * 1024);
run('sgdisk', ['-n', `1:2048:${2048 + 16 * 2048 - 1}`, '-t', '1:8300', raw]);
run('dd', [`if=${path.join(work, 'p1.ext4')}`, `of=${raw}`, 'bs=512', 'seek=2048', 'conv=notrunc,sparse', 'status=none']);
const image = path.join(folder, 'guest.qcow2');
run('qemu-img', ['convert', '-q', '-O', 'qcow2', raw, image]);
fs.rmSync(work, { recursive: true, force: true });
const truth = JSON.parse(run('node', ['dist/cli.js', 'space', '--json', image]));
const usedBytes = truth.parts.find(p => p.name === 'active').parts.find(p => p.name === 'in use by files').bytes;
assert.ok(usedBytes >= 2 * 1024 * 1024, 'big.bin is in use');

let wb, ok = false;
try {
  wb = await openWorkbench({ folder, firstRow: 'guest.qcow2', mark });
  const { page, row } = wb;
  const { screenshotThemes, webview, openImage } = workbenchActions(page, { row, mark });

  await openImage('guest.qcow2');
  const space = webview().locator('.space-summary[data-state=ready]');
  await space.waitFor({ timeout: 60000 });
  const used = webview().locator('.space-legend .space-item[data-key=used]');
  assert.equal(Number(await used.getAttribute('data-bytes')), usedBytes, 'the legend has the CLI\'s figure');
  const label = await webview().locator('.space-bar').getAttribute('aria-label');
  assert.match(label, /in use by guest files/);
  mark(`space bar: ${label}`);
  await webview().locator('.disk-usage > summary').click();
  await webview().locator('.du-item[data-path="/big.bin"]').waitFor({ timeout: 30000 });
  mark('disk usage lists /big.bin');
  await screenshotThemes(suffix => page.screenshot({ path: path.join(OUT, `space-${suffix}.png`) }));
  mark('screenshots: e2e-out/space-{dark,light,hc}.png');
  ok = true;
} catch (e) {
  await reportFailure(wb, 'space', e);
} finally {
  await wb?.close();
  if (!process.env.E2E_KEEP) fs.rmSync(folder, { recursive: true, force: true });
}
finish('space', ok, mark);
