/**
 * Damaged images: real QEMU-made images with one byte-level fault each. Our check must count what
 * `qemu-img check` counts (every numeric key, exit code), explain it in findings, and our
 * `--repair all` must leave an image qemu-img judges as it judges its own repair, with the same
 * guest content.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, pokeBytes, qemuImg, qemuImgStatus, qemuIo, readBE64, writeBE64 } from '../helpers/qemu';
import { assertCheckMatches, assertRepairMatches, layout, ourCheck, scratchDir } from './common';

function base(dir: string, name: string, opts = 'cluster_size=65536'): string {
  const img = path.join(dir, name);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', opts, img, '64M');
  qemuIo(img, ['write -P 0x11 0 1M', 'write -P 0x22 10M 64k', 'write -P 0x33 20M 128k']);
  return img;
}

const COPIED = 1n << 63n;

function kinds(j: { findings?: { kind: string }[] }): string[] {
  return (j.findings ?? []).map(f => f.kind);
}

test('zeroed L2 entry: one leaked cluster', () => {
  const dir = scratchDir();
  const img = base(dir, 'a.qcow2');
  const L = layout(img);
  writeBE64(img, L.l2(0) + 8 * 1, 0n);
  const r = assertCheckMatches(img, 'zeroed L2 entry');
  assert.equal(r.leaks, 1);
  assert.ok(kinds(r).includes('leak'));
  assertRepairMatches(img, dir, 'zeroed L2 entry');
  assertRepairMatches(img, dir, 'zeroed L2 entry (leaks)', 'leaks');
});

test('zeroed L1 entry: its L2 table and data leak, grouped into few findings', () => {
  const dir = scratchDir();
  const img = base(dir, 'a.qcow2');
  const L = layout(img);
  writeBE64(img, L.l1, 0n);
  const r = assertCheckMatches(img, 'zeroed L1 entry');
  assert.ok((r.leaks as number) >= 17);
  const leakFindings = r.findings!.filter(f => f.kind === 'leak');
  assert.ok(leakFindings.length < (r.leaks as number), 'consecutive leaks are grouped');
  assert.equal(leakFindings.reduce((s, f) => s + (f.count ?? 1), 0), r.leaks);
  assertRepairMatches(img, dir, 'zeroed L1 entry');
});

test('refcount lowered to 0: used cluster counted as free (rebuild)', () => {
  const dir = scratchDir();
  const img = base(dir, 'a.qcow2');
  const L = layout(img);
  const k = L.l2(0) === 0 ? 0 : Number(readBE64(img, L.l2(0)) & 0x00fffffffffffe00n) / L.cs;
  pokeBytes(img, L.refblock0 + 2 * k, [0, 0]);
  const r = assertCheckMatches(img, 'refcount 0');
  assert.ok((r.corruptions as number) >= 1);
  assert.ok(kinds(r).includes('refcount-zero-but-used'));
  assertRepairMatches(img, dir, 'refcount 0');
  assertRepairMatches(img, dir, 'refcount 0 (leaks)', 'leaks');
});

test('refcount raised: a leak and a COPIED flag that no longer matches', () => {
  const dir = scratchDir();
  const img = base(dir, 'a.qcow2');
  const L = layout(img);
  const k = Number(readBE64(img, L.l2(0)) & 0x00fffffffffffe00n) / L.cs;
  pokeBytes(img, L.refblock0 + 2 * k, [0, 5]);
  const r = assertCheckMatches(img, 'refcount raised');
  assert.equal(r.leaks, 1);
  assert.ok(kinds(r).includes('copied-flag-mismatch'));
  assertRepairMatches(img, dir, 'refcount raised');
  assertRepairMatches(img, dir, 'refcount raised (leaks)', 'leaks');
});

test('two L2 entries pointing at one cluster', () => {
  const dir = scratchDir();
  const img = base(dir, 'a.qcow2');
  const L = layout(img);
  writeBE64(img, L.l2(0) + 8, readBE64(img, L.l2(0)));
  const r = assertCheckMatches(img, 'double reference');
  const f = r.findings!.find(x => x.kind === 'double-reference');
  assert.ok(f, 'a double-reference finding');
  assert.match(f.message, /L1\[0\] → L2\[0x1\]/);
  assertRepairMatches(img, dir, 'double reference');
});

test('L2 entry pointing past the end of the file', () => {
  const dir = scratchDir();
  const img = base(dir, 'a.qcow2');
  const L = layout(img);
  writeBE64(img, L.l2(0) + 16, COPIED | 0x100000000n);
  const r = assertCheckMatches(img, 'past EOF');
  assert.ok(kinds(r).includes('offset-past-eof'));
  assertRepairMatches(img, dir, 'past EOF');
});

test('misaligned preallocated zero cluster is turned into a plain zero cluster', () => {
  const dir = scratchDir();
  const img = base(dir, 'a.qcow2');
  qemuIo(img, ['write -z 30M 64k']); // plain zero: give it a host offset to make it preallocated
  const L = layout(img);
  const e = readBE64(img, L.l2(0) + 8 * 3);
  writeBE64(img, L.l2(0) + 8 * 3, (e | 1n) + 0x200n); // zero flag, offset off by 512 bytes
  const r = assertCheckMatches(img, 'misaligned zero');
  assert.ok(kinds(r).includes('l2-entry-unaligned'));
  assertRepairMatches(img, dir, 'misaligned zero');
});

test('dirty bit: reported as a finding, cleared by repair', () => {
  const dir = scratchDir();
  const img = base(dir, 'a.qcow2', 'cluster_size=65536,lazy_refcounts=on');
  writeBE64(img, 72, readBE64(img, 72) | 1n);
  const r = assertCheckMatches(img, 'dirty bit');
  assert.ok(kinds(r).includes('dirty-bit'));
  assertRepairMatches(img, dir, 'dirty bit');
  const a = path.join(dir, 'ours-a.qcow2');
  assert.equal(readBE64(a, 72) & 3n, readBE64(path.join(dir, 'qemu-a.qcow2'), 72) & 3n);
});

test('corrupt bit: reported, cleared by repair like qemu-img -r all', () => {
  const dir = scratchDir();
  const img = base(dir, 'a.qcow2');
  writeBE64(img, 72, readBE64(img, 72) | 2n);
  const r = assertCheckMatches(img, 'corrupt bit');
  assert.ok(kinds(r).includes('corrupt-bit'));
  assertRepairMatches(img, dir, 'corrupt bit');
  assert.equal(readBE64(path.join(dir, 'ours-a.qcow2'), 72) & 2n, readBE64(path.join(dir, 'qemu-a.qcow2'), 72) & 2n);
});

test('truncated file: clusters past the end', () => {
  const dir = scratchDir();
  const img = base(dir, 'a.qcow2');
  const size = fs.statSync(img).size;
  fs.truncateSync(img, size - 2 * 65536);
  const r = assertCheckMatches(img, 'truncated');
  assert.ok((r.corruptions as number) >= 1);
  assertRepairMatches(img, dir, 'truncated');
  // mid-cluster truncation: the last cluster is partial, which QEMU tolerates
  const img2 = base(dir, 'b.qcow2');
  fs.truncateSync(img2, fs.statSync(img2).size - 4096);
  assertCheckMatches(img2, 'truncated mid-cluster');
  // cut inside the L1 table and before the refcount block: QEMU reads the missing bytes as zeros
  for (const size of [150000, 70000]) {
    const img3 = base(dir, `c${size}.qcow2`);
    fs.truncateSync(img3, size);
    assertCheckMatches(img3, `truncated to ${size} bytes`);
  }
});

test('damaged snapshot L1 table', () => {
  const dir = scratchDir();
  const img = base(dir, 'a.qcow2');
  qemuImg('snapshot', '-c', 'snap1', img);
  qemuIo(img, ['write -P 0x44 0 64k']);
  const hdr = fs.readFileSync(img).subarray(0, 72);
  const snapTable = Number(hdr.readBigUInt64BE(64));
  const snapL1 = Number(readBE64(img, snapTable));
  // zero the snapshot's first L1 entry: its L2 table and data lose a reference (leaks)
  const a = path.join(dir, 'zero.qcow2');
  fs.copyFileSync(img, a);
  writeBE64(a, snapL1, 0n);
  const r = assertCheckMatches(a, 'snapshot L1 entry zeroed');
  assert.ok((r.leaks as number) > 0);
  assertRepairMatches(a, dir, 'snapshot L1 entry zeroed');
  // point it at a misaligned L2 table
  const b = path.join(dir, 'misaligned.qcow2');
  fs.copyFileSync(img, b);
  writeBE64(b, snapL1, readBE64(b, snapL1) + 0x200n);
  const r2 = assertCheckMatches(b, 'snapshot L1 entry misaligned');
  assert.ok(kinds(r2).includes('l2-table-unaligned'));
  assertRepairMatches(b, dir, 'snapshot L1 entry misaligned');
});

test('refcount block pointer zeroed: everything counted as free', () => {
  const dir = scratchDir();
  const img = base(dir, 'a.qcow2');
  const L = layout(img);
  writeBE64(img, L.reftable, 0n);
  const r = assertCheckMatches(img, 'refcount block pointer zeroed');
  assert.ok((r.corruptions as number) > 0);
  assertRepairMatches(img, dir, 'refcount block pointer zeroed');
});

test('human output ends with qemu-img check\'s summary, before and after repair', () => {
  const dir = scratchDir();
  const img = base(dir, 'a.qcow2');
  const L = layout(img);
  writeBE64(img, L.l2(0) + 8, 0n); // a leak
  const k = Number(readBE64(img, L.l2(0)) & 0x00fffffffffffe00n) / L.cs;
  pokeBytes(img, L.refblock0 + 2 * k, [0, 2]); // refcount 2 with one user: a leak and a COPIED mismatch
  const q = qemuImgStatus('check', img);
  const o = cli('check', img);
  assert.equal(o.status, q.status);
  assert.equal(o.status, 2);
  const ours = o.stdout.toString();
  assert.ok(ours.endsWith(q.stdout), `ours:\n${ours}\nqemu-img:\n${q.stdout}`);
  assert.match(ours, /\[leak\]/);
  assert.match(ours, /\[copied-flag-mismatch\]/);
  // repair on two copies: the summaries printed after repair are the same
  const a = path.join(dir, 'o.qcow2'), b = path.join(dir, 'q.qcow2');
  fs.copyFileSync(img, a); fs.copyFileSync(img, b);
  const qr = qemuImgStatus('check', '-r', 'all', b);
  const or = cli('check', a, '-r', 'all');
  assert.equal(or.status, qr.status);
  assert.equal(or.status, 0);
  assert.equal(or.stdout.toString(), qr.stdout);
  // -r leaks with only leaks: exit 0 and qemu-img's "repaired" text
  const c = base(dir, 'c.qcow2');
  writeBE64(c, layout(c).l2(0) + 8, 0n);
  const c2 = path.join(dir, 'c2.qcow2');
  fs.copyFileSync(c, c2);
  const ql = qemuImgStatus('check', '-r', 'leaks', c2);
  const ol = cli('check', c, '-r', 'leaks');
  assert.equal(ol.status, ql.status);
  assert.equal(ol.stdout.toString(), ql.stdout);
  assert.equal(ourCheck(c).status, 0);
});

test('exit codes when the check cannot run at all: not qcow2, missing file', () => {
  const dir = scratchDir();
  const raw = path.join(dir, 'raw.img');
  fs.writeFileSync(raw, Buffer.alloc(1024 * 1024, 0x5a));
  assert.equal(cli('check', raw).status, qemuImgStatus('check', raw).status);
  const missing = path.join(dir, 'missing.qcow2');
  assert.equal(cli('check', missing).status, qemuImgStatus('check', missing).status);
});

for (const opts of ['refcount_bits=1', 'refcount_bits=2,cluster_size=4096', 'refcount_bits=64', 'cluster_size=512', 'extended_l2=on', 'compat=0.10']) {
  test(`refcount structure rebuilt in every refcount width and geometry: ${opts}`, () => {
    const dir = scratchDir();
    const img = path.join(dir, 'w.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', opts, img, '64M');
    qemuIo(img, ['write -P 0x11 0 1M', 'write -P 0x22 10M 64k']);
    writeBE64(img, layout(img).reftable, 0n); // every refcount block gone: all used clusters count as free
    const r = assertCheckMatches(img, `${opts}: refcount table entry zeroed`);
    assert.ok((r.corruptions as number) > 0);
    assertRepairMatches(img, dir, `${opts}: rebuild`);
  });
}
