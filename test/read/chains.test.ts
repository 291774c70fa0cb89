/**
 * Backing chains, external data files and encryption: a 3-deep chain with data at every level,
 * shadowing and a top larger than its backing; data_file with and without data_file_raw; LUKS.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { cli, qemuImg, qemuIo, tmpDir } from '../helpers/qemu';
import { assertInfoEqual, assertMatchesQemu } from './compare';

const dir = tmpDir('qcow2-lens-chain-');
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('3-deep backing chain: data at each level, shadowing, top larger than its backing', () => {
  const b0 = path.join(dir, 'b0.qcow2'), b1 = path.join(dir, 'b1.qcow2'), b2 = path.join(dir, 'b2.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', b0, '4M');
  qemuIo(b0, ['write -P 0x01 0 2M', 'write -P 0x02 3M 64k']);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'b0.qcow2', '-F', 'qcow2', b1, '6M'); // relative name
  qemuIo(b1, ['write -P 0x11 1M 2M', 'write -z 3M 32k', 'write -P 0x12 5M 64k']);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', b1, '-F', 'qcow2', b2, '8M');
  qemuIo(b2, ['write -P 0x21 512k 1M', 'write -z 0 64k', 'write -P 0x22 7M 64k', 'write -P 0x23 1536k 4k']);
  assertMatchesQemu(b2, dir);
  assertMatchesQemu(b1, dir);
});

test('backing file in another directory, named relative to the overlay', () => {
  fs.mkdirSync(path.join(dir, 'sub'), { recursive: true });
  const base = path.join(dir, 'sub', 'base.qcow2'), top = path.join(dir, 'top.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', base, '4M');
  qemuIo(base, ['write -P 0x31 0 1M']);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'sub/base.qcow2', '-F', 'qcow2', top, '4M');
  qemuIo(top, ['write -P 0x32 512k 64k']);
  assertMatchesQemu(top, dir);
});

test('qcow2 backing of the same size with no backing format recorded is probed', () => {
  const base = path.join(dir, 'probe-base.qcow2'), top = path.join(dir, 'probe-top.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', base, '4M');
  qemuIo(base, ['write -P 0x41 0 1M']);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top, '4M');
  qemuImg('rebase', '-u', '-b', base, '-F', 'qcow2', top);
  assertMatchesQemu(top, dir);
});

test('external data file', () => {
  const img = path.join(dir, 'df.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${path.join(dir, 'df.data')}`, img, '8M');
  qemuIo(img, ['write -P 0x51 0 64k', 'write -z 1M 64k', 'write -P 0x52 3M 100k']);
  assertMatchesQemu(img, dir);
});

test('external data file with data_file_raw=on', () => {
  const img = path.join(dir, 'dfr.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${path.join(dir, 'dfr.data')},data_file_raw=on`, img, '8M');
  qemuIo(img, ['write -P 0x61 0 64k', 'write -P 0x62 2M 1M']);
  assertMatchesQemu(img, dir);
});

test('LUKS-encrypted image: info equals qemu-img, map equals qemu-img with the key, read says "encrypted"', () => {
  const img = path.join(dir, 'luks.qcow2');
  const secret = ['--object', 'secret,id=sec0,data=lens'];
  qemuImg('create', '-q', '-f', 'qcow2', ...secret, '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', img, '4M');
  const opts = `driver=qcow2,file.filename=${img},encrypt.key-secret=sec0`;
  execFileSync('qemu-io', [...secret, '--image-opts', '-c', 'write -P 0x71 0 64k', '-c', 'write -z 1M 64k', opts]);
  assertInfoEqual(img);
  const ours = cli('map', img, '--json');
  assert.equal(ours.status, 0, ours.stderr);
  assert.equal(ours.stdout.toString(), qemuImg('map', '--output=json', ...secret, '--image-opts', opts));
  const r = cli('read', img);
  assert.notEqual(r.status, 0);
  assert.equal(r.stdout.length, 0);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /luks\.qcow2.*encrypted/);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
});

test('raw backing file (fully allocated) under a qcow2 overlay', () => {
  const raw = path.join(dir, 'rb.raw'), top = path.join(dir, 'rb-top.qcow2');
  fs.writeFileSync(raw, crypto.randomBytes(3 * 1024 * 1024)); // written bytes: no holes for SEEK_HOLE to find
  qemuImg('create', '-q', '-f', 'qcow2', '-b', raw, '-F', 'raw', top, '4M');
  qemuIo(top, ['write -P 0x81 1M 64k', 'write -z 2M 4k']);
  assertMatchesQemu(top, dir);
});

test('sparse raw backing files: holes map as zero (SEEK_HOLE, as qemu-img), odd sizes count whole sectors', () => {
  const raw = path.join(dir, 'sparse.raw'), top = path.join(dir, 'sparse-top.qcow2');
  fs.writeFileSync(raw, Buffer.alloc(0));
  fs.truncateSync(raw, 3 * 1024 * 1024 + 777); // a hole with an odd-sized tail
  const fd = fs.openSync(raw, 'r+');
  fs.writeSync(fd, crypto.randomBytes(64 * 1024), 0, 64 * 1024, 1024 * 1024);
  fs.writeSync(fd, Buffer.from('tail'), 0, 4, 3 * 1024 * 1024 + 700);
  fs.closeSync(fd);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', raw, '-F', 'raw', top, '4M');
  qemuIo(top, ['write -P 0x82 0 64k']);
  assert.match(qemuImg('map', '--output=json', top), /"depth": 1, "present": true, "zero": true, "data": false/);
  assertMatchesQemu(top, dir);
  const small = path.join(dir, 'small.raw'), smallTop = path.join(dir, 'small-top.qcow2');
  fs.writeFileSync(small, crypto.randomBytes(5000)); // not a multiple of 512
  qemuImg('create', '-q', '-f', 'qcow2', '-b', small, '-F', 'raw', smallTop, '1M');
  assertMatchesQemu(smallTop, dir);
});

test('compressed clusters in an overlay, overlay smaller than its backing, odd disk sizes', () => {
  const base = path.join(dir, 'cb.qcow2'), top = path.join(dir, 'ct.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', base, '10M');
  qemuIo(base, ['write -P 0x91 0 10M']);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top, '4M');
  qemuIo(top, ['write -c -P 0x92 64k 64k', 'write -c -P 0x93 1M 64k']);
  assertMatchesQemu(top, dir);
  const odd = path.join(dir, 'odd.qcow2'), oddTop = path.join(dir, 'odd-top.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', odd, '5000000');
  qemuIo(odd, ['write -P 0x94 4999000 1000']);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', odd, '-F', 'qcow2', oddTop, '6000000');
  assertMatchesQemu(oddTop, dir);
});

test('version 2 overlay on a version 2 base, and extended L2 with a snapshot', () => {
  const base = path.join(dir, 'v2b.qcow2'), top = path.join(dir, 'v2t.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', base, '4M');
  qemuIo(base, ['write -P 0xa1 0 1M']);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', '-b', base, '-F', 'qcow2', top, '4M');
  qemuIo(top, ['write -P 0xa2 512k 64k', 'write -z 0 64k']);
  assertMatchesQemu(top, dir);
  const es = path.join(dir, 'es.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', es, '4M');
  qemuIo(es, ['write -P 0xa3 0 100k']);
  qemuImg('snapshot', '-c', 's1', es);
  qemuIo(es, ['write -P 0xa4 8k 4k', 'write -z 64k 8k']);
  assertMatchesQemu(es, dir);
});

test('map in the human format equals qemu-img map (plain, chain, external data file)', () => {
  const base = path.join(dir, 'h-base.qcow2'), top = path.join(dir, 'h-top.qcow2'), df = path.join(dir, 'h-df.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', base, '8M');
  qemuIo(base, ['write -P 0xb1 0 2M', 'write -z 3M 64k']);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top, '8M');
  qemuIo(top, ['write -P 0xb2 1M 64k', 'write -P 0xb3 6M 128k']);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${path.join(dir, 'h-df.data')}`, df, '4M');
  qemuIo(df, ['write -P 0xb4 0 64k']);
  for (const img of [base, top, df]) {
    const ours = cli('map', img);
    assert.equal(ours.status, 0, ours.stderr);
    assert.equal(ours.stdout.toString(), qemuImg('map', img), `human map of ${img}`);
  }
});

test('read --offset/--length of unaligned ranges equals the same bytes of qemu-img convert', () => {
  const base = path.join(dir, 'r-base.qcow2'), top = path.join(dir, 'r-top.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', base, '2M');
  qemuIo(base, ['write -P 0xc1 0 1M', 'write -c -P 0xc2 1M 64k']);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', base, '-F', 'qcow2', top, '3M');
  qemuIo(top, ['write -P 0xc3 10000 5000', 'write -z 500k 12k', 'write -c -P 0xc4 1040k 8k', 'write -P 0xc5 2500k 100k']);
  const raw = path.join(dir, 'r-top.raw');
  qemuImg('convert', '-O', 'raw', top, raw);
  const whole = fs.readFileSync(raw);
  let seed = 7;
  const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
  for (let k = 0; k < 12; k++) {
    const offset = rnd(whole.length - 1);
    const length = 1 + rnd(Math.min(300000, whole.length - offset));
    const r = cli('read', top, '--offset', String(offset), '--length', String(length));
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.equals(whole.subarray(offset, offset + length)), `bytes ${offset}+${length}`);
  }
});
