/**
 * Crash safety of repair: the process is killed (SIGKILL) before its 1st, 2nd, … write; each time a
 * second, uninterrupted repair must still produce an image qemu-img check finds clean, with the
 * guest content qemu-img's own repair gives.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, pokeBytes, qemuGuestHash, qemuImg, qemuIo, readBE64, writeBE64 } from '../helpers/qemu';
import { layout, qemuCheck, scratchDir } from './common';

function repairWithCrash(img: string, mode: string, crashAfter: number): { status: number | null; signal: NodeJS.Signals | null } {
  const r = spawnSync(process.execPath, [CLI, 'check', img, '--repair', mode, '--json'], {
    env: { ...process.env, QCOW2_LENS_CRASH_AFTER_WRITES: String(crashAfter) },
  });
  return { status: r.status, signal: r.signal };
}

function crashLoop(img: string, dir: string, mode: string, what: string): number {
  const ref = path.join(dir, 'qemu-ref.qcow2');
  fs.copyFileSync(img, ref);
  qemuImg('check', '-q', '-r', mode, ref);
  const want = qemuGuestHash(ref, dir);
  let k = 0;
  for (; k < 200; k++) {
    const c = path.join(dir, `crash-${k}.qcow2`);
    fs.copyFileSync(img, c);
    const r = repairWithCrash(c, mode, k);
    if (r.signal !== 'SIGKILL') { fs.rmSync(c); break; } // the repair needs only k writes
    const second = spawnSync(process.execPath, [CLI, 'check', c, '--repair', mode, '--json']);
    assert.notEqual(second.status, null, `${what}: second repair after a crash before write ${k + 1} did not finish`);
    const q = qemuCheck(c);
    assert.equal(q.status, 0, `${what}: after a crash before write ${k + 1} and a second repair, qemu-img check exits ${q.status}: ${JSON.stringify(q.json)}`);
    assert.equal(qemuGuestHash(c, dir), want, `${what}: guest content after crash before write ${k + 1}`);
    fs.rmSync(c);
  }
  assert.ok(k > 0, `${what}: the repair wrote nothing`);
  return k;
}

test('repair survives a crash before any of its writes (refcount rebuild, COPIED flags, corrupt bit)', () => {
  const dir = scratchDir();
  const img = path.join(dir, 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '64M');
  qemuIo(img, ['write -P 0x11 0 1M', 'write -P 0x22 10M 64k']);
  const L = layout(img);
  const k = Number(readBE64(img, L.l2(0)) & 0x00fffffffffffe00n) / L.cs;
  pokeBytes(img, L.refblock0 + 2 * k, [0, 0]); // used cluster counted as free → rebuild
  writeBE64(img, L.l2(0) + 8 * 2, 0n); // a leak
  writeBE64(img, 72, readBE64(img, 72) | 2n); // corrupt bit
  const writes = crashLoop(img, dir, 'all', 'rebuild');
  assert.ok(writes >= 3);
});

test('repair survives a crash before any of its writes (in-place leaks and too-low refcounts)', () => {
  const dir = scratchDir();
  const img = path.join(dir, 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '64M');
  qemuIo(img, ['write -P 0x11 0 1M']);
  const L = layout(img);
  writeBE64(img, L.l2(0) + 8, readBE64(img, L.l2(0))); // double reference: refcount too low + leak
  crashLoop(img, dir, 'all', 'in place');
});
