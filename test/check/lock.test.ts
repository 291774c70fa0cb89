/**
 * Check and repair refuse an image a running QEMU holds: `qemu-io` takes the same OFD locks a VM
 * does. The image must be left untouched.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isLockedByQemu } from '../../src/engine/io/lock';
import { cli, qemuImg, qemuIo, sha256, writeBE64 } from '../helpers/qemu';
import { layout, scratchDir } from './common';

async function waitFor(cond: () => boolean, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting for qemu-io to take its locks');
    await new Promise(r => setTimeout(r, 50));
  }
}

test('check and repair refuse an image held by a running qemu-io; the file is untouched', async () => {
  const dir = scratchDir();
  const img = path.join(dir, 'held.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '16M');
  qemuIo(img, ['write -P 1 0 256k']);
  writeBE64(img, layout(img).l2(0) + 8, 0n); // a leak, so there is something to repair
  const before = sha256(fs.readFileSync(img));
  const holder = spawn('qemu-io', ['-c', 'sleep 20000', img], { stdio: 'ignore' });
  try {
    await waitFor(() => isLockedByQemu(img));
    for (const mode of ['leaks', 'all']) {
      const r = cli('check', img, '--repair', mode);
      assert.equal(r.status, 1, `--repair ${mode} must fail`);
      assert.match(r.stderr, /in use by a running QEMU/);
      assert.equal(sha256(fs.readFileSync(img)), before, 'image unchanged');
    }
    // a plain check refuses too, as qemu-img check does without -U ...
    const q = spawnSync('qemu-img', ['check', img]);
    const ro = cli('check', img, '--json');
    assert.equal(ro.status, q.status);
    assert.equal(ro.status, 1);
    assert.match(ro.stderr, /in use by a running QEMU/);
    // ... and -U (force share) checks it anyway, like qemu-img check -U
    const u = cli('check', img, '--json', '-U');
    assert.equal(u.status, spawnSync('qemu-img', ['check', '-U', img]).status);
    assert.equal(u.status, 3);
  } finally {
    holder.kill('SIGKILL');
    await new Promise(r => holder.once('exit', r));
  }
  // once QEMU is gone the repair proceeds
  assert.equal(cli('check', img, '-r', 'leaks').status, 0);
});
