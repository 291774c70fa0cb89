/**
 * Geometry and format versions: cluster sizes 512 B / 64 KiB / 2 MiB, refcount widths 1 / 16 / 64
 * bits, compat 0.10 (version 2) and 1.1 (version 3). Each image gets data, a zero write and a
 * partial-cluster write, then info/map/read are compared with qemu-img.
 */
import { test } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { CLI, cli, qemuImg, qemuIo, tmpDir } from '../helpers/qemu';
import { assertMatchesQemu } from './compare';

const dir = tmpDir('qcow2-lens-geometry-');
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

function build(name: string, opts: string, size = '8M'): string {
  const img = path.join(dir, `${name}.qcow2`);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', opts, img, size);
  qemuIo(img, [
    'write -P 0x11 0 100k', // spans clusters, ends mid-cluster
    'write -P 0x22 3M 7k',
    'write -z 5M 1M', // zero clusters (v3) or zeroed data (v2)
    'write -P 0x33 7M 512',
    'write -z 7M 256', // partial zero write inside a data cluster
  ]);
  return img;
}

for (const cs of ['512', '64k', '2M']) {
  test(`cluster size ${cs}`, () => assertMatchesQemu(build(`cluster-${cs}`, `cluster_size=${cs}`), dir));
}

for (const bits of [1, 16, 64]) {
  test(`refcount bits ${bits}`, () => assertMatchesQemu(build(`refcount-${bits}`, `refcount_bits=${bits}`), dir));
}

test('compat 0.10 (version 2 header, no zero flag use by qemu-io writes)', () => {
  assertMatchesQemu(build('compat-0.10', 'compat=0.10'), dir);
});

test('compat 1.1 with lazy refcounts', () => {
  assertMatchesQemu(build('compat-1.1', 'compat=1.1,lazy_refcounts=on'), dir);
});

test('version 2 image with 512-byte clusters and a disk size that is not a cluster multiple', () => {
  assertMatchesQemu(build('v2-odd', 'compat=0.10,cluster_size=512', '8389120'), dir);
});

test('fresh empty image and a 0-byte disk', () => {
  const a = path.join(dir, 'empty.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', a, '16M');
  assertMatchesQemu(a, dir);
  const b = path.join(dir, 'zero-size.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', b, '0');
  assertMatchesQemu(b, dir);
});

// QEMU detects "metadata preallocation" (more refcounted clusters than the sparse host file has
// allocated) and then asks the host file system for holes (SEEK_DATA/SEEK_HOLE), reporting
// never-written parts of data clusters as zero. We ask the same way (native/holes.c).
test('metadata preallocation: holes in data clusters are zero, as qemu-img map reports them', () => {
  const img = path.join(dir, 'prealloc.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', img, '16M');
  qemuIo(img, ['write -P 0x44 1M 64k', 'write -P 0x45 5M 8k']);
  assert.match(qemuImg('map', '--output=json', img), /"zero": true, "data": true/); // QEMU did consult the holes
  assertMatchesQemu(img, dir);
  const r = cli('map', img, '--json');
  assert.equal(r.stderr, ''); // nothing it cannot see, so nothing to note
});

test('extended L2 with 2 MiB clusters: a write ending inside a subcluster of a sparse file maps as qemu-img', () => {
  const img = build('extl2-2m-sparse', 'cluster_size=2M,extended_l2=on');
  qemuIo(img, ['write -P 0x31 100k 5k', 'write -P 0x32 4M 70k']);
  assertMatchesQemu(img, dir);
});

test('without the hole seeker (QCOW2_LENS_NO_NATIVE), map says on stderr what it cannot see', () => {
  const img = path.join(dir, 'prealloc-note.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', img, '16M');
  const r = spawnSync(process.execPath, [CLI, 'map', img, '--json'], { env: { ...process.env, QCOW2_LENS_NO_NATIVE: '1' }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /metadata preallocation with a sparse file/);
  const plain = build('no-prealloc', 'cluster_size=64k');
  const q = cli('map', plain, '--json');
  assert.equal(q.stderr, '');
});

test('a map of 16,000+ entries (streamed in several chunks) equals qemu-img and prints nothing on stderr', () => {
  const raw = path.join(dir, 'striped.raw');
  const buf = Buffer.alloc(8 * 1024 * 1024);
  for (let off = 0; off < buf.length; off += 1024) buf.fill(1 + ((off >> 10) % 250), off, off + 512); // data, hole, data, …
  fs.writeFileSync(raw, buf);
  const img = path.join(dir, 'striped.qcow2');
  qemuImg('convert', '-S', '512', '-O', 'qcow2', '-o', 'cluster_size=512', raw, img);
  const r = cli('map', img, '--json');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '');
  assert.ok(r.stdout.length > 1.5 * 1024 * 1024, `only ${r.stdout.length} bytes`);
  assertMatchesQemu(img, dir);
});
