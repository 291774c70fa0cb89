/**
 * A missing or empty refcount table (header refcount_table_offset and/or refcount_table_clusters 0):
 * qemu-img check judges it (every used cluster counted as free) and -r all rebuilds the refcount
 * structure from scratch; ours counts the same, rebuilds (new blocks and table after the end of the
 * file, header switched last) and survives a SIGKILL before any of its writes.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, pokeBytes, qemuGuestHash, qemuImg, qemuImgStatus, qemuIo, writeBE64 } from '../helpers/qemu';
import { assertCheckMatches, assertRepairMatches, qemuCheck, scratchDir } from './common';

function base(dir: string, name: string): string {
  const img = path.join(dir, name);
  qemuImg('create', '-q', '-f', 'qcow2', img, '64M');
  qemuIo(img, ['write -P 0x11 0 1M', 'write -P 0x22 10M 64k']);
  qemuImg('snapshot', '-c', 's1', img);
  return img;
}

test('refcount_table_clusters 0 (and offset 0): checked with QEMU\'s counts, -r all rebuilds, ending clean', () => {
  const dir = scratchDir();
  for (const both of [false, true]) {
    const img = base(dir, `rt-${both}.qcow2`);
    pokeBytes(img, 56, [0, 0, 0, 0]);
    if (both) writeBE64(img, 48, 0n);
    assert.equal(qemuImgStatus('info', img).status, 1, 'qemu-img info refuses it');
    const r = assertCheckMatches(img, `no refcount table (offset 0: ${both})`);
    assert.ok((r.corruptions as number) > 0);
    assert.ok((r.findings ?? []).some(f => f.kind === 'refcount-zero-but-used'));
    const { ours } = assertRepairMatches(img, dir, `no refcount table (offset 0: ${both})`);
    assert.equal(ours.status, 0);
  }
});

test('rebuilding a missing refcount table survives a SIGKILL before any of its writes', () => {
  const dir = scratchDir();
  const img = base(dir, 'crash.qcow2');
  pokeBytes(img, 56, [0, 0, 0, 0]);
  const ref = path.join(dir, 'ref.qcow2');
  fs.copyFileSync(img, ref);
  qemuImg('check', '-q', '-r', 'all', ref);
  const want = qemuGuestHash(ref, dir);
  let k = 0;
  for (; k < 50; k++) {
    const c = path.join(dir, `crash-${k}.qcow2`);
    fs.copyFileSync(img, c);
    const r = spawnSync(process.execPath, [CLI, 'check', c, '-r', 'all', '--json'], { env: { ...process.env, QCOW2_LENS_CRASH_AFTER_WRITES: String(k) } });
    if (r.signal !== 'SIGKILL') { assert.equal(r.status, 0, r.stderr.toString()); fs.rmSync(c); break; }
    // before the header switch the old (empty) table is live: the same damage, nothing worse
    const q = qemuCheck(c);
    assert.ok(q.status === 2 || q.status === 3 || q.status === 0, `crash before write ${k + 1}: qemu-img check exits ${q.status}`);
    const second = spawnSync(process.execPath, [CLI, 'check', c, '-r', 'all', '--json']);
    assert.equal(second.status, 0, `crash before write ${k + 1}, then our repair: ${second.stderr.toString()}`);
    assert.equal(qemuCheck(c).status, 0, `crash before write ${k + 1}, then our repair: clean`);
    assert.equal(qemuGuestHash(c, dir), want, `crash before write ${k + 1}: guest content`);
    fs.rmSync(c);
  }
  assert.ok(k >= 2, `the rebuild takes several writes (${k})`);
});
