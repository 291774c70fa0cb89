/**
 * `qcow2-lens create -f qcow2 --object secret,… -o encrypt.format=luks,encrypt.key-secret=ID,…`
 * against qemu-img 7.2's twin made with the same options: the header cluster byte for byte, the
 * file's length, `qemu-img info`'s encrypt fields (all but the random uuid and the timed
 * iteration counts), `qemu-img check` clean (with the key, as qemu-img needs it), and qemu-io with
 * the key writes and reads back through our LUKS area — which we then read as qemu-img does.
 */
import { before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, tmpDir } from '../helpers/qemu';
import { capture, findLeaks, passphrase, qemuRaw, runOk, secretArgs } from './util';

const dir = tmpDir('qcow2-lens-crypt-create-');
const PASS = passphrase('create');
const errors: string[] = [];

const combos: { name: string; o: string }[] = [
  { name: 'default', o: '' },
  { name: 'aes128-cbc-essiv-sha1-4k', o: 'encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256,encrypt.hash-alg=sha1,cluster_size=4096' },
  { name: 'aes192-xts-plain-sha512', o: 'encrypt.cipher-alg=aes-192,encrypt.cipher-mode=xts,encrypt.ivgen-alg=plain,encrypt.hash-alg=sha512' },
  { name: 'aes256-ecb-sha256-backing', o: 'encrypt.cipher-alg=aes-256,encrypt.cipher-mode=ecb,backing_file=base.qcow2,backing_fmt=qcow2' },
  { name: 'aes128-xts-plain64-sha1-2M', o: 'encrypt.cipher-alg=aes-128,encrypt.hash-alg=sha1,cluster_size=2M' },
];
const oOf = (c: { o: string }) => ['encrypt.format=luks', 'encrypt.key-secret=sec0', 'encrypt.iter-time=10', ...(c.o ? [c.o] : [])].join(',');
const imageOpts = (file: string) => `driver=qcow2,file.filename=${file},encrypt.key-secret=sec0`;

before(async () => {
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(dir, 'base.qcow2'), '4M']);
  await runOk('qemu-io', ['-c', 'write -P 0x42 0 4M', path.join(dir, 'base.qcow2')]);
});

/** The encrypt fields qemu-img info shows, without what is random (uuid) or timed (iteration counts). */
function encryptInfo(file: string, info: string): unknown {
  const j = JSON.parse(info);
  const e = j['format-specific'].data.encrypt;
  assert.ok(e, `${file}: no encrypt fields`);
  delete e.uuid;
  delete e['master-key-iters'];
  for (const s of e.slots) delete s.iters;
  return { encrypt: e, encrypted: j.encrypted, size: j['virtual-size'], cluster: j['cluster-size'], backing: j['backing-filename'] };
}

for (const c of combos) {
  test(`create ${c.name}: equals qemu-img's twin, passes qemu-img check, qemu-io reads what it writes`, async () => {
    const ours = path.join(dir, `${c.name}.qcow2`), theirs = path.join(dir, `${c.name}.qemu.qcow2`);
    const r = cli('create', '-q', '-f', 'qcow2', '--object', `secret,id=sec0,data=${PASS}`, '-o', oOf(c), ours, '4M');
    assert.equal(r.status, 0, r.stderr);
    capture(r.stderr);
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...secretArgs(['sec0', PASS]), '-o', oOf(c), theirs, '4M']);
    assert.equal(fs.statSync(ours).size, fs.statSync(theirs).size, 'file length');
    const cs = c.o.includes('cluster_size=4096') ? 4096 : c.o.includes('cluster_size=2M') ? 2 << 20 : 65536;
    assert.ok(fs.readFileSync(ours).subarray(0, cs).equals(fs.readFileSync(theirs).subarray(0, cs)), 'header cluster');
    assert.deepEqual(encryptInfo(ours, await runOk('qemu-img', ['info', '--output=json', ours])), encryptInfo(theirs, await runOk('qemu-img', ['info', '--output=json', theirs])));
    assert.match(await runOk('qemu-img', ['check', ...secretArgs(['sec0', PASS]), '--image-opts', imageOpts(ours)]), /No errors were found/);

    await runOk('qemu-io', [...secretArgs(['sec0', PASS]), '--image-opts', imageOpts(ours),
      '-c', 'write -P 0x5c 1M 128k', '-c', 'write -P 0x6d 4032k 64k', '-c', 'read -P 0x5c 1M 128k', '-c', 'read -P 0x6d 4032k 64k']);
    assert.match(await runOk('qemu-img', ['check', ...secretArgs(['sec0', PASS]), '--image-opts', imageOpts(ours)]), /No errors were found/);
    const expected = await qemuRaw(imageOpts(ours), [['sec0', PASS]], `${ours}.raw`);
    assert.equal(expected[1 << 20], 0x5c);
    const read = cli('read', '--object', `secret,id=sec0,data=${PASS}`, '--image-opts', imageOpts(ours));
    assert.equal(read.status, 0, read.stderr);
    assert.ok(read.stdout.equals(expected));
  });
}

test('create refuses what it cannot make, with qemu-img\'s words where it has them, never naming the passphrase', () => {
  const f = path.join(dir, 'refused.qcow2');
  const obj = `secret,id=sec0,data=${PASS}`;
  const cases: [string[], RegExp][] = [
    [['-o', 'encrypt.format=luks'], /Parameter 'encrypt\.key-secret' is required for cipher/],
    [['-o', 'encrypt.key-secret=sec0'], /Parameter 'encrypt\.format' is missing/],
    [['-o', 'encrypt.format=luks,encrypt.key-secret=sec9'], /No secret with id 'sec9'/],
    [['-o', 'encrypt.format=aes,encrypt.key-secret=sec0'], /legacy qcow2 AES\) is read and converted, never written/],
    [['-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.cipher-alg=aes-192,encrypt.cipher-mode=cbc,encrypt.iter-time=10'], /not a whole number of sectors; QEMU 7\.2 aborts/],
    [['-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.cipher-alg=twofish-128,encrypt.iter-time=10'], /only AES is supported/],
    [['-o', 'encrypt.format=luks,encrypt.key-secret=sec0,preallocation=full'], /preallocation with encryption is not supported/],
  ];
  for (const [argv, re] of cases) {
    const r = cli('create', '-q', '-f', 'qcow2', '--object', obj, ...argv, f, '4M');
    assert.equal(r.status, 1, `${argv.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.match(r.stderr, /^qcow2-lens: [^\n]*refused\.qcow2: /, 'the message names the image, not a temporary file');
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.ok(!fs.existsSync(f), 'nothing is left behind');
    assert.deepEqual(fs.readdirSync(dir).filter(n => n.includes('.tmp')), []);
    errors.push(r.stderr);
  }
});

test('no passphrase in any file, output or error message of this test file', () => {
  assert.ok(errors.length >= 7);
  assert.deepEqual(findLeaks([dir], [PASS], errors), []);
});
