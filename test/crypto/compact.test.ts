/**
 * Compaction of LUKS-encrypted images (`compact --object secret,… --image-opts …,encrypt.key-secret=ID`):
 * the output keeps the LUKS area byte for byte (same uuid, key slots, master key), every data
 * cluster decrypted for its old host offset and encrypted for its new one (LUKS IVs follow the host
 * offset), compressed clusters (stored unencrypted by QEMU) copied as they are, internal snapshots
 * kept. qemu-img check (with the key) finds it clean and qemu-img compare --object finds it equal.
 * A crash after any write leaves the original untouched; what is refused says why.
 */
import { before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, cli, sha256, tmpDir } from '../helpers/qemu';
import { readLuksHeader } from '../../src/engine/crypto/luksHeader';
import { Qcow2Image } from '../../src/engine/image/image';
import { capture, fileReader, findLeaks, passphrase, qemuRaw, runOk, secretArgs } from './util';

const dir = tmpDir('qcow2-lens-crypt-compact-');
const PASS = passphrase('compact');
const AES_PASS = 'legacy-aes-16byt' + passphrase('-tail');
const NEW_PASS = passphrase('new-key');
const errors: string[] = [];
const opts = (file: string) => `driver=qcow2,file.filename=${file},encrypt.key-secret=k`;
const obj = () => ['--object', `secret,id=k,data=${PASS}`];

interface Img { name: string; file: string; o: string; snapshot?: boolean }
const images: Img[] = [
  { name: 'xts-snapshot', file: path.join(dir, 'xts.qcow2'), o: '', snapshot: true },
  { name: 'cbc-essiv-4k', file: path.join(dir, 'cbc.qcow2'), o: ',encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256,cluster_size=4096' },
];
const legacy = path.join(dir, 'legacy.qcow2');
const made = new Map<Img, Promise<void>>();

async function make(img: Img): Promise<void> {
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...secretArgs(['k', PASS]), '-o', `encrypt.format=luks,encrypt.key-secret=k,encrypt.iter-time=10${img.o}`, img.file, '8M']);
  const io = (...cmds: string[]) => runOk('qemu-io', [...secretArgs(['k', PASS]), '--image-opts', opts(img.file), ...cmds.flatMap(c => ['-c', c])]);
  // holes to close: data discarded before the data that stays, zeros written as data, a compressed cluster
  await io('write -P 0x0f 0 512k', 'write -P 0x11 1M 1M', 'write -P 0x22 5M 64k', 'write -c -P 0x33 7M 64k', 'write -P 0 6M 128k');
  if (img.snapshot) await runOk('qemu-img', ['snapshot', ...secretArgs(['k', PASS]), '--image-opts', '-c', 'snap', opts(img.file)]);
  await io('discard 0 512k', 'write -P 0x44 1M 64k', 'write -P 0x55 3M 4k');
}

before(() => {
  for (const img of images) made.set(img, make(img));
  for (const p of made.values()) p.catch(() => undefined);
});

