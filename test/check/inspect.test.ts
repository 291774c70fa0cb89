/**
 * The engine's inspect module against QEMU: entries decode as qemu-img map reads them, an entry
 * the check reports is flagged with the same kind the check's finding has, and cluster roles from
 * a full analysis equal those from the view's lighter walk.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { analyzeImage } from '../../src/engine/check/check';
import { ACTIVE_L1, clusterRoles, clusterRolesOf, l1Entries, l2Entries, reftableEntries } from '../../src/engine/check/inspect';
import { Qcow2Image } from '../../src/engine/image/image';
import { qemuImg, qemuIo, readBE64, writeBE64, qemuMap } from '../helpers/qemu';
import { layout, scratchDir } from './common';


test('entries decode as qemu-img map reads them; roles agree with the full check', async () => {
  const img = path.join(scratchDir(), 'i.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '256M');
  qemuIo(img, ['write -P 1 0 128k', 'write -z 1M 64k', 'write -c -P 2 2M 64k']);
  const q = await Qcow2Image.open(img, { openBacking: false });
  try {
    const [l1] = await l1Entries(q, ACTIVE_L1, 0, 1);
    assert.deepEqual(l1.flaws, []);
    assert.ok(l1.l2Offset > 0 && l1.copied);
    const l2 = await l2Entries(q, ACTIVE_L1, 0, 0, q.g.l2Size);
    const map = qemuMap(img);
    for (const e of map) {
      for (let g = e.start; g < e.start + e.length && g < 4 * 1024 * 1024; g += q.clusterSize) {
        const ent = l2[g / q.clusterSize];
        if (e.data) assert.equal(ent.kind, e.offset === undefined ? 'compressed' : 'data', `guest ${g}`);
        else assert.ok(ent.kind === 'zero' || ent.kind === 'unallocated', `guest ${g}: ${ent.kind}`);
        if (e.offset !== undefined) assert.equal(ent.dataOffset, e.offset + (g - e.start));
        assert.deepEqual(ent.flaws, []);
      }
    }
    assert.equal(l2[(1024 * 1024) / q.clusterSize].kind, 'zero');
    assert.equal(l2[(3 * 1024 * 1024) / q.clusterSize].kind, 'unallocated');
    const st = await analyzeImage(q);
    const n = Math.ceil(q.file.size / q.clusterSize);
    assert.deepEqual(clusterRolesOf(st, n).role, (await clusterRoles(q)).role);
    assert.deepEqual((await reftableEntries(q, 0, 1))[0].flaws, []);
  } finally {
    await q.close();
  }
});

test('a damaged entry carries the kind of the check\'s finding about it', async () => {
  const img = path.join(scratchDir(), 'd.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '64M');
  qemuIo(img, ['write -P 1 0 64k']);
  const lay = layout(img);
  writeBE64(img, lay.l2(0), readBE64(img, lay.l2(0)) | 0x100n); // a reserved bit of the first L2 entry
  const q = await Qcow2Image.open(img, { openBacking: false });
  try {
    const [ent] = await l2Entries(q, ACTIVE_L1, 0, 0, 1);
    const st = await analyzeImage(q);
    const finding = st.findings.find(f => f.structure === 'L1[0] → L2[0x0]');
    assert.ok(finding, JSON.stringify(st.findings));
    assert.deepEqual(ent.flaws, [finding.kind]);
  } finally {
    await q.close();
  }
});
