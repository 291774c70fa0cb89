/**
 * Header and snapshot fields read as QEMU reads them (issue 9): 64-bit snapshot fields printed
 * digit-exact by `info --output=json`, and the header checks of qcow2_do_open — refused where
 * qemu-img refuses, opened (with the same info and check) where it opens. Each image is made by
 * qemu-img and poked byte by byte; qemu-img judges every one first.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, pokeBytes, qemuImg, qemuImgStatus, qemuIo, tmpDir, writeBE64 } from '../helpers/qemu';
import { parseExact } from '../fuzz/oracle';
import { assertCheckMatches } from '../check/common';

const dir = tmpDir('qcow2-lens-exact-read-');

function create(name: string, opts: string, size = '16M'): string {
  const img = path.join(dir, name);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', opts, img, size);
  qemuIo(img, ['write -P 0x5a 0 128k']);
  return img;
}

function u32(buf: Buffer, at: number): number { return buf.readUInt32BE(at); }

/** Both tools' `info --output=json`, parsed keeping integers beyond 2^53 exact (as strings). */
function infos(img: string): { ours: Record<string, unknown> | undefined; qemu: Record<string, unknown> | undefined; oursText: string; oursStatus: number; qemuStatus: number; oursErr: string; qemuErr: string } {
  const o = cli('info', '--output=json', img);
  const q = qemuImgStatus('info', '--output=json', img);
  return { ours: parseExact(o.stdout.toString()), qemu: parseExact(q.stdout), oursText: o.stdout.toString(), oursStatus: o.status, qemuStatus: q.status, oursErr: o.stderr, qemuErr: q.stderr };
}

/** info equals qemu-img's (all but actual-size, which the file system decides), integers digit for digit. */
function assertInfoExact(img: string, what: string): Record<string, unknown> {
  const r = infos(img);
  assert.equal(r.qemuStatus, 0, `${what}: qemu-img info refused: ${r.qemuErr}`);
  assert.equal(r.oursStatus, 0, `${what}: our info refused: ${r.oursErr}`);
  const { 'actual-size': _a, ...ours } = r.ours!;
  const { 'actual-size': _b, ...qemu } = r.qemu!;
  assert.deepEqual(ours, qemu, `${what}: info differs from qemu-img's`);
  return r.ours!;
}

/** Both tools refuse the image: info and check exit 1; ours says why in one line naming the file. */
function assertBothRefuse(img: string, what: string, ourReason: RegExp): void {
  const r = infos(img);
  assert.equal(r.qemuStatus, 1, `${what}: qemu-img info opened it`);
  assert.equal(r.oursStatus, 1, `${what}: our info opened it`);
  assert.match(r.oursErr, ourReason, `${what}: our error`);
  assert.ok(r.oursErr.startsWith(`qcow2-lens: ${img}: `), `${what}: the error names the file: ${r.oursErr}`);
  assert.equal(r.oursErr.trim().split('\n').length, 1, `${what}: one line: ${r.oursErr}`);
  const qc = qemuImgStatus('check', img), oc = cli('check', img);
  assert.equal(oc.status, qc.status, `${what}: check exit ours ${oc.status} vs qemu-img ${qc.status}`);
}

test('64-bit snapshot fields (icount, VM state size, VM clock, date) print digit-exact, as QEMU prints them (int64)', () => {
  const img = create('snap64.qcow2', 'cluster_size=65536');
  qemuImg('snapshot', '-c', 's1', img);
  qemuImg('snapshot', '-c', 's2', img);
  const hdr = fs.readFileSync(img).subarray(0, 112);
  const table = Number(hdr.readBigUInt64BE(64));
  const e = fs.readFileSync(img).subarray(table, table + 4096);
  const extra = u32(e, 36);
  assert.ok(extra >= 24, 'QEMU 7.2 writes icount in the extra data');
  const second = table + Math.ceil((40 + extra + e.readUInt16BE(12) + e.readUInt16BE(14)) / 8) * 8;
  const values = {
    vmClock: 2n ** 64n - 1n, vmStateLarge: 2n ** 63n + 5n, icount: 2n ** 60n + 1n,
    vmStateLarge2: 2n ** 53n + 1n, icount2: 2n ** 64n - 2n,
  };
  writeBE64(img, table + 24, values.vmClock);
  const date = Buffer.alloc(8);
  date.writeUInt32BE(0xffffffff, 0);
  date.writeUInt32BE(999999999, 4);
  pokeBytes(img, table + 16, date);
  writeBE64(img, table + 40, values.vmStateLarge);
  writeBE64(img, table + 56, values.icount);
  writeBE64(img, second + 40, values.vmStateLarge2);
  writeBE64(img, second + 56, values.icount2);
  const info = assertInfoExact(img, 'snapshot 64-bit fields');
  const text = infos(img).oursText;
  // QAPI int64: the unsigned on-disk values read as signed
  for (const digits of ['"icount": 1152921504606846977', '"vm-state-size": -9223372036854775803', '"vm-clock-sec": 18446744073', '"vm-clock-nsec": 709551615', '"date-sec": 4294967295', '"vm-state-size": 9007199254740993', '"icount": -2']) {
    assert.ok(text.includes(digits), `our JSON prints ${digits}`);
  }
  assert.equal((info.snapshots as unknown[]).length, 2);
});

