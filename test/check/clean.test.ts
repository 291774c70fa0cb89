/**
 * Clean images in many configurations: our check's JSON (without `findings`) is byte-for-byte
 * qemu-img check's, the exit code is the same, and a repair changes nothing qemu-img would see.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { qemuImg, qemuImgStatus, qemuIo, sha256 } from '../helpers/qemu';
import { assertCheckMatches, assertRepairMatches, NUMERIC_KEYS, ourCheck, scratchDir } from './common';

const WRITES = ['write -P 0x11 0 300k', 'write -P 0x22 5M 64k', 'write -P 0x33 2M 8k', 'write -z 7M 128k', 'write -P 0x44 1M 512'];

interface Config { name: string; opts: string; size?: string; writes?: string[]; then?: (img: string, dir: string) => string }

const configs: Config[] = [
  { name: 'default (64 KiB clusters, 16-bit refcounts)', opts: 'cluster_size=65536' },
  { name: 'refcount_bits=1', opts: 'refcount_bits=1' },
  { name: 'refcount_bits=64', opts: 'refcount_bits=64' },
  { name: 'refcount_bits=4, 4 KiB clusters', opts: 'refcount_bits=4,cluster_size=4096' },
  { name: '512-byte clusters', opts: 'cluster_size=512', size: '16M' },
  { name: '2 MiB clusters', opts: 'cluster_size=2M' },
  { name: 'extended L2', opts: 'extended_l2=on,cluster_size=128k' },
  { name: 'version 2 (compat=0.10)', opts: 'compat=0.10' },
  { name: 'lazy refcounts', opts: 'lazy_refcounts=on' },
  { name: 'preallocation=metadata', opts: 'preallocation=metadata', writes: ['write -P 1 0 64k'] },
  { name: 'preallocation=falloc', opts: 'preallocation=falloc', size: '32M', writes: ['write -P 1 0 64k'] },
  {
    name: 'fragmented (writes in reverse order)', opts: 'cluster_size=4096',
    writes: Array.from({ length: 40 }, (_, i) => `write -P ${i + 1} ${(40 - i) * 8192} 4k`),
  },
  {
    name: 'compressed (zlib)', opts: 'cluster_size=65536',
    then: (img, dir) => { const c = path.join(dir, 'c.qcow2'); qemuImg('convert', '-c', '-O', 'qcow2', img, c); return c; },
  },
  {
    name: 'compressed (zstd)', opts: 'compression_type=zstd',
    then: (img, dir) => { const c = path.join(dir, 'z.qcow2'); qemuImg('convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', img, c); return c; },
  },
  {
    name: 'internal snapshots', opts: 'cluster_size=65536',
    then: img => {
      qemuImg('snapshot', '-c', 's1', img);
      qemuIo(img, ['write -P 0x55 0 128k', 'write -P 0x66 9M 64k']);
      qemuImg('snapshot', '-c', 's2', img);
      qemuIo(img, ['discard 5M 64k']);
      return img;
    },
  },
  {
    name: 'persistent bitmaps', opts: 'cluster_size=65536',
    then: img => {
      qemuImg('bitmap', '--add', img, 'b0');
      qemuImg('bitmap', '--add', '-g', '512k', img, 'b1');
      qemuIo(img, ['write -P 0x77 3M 1M']);
      return img;
    },
  },
  {
    name: 'backing file', opts: 'cluster_size=65536',
    then: (img, dir) => {
      const top = path.join(dir, 'top.qcow2');
      qemuImg('create', '-q', '-f', 'qcow2', '-b', img, '-F', 'qcow2', top);
      qemuIo(top, ['write -P 0x99 64k 64k']);
      return top;
    },
  },
];

for (const c of configs) {
  test(`clean image: ${c.name}`, () => {
    const dir = scratchDir();
    let img = path.join(dir, 'a.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', c.opts, img, c.size ?? '64M');
    qemuIo(img, c.writes ?? WRITES);
    if (c.then) img = c.then(img, dir);
    const r = assertCheckMatches(img, c.name);
    assert.equal(r.corruptions, undefined);
    assert.equal(r.leaks, undefined);
    assert.deepEqual(r.findings!.filter(f => f.severity === 'error'), []);
    const bytes = sha256(fs.readFileSync(img));
    assertRepairMatches(img, dir, c.name);
    // a repair of a clean image writes nothing
    assert.equal(sha256(fs.readFileSync(path.join(dir, `ours-${path.basename(img)}`))), bytes);
  });
}

test('LUKS-encrypted image: the encryption header is counted', () => {
  const dir = scratchDir();
  const img = path.join(dir, 'enc.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '--object', 'secret,id=s0,data=pw', '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=100', img, '16M');
  const spec = `driver=qcow2,file.filename=${img},encrypt.key-secret=s0`;
  qemuIo(spec, ['write -P 1 0 128k'], ['--object', 'secret,id=s0,data=pw', '--image-opts']);
  // qemu-img needs the key just to open the image; we check the structure without it
  const q = qemuImgStatus('check', '--output=json', '--object', 'secret,id=s0,data=pw', '--image-opts', spec);
  assert.equal(q.status, 0, q.stderr);
  const qj = JSON.parse(q.stdout) as Record<string, unknown>;
  const o = ourCheck(img);
  assert.equal(o.status, q.status);
  for (const k of NUMERIC_KEYS) assert.equal(o.json[k], qj[k], `luks: "${k}" ours ${o.json[k]} vs qemu-img ${qj[k]}`);
  // the LUKS header area is counted (else its clusters would be leaks)
  assert.ok((o.json['image-end-offset'] as number) > 1024 * 1024);
});

test('external data file: data clusters are not counted', () => {
  const dir = scratchDir();
  const img = path.join(dir, 'ext.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${path.join(dir, 'ext.raw')}`, img, '16M');
  qemuIo(img, ['write -P 1 0 128k', 'write -P 2 4M 64k']);
  assertCheckMatches(img, 'external data file');
});
