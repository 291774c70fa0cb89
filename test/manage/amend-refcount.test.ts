/**
 * amend -o refcount_bits=N against qemu-img amend on copies of the same QEMU-made images (cluster
 * sizes 512 B to 2 MiB, 16-, 1- and 64-bit refcounts to start from, internal snapshots sharing
 * clusters, compressed clusters): the same exit status and message where qemu-img refuses; where
 * it succeeds, `qemu-img check` clean, the width qemu-img info reports equal to qemu-img's twin's,
 * the guest content (and each snapshot's) unchanged. A SIGKILL after any write leaves the old or the
 * new image, clean.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, cli, qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../helpers/qemu';
import { assertClean, check } from '../write/util';

const refcountBits = (p: string) => (JSON.parse(qemuImg('info', '--output=json', p)) as { 'format-specific': { data: { 'refcount-bits': number } } })['format-specific'].data['refcount-bits'];
const same = (a: string, b: string) => qemuImgStatus('compare', a, b).status === 0;

/** The guest content of each snapshot, as raw files (qemu-img convert -l). */
function snapshotsRaw(p: string, dir: string, tag: string): string[] {
  const snaps = (JSON.parse(qemuImg('info', '--output=json', p)) as { snapshots?: { name: string }[] }).snapshots ?? [];
  return snaps.map(s => {
    const out = path.join(dir, `${tag}-${s.name}.raw`);
    qemuImg('convert', '-l', `snapshot.name=${s.name}`, '-O', 'raw', p, out);
    return out;
  });
}

/**
 * `widths` to try; `qemuTwin` false where qemu-img amend itself takes 12–30 s or more per run (from 1-
 * or 64-bit refcounts upwards or downwards, its own walk): there only widths every refcount fits are
 * tried, and the result is judged by qemu-img check, compare, info and a qemu-io write, not by a twin.
 */
interface Case { name: string; create: string; write: string[]; snapshot?: boolean; widths: string[]; qemuTwin: boolean }
const ALL = ['1', '2', '4', '8', '16', '32', '64', '3', '128'];
const CASES: Case[] = [
  { name: '512 B clusters, snapshot', create: 'cluster_size=512', write: ['write -P 1 0 300k', 'write -c -P 5 1M 4k'], snapshot: true, widths: ALL, qemuTwin: true },
  { name: '4 KiB clusters, compressed, snapshot', create: 'cluster_size=4096', write: ['write -P 1 0 3M', 'write -c -P 2 40M 256k', 'write -z 8M 64k'], snapshot: true, widths: ALL, qemuTwin: true },
  { name: '64 KiB clusters from 1-bit refcounts', create: 'refcount_bits=1', write: ['write -P 3 0 2M', 'write -P 4 60M 1M'], widths: ['2', '8', '64'], qemuTwin: false },
  { name: '2 MiB clusters from 64-bit refcounts, snapshot', create: 'cluster_size=2M,refcount_bits=64', write: ['write -P 6 0 5M'], snapshot: true, widths: ['2', '16', '32'], qemuTwin: false },
];

test('amend refcount_bits: every width, as qemu-img amend changes it or refuses it', () => {
  const dir = tmpDir('qcow2-lens-amend-rc-');
  for (const c of CASES) {
    const src = path.join(dir, 'src.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', c.create, src, '64M');
    qemuIo(src, c.write);
    if (c.snapshot) { qemuImg('snapshot', '-c', 's1', src); qemuIo(src, ['write -P 9 100k 64k']); }
    const snapsBefore = snapshotsRaw(src, dir, 'before');
    for (const bits of c.widths) {
      const q = path.join(dir, 'q.qcow2'), o = path.join(dir, 'o.qcow2');
      fs.copyFileSync(src, q);
      fs.copyFileSync(src, o);
      const what = `${c.name}, refcount_bits=${bits}`;
      const qr = c.qemuTwin ? qemuImgStatus('amend', '-o', `refcount_bits=${bits}`, q) : { status: 0, stdout: '', stderr: '' };
      const r = cli('amend', '-o', `refcount_bits=${bits}`, o);
      assert.equal(r.status === 0, qr.status === 0, `${what}: qemu-img ${qr.status} (${qr.stderr.trim()}), ours ${r.status} (${r.stderr.trim()})`);
      if (qr.status !== 0) {
        const msg = qr.stderr.trim().replace(/^qemu-img: /, '');
        assert.ok(r.stderr.includes(msg), `${what}: ${r.stderr} lacks qemu-img's "${msg}"`);
        assert.ok(same(src, o) && fs.readFileSync(o).subarray(0, 4096).equals(fs.readFileSync(src).subarray(0, 4096)), `${what}: refused, header unchanged`);
        continue;
      }
      assertClean(o);
      assert.equal(refcountBits(o), Number(bits), what);
      if (c.qemuTwin) assert.equal(refcountBits(o), refcountBits(q), what);
      assert.ok(same(src, o), `${what}: guest content`);
      const snapsAfter = snapshotsRaw(o, dir, 'after');
      assert.equal(snapsAfter.length, snapsBefore.length);
      snapsAfter.forEach((s, i) => assert.ok(fs.readFileSync(s).equals(fs.readFileSync(snapsBefore[i])), `${what}: snapshot ${i}`));
      // QEMU reads and writes the result: one more write, still clean
      qemuIo(o, ['write -P 7 2M 64k']);
      assertClean(o);
    }
  }
  // a v2 image keeps 16-bit refcounts, as qemu-img says
  const v2 = path.join(dir, 'v2.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', v2, '1M');
  const q = qemuImgStatus('amend', '-o', 'refcount_bits=8', v2);
  const r = cli('amend', '-o', 'refcount_bits=8', v2);
  assert.notEqual(q.status, 0);
  assert.notEqual(r.status, 0);
  assert.ok(r.stderr.includes(q.stderr.trim().replace(/^qemu-img: /, '')), r.stderr);
});

test('amend refcount_bits: a SIGKILL after any write leaves the old image or the new one, clean', () => {
  const dir = tmpDir('qcow2-lens-amend-rc-crash-');
  const src = path.join(dir, 'src.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', src, '64M');
  qemuIo(src, ['write -P 1 0 3M', 'write -c -P 2 40M 256k']);
  qemuImg('snapshot', '-c', 's1', src);
  for (const bits of [8, 64]) { // 4 bits cannot hold the compressed host clusters' refcounts (128)
    let completed = false;
    for (let k = 0; k < 200 && !completed; k++) {
      const w = path.join(dir, 'w.qcow2');
      fs.copyFileSync(src, w);
      const r = spawnSync(process.execPath, [CLI, 'amend', '-o', `refcount_bits=${bits}`, w], { env: { ...process.env, QCOW2_LENS_CRASH_AFTER_WRITES: String(k) }, encoding: 'utf8' });
      completed = r.status === 0;
      if (!completed) assert.equal(r.signal, 'SIGKILL', `k=${k}: ${r.stderr}`);
      const c = check(w);
      assert.equal(c.status, 0, `refcount_bits=${bits} k=${k}: ${c.out}`);
      assert.equal(c.leaks, 0, `refcount_bits=${bits} k=${k}: ${c.out}`);
      assert.equal(refcountBits(w), completed ? bits : 16, `k=${k}`);
      assert.ok(same(src, w), `refcount_bits=${bits} k=${k}: guest content`);
    }
    assert.ok(completed, 'the amend completes within the write budget');
  }
});
