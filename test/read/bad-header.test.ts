/**
 * Damaged or hostile headers: every command must fail with one clear line naming the file, the
 * structure and the offset, without a stack trace, within a 256 MiB heap and quickly.
 */
import { test } from 'node:test';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pokeBytes, qemuImg, qemuIo, tmpDir, writeBE64 } from '../helpers/qemu';
import { assertCleanFailure, assertInfoEqual, assertMatchesQemu } from './compare';

const dir = tmpDir('qcow2-lens-badhdr-');
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

const COMMANDS: string[][] = [['info', '--json'], ['map', '--json'], ['read']];

function good(name: string): string {
  const img = path.join(dir, name);
  qemuImg('create', '-q', '-f', 'qcow2', img, '8M');
  qemuIo(img, ['write -P 0x5a 0 1M']);
  return img;
}

function truncatedCopy(src: string, name: string, bytes: number): string {
  const out = path.join(dir, name);
  fs.writeFileSync(out, fs.readFileSync(src).subarray(0, bytes));
  return out;
}

function failsEverywhere(img: string, structure: RegExp, hostOffset?: number): void {
  for (const c of COMMANDS) assertCleanFailure([c[0], img, ...c.slice(1)], img, structure, hostOffset);
}

test('empty file', () => {
  const img = path.join(dir, 'empty.qcow2');
  fs.writeFileSync(img, '');
  failsEverywhere(img, /header.*not a qcow2 image/, 0);
});

test('random bytes', () => {
  const img = path.join(dir, 'random.qcow2');
  fs.writeFileSync(img, crypto.randomBytes(256 * 1024));
  failsEverywhere(img, /header\.magic.*not a qcow2 image/, 0);
});

test('header cut: inside the version 2 fields, inside the version 3 fields, inside an extension', () => {
  const src = good('hdr-src.qcow2');
  failsEverywhere(truncatedCopy(src, 'cut-50.qcow2', 50), /header.*truncated/, 0);
  failsEverywhere(truncatedCopy(src, 'cut-90.qcow2', 90), /header.*truncated/, 0);
  failsEverywhere(truncatedCopy(src, 'cut-104.qcow2', 104), /header.*truncated/, 0);
  failsEverywhere(truncatedCopy(src, 'cut-200.qcow2', 200), /header extension.*truncated/);
});

test('L1 table of 2^31 entries', () => {
  const img = good('l1-huge.qcow2');
  pokeBytes(img, 36, [0x80, 0, 0, 0]);
  failsEverywhere(img, /header\.l1_size/, 0x24);
});

test('L1 table, refcount table and snapshot table offsets past the end of the file: read as zeros, as QEMU reads them', () => {
  // qemu-img info, map and convert open such images (reads past the end of the file return zeros)
  const l1 = good('l1-past.qcow2');
  writeBE64(l1, 40, 1n << 40n);
  assertMatchesQemu(l1, dir);
  const rt = good('reftable-past.qcow2');
  writeBE64(rt, 48, 1n << 40n);
  assertMatchesQemu(rt, dir);
  const sn = good('snap-past.qcow2');
  qemuImg('snapshot', '-c', 's1', sn);
  writeBE64(sn, 64, 1n << 40n);
  assertMatchesQemu(sn, dir);
});

test('refcount table and snapshot count beyond QEMU limits', () => {
  const rt = good('reftable-huge.qcow2');
  pokeBytes(rt, 56, [0x7f, 0xff, 0xff, 0xff]);
  failsEverywhere(rt, /refcount_table_clusters/, 0x38);
  const sn = good('snap-count.qcow2');
  qemuImg('snapshot', '-c', 's1', sn);
  pokeBytes(sn, 60, [0xff, 0xff, 0xff, 0xff]);
  failsEverywhere(sn, /nb_snapshots/, 0x3c);
});

test('missing backing file: the error names it', () => {
  const img = path.join(dir, 'orphan.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', 'no-such-base.qcow2', '-F', 'qcow2', img, '8M');
  for (const c of [['map', '--json'], ['read']]) {
    const line = assertCleanFailure([c[0], img, ...c.slice(1)], img, /backing file.*no-such-base\.qcow2/);
    if (!line.includes('cannot be opened')) throw new Error(line);
  }
  assertInfoEqual(img); // info reads only this image, as qemu-img info does
});

test('missing external data file: the error names it', () => {
  const img = path.join(dir, 'no-data.qcow2');
  const data = path.join(dir, 'gone.data');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${data}`, img, '8M');
  fs.rmSync(data);
  for (const c of [['map', '--json'], ['read']]) assertCleanFailure([c[0], img, ...c.slice(1)], img, /external data file.*gone\.data/);
  assertInfoEqual(img);
});

test('backing chain loops: an image backing itself, and two images backing each other', () => {
  const self = path.join(dir, 'self.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', self, '8M');
  qemuImg('rebase', '-u', '-b', 'self.qcow2', '-F', 'qcow2', self);
  for (const c of [['map', '--json'], ['read']]) assertCleanFailure([c[0], self, ...c.slice(1)], self, /backing.*loop/);
  const a = path.join(dir, 'loop-a.qcow2'), b = path.join(dir, 'loop-b.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', a, '8M');
  qemuImg('create', '-q', '-f', 'qcow2', '-b', a, '-F', 'qcow2', b, '8M');
  qemuImg('rebase', '-u', '-b', b, '-F', 'qcow2', a);
  assertCleanFailure(['map', b, '--json'], a, /backing.*loop/);
});
