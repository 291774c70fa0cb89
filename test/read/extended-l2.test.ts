/**
 * Extended L2 entries (32 subclusters per cluster): partial-cluster writes leave clusters with
 * allocated, unallocated and zero subclusters mixed; over a backing file the unallocated
 * subclusters read through to it.
 */
import { test } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu';
import { assertMatchesQemu } from './compare';

const dir = tmpDir('qcow2-lens-extl2-');
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

const mixedWrites = [
  'write -P 0x01 0 64k', // a whole cluster
  'write -P 0x02 66k 3k', // one subcluster of a new cluster, partly
  'write -z 130k 4k', // zero subclusters in an unallocated cluster
  'write -P 0x03 200k 2k',
  'write -z 202k 2k', // zero subcluster next to data in the same cluster
  'write -z 256k 128k', // whole zero clusters
  'write -P 0x04 1M 64k',
  'write -z 1M 8k', // zero subclusters inside an allocated cluster (zero-alloc)
  'write -P 0x05 1088k 1k',
];

test('extended L2, 64 KiB clusters, mixed data / zero / unallocated subclusters', () => {
  const img = path.join(dir, 'ext64k.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=64k', img, '8M');
  qemuIo(img, mixedWrites);
  assertMatchesQemu(img, dir);
});

test('extended L2, 2 MiB clusters (64 KiB subclusters)', () => {
  const img = path.join(dir, 'ext2m.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=2M', img, '8M');
  // Writes end on subcluster boundaries: a write ending inside a 64 KiB subcluster leaves a hole in
  // this sparse file, which QEMU reports as zero via SEEK_HOLE (see the todo test in geometry).
  qemuIo(img, ['write -P 0x07 0 128k', 'write -z 256k 128k', 'write -P 0x08 2M 64k', 'write -z 2112k 64k', 'write -P 9 6M 2M']);
  assertMatchesQemu(img, dir);
});

test('extended L2 over a backing file: unallocated subclusters read through', () => {
  const base = path.join(dir, 'ext-base.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', base, '8M');
  qemuIo(base, ['write -P 0xaa 0 2M']);
  const img = path.join(dir, 'ext-top.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', '-b', base, '-F', 'qcow2', img, '8M');
  qemuIo(img, mixedWrites);
  assertMatchesQemu(img, dir);
});

test('extended L2 with compressed clusters', () => {
  const img = path.join(dir, 'ext-comp.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', img, '8M');
  qemuIo(img, ['write -c -P 0x31 0 64k', 'write -P 0x32 128k 4k', 'write -c -P 0x33 192k 64k']);
  assertMatchesQemu(img, dir);
});
