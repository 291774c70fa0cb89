/**
 * Exact values in the check (issue 9): 64-bit refcounts beyond 2^53 read, compared, reported and
 * repaired exactly (the bug: `-r all` wrote refcount 0 on an in-use cluster whose refcount was
 * 2^64-1), and the L1 entry's reserved bit 0 judged as qemu-img check judges it. Images are made
 * with qemu-img/qemu-io and poked; qemu-img check and check -r judge the same bytes.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, qemuImg, qemuIo, readBE64, writeBE64 } from '../helpers/qemu';
import { assertCheckMatches, assertRepairMatches, layout, ourCheck, qemuCheck, scratchDir } from './common';

/** A refcount_bits=64 image with data in its first clusters; the host clusters of guest clusters 0..n-1. */
function image64(dir: string, name: string, n = 4): { img: string; data: number[]; entry(k: number): number } {
  const img = path.join(dir, name);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=64,cluster_size=65536', img, '64M');
  qemuIo(img, [`write -P 0x77 0 ${n * 64}k`]);
  const L = layout(img);
  assert.equal(L.refcountBits, 64);
  const data: number[] = [];
  for (let i = 0; i < n; i++) data.push(Number(readBE64(img, L.l2(0) + 8 * i) & 0x00fffffffffffe00n) / L.cs);
  return { img, data, entry: k => L.refblock0 + 8 * k };
}

const copyOf = (dir: string, img: string, name: string): string => {
  const p = path.join(dir, name);
  fs.copyFileSync(img, p);
  return p;
};

test('refcount 2^64-1 on an in-use cluster (refcount_bits=64): counted, reported exactly, and -r all/leaks set it to 1 as qemu-img does', () => {
  const dir = scratchDir();
  const { img, data, entry } = image64(dir, 'max.qcow2');
  writeBE64(img, entry(data[0]), 0xffffffffffffffffn);
  const r = assertCheckMatches(img, 'refcount 2^64-1');
  assert.equal(r.leaks, 1);
  const leak = r.findings!.find(f => f.kind === 'leak')!;
  assert.match(leak.message, /refcount 18446744073709551615 /, 'the stored refcount is printed exactly');
  assert.ok(r.findings!.some(f => f.kind === 'copied-flag-mismatch' && f.message.includes('18446744073709551615')));
  // the text output prints the same digits
  assert.match(cli('check', img).stdout.toString(), /refcount 18446744073709551615 but only 1 user/);
  for (const mode of ['all', 'leaks'] as const) {
    const a = copyOf(dir, img, `max-ours-${mode}.qcow2`), b = copyOf(dir, img, `max-qemu-${mode}.qcow2`);
    const ours = ourCheck(a, '--repair', mode), theirs = qemuCheck(b, '-r', mode);
    assert.equal(ours.status, theirs.status, `-r ${mode}: exit ours ${ours.status} (${ours.stderr}) vs qemu-img ${theirs.status}`);
    assert.equal(ours.json['leaks-fixed'], theirs.json['leaks-fixed']);
    assert.equal(readBE64(a, entry(data[0])), 1n, `-r ${mode}: the in-use cluster's refcount is the count of its users`);
    assert.equal(readBE64(a, entry(data[0])), readBE64(b, entry(data[0])), `-r ${mode}: the same refcount as qemu-img's repair writes`);
    assert.equal(qemuCheck(a).status, 0, `-r ${mode}: qemu-img check finds our repaired image clean`);
  }
  assertRepairMatches(img, dir, 'refcount 2^64-1');
});

test('64-bit refcounts around and beyond 2^53 in one refcount block: every one compared and repaired exactly, its neighbours kept', () => {
  const dir = scratchDir();
  const { img, data, entry } = image64(dir, 'big.qcow2', 8);
  // every other cluster, so no two leaks run together into one finding
  const poked = [2n ** 53n, 2n ** 53n + 1n, 2n ** 60n + 7n, 2n ** 63n];
  poked.forEach((v, i) => writeBE64(img, entry(data[2 * i]), v));
  const r = assertCheckMatches(img, 'refcounts near 2^53');
  assert.equal(r.leaks, poked.length);
  const text = JSON.stringify(r.findings);
  for (const v of poked) assert.ok(text.includes(`refcount ${v} `), `refcount ${v} is printed exactly`);
  assertRepairMatches(img, dir, 'refcounts near 2^53');
  assertRepairMatches(img, dir, 'refcounts near 2^53 (leaks)', 'leaks');
  // after our repair every poked refcount is 1, and so are the untouched ones between them
  const a = copyOf(dir, img, 'big-ours.qcow2');
  assert.equal(ourCheck(a, '--repair', 'all').status, 0);
  for (const k of data) assert.equal(readBE64(a, entry(k)), 1n);
});

test('a write that rewrites a refcount block keeps a 64-bit refcount beyond 2^53 exact (snapshot -c adds 1, as qemu-img snapshot -c does)', () => {
  const dir = scratchDir();
  const { img, data, entry } = image64(dir, 'keep.qcow2', 2);
  writeBE64(img, entry(data[1]), 2n ** 60n + 1n);
  const a = copyOf(dir, img, 'keep-ours.qcow2'), b = copyOf(dir, img, 'keep-qemu.qcow2');
  const ours = cli('snapshot', '-c', 's1', a);
  assert.equal(ours.status, 0, ours.stderr);
  qemuImg('snapshot', '-c', 's1', b);
  assert.equal(readBE64(b, entry(data[1])), 2n ** 60n + 2n, 'qemu-img adds one reference');
  assert.equal(readBE64(a, entry(data[1])), readBE64(b, entry(data[1])), 'ours writes the same refcount, exactly');
  assert.equal(readBE64(a, entry(data[0])), readBE64(b, entry(data[0])));
  // both images are then judged alike (the poked refcount is still a leak)
  const qa = qemuCheck(a), qb = qemuCheck(b);
  assert.equal(qa.status, qb.status);
  assert.equal(qa.json.leaks, qb.json.leaks);
});

test('bit 0 of an L1 entry is reserved (spec, QEMU L1E_RESERVED_MASK): one corruption that -r all leaves, as qemu-img check counts it', () => {
  const dir = scratchDir();
  const img = path.join(dir, 'l1bit0.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096,refcount_bits=1', img, '16M');
  qemuIo(img, ['write -P 0x42 0 64k']);
  const L = layout(img);
  writeBE64(img, L.l1, readBE64(img, L.l1) | 1n);
  const r = assertCheckMatches(img, 'L1 bit 0');
  assert.equal(r.corruptions, 1);
  assert.ok(r.findings!.some(f => f.kind === 'l1-reserved-bits' && f.structure === 'L1[0]'));
  assertRepairMatches(img, dir, 'L1 bit 0');
  // the guest data is still read through the entry, as QEMU reads it
  const ours = cli('read', '--offset', '0', '--length', '65536', img);
  assert.equal(ours.status, 0, ours.stderr);
  assert.ok(ours.stdout.equals(Buffer.alloc(65536, 0x42)));
});
