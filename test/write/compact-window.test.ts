/**
 * Compaction streams the source's L2 tables through one bounded window (plan.ts L2Window) in each
 * of its passes (scan, survivors, refcounts, writing) instead of holding them all. With 1 MiB
 * clusters a window holds four tables, so an image whose data lies under many L1 entries, with a
 * snapshot sharing some tables and copy-on-write splitting others, is walked over several refills
 * every time; the output must pass qemu-img check and compare equal, snapshots included.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { compactImage } from '../../src/engine/ops/compact';
import { qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../helpers/qemu';
import { copy, snapshotList } from './util';

/** One L2 table of 1 MiB clusters maps 128 GiB. */
const L2_SPAN = 128 * 2 ** 30;

function manyTables(dir: string): string {
  const img = path.join(dir, 'w.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=1M', img, '2T');
  qemuIo(img, Array.from({ length: 13 }, (_, i) => `write -q -P ${i + 1} ${i * L2_SPAN + i * 2 ** 20} 8k`));
  qemuImg('snapshot', '-c', 's1', img);
  qemuIo(img, ['write -q -P 99 0 4k', `write -q -P 98 ${12 * L2_SPAN + 12 * 2 ** 20} 4k`, `write -q -P 97 ${5 * L2_SPAN + 40 * 2 ** 20} 4k`, `write -q -z ${3 * L2_SPAN + 3 * 2 ** 20} 1M`]);
  return img;
}

function same(a: string, b: string, what: string): void {
  const r = qemuImgStatus('compare', a, b);
  assert.equal(r.status, 0, `${what}: ${r.stdout}${r.stderr}`);
}

test('a compaction over many window refills is clean and equal, snapshots included', async () => {
  const dir = tmpDir();
  const img = manyTables(dir);
  const out = path.join(dir, 'out.qcow2');
  await compactImage(img, { output: out });
  const chk = qemuImgStatus('check', out);
  assert.equal(chk.status, 0, chk.stdout + chk.stderr);
  same(img, out, 'active');
  assert.deepEqual(snapshotList(out), snapshotList(img));
  const a = copy(img, path.join(dir, 'sa.qcow2')), b = copy(out, path.join(dir, 'sb.qcow2'));
  qemuImg('snapshot', '-a', 's1', a);
  qemuImg('snapshot', '-a', 's1', b);
  same(a, b, 'snapshot s1');
});
