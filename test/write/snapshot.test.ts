/**
 * Internal snapshots written by qcow2-lens, judged by qemu-img: check finds no errors and no
 * leaks, `snapshot -l` lists them, `snapshot -a` restores the right content; our apply and delete
 * on QEMU-made snapshots give what qemu-img's give.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, qemuGuestHash, qemuImg, qemuImgStatus, qemuIo, sha256, tmpDir } from '../helpers/qemu';
import { applySnapshot, createSnapshot, deleteSnapshot, listSnapshots } from '../../src/engine/ops/snapshot';
import { assertClean, CONFIGS, copy, makeImage, snapshotList } from './util';

for (const cfg of CONFIGS) {
  test(`snapshot create / apply / delete (${cfg.name}) pass qemu-img`, () => {
    const dir = tmpDir();
    const img = makeImage(dir, cfg);
    const h0 = qemuGuestHash(img, dir);
    let r = cli('snapshot', img, '-c', 'first');
    assert.equal(r.status, 0, r.stderr);
    assertClean(img);
    qemuIo(img, ['write -P 0x55 0 128k', 'write -P 0x66 30M 64k', 'write -z 40M 64k']);
    const h1 = qemuGuestHash(img, dir);
    assert.notEqual(h0, h1);
    r = cli('snapshot', img, '-c', 'second');
    assert.equal(r.status, 0, r.stderr);
    assertClean(img);
    assert.deepEqual(snapshotList(img), [{ id: '1', name: 'first' }, { id: '2', name: 'second' }]);
    assert.match(qemuImg('snapshot', '-l', img), /1\s+first[\s\S]*2\s+second/);
    // our -l prints what qemu-img prints
    assert.equal(cli('snapshot', img, '-l').stdout.toString(), qemuImg('snapshot', '-l', img));
    qemuIo(img, ['write -P 0x77 1M 64k']);
    const h2 = qemuGuestHash(img, dir);

    // qemu-img snapshot -a on our snapshots restores their content
    for (const [name, want] of [['first', h0], ['second', h1]] as const) {
      const c = copy(img, path.join(dir, `q-${name}.qcow2`));
      qemuImg('snapshot', '-a', name, c);
      assert.equal(qemuGuestHash(c, dir), want, `qemu-img -a ${name}`);
    }
    // our apply restores it too and leaves a clean image
    r = cli('snapshot', img, '-a', 'first');
    assert.equal(r.status, 0, r.stderr);
    assertClean(img);
    assert.equal(qemuGuestHash(img, dir), h0);
    r = cli('snapshot', img, '-a', '2'); // by id
    assert.equal(r.status, 0, r.stderr);
    assertClean(img);
    assert.equal(qemuGuestHash(img, dir), h1);
    assert.notEqual(h1, h2);
    // delete both; the image stays clean and keeps the current content
    r = cli('snapshot', img, '-d', 'first');
    assert.equal(r.status, 0, r.stderr);
    assertClean(img);
    assert.deepEqual(snapshotList(img), [{ id: '2', name: 'second' }]);
    assert.equal(qemuGuestHash(img, dir), h1);
    r = cli('snapshot', img, '-d', 'second');
    assert.equal(r.status, 0, r.stderr);
    assertClean(img);
    assert.deepEqual(snapshotList(img), []);
    assert.equal(qemuGuestHash(img, dir), h1);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test(`our apply and delete on QEMU-made snapshots match qemu-img's (${cfg.name})`, () => {
    const dir = tmpDir();
    const img = makeImage(dir, cfg);
    qemuImg('snapshot', '-c', 'a', img);
    qemuIo(img, ['write -P 0x99 0 64k', 'write -P 0x98 33M 128k']);
    qemuImg('snapshot', '-c', 'b', img);
    qemuIo(img, ['write -P 0x97 2M 64k']);
    qemuImg('snapshot', '-c', 'c', img);
    qemuIo(img, ['write -z 0 64k']);
    for (const target of ['a', 'b', 'c']) {
      const q = copy(img, path.join(dir, `q-${target}.qcow2`));
      const o = copy(img, path.join(dir, `o-${target}.qcow2`));
      qemuImg('snapshot', '-a', target, q);
      assert.equal(cli('snapshot', o, '-a', target).status, 0);
      assertClean(o);
      assert.equal(qemuImgStatus('compare', q, o).status, 0, `apply ${target}`);
      const q2 = copy(img, path.join(dir, `qd-${target}.qcow2`));
      const o2 = copy(img, path.join(dir, `od-${target}.qcow2`));
      qemuImg('snapshot', '-d', target, q2);
      assert.equal(cli('snapshot', o2, '-d', target).status, 0);
      assertClean(o2);
      assert.deepEqual(snapshotList(o2), snapshotList(q2));
      assert.equal(qemuImgStatus('compare', q2, o2).status, 0, `delete ${target}`);
      // the remaining snapshots still hold the same content in both
      for (const left of snapshotList(q2)) {
        const qa = copy(q2, path.join(dir, 'qa.qcow2'));
        const oa = copy(o2, path.join(dir, 'oa.qcow2'));
        qemuImg('snapshot', '-a', left.name, qa);
        qemuImg('snapshot', '-a', left.name, oa);
        assert.equal(qemuImgStatus('compare', qa, oa).status, 0, `after deleting ${target}, snapshot ${left.name}`);
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
}

test('the API: list/create/apply/delete with progress, ids as QEMU picks them, disk size restored', async () => {
  const dir = tmpDir();
  const img = path.join(dir, 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '32M');
  qemuIo(img, ['write -P 1 0 1M']);
  qemuImg('snapshot', '-c', 'q', img);
  qemuImg('snapshot', '-d', 'q', img); // ids continue from the highest present, not the highest ever
  const seen: number[] = [];
  const s = await createSnapshot(img, 'x', { onProgress: d => seen.push(d) });
  assert.equal(s.id, '1');
  assert.ok(seen.length > 0);
  assert.equal((await createSnapshot(img, 'x')).id, '2'); // duplicate names are allowed, as in qemu-img
  assert.deepEqual((await listSnapshots(img)).map(x => [x.id, x.name, x.diskSize]), [['1', 'x', 32 << 20], ['2', 'x', 32 << 20]]);
  const h = qemuGuestHash(img, dir);
  qemuImg('resize', '-q', img, '48M');
  qemuIo(img, ['write -P 2 40M 1M']);
  const q = copy(img, path.join(dir, 'q.qcow2'));
  qemuImg('snapshot', '-a', '1', q);
  await applySnapshot(img, '1');
  assertClean(img);
  const info = (p: string) => JSON.parse(qemuImg('info', '--output=json', p))['virtual-size'];
  assert.equal(info(img), info(q));
  assert.equal(info(img), 32 << 20);
  assert.equal(qemuGuestHash(img, dir), h);
  await deleteSnapshot(img, 'x'); // by name: the first match
  assert.deepEqual((await listSnapshots(img)).map(x => x.id), ['2']);
  assertClean(img);
  const ac = new AbortController();
  ac.abort();
  const before = sha256(fs.readFileSync(img));
  await assert.rejects(createSnapshot(img, 'y', { signal: ac.signal }), /cancelled/);
  assert.equal(sha256(fs.readFileSync(img)), before);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('1-bit refcounts cannot hold a snapshot: refused before any write, as qemu-img fails', () => {
  const dir = tmpDir();
  const img = path.join(dir, 'r1.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=1', img, '16M');
  qemuIo(img, ['write -P 1 0 256k']);
  assert.notEqual(qemuImgStatus('snapshot', '-c', 'x', copy(img, path.join(dir, 'q.qcow2'))).status, 0);
  const before = sha256(fs.readFileSync(img));
  const r = cli('snapshot', img, '-c', 'x');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /refcount would exceed 1/);
  assert.equal(sha256(fs.readFileSync(img)), before);
  fs.rmSync(dir, { recursive: true, force: true });
});
