/** Review findings on saving pending snapshot edits, proven against qemu-img. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu';
import { applyWithEngine, SnapshotEditList } from '../../src/extension/snapshotEdits';

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
