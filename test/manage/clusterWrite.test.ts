/**
 * The in-place cluster writer commit, rebase and convert -n share (ops/commit/clusterWrite.ts),
 * driven directly: its data writes go out while clusters are still being queued (several in flight,
 * host-contiguous clusters joined as one view or copied together), so a cluster written twice must
 * end with its last content, whatever the order the writes complete in. The result is read back
 * by qemu-img (convert to raw, the snapshot too) and checked clean.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu';
import { assertClean } from '../write/util';
import { Qcow2ClusterWriter } from '../../src/engine/ops/commit/clusterWrite';

const CS = 64 * 1024;
const SIZE = 8 * 1024 * 1024;
const N = SIZE / CS;

function filled(v: number): Buffer {
  return Buffer.alloc(CS, v);
}

function raw(img: string, dir: string, snapshot?: string): Buffer {
  const out = path.join(dir, `read-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}.raw`);
  qemuImg('convert', ...(snapshot ? ['-l', snapshot] : []), '-O', 'raw', img, out);
  const b = fs.readFileSync(out);
  fs.rmSync(out);
  return b;
}

function assertClusters(got: Buffer, want: Buffer, what: string): void {
  for (let c = 0; c < N; c++) {
    const g = got.subarray(c * CS, (c + 1) * CS), w = want.subarray(c * CS, (c + 1) * CS);
    if (!g.equals(w)) assert.fail(`${what}: guest cluster ${c} reads 0x${g[0].toString(16)}…, expected 0x${w[0].toString(16)}…`);
  }
}

test('cluster writer: in place over scattered clusters, a cluster rewritten in the same batch ends with its last content', async () => {
  const dir = tmpDir('qcow2-lens-clusterwrite-');
  const img = path.join(dir, 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, String(SIZE));
  qemuIo(img, [`write -P 1 0 ${SIZE}`]);
  const want = Buffer.alloc(SIZE, 1);
  const w = await Qcow2ClusterWriter.open(img);
  // the first writes complete late: a rewrite issued before they end must still land after them
  const file = w.img.file, write = file.write.bind(file);
  file.write = async (off: number, data: Uint8Array, what: string) => {
    if (data[0] >= 0x10 && data[0] < 0x50) await new Promise(r => setTimeout(r, 30));
    return write(off, data, what);
  };
  try {
    // every other cluster: host clusters apart, one write each, several in flight
    for (let c = 0; c < N; c += 2) {
      await w.writeCluster(c * CS, filled(0x10 + (c & 0x3f)));
      filled(0x10 + (c & 0x3f)).copy(want, c * CS);
    }
    // the last ones again, while their first writes are still in flight
    for (let c = N - 8; c < N; c += 2) {
      await w.writeCluster(c * CS, filled(0xa0 + ((c / 2) & 0xf)));
      filled(0xa0 + ((c / 2) & 0xf)).copy(want, c * CS);
    }
    await w.writeCluster(3 * CS, null);
    want.fill(0, 3 * CS, 4 * CS);
    await w.flush();
  } finally {
    await w.close();
  }
  assertClean(img);
  assertClusters(raw(img, dir), want, 'after the writes');
});

test('cluster writer: new clusters (shared with a snapshot) joined as views and copied together, rewritten within and across batches', async () => {
  const dir = tmpDir('qcow2-lens-clusterwrite-');
  const img = path.join(dir, 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, String(SIZE));
  qemuIo(img, [`write -P 1 0 ${SIZE}`]);
  qemuImg('snapshot', '-c', 's1', img);
  const want = Buffer.alloc(SIZE, 1);
  const w = await Qcow2ClusterWriter.open(img);
  try {
    // 32 clusters as views of one 2 MiB buffer (written without a copy)
    const big = Buffer.alloc(32 * CS);
    for (let c = 0; c < 32; c++) big.fill(0x40 + c, c * CS, (c + 1) * CS);
    for (let c = 0; c < 32; c++) await w.writeCluster(c * CS, big.subarray(c * CS, (c + 1) * CS));
    big.copy(want, 0);
    // 24 clusters each in a buffer of its own (copied together up to the join limit)
    for (let c = 32; c < 56; c++) {
      await w.writeCluster(c * CS, filled(0x80 + c));
      filled(0x80 + c).copy(want, c * CS);
    }
    // rewritten in the same batch: the new host cluster, written again in place
    await w.writeCluster(5 * CS, filled(0xe5));
    filled(0xe5).copy(want, 5 * CS);
    await w.writeCluster(40 * CS, filled(0xe6));
    filled(0xe6).copy(want, 40 * CS);
    await w.flush();
    // the next batch over clusters the first one wrote
    await w.writeCluster(6 * CS, filled(0xf6));
    filled(0xf6).copy(want, 6 * CS);
    await w.writeCluster(41 * CS, null);
    want.fill(0, 41 * CS, 42 * CS);
    await w.flush();
  } finally {
    await w.close();
  }
  assertClean(img);
  assertClusters(raw(img, dir), want, 'after the writes');
  assertClusters(raw(img, dir, 's1'), Buffer.alloc(SIZE, 1), 'the snapshot');
});
