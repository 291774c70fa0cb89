/**
 * Crash safety: the CLI is killed (SIGKILL, through QCOW2_LENS_CRASH_AFTER_WRITES=k) just before
 * its (k+1)-th write, for every k until the operation completes. After each crash the image must
 * pass `qemu-img check` with at most leaked clusters and still hold the original guest content
 * (compaction: the original file is byte-for-byte untouched).
 *
 * One exception is asserted precisely rather than hidden: between a refcount change and the
 * COPIED-flag update that follows it (they live in different clusters), qemu-img check reports
 * "OFLAG_COPIED" mismatches. QEMU's own snapshot code has the same window. We assert those are the
 * only errors, that `qemu-img check -r all` repairs them to a clean image, and that guest data is
 * intact; the count is printed as a diagnostic.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, qemuGuestHash, qemuImg, qemuImgStatus, qemuIo, sha256, tmpDir } from '../helpers/qemu';
import { check, copy, snapshotList } from './util';

function runCrashing(k: number, args: string[]): { completed: boolean } {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, QCOW2_LENS_CRASH_AFTER_WRITES: String(k) }, encoding: 'utf8' });
  if (r.status === 0) return { completed: true };
  assert.equal(r.signal, 'SIGKILL', `k=${k}: expected a crash, got status ${r.status}: ${r.stderr}`);
  return { completed: false };
}

function base(dir: string): string {
  const img = path.join(dir, 'base.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', img, '8M');
  qemuIo(img, ['write -P 1 0 1M', 'write -P 2 3M 256k', 'write -c -P 3 6M 64k']);
  qemuImg('snapshot', '-c', 'old', img);
  qemuIo(img, ['write -P 4 0 64k', 'write -z 3M 64k']);
  return img;
}

interface Tally { crashes: number; leaky: number; copiedWindow: number }

function judge(img: string, k: number, want: string | string[], dir: string, tally: Tally, snapshotHashes: Map<string, string>): void {
  const c = check(img);
  const other = c.errors.filter(l => !/OFLAG_COPIED/.test(l));
  assert.deepEqual(other, [], `k=${k}: qemu-img check errors other than OFLAG_COPIED:\n${c.out}`);
  assert.ok([0, 2, 3].includes(c.status), `k=${k}: qemu-img check status ${c.status}\n${c.out}`);
  if (c.errors.length) {
    tally.copiedWindow++;
    const fixed = copy(img, path.join(dir, 'fixed.qcow2'));
    qemuImgStatus('check', '-q', '-r', 'all', fixed);
    assert.equal(check(fixed).status, 0, `k=${k}: check -r all repairs the COPIED window`);
  } else if (c.leaks) tally.leaky++;
  const got = qemuGuestHash(img, dir);
  assert.ok((Array.isArray(want) ? want : [want]).includes(got), `k=${k}: guest content`);
  // every snapshot still listed holds its content
  for (const sn of snapshotList(img)) {
    const h = snapshotHashes.get(sn.name);
    if (!h) continue;
    const a = copy(img, path.join(dir, 'applied.qcow2'));
    qemuImg('snapshot', '-a', sn.id, a);
    assert.equal(qemuGuestHash(a, dir), h, `k=${k}: snapshot ${sn.name}`);
  }
}

function snapshotHashesOf(img: string, dir: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const sn of snapshotList(img)) {
    const a = copy(img, path.join(dir, 'h.qcow2'));
    qemuImg('snapshot', '-a', sn.id, a);
    m.set(sn.name, qemuGuestHash(a, dir));
  }
  return m;
}

for (const op of [['-c', 'new'], ['-d', 'old']]) {
  test(`a crash after any write of snapshot ${op.join(' ')} leaves at most leaks and the same guest content`, t => {
    const dir = tmpDir();
    const pristine = base(dir);
    const want = qemuGuestHash(pristine, dir);
    const snaps = snapshotHashesOf(pristine, dir);
    snaps.set('new', want);
    const tally: Tally = { crashes: 0, leaky: 0, copiedWindow: 0 };
    for (let k = 0; k < 200; k++) {
      const img = copy(pristine, path.join(dir, 'img.qcow2'));
      const { completed } = runCrashing(k, ['snapshot', img, ...op]);
      judge(img, k, want, dir, tally, snaps);
      if (completed) {
        assert.equal(check(img).status, 0);
        break;
      }
      tally.crashes++;
      assert.ok(k < 199, 'the operation completes within 200 writes');
    }
    assert.ok(tally.crashes >= 4, `crashed at ${tally.crashes} points`);
    t.diagnostic(`snapshot ${op.join(' ')}: ${tally.crashes} crash points; ${tally.leaky} left only leaks; ${tally.copiedWindow} in the OFLAG_COPIED window (repaired by check -r all)`);
    fs.rmSync(dir, { recursive: true, force: true });
  });
}

test('a crash after any write of snapshot -a: the old or the snapshot\'s content, never a mix', t => {
  const dir = tmpDir();
  const pristine = base(dir);
  const before = qemuGuestHash(pristine, dir);
  const snaps = snapshotHashesOf(pristine, dir);
  const tally: Tally = { crashes: 0, leaky: 0, copiedWindow: 0 };
  for (let k = 0; k < 200; k++) {
    const img = copy(pristine, path.join(dir, 'img.qcow2'));
    const { completed } = runCrashing(k, ['snapshot', img, '-a', 'old']);
    judge(img, k, completed ? snaps.get('old')! : [before, snaps.get('old')!], dir, tally, snaps);
    if (completed) {
      assert.equal(check(img).status, 0);
      break;
    }
    tally.crashes++;
  }
  assert.ok(tally.crashes >= 4, `crashed at ${tally.crashes} points`);
  t.diagnostic(`snapshot -a old: ${tally.crashes} crash points; ${tally.leaky} left only leaks; ${tally.copiedWindow} in the OFLAG_COPIED window (repaired by check -r all)`);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a crash after any write of compact (in place, compressed) leaves the original untouched', t => {
  const dir = tmpDir();
  const pristine = base(dir);
  const want = sha256(fs.readFileSync(pristine));
  let crashes = 0;
  for (let k = 0; k < 200; k++) {
    const img = copy(pristine, path.join(dir, 'img.qcow2'));
    const { completed } = runCrashing(k, ['compact', img, '--compress', 'zlib']);
    if (completed) {
      assert.equal(check(img).status, 0);
      assert.equal(qemuImgStatus('compare', pristine, img).status, 0);
      // the killed runs' temp files were cleaned up by the run that completed
      assert.deepEqual(fs.readdirSync(dir).filter(f => f.includes('.compact-')), []);
      break;
    }
    crashes++;
    assert.equal(sha256(fs.readFileSync(img)), want, `k=${k}: the original is untouched`);
    assert.equal(check(img).status, 0);
  }
  assert.ok(crashes >= 3, `crashed at ${crashes} points`);
  t.diagnostic(`compact: ${crashes} crash points, original untouched at each`);
  fs.rmSync(dir, { recursive: true, force: true });
});