test('snapshot id or name with a NUL byte: printed up to the NUL, as qemu-img prints the C string', () => {
  const img = create('snapnul.qcow2', 'compat=0.10,cluster_size=65536');
  qemuImg('snapshot', '-c', 'snapname', img);
  const table = Number(fs.readFileSync(img).subarray(0, 72).readBigUInt64BE(64));
  const e = fs.readFileSync(img).subarray(table, table + 512);
  const extra = u32(e, 36), idSize = e.readUInt16BE(12);
  pokeBytes(img, table + 40 + extra + idSize + 4, [0]); // "snap\0ame"
  const info = assertInfoExact(img, 'NUL in a snapshot name');
  assert.equal((info.snapshots as { name: string }[])[0].name, 'snap');
  // the id grown over the name's first bytes (the entry keeps its size): "1snap", then the NUL ends it
  const nameSize = e.readUInt16BE(14);
  pokeBytes(img, table + 12, [0, idSize + 6, 0, nameSize - 6]);
  assertInfoExact(img, 'id reaching into the name');
});

test('the compression-type bit on a zlib image is refused, as QEMU refuses it', () => {
  const img = create('cbit.qcow2', 'cluster_size=4096,refcount_bits=1');
  writeBE64(img, 72, 8n);
  assertBothRefuse(img, 'compression bit, zlib', /header\.incompatible_features.*compression type feature bit/);
  // and the image is not harmed: with the bit cleared both open it again
  writeBE64(img, 72, 0n);
  assertInfoExact(img, 'bit cleared');
});

test('a v3 header_length that is not a multiple of 8 (but at least 104): QEMU opens it, so do we', () => {
  for (const len of [0x69, 0x6f]) {
    const img = create(`hl-${len}.qcow2`, 'cluster_size=512,refcount_bits=8');
    const b = Buffer.alloc(4);
    b.writeUInt32BE(len);
    pokeBytes(img, 100, b);
    assertInfoExact(img, `header_length ${len}`);
    assertCheckMatches(img, `header_length ${len}`);
  }
});

test('a header size that is not a multiple of 512: the virtual size is rounded down to whole sectors', () => {
  for (const delta of [4n, 511n]) {
    const img = create(`size-${delta}.qcow2`, 'cluster_size=4096,refcount_bits=1');
    writeBE64(img, 24, 16n * 1024n * 1024n - delta);
    const info = assertInfoExact(img, `size - ${delta}`);
    assert.equal(info['virtual-size'], 16 * 1024 * 1024 - 512);
    assertCheckMatches(img, `size - ${delta}`);
  }
  // a size just past a cluster boundary: the rounded size has one cluster fewer (check's total-clusters)
  const img = create('size-cluster.qcow2', 'cluster_size=4096,refcount_bits=1');
  writeBE64(img, 24, 16n * 1024n * 1024n - 4096n + 100n);
  assertInfoExact(img, 'size just past a cluster');
  assertCheckMatches(img, 'size just past a cluster');
});

test('a virtual size beyond 2^53 (2 MiB clusters map up to 2^61): opened, printed digit-exact, checked as qemu-img checks it', () => {
  const img = path.join(dir, 'huge.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2M', img, '9P');
  qemuIo(img, ['write -P 0x5a 0 2M']);
  // 9 PiB - 700 bytes: rounded down to whole sectors, past 2^53, where a double would lose the digits
  writeBE64(img, 24, 9n * 2n ** 50n - 700n);
  assertInfoExact(img, '9 PiB - 700');
  assert.ok(infos(img).oursText.includes(`"virtual-size": ${9n * 2n ** 50n - 1024n}`));
  assertCheckMatches(img, '9 PiB - 700');
  // 9 PiB + 700: the L1 table is sized by the field as stored, so one entry short (QEMU: "L1 table is too small")
  writeBE64(img, 24, 9n * 2n ** 50n + 700n);
  assertBothRefuse(img, '9 PiB + 700', /l1_size.*too small/);
});

test('backing_file_offset set with backing_file_size 0: opened without a backing file, as QEMU does', () => {
  const img = create('bempty.qcow2', 'cluster_size=4096,refcount_bits=1');
  writeBE64(img, 8, 0x200n);
  const info = assertInfoExact(img, 'empty backing name');
  assert.equal(info['backing-filename'], undefined);
  assertCheckMatches(img, 'empty backing name');
});

test('snapshots_offset not cluster-aligned with no snapshots: refused ("Snapshot table offset invalid"), as QEMU does', () => {
  const img = create('soff.qcow2', 'cluster_size=4096,refcount_bits=1');
  writeBE64(img, 64, 0x200n);
  assertBothRefuse(img, 'unaligned empty snapshot table', /snapshot table.*not cluster-aligned/);
});
