/**
 * Compaction's in-kernel copy path (copy.ts copyInKernel, output.ts copyFrom, native/holes.c's
 * copyRange and zeroScan) and its fallbacks: the same image compacted with copy_file_range, with
 * the kernel refusing it (QCOW2_LENS_COPY_RANGE_REFUSE=EXDEV: read and write after the refusal)
 * and without it (QCOW2_LENS_NO_COPY_RANGE: the buffered path) gives byte-identical files that
 * pass qemu-img check and compare equal, snapshots included, with all-zero data clusters dropped
 * (also those whose first 512 bytes are zero but not the rest: kept). Plus the per-cluster typed
 * arrays (places.ts) and the addon's two calls on plain files, a source ending mid-cluster too.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { nativeCopy } from '../../src/engine/io/copyRange';
import { ImageFile } from '../../src/engine/io/reader';
import { compactImage } from '../../src/engine/ops/compact';
import { OutFile } from '../../src/engine/ops/compact/output';
import { ClusterPlaces, ClusterSet, CompressedPlaces } from '../../src/engine/ops/compact/places';
import { qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../helpers/qemu';
import { copy, snapshotList } from './util';

const KiB = 1024, cs = 64 * KiB;
const native = nativeCopy();

function withEnv<T>(env: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const old = Object.fromEntries(Object.keys(env).map(k => [k, process.env[k]]));
  Object.assign(process.env, env);
  return fn().finally(() => {
    for (const [k, v] of Object.entries(old)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }
  });
}

/** Allocated data clusters (qemu-img map), as guest offsets. */
function dataClusters(img: string): number[] {
  const m = JSON.parse(qemuImg('map', '--output=json', img)) as { start: number; length: number; data: boolean; zero: boolean }[];
  const out: number[] = [];
  for (const e of m) if (e.data && !e.zero) for (let g = e.start; g < e.start + e.length; g += cs) out.push(g);
  return out;
}

