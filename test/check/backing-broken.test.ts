/**
 * A backing chain that does not open (a missing backing file, a backing format QEMU has no driver
 * for, a missing file two levels down, a qcow2 backing file that is not qcow2): qemu-img check and
 * check -r all exit 1 with "Could not open backing file: …" and change nothing; ours does the same,
 * unless --no-backing asks for the file alone, which then counts as qemu-img counts the file opened
 * with `backing: null`. qemu-img info shows the image (its backing file named, not opened), and
 * info --backing-chain prints nothing and exits 1; ours matches both.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, pokeBytes, qemuImg, qemuImgStatus, qemuIo, readBE64, sha256 } from '../helpers/qemu';
import { NUMERIC_KEYS, ourCheck, qemuCheck, scratchDir, type CheckJson } from './common';

/** qemu-img check of the file alone: the image opened with `backing: null`. */
function qemuCheckAlone(img: string): { status: number; json: CheckJson } {
  return qemuCheck(`json:${JSON.stringify({ driver: 'qcow2', backing: null, file: { driver: 'file', filename: img } })}`);
}

/** The message after "<tool>: " on stderr's first line. */
const firstError = (stderr: string, tool: string): string => stderr.split('\n')[0].replace(new RegExp(`^${tool}: `), '');

/** An overlay with data of its own and one leaked cluster (the refcount of the refcount table raised to 2). */
function overlay(dir: string, name: string, backing: string, fmt: string): string {
  const img = path.join(dir, name);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', backing, '-F', fmt, img, '4M');
  qemuIo(img, ['write -P 0x5a 64k 128k']);
  const reftable = Number(readBE64(img, 48));
  const refblock = Number(readBE64(img, reftable));
  pokeBytes(img, refblock + 2 * (reftable / 65536), [0, 2]);
  return img;
}

/** Both tools refuse the image with the same message and leave it untouched; --no-backing counts the file alone as QEMU does. */
function assertRefusedAsQemu(img: string, what: string, wantInMessage: RegExp): void {
  const before = sha256(fs.readFileSync(img));
  const q = qemuImgStatus('check', '--output=json', img);
  const o = ourCheck(img);
  assert.equal(q.status, 1, `${what}: qemu-img check exits 1`);
  assert.equal(o.status, 1, `${what}: our check exits 1 (${o.stderr.trim()})`);
  assert.equal(o.stdout, '', `${what}: nothing on stdout, as qemu-img`);
  assert.match(firstError(q.stderr, 'qemu-img'), wantInMessage, `${what}: qemu-img's message`);
  assert.equal(firstError(o.stderr, 'qcow2-lens'), firstError(q.stderr, 'qemu-img'), `${what}: the message is qemu-img's`);

  const qr = qemuImgStatus('check', '-r', 'all', img);
  const or = ourCheck(img, '--repair', 'all');
  assert.equal(qr.status, 1, `${what}: qemu-img check -r all exits 1`);
  assert.equal(or.status, 1, `${what}: our repair exits 1`);
  assert.equal(firstError(or.stderr, 'qcow2-lens'), firstError(qr.stderr, 'qemu-img'), `${what}: repair's message`);
  assert.equal(sha256(fs.readFileSync(img)), before, `${what}: neither tool wrote to the image`);

  // -q keeps the message, as qemu-img check -q does
  const quiet = cli('check', '-q', img);
  assert.equal(quiet.status, 1);
  assert.match(quiet.stderr, /Could not open backing file/);

  // the file alone: qemu-img's counts with backing: null, and the finding naming the broken file
  const alone = qemuCheckAlone(img);
  const ours = ourCheck(img, '--no-backing');
  assert.equal(ours.status, alone.status, `${what}: --no-backing exit code ours ${ours.status} vs qemu-img (backing: null) ${alone.status}`);
  assert.equal(alone.json.leaks, 1, `${what}: the overlay's own leak is counted`);
  for (const k of NUMERIC_KEYS) assert.equal(ours.json[k], alone.json[k], `${what}: --no-backing "${k}"`);
  const f = ours.json.findings?.find(x => x.kind === 'backing-chain-broken');
  assert.ok(f, `${what}: backing-chain-broken finding`);
  assert.equal(f.severity, 'error');
}

test('missing backing file: check and check -r all exit 1 with qemu-img\'s message; --no-backing judges the file alone', () => {
  const dir = scratchDir();
  const base = path.join(dir, 'base.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', base, '4M');
  const img = overlay(dir, 'top.qcow2', 'base.qcow2', 'qcow2');
  fs.rmSync(base);
  assertRefusedAsQemu(img, 'missing backing', /Could not open backing file: Could not open '.*base\.qcow2': No such file or directory/);
  const f = ourCheck(img, '--no-backing').json.findings?.find(x => x.kind === 'backing-chain-broken');
  assert.match(f?.message ?? '', new RegExp(`"${base.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}".*No such file or directory`), 'the finding names the missing file');
  assert.equal(f?.hostOffset, Number(readBE64(img, 8)), 'at the backing file name');
});