for (const img of images) {
  test(`compact ${img.name}: stays encrypted with the same LUKS area; qemu-img check clean, compare equal`, async () => {
    await made.get(img);
    const before = await qemuRaw(opts(img.file), [['k', PASS]], `${img.file}.before.raw`);
    const out = path.join(dir, `${img.name}.out.qcow2`);
    const r = cli('compact', ...obj(), '--image-opts', opts(img.file), '-o', out);
    assert.equal(r.status, 0, r.stderr);
    capture(r.stdout.toString() + r.stderr);
    assert.ok(fs.statSync(out).size < fs.statSync(img.file).size, 'smaller');
    assert.match(await runOk('qemu-img', ['check', ...secretArgs(['k', PASS]), '--image-opts', opts(out)]), /No errors were found/);
    assert.match(await runOk('qemu-img', ['compare', ...secretArgs(['k', PASS]), '--image-opts', opts(img.file), opts(out)]), /Images are identical/);
    const infoA = JSON.parse(await runOk('qemu-img', ['info', '--output=json', img.file]))['format-specific'].data.encrypt;
    const infoB = JSON.parse(await runOk('qemu-img', ['info', '--output=json', out]))['format-specific'].data.encrypt;
    assert.deepEqual(infoB, infoA, 'the same LUKS header, key slots included');
    const after = await qemuRaw(opts(out), [['k', PASS]], `${out}.raw`);
    assert.ok(after.equals(before));
    assert.equal(after[7 << 20], 0x33);
    const ours = cli('read', ...obj(), '--image-opts', opts(out));
    assert.ok(ours.stdout.equals(before));
    assert.ok(!fs.readFileSync(out).includes(Buffer.alloc(4096, 0x11)), 'the data is encrypted on disk');
    if (img.snapshot) {
      assert.match(await runOk('qemu-img', ['snapshot', ...secretArgs(['k', PASS]), '--image-opts', '-l', opts(out)]), /snap/);
      // the snapshot's guest data survives: apply it to a copy and compare with the source's
      const a = path.join(dir, 'snap-src.qcow2'), b = path.join(dir, 'snap-out.qcow2');
      fs.copyFileSync(img.file, a);
      fs.copyFileSync(out, b);
      for (const f of [a, b]) await runOk('qemu-img', ['snapshot', ...secretArgs(['k', PASS]), '--image-opts', '-a', 'snap', opts(f)]);
      assert.match(await runOk('qemu-img', ['compare', ...secretArgs(['k', PASS]), '--image-opts', opts(a), opts(b)]), /Images are identical/);
      assert.match(await runOk('qemu-img', ['check', ...secretArgs(['k', PASS]), '--image-opts', opts(b)]), /No errors were found/);
    }
  });
}

test('compact --new-secret: a new master key and LUKS header of the same algorithms under the new passphrase only; qemu-img check clean, compare equal', async () => {
  const img = images[1];
  await made.get(img);
  const out = path.join(dir, 'new-key.out.qcow2');
  const nobj = ['--object', `secret,id=n,data=${NEW_PASS}`];
  const nopts = (file: string) => `driver=qcow2,file.filename=${file},encrypt.key-secret=n`;
  const r = cli('compact', ...obj(), ...nobj, '--new-secret', 'n', '--iter-time', '10', '--image-opts', opts(img.file), '-o', out);
  assert.equal(r.status, 0, r.stderr);
  capture(r.stdout.toString() + r.stderr);
  assert.match(await runOk('qemu-img', ['check', ...secretArgs(['n', NEW_PASS]), '--image-opts', nopts(out)]), /No errors were found/);
  assert.match(await runOk('qemu-img', ['compare', ...secretArgs(['k', PASS], ['n', NEW_PASS]), '--image-opts', opts(img.file), nopts(out)]), /Images are identical/);
  const encOf = async (f: string) => JSON.parse(await runOk('qemu-img', ['info', '--output=json', f]))['format-specific'].data.encrypt;
  const [a, b] = [await encOf(img.file), await encOf(out)];
  for (const k of ['cipher-alg', 'cipher-mode', 'ivgen-alg', 'ivgen-hash-alg', 'hash-alg']) assert.equal(b[k], a[k], k);
  const digest = async (f: string) => {
    const q = await Qcow2Image.open(f, { openBacking: false });
    const c = q.header.crypto!;
    await q.close();
    return (await readLuksHeader({ file: f, reader: fileReader(f), offset: c.offset, length: c.length })).masterKeyDigest.toString('hex');
  };
  assert.notEqual(await digest(out), await digest(img.file), 'a new master key');
  assert.notEqual(b.uuid, a.uuid);
  assert.deepEqual(b.slots.map((x: { active: boolean }) => x.active), [true, false, false, false, false, false, false, false]);
  // the old passphrase no longer opens the copy
  const old = cli('read', ...obj(), '--image-opts', opts(out));
  assert.equal(old.status, 1);
  assert.match(old.stderr, /Invalid password, cannot unlock any keyslot/);
  errors.push(old.stderr);
  assert.ok(!fs.readFileSync(out).includes(Buffer.alloc(4096, 0x11)), 'the data is encrypted on disk');
  // a plain image has no key to change
  const plain = path.join(dir, 'plain.qcow2');
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', plain, '1M']);
  const refused = cli('compact', ...nobj, '--new-secret', 'n', plain);
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /the image is not encrypted: a new passphrase applies to encrypted images only/);
  errors.push(refused.stderr);
});

