/** Review findings on the extension's writes, proven against qemu-img. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu';
import { compactPath, createSnapshotAt, deleteSnapshotAt } from '../../src/extension/engineApi';
import { assertClean } from '../write/util';

const names = (p: string) => ((JSON.parse(qemuImg('info', '--output=json', p)) as { snapshots?: { name: string }[] }).snapshots ?? []).map(s => s.name);

test('write operations the extension starts on one image at the same time run one after another and leave it consistent', async () => {
  const dir = tmpDir();
  const p = path.join(dir, 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', p, '16M');
  qemuIo(p, ['write -P 0x11 0 4M', 'write -c -P 0x22 8M 64k']);
  qemuImg('snapshot', '-c', 'old', p);
  qemuIo(p, ['write -P 0x33 0 1M']);
  // e.g. a snapshot created from the command palette while another tab deletes one
  await Promise.all([createSnapshotAt(p, 'a'), createSnapshotAt(p, 'b'), deleteSnapshotAt(p, 'old')]);
  assertClean(p);
  assert.deepEqual(names(p).sort(), ['a', 'b']);
  await Promise.all([compactPath(p, {}), createSnapshotAt(p, 'c')]);
  assertClean(p);
  assert.deepEqual(names(p).sort(), ['a', 'b', 'c']);
});
