/** Review findings on saving pending snapshot edits, proven against qemu-img. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu';
import { applyWithEngine, SnapshotEditList } from '../../src/extension/snapshotEdits';
import { compactPath, createSnapshotAt, deleteSnapshotAt } from '../../src/extension/engineApi';
import { assertClean } from '../write/util';

const names = (p: string) => ((JSON.parse(qemuImg('info', '--output=json', p)) as { snapshots?: { name: string }[] }).snapshots ?? []).map(s => s.name);

test('a save that fails part-way keeps only the edits not yet written pending: saving again does not create a snapshot twice', async () => {
  const dir = tmpDir();
  const p = path.join(dir, 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', p, '4M');
  qemuIo(p, ['write -P 0x11 0 64k']);
  qemuImg('snapshot', '-c', 'old', p);
  const list = new SnapshotEditList();
  list.add({ kind: 'create', name: 'new' });
  const del = list.add({ kind: 'delete', name: 'old' });
  // the file changed on disk meanwhile: "old" is gone, so the second edit fails
  qemuImg('snapshot', '-d', 'old', p);
  await assert.rejects(list.applyTo(p, applyWithEngine, true), /not found/);
  assert.deepEqual(names(p), ['new']);
  assert.deepEqual(list.pending, [{ kind: 'delete', name: 'old' }], 'the written create is no longer pending');
  del.undo();
  await list.applyTo(p, applyWithEngine, true);
  assert.deepEqual(names(p), ['new']);
});

test('write operations the extension starts on one image at the same time run one after another and leave it consistent', async () => {
  const dir = tmpDir();
  const p = path.join(dir, 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', p, '16M');
  qemuIo(p, ['write -P 0x11 0 4M', 'write -c -P 0x22 8M 64k']);
  qemuImg('snapshot', '-c', 'old', p);
  qemuIo(p, ['write -P 0x33 0 1M']);
  // e.g. a save of pending edits while a snapshot is created from the command palette
  await Promise.all([createSnapshotAt(p, 'a'), createSnapshotAt(p, 'b'), deleteSnapshotAt(p, 'old')]);
  assertClean(p);
  assert.deepEqual(names(p).sort(), ['a', 'b']);
  await Promise.all([compactPath(p, {}), createSnapshotAt(p, 'c')]);
  assertClean(p);
  assert.deepEqual(names(p).sort(), ['a', 'b', 'c']);
});