test('compaction copies in the kernel, after a refusal and through buffers alike: same bytes, zeros dropped', async () => {
  const dir = tmpDir();
  const img = path.join(dir, 'k.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '1G');
  qemuIo(img, [
    `write -q -P 7 0 ${8 * cs}`, // a run of adjacent clusters
    `write -q -P 0 ${8 * cs} ${2 * cs}`, // written zeros: allocated, all zero, dropped
    `write -q -P 9 ${10 * cs} ${cs}`,
    `write -q -P 0 ${40 * cs} ${cs}`, `write -q -P 5 ${40 * cs + cs - 1} 1`, // zero but for the last byte: kept
    `write -q -P 0 ${41 * cs} ${cs}`, `write -q -P 6 ${41 * cs + 600} 1`, // zero first 512 bytes, then data: kept
    `write -q -P 3 ${500 * cs} ${3 * cs}`,
  ]);
  qemuImg('snapshot', '-c', 's1', img);
  qemuIo(img, [`write -q -P 8 ${2 * cs} ${cs}`, `write -q -P 0 ${500 * cs} ${cs}`]);
  const outs: string[] = [];
  for (const [name, env] of [['kernel', {}], ['refused', { QCOW2_LENS_COPY_RANGE_REFUSE: 'EXDEV' }], ['buffers', { QCOW2_LENS_NO_COPY_RANGE: '1' }]] as const) {
    const out = path.join(dir, `${name}.qcow2`);
    await withEnv(env, () => compactImage(img, { output: out }));
    const chk = qemuImgStatus('check', out);
    assert.equal(chk.status, 0, `${name}: ${chk.stdout}${chk.stderr}`);
    const cmp = qemuImgStatus('compare', img, out);
    assert.equal(cmp.status, 0, `${name}: ${cmp.stdout}${cmp.stderr}`);
    assert.deepEqual(snapshotList(out), snapshotList(img));
    outs.push(out);
  }
  const bytes = outs.map(o => fs.readFileSync(o));
  assert.ok(bytes[0].equals(bytes[1]), 'kernel copy and refused-then-buffered copy differ');
  assert.ok(bytes[0].equals(bytes[2]), 'kernel copy and buffered copy differ');
  // the active view keeps the two almost-zero clusters and drops the written zeros
  const kept = dataClusters(outs[0]);
  assert.ok(kept.includes(40 * cs) && kept.includes(41 * cs), `almost-zero clusters dropped: ${kept.join(',')}`);
  assert.ok(!kept.includes(8 * cs) && !kept.includes(9 * cs) && !kept.includes(500 * cs), `zero clusters kept: ${kept.join(',')}`);
  const a = copy(img, path.join(dir, 'sa.qcow2')), b = copy(outs[0], path.join(dir, 'sb.qcow2'));
  qemuImg('snapshot', '-a', 's1', a);
  qemuImg('snapshot', '-a', 's1', b);
  const cmp = qemuImgStatus('compare', a, b);
  assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
});

test('zeroScan marks the all-zero clusters, reading past the end of the file as zero', { skip: !native && 'no native addon' }, async () => {
  const dir = tmpDir();
  const f = path.join(dir, 'z.bin');
  const b = Buffer.alloc(5 * cs + 100);
  b[cs] = 1; // cluster 1: first byte
  b[2 * cs + cs - 1] = 1; // cluster 2: last byte
  b[3 * cs + 513] = 1; // cluster 3: just past the 512-byte probe
  b[5 * cs + 99] = 0; // cluster 5: 100 bytes, then the end of the file: zero
  fs.writeFileSync(f, b);
  const fd = fs.openSync(f, 'r');
  try {
    const mask = new Uint8Array(new ArrayBuffer(7));
    await native!.zeroScan(fd, 0, 7, cs, mask);
    assert.deepEqual([...mask], [1, 0, 0, 0, 1, 1, 1]);
    b[5 * cs + 50] = 2;
    fs.writeFileSync(f, b);
    await native!.zeroScan(fd, 5 * cs, 1, cs, mask);
    assert.equal(mask[0], 0);
  } finally {
    fs.closeSync(fd);
  }
});

test('copyFrom: a source ending mid-run is padded with zeros, in the kernel and after a refusal', async () => {
  const dir = tmpDir();
  const srcPath = path.join(dir, 's.bin');
  const data = Buffer.alloc(cs + 1000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7 + 1) & 0xff;
  fs.writeFileSync(srcPath, data);
  const variants: [string, ReturnType<typeof nativeCopy>][] = [['buffers', undefined]];
  if (native) variants.push(['kernel', native]);
  await withEnv({ QCOW2_LENS_COPY_RANGE_REFUSE: 'ENOSYS' }, async () => { if (nativeCopy()) variants.push(['refused', nativeCopy()]); });
  for (const [name, nc] of variants) {
    const src = await ImageFile.open(srcPath, false);
    const outPath = path.join(dir, `${name}.out`);
    fs.writeFileSync(outPath, '');
    const f = await ImageFile.open(outPath, true);
    const o = new OutFile(f);
    o.push(Buffer.alloc(cs, 0xaa));
    const at = await o.copyFrom(src, cs, 2 * cs, nc);
    o.push(Buffer.alloc(10, 0xbb));
    await o.drain();
    await f.close();
    await src.close();
    assert.equal(at, cs);
    const got = fs.readFileSync(outPath);
    const want = Buffer.concat([Buffer.alloc(cs, 0xaa), data.subarray(cs), Buffer.alloc(2 * cs - 1000), Buffer.alloc(10, 0xbb)]);
    assert.ok(got.equals(want), `${name}: output differs`);
  }
});

test('copyFrom: kernel copies into one file run one at a time, in order, while buffered writes go on', { skip: !native }, async () => {
  const dir = tmpDir();
  const srcPath = path.join(dir, 's.bin');
  const data = Buffer.alloc(8 * cs);
  for (let i = 0; i < data.length; i++) data[i] = (i * 13 + 5) & 0xff;
  fs.writeFileSync(srcPath, data);
  let running = 0, most = 0;
  const order: number[] = [];
  const counting = {
    ...native!,
    copyRange: async (fdIn: number, offIn: number, fdOut: number, offOut: number, len: number) => {
      running++; most = Math.max(most, running); order.push(offIn);
      await new Promise(r => setTimeout(r, 5));
      try { return await native!.copyRange(fdIn, offIn, fdOut, offOut, len); } finally { running--; }
    },
  };
  const src = await ImageFile.open(srcPath, false);
  const outPath = path.join(dir, 'o.out');
  fs.writeFileSync(outPath, '');
  const f = await ImageFile.open(outPath, true);
  const o = new OutFile(f);
  const parts: Buffer[] = [];
  for (let i = 7; i >= 0; i -= 2) {
    await o.copyFrom(src, i * cs, cs, counting); // copies started back to back, never awaited one by one
    parts.push(data.subarray(i * cs, (i + 1) * cs));
    await o.append(Buffer.alloc(100, i));
    parts.push(Buffer.alloc(100, i));
  }
  await o.drain();
  await f.close();
  await src.close();
  assert.equal(most, 1, 'one kernel copy at a time');
  assert.deepEqual(order, [7, 5, 3, 1].map(i => i * cs));
  assert.ok(fs.readFileSync(outPath).equals(Buffer.concat(parts)), 'the output holds every copy and write in place');
});

test('places: typed per-cluster state, hosts past the file kept aside', () => {
  const set = new ClusterSet(10 * cs, cs);
  for (const h of [9 * cs, 0, 3 * cs, 3 * cs, 1000 * cs]) set.add(h);
  assert.equal(set.size, 4);
  assert.ok(set.has(3 * cs) && set.has(1000 * cs) && !set.has(4 * cs) && !set.has(3 * cs + 512));
  assert.deepEqual([...set], [0, 3 * cs, 9 * cs, 1000 * cs]);
  assert.deepEqual([...set.sorted()], [0, 3 * cs, 9 * cs, 1000 * cs]);
  for (const maxOut of [undefined, 2 ** 33]) {
    const p = new ClusterPlaces(10, cs, maxOut);
    p.set(0, 5 * cs).set(3 * cs, -1).set(2000 * cs, 7 * cs);
    assert.equal(p.get(0), 5 * cs);
    assert.equal(p.get(3 * cs), -1);
    assert.equal(p.get(2000 * cs), 7 * cs);
    assert.equal(p.get(4 * cs), undefined);
    p.setStream(4 * cs, 12345, 678);
    assert.deepEqual(p.stream(4 * cs), { host: 12345, len: 678 });
    assert.equal(p.stream(0), undefined);
  }
  const c = new CompressedPlaces([7 * 512, 3 * 512, 2 ** 40]);
  c.set(3 * 512, { kind: 'compressed', host: 99, len: 300 }).set(2 ** 40, { kind: 'zero' });
  assert.deepEqual(c.get(3 * 512), { kind: 'compressed', host: 99, len: 300 });
  assert.deepEqual(c.get(2 ** 40), { kind: 'zero' });
  assert.equal(c.get(7 * 512), undefined);
  assert.throws(() => c.set(5, { kind: 'zero' }));
});