test('backing format QEMU has no driver for: "Unknown driver"', () => {
  const dir = scratchDir();
  const base = path.join(dir, 'base.raw');
  qemuImg('create', '-q', '-f', 'raw', base, '4M');
  const img = overlay(dir, 'top.qcow2', 'base.raw', 'raw');
  // the backing format header extension says "foo" instead of "raw"
  const bytes = fs.readFileSync(img);
  const ext = bytes.indexOf(Buffer.from([0xe2, 0x79, 0x2a, 0xca, 0, 0, 0, 3]));
  assert.ok(ext > 0 && ext < 65536, 'backing format extension found');
  pokeBytes(img, ext + 8, Buffer.from('foo'));
  assertRefusedAsQemu(img, 'unknown backing format', /Could not open backing file: Unknown driver 'foo'/);
});

test('a missing file two levels down: "Could not open backing file" once per level', () => {
  const dir = scratchDir();
  const b0 = path.join(dir, 'b0.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', b0, '4M');
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'b0.qcow2', '-F', 'qcow2', path.join(dir, 'mid.qcow2'));
  const img = overlay(dir, 'top.qcow2', 'mid.qcow2', 'qcow2');
  fs.rmSync(b0);
  assertRefusedAsQemu(img, 'missing grandparent', /^Could not open '.*top\.qcow2': Could not open backing file: Could not open backing file: Could not open '.*b0\.qcow2'/);
});

test('a qcow2 backing file that is not qcow2: "Image is not in qcow2 format"', () => {
  const dir = scratchDir();
  const base = path.join(dir, 'base.img');
  qemuImg('create', '-q', '-f', 'raw', base, '4M');
  const img = overlay(dir, 'top.qcow2', 'base.img', 'raw');
  const bytes = fs.readFileSync(img);
  const ext = bytes.indexOf(Buffer.from([0xe2, 0x79, 0x2a, 0xca, 0, 0, 0, 3]));
  // "raw" → "qcow2" needs 5 bytes: the extension's length field and its padding hold them
  pokeBytes(img, ext + 4, [0, 0, 0, 5]);
  pokeBytes(img, ext + 8, Buffer.from('qcow2'));
  assertRefusedAsQemu(img, 'qcow2 format over a raw file', /Could not open backing file: Image is not in qcow2 format/);
});

test('a chain that opens is checked as before (no finding), and a raw backing file too', () => {
  const dir = scratchDir();
  qemuImg('create', '-q', '-f', 'raw', path.join(dir, 'base.raw'), '4M');
  const img = overlay(dir, 'top.qcow2', 'base.raw', 'raw');
  const q = qemuCheck(img);
  const o = ourCheck(img);
  assert.equal(q.status, 3);
  assert.equal(o.status, 3);
  assert.equal(o.json.findings?.some(f => f.kind === 'backing-chain-broken'), false);
});

test('info with a broken chain: the image shown as qemu-img shows it; --backing-chain exits 1 with qemu-img\'s message', () => {
  const dir = scratchDir();
  const b0 = path.join(dir, 'b0.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', b0, '4M');
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'b0.qcow2', '-F', 'qcow2', path.join(dir, 'mid.qcow2'));
  const img = overlay(dir, 'top.qcow2', 'mid.qcow2', 'qcow2');
  const whole = { q: qemuImgStatus('info', '--backing-chain', '--output=json', img), o: cli('info', '--backing-chain', '--output=json', img) };
  assert.equal(whole.q.status, 0);
  assert.equal(whole.o.status, 0, whole.o.stderr);
  assert.deepEqual(JSON.parse(whole.o.stdout.toString()), JSON.parse(whole.q.stdout), 'the chain\'s info, every layer');
  fs.rmSync(b0);
  for (const u of [[], ['-U']]) {
    const q = qemuImgStatus('info', ...u, '--output=json', img);
    const o = cli('info', ...u, '--output=json', img);
    assert.equal(q.status, 0, 'qemu-img info shows an image whose chain is broken');
    assert.equal(o.status, 0, o.stderr);
    assert.deepEqual(JSON.parse(o.stdout.toString()), JSON.parse(q.stdout));
    for (const out of ['human', 'json']) {
      const qc = qemuImgStatus('info', ...u, '--backing-chain', `--output=${out}`, img);
      const oc = cli('info', ...u, '--backing-chain', `--output=${out}`, img);
      assert.equal(qc.status, 1);
      assert.equal(oc.status, 1);
      assert.equal(qc.stdout, '');
      assert.equal(oc.stdout.toString(), '');
      assert.equal(firstError(oc.stderr, 'qcow2-lens'), firstError(qc.stderr, 'qemu-img'));
    }
  }
});
