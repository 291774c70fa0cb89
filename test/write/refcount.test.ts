/**
 * The refcount write side on its own: allocations past what the refcount table covers need new
 * refcount blocks and a larger table (written to new clusters, switched in by the header, the old
 * one freed). qemu-img check judges the result: the allocated-but-unused clusters are leaks, and
 * there is nothing else.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { qemuImg, qemuImgStatus, qemuIo, readBE64, tmpDir } from '../helpers/qemu';
import { Qcow2Image } from '../../src/engine/image/image';
import { RefcountWriter } from '../../src/engine/ops/refcountWrite';
import { check } from './util';

for (const bits of [1, 16, 64]) {
  test(`allocation grows the refcount table (512 B clusters, ${bits}-bit refcounts): only leaks`, async () => {
    const dir = tmpDir();
    const img = path.join(dir, 'g.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', `cluster_size=512,refcount_bits=${bits}`, img, '8M');
    qemuIo(img, ['write -P 1 0 256k']);
    const tableBefore = readBE64(img, 48);
    const im = await Qcow2Image.open(img, { writable: true });
    const h = im.header;
    const rc = await RefcountWriter.load({ file: im.file, clusterBits: h.clusterBits, refcountOrder: h.refcountOrder, tableOffset: h.refcountTableOffset, tableClusters: h.refcountTableClusters, table: im.refcountTable });
    // more than one refcount table cluster covers at these settings
    const covered = (h.clusterSize / 8) * rc.g.blockEntries * h.refcountTableClusters;
    const n = covered + 1000;
    const first = rc.allocate(n, 'test');
    assert.ok(first > 0);
    await rc.flush();
    await im.close();
    assert.notEqual(readBE64(img, 48), tableBefore, 'the table moved');
    const c = check(img);
    assert.deepEqual(c.errors, [], c.out);
    assert.equal(c.status, 3, c.out);
    assert.equal(c.leaks, n, c.out);
    qemuImgStatus('check', '-q', '-r', 'leaks', img);
    assert.equal(check(img).status, 0);
    qemuIo(img, ['write -P 2 1M 1M']);
    assert.equal(check(img).status, 0);
    fs.rmSync(dir, { recursive: true, force: true });
  });
}
