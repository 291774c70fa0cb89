/**
 * Cluster usage (the cluster map's data) against QEMU's own view: every host range `qemu-img map`
 * reports as data is a data cluster whose owner path names the L1/L2 entry of that guest offset;
 * every cluster with a stored refcount has a role; snapshot-only, bitmap and metadata roles appear
 * where QEMU put those structures. Also the findings cap and cancellation.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { analyzeImage } from '../../src/engine/check/check';
import { Qcow2Image } from '../../src/engine/image/image';
import {
  clusterUsage, ROLE_BITMAP, ROLE_BITMAP_DIRECTORY, ROLE_BITMAP_TABLE, ROLE_DATA, ROLE_FREE, ROLE_HEADER, ROLE_L1, ROLE_L2, ROLE_MASK,
  ROLE_REFCOUNT_BLOCK, ROLE_REFCOUNT_TABLE, ROLE_SHARED, ROLE_SNAPSHOT_L1, ROLE_SNAPSHOT_ONLY, ROLE_SNAPSHOT_TABLE,
} from '../../src/engine/check/usage';
import { qemuImg, qemuIo, readBE64, writeBE64, qemuMap } from '../helpers/qemu';
import { layout, scratchDir } from './common';


test('roles and owner paths agree with qemu-img map and the header', async () => {
  const dir = scratchDir();
  const img = path.join(dir, 'u.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '1G');
  qemuIo(img, ['write -P 1 0 256k', 'write -P 2 600M 64k']);
  qemuImg('snapshot', '-c', 's1', img);
  qemuIo(img, ['write -P 3 0 64k']); // copy-on-write: the old cluster becomes snapshot-only
  qemuImg('bitmap', '--add', img, 'b0');
  qemuIo(img, ['write -P 4 700M 64k']);
  const q = await Qcow2Image.open(img, { openBacking: false });
  try {
    const u = await clusterUsage(q);
    const cs = q.clusterSize;
    const perL2 = cs * q.g.l2Size;
    const map = qemuMap(img);
    let checked = 0;
    for (const e of map) {
      const hostOffset = e.offset;
      if (!e.data || hostOffset === undefined) continue;
      for (let g = e.start; g < e.start + e.length; g += cs) {
        const k: number = (hostOffset + (g - e.start)) / cs;
        assert.equal(u.role[k] & ROLE_MASK, ROLE_DATA, `host cluster ${k} (guest ${g}) is data`);
        assert.equal(u.ownerPath(k), `L1[${Math.floor(g / perL2)}] → L2[0x${(Math.floor(g / cs) % q.g.l2Size).toString(16)}]`);
        checked++;
      }
    }
    assert.ok(checked >= 6);
    const h = q.header;
    assert.equal(u.role[0], ROLE_HEADER);
    assert.equal(u.role[h.l1TableOffset / cs] & ROLE_MASK, ROLE_L1);
    assert.equal(u.role[h.refcountTableOffset / cs] & ROLE_MASK, ROLE_REFCOUNT_TABLE);
    assert.equal(u.role[q.refcountTable[0] / cs] & ROLE_MASK, ROLE_REFCOUNT_BLOCK);
    assert.equal(u.role[h.snapshotsOffset / cs] & ROLE_MASK, ROLE_SNAPSHOT_TABLE);
    assert.equal(u.role[q.snapshots[0].l1TableOffset / cs] & ROLE_MASK, ROLE_SNAPSHOT_L1);
    assert.equal(u.role[h.bitmaps!.bitmapDirectoryOffset / cs] & ROLE_MASK, ROLE_BITMAP_DIRECTORY);
    assert.equal(u.role[q.bitmaps[0].bitmapTableOffset / cs] & ROLE_MASK, ROLE_BITMAP_TABLE);
    // the L2 table of L1[0] is shared with the snapshot until written; after the write it is the active one's own
    const l2 = Number(readBE64(img, h.l1TableOffset) & 0x00fffffffffffe00n);
    assert.equal(u.role[l2 / cs] & ROLE_MASK, ROLE_L2);
    assert.equal(u.ownerPath(l2 / cs), 'L1[0] → L2 table');
    const roles = new Set<number>();
    for (let k = 0; k < u.nbClusters; k++) roles.add(u.role[k] & ROLE_MASK);
    assert.ok(roles.has(ROLE_SNAPSHOT_ONLY), 'the overwritten cluster is referenced only by the snapshot');
    // clusters shared by the snapshot and the active disk are flagged shared
    let shared = 0;
    for (let k = 0; k < u.nbClusters; k++) if (u.role[k] & ROLE_SHARED) shared++;
    assert.ok(shared > 0);
    // every cluster QEMU counts has a role, every free one has none (the image is clean)
    const st = await analyzeImage(q);
    assert.equal(st.corruptions + st.leaks, 0);
    for (let k = 0; k < u.nbClusters; k++) {
      assert.equal(st.stored[k] > 0, (u.role[k] & ROLE_MASK) !== ROLE_FREE, `cluster ${k}: stored ${st.stored[k]}, role ${u.role[k]}`);
    }
    void ROLE_BITMAP;
  } finally {
    await q.close();
  }
});

test('findings are capped and the cap is reported; counts stay exact', async () => {
  const dir = scratchDir();
  const img = path.join(dir, 'many.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', img, '64M');
  qemuIo(img, ['write -P 1 0 2M']);
  const L = layout(img);
  // zero every other L2 entry: 256 leaks that are not consecutive, so they cannot be grouped
  for (let j = 0; j < 512; j += 2) writeBE64(img, L.l2(0) + 8 * j, 0n);
  const q = await Qcow2Image.open(img, { openBacking: false });
  try {
    const st = await analyzeImage(q, { maxFindings: 50 });
    assert.equal(st.leaks, 256);
    assert.equal(st.findings.length, 51);
    const last = st.findings[50];
    assert.equal(last.kind, 'findings-truncated');
    assert.equal(last.count, 256 - 50);
  } finally {
    await q.close();
  }
});

test('cancellation stops the check with a cancelled error', async () => {
  const dir = scratchDir();
  const img = path.join(dir, 'c.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '64M');
  qemuIo(img, ['write -P 1 0 1M']);
  const q = await Qcow2Image.open(img, { openBacking: false });
  try {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(analyzeImage(q, { signal: ac.signal }), (e: Error & { code?: string }) => e.code === 'cancelled');
    // and the progress callback reports every phase when not cancelled
    const seen: number[] = [];
    await analyzeImage(q, { onProgress: (d, t) => { seen.push(d); assert.equal(t, 4); } });
    assert.deepEqual(seen, [0, 1, 2, 3, 4]);
  } finally {
    await q.close();
  }
});

test('the check walks without owners and walks again with them only when a finding names one; the results are the same', async () => {
  const dir = scratchDir();
  const make = (name: string, opts = 'cluster_size=65536') => {
    const img = path.join(dir, name);
    qemuImg('create', '-q', '-f', 'qcow2', '-o', opts, img, '64M');
    qemuIo(img, ['write -P 1 0 1M', 'write -P 2 10M 64k']);
    return img;
  };
  const clean = make('clean.qcow2');
  const snap = make('snap.qcow2', 'cluster_size=65536,refcount_bits=8');
  qemuImg('snapshot', '-c', 's1', snap);
  qemuIo(snap, ['write -P 3 0 64k']);
  const leak = make('leak.qcow2');
  writeBE64(leak, layout(leak).l2(0) + 8, 0n); // one leaked data cluster
  const dbl = make('double.qcow2');
  const L = layout(dbl);
  writeBE64(dbl, L.l2(0) + 8, readBE64(dbl, L.l2(0))); // two L2 entries, one cluster
  const overlap = make('overlap.qcow2', 'cluster_size=65536,refcount_bits=32');
  writeBE64(overlap, layout(overlap).l2(0), (1n << 63n) | BigInt(layout(overlap).l2(0))); // data at its own L2 table
  const cases: [string, boolean, string][] = [[clean, false, 'Uint16Array'], [snap, false, 'Uint8Array'], [leak, false, 'Uint16Array'], [dbl, true, 'Uint16Array'], [overlap, true, 'Uint32Array']];
  for (const [img, walkedTwice, width] of cases) {
    const q = await Qcow2Image.open(img, { openBacking: false });
    try {
      const lean = await analyzeImage(q);
      const full = await analyzeImage(q, { owners: true });
      const name = path.basename(img);
      assert.equal(lean.usage.owners, walkedTwice, `${name}: owners recorded only when a finding names one`);
      assert.equal(full.usage.owners, true);
      assert.equal(lean.usage.ownerA.length, walkedTwice ? full.usage.ownerA.length : 0, name);
      // the counts and stored refcounts are as wide as the image's refcounts
      assert.equal(lean.usage.refs.constructor.name, width, name);
      assert.equal(lean.stored.constructor.name, width, name);
      assert.deepEqual(lean.findings, full.findings, name);
      for (const k of ['checkErrors', 'corruptions', 'leaks', 'highestCluster', 'leakedClusters', 'lowClusters', 'copiedL1', 'copiedL2'] as const) {
        assert.deepEqual(lean[k], full[k], `${name}: ${k}`);
      }
      assert.deepEqual([...lean.usage.refs], [...full.usage.refs], name);
      assert.deepEqual([...lean.usage.role], [...full.usage.role], name);
      if (walkedTwice) assert.ok(lean.findings.some(f => /L1\[0\]/.test(f.structure)), `${name}: a finding names its owner`);
    } finally {
      await q.close();
    }
  }
});
