/**
 * Damaged L1/L2 tables and truncated files: map and read must fail with one clear line naming the
 * file, the table and the offset; entries that QEMU itself treats as unallocated must map as QEMU does.
 */
import { test } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { qemuImg, qemuIo, readBE64, tmpDir, writeBE64 } from '../helpers/qemu';
import { assertCleanFailure, assertInfoEqual, assertMatchesQemu } from './compare';

const dir = tmpDir('qcow2-lens-badtab-');
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

const OFFSET_MASK = 0x00fffffffffffe00n;

function good(name: string): { img: string; l1: number; l2: number } {
  const img = path.join(dir, name);
  qemuImg('create', '-q', '-f', 'qcow2', img, '8M');
  qemuIo(img, ['write -P 0x5a 0 1M']);
  const l1 = Number(readBE64(img, 40));
  const l2 = Number(readBE64(img, l1) & OFFSET_MASK);
  return { img, l1, l2 };
}

function cut(src: string, name: string, bytes: number): string {
  const out = path.join(dir, name);
  fs.writeFileSync(out, fs.readFileSync(src).subarray(0, bytes));
  return out;
}

test('file cut inside the L1 table: the missing entries read as zeros, as QEMU reads them', () => {
  const { img, l1 } = good('l1-src.qcow2');
  const t = cut(img, 'l1-cut.qcow2', l1 + 4);
  assertMatchesQemu(t, dir);
});

test('file cut inside an L2 table', () => {
  const { img, l2 } = good('l2-src.qcow2');
  const t = cut(img, 'l2-cut.qcow2', l2 + 4096);
  assertInfoEqual(t); // info does not read L2 tables, qemu-img info neither
  for (const c of [['map', '--json'], ['read']]) assertCleanFailure([c[0], t, ...c.slice(1)], t, /L1\[0\] → L2 table.*past the end of the file/, l2);
});

test('L1 entry pointing into the header (unaligned offset 0x200)', () => {
  const { img, l1 } = good('l1-hdr.qcow2');
  writeBE64(img, l1, (1n << 63n) | 0x200n);
  for (const c of [['map', '--json'], ['read']]) assertCleanFailure([c[0], img, ...c.slice(1)], img, /L1\[0\] → L2 table.*not cluster-aligned/, 0x200);
});

test('L1 entry pointing at cluster 0 (offset 0 with flags) is unallocated, as in QEMU', () => {
  const { img, l1 } = good('l1-zero.qcow2');
  writeBE64(img, l1, 1n << 63n);
  assertMatchesQemu(img, dir);
});

test('L2 entry pointing into the header (unaligned offset 0x200)', () => {
  const { img, l2 } = good('l2-hdr.qcow2');
  writeBE64(img, l2 + 8, (1n << 63n) | 0x200n);
  for (const c of [['map', '--json'], ['read']]) assertCleanFailure([c[0], img, ...c.slice(1)], img, /L1\[0\] → L2\[0x1\].*0x200 is not cluster-aligned/, l2 + 8);
});

test('L2 entry pointing at cluster 0 (offset 0 with the copied flag) is unallocated, as in QEMU', () => {
  const { img, l2 } = good('l2-zero.qcow2');
  writeBE64(img, l2 + 8, 1n << 63n);
  assertMatchesQemu(img, dir);
});

test('L2 table offset past the end of the file', () => {
  const { img, l1 } = good('l2-past.qcow2');
  writeBE64(img, l1, (1n << 63n) | (1n << 40n));
  for (const c of [['map', '--json'], ['read']]) assertCleanFailure([c[0], img, ...c.slice(1)], img, /L1\[0\] → L2 table.*past the end of the file/, 2 ** 40);
});

test('compressed cluster descriptor pointing past the end of the file', () => {
  const img = path.join(dir, 'comp-past.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '8M');
  qemuIo(img, ['write -c -P 0x33 0 64k']);
  const l2 = Number(readBE64(img, Number(readBE64(img, 40))) & OFFSET_MASK);
  const entry = readBE64(img, l2);
  // keep the compressed flag and sector count, move the host offset far past the end
  const offsetBits = 62n - (16n - 8n);
  writeBE64(img, l2, (entry & ~((1n << offsetBits) - 1n)) | (1n << 40n));
  assertCleanFailure(['read', img], img, /L2\[0x0\] → compressed data.*past the end of the file/, 2 ** 40);
});