test('compact refuses an encrypted image without the passphrase, legacy AES and --compress; a wrong passphrase is one error', async () => {
  const img = images[1];
  await made.get(img);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...secretArgs(['k', AES_PASS]), '-o', 'encrypt.format=aes,encrypt.key-secret=k', legacy, '1M']);
  const want = sha256(fs.readFileSync(img.file));
  const cases: [string[], RegExp][] = [
    [[img.file], /compacting it needs the passphrase/],
    [[...obj(), '--image-opts', opts(img.file), '--compress', 'zlib'], /QEMU stores compressed clusters unencrypted/],
    [['--object', `secret,id=k,data=${AES_PASS}`, '--image-opts', opts(legacy)], /legacy AES images are not compacted/],
    [['--object', 'secret,id=k,data=not-the-passphrase', '--image-opts', opts(img.file)], /Invalid password, cannot unlock any keyslot \(tried the 1 active key slot: 0\)/],
  ];
  for (const [argv, re] of cases) {
    const r = cli('compact', ...argv);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    errors.push(r.stderr);
  }
  assert.equal(sha256(fs.readFileSync(img.file)), want, 'the image is untouched');
  assert.deepEqual(fs.readdirSync(dir).filter(f => f.includes('.compact-')), []);
});

test('a crash after any write of an encrypted compaction (in place) leaves the original untouched', async t => {
  const img = images[1];
  await made.get(img);
  const pristine = path.join(dir, 'crash-pristine.qcow2');
  fs.copyFileSync(img.file, pristine);
  const want = sha256(fs.readFileSync(pristine));
  const work = path.join(dir, 'crash.qcow2');
  // the passphrase by file, as a script would give it (not in the process list)
  const secretFile = path.join(dir, 'pass.b64');
  fs.writeFileSync(secretFile, Buffer.from(PASS).toString('base64'));
  let crashes = 0;
  for (let k = 0; k < 200; k++) {
    fs.copyFileSync(pristine, work);
    const r = spawnSync(process.execPath, [CLI, 'compact', '-q', '--object', `secret,id=k,file=${secretFile},format=base64`, '--image-opts', opts(work)],
      { env: { ...process.env, QCOW2_LENS_CRASH_AFTER_WRITES: String(k) }, encoding: 'utf8' });
    capture(r.stdout + r.stderr);
    if (r.status === 0) {
      assert.match(await runOk('qemu-img', ['check', ...secretArgs(['k', PASS]), '--image-opts', opts(work)]), /No errors were found/);
      assert.match(await runOk('qemu-img', ['compare', ...secretArgs(['k', PASS]), '--image-opts', opts(pristine), opts(work)]), /Images are identical/);
      assert.deepEqual(fs.readdirSync(dir).filter(f => f.includes('.compact-')), []);
      break;
    }
    assert.equal(r.signal, 'SIGKILL', `k=${k}: expected a crash, got status ${r.status}: ${r.stderr}`);
    crashes++;
    assert.equal(sha256(fs.readFileSync(work)), want, `k=${k}: the original is untouched`);
  }
  assert.ok(crashes >= 3, `crashed at ${crashes} points`);
  t.diagnostic(`encrypted compact: ${crashes} crash points, original untouched at each`);
});

test('no passphrase in any file, output or error message of this test file', () => {
  assert.ok(errors.length >= 4);
  assert.deepEqual(findLeaks([dir], [PASS, AES_PASS, NEW_PASS], errors), []);
});
