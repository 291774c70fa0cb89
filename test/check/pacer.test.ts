/**
 * cancel.ts pacer: long walks in the extension host (the check's usage walk, the space report, the
 * compaction forecast) call it as they go. It must let timers and I/O run while the walk goes on
 * (awaiting promises alone never does), and end the walk once its signal fires.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { isCancelled, pacer } from '../../src/engine/cancel';
import { clusterUsage } from '../../src/engine/check/usage';
import { Qcow2Image } from '../../src/engine/image/image';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu';

test('a walk that awaits only resolved promises lets a timer run when it pauses', async () => {
  const tick = pacer(undefined, 'x.qcow2', 'walk', 2);
  let fired = false;
  setTimeout(() => { fired = true; }, 0);
  const until = Date.now() + 5000;
  // CPU work in small steps, as a walk over cached tables does: without the pause, the timer cannot fire
  while (!fired && Date.now() < until) {
    await Promise.resolve();
    await tick();
  }
  assert.equal(fired, true);
});

test('a pause after the signal fired throws the cancelled error', async () => {
  const ac = new AbortController();
  const tick = pacer(ac.signal, 'x.qcow2', 'walk');
  await tick();
  ac.abort();
  await assert.rejects(tick(), e => isCancelled(e));
});

test('the check\'s usage walk stops with the cancelled error when its signal fires during the walk', async () => {
  const dir = tmpDir('qcow2-lens-pacer-');
  try {
    const img = path.join(dir, 'wide.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '256G');
    qemuIo(img, Array.from({ length: 512 }, (_, i) => `write -P 0x22 ${i * 512}M 64k`));
    const q = await Qcow2Image.open(img);
    try {
      const full = await clusterUsage(q);
      assert.ok(full.role.length > 512);
      const ac = new AbortController();
      let tables = 0;
      // aborted from inside the walk, after its first L2 table: the rest is not walked
      const walk = clusterUsage(q, { signal: ac.signal, onActiveL2: () => { if (++tables === 1) ac.abort(); } });
      await assert.rejects(walk, e => isCancelled(e));
      assert.ok(tables <= 2, `${tables} L2 tables walked after the abort`); // (a window holds 32 of them)
    } finally {
      await q.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
