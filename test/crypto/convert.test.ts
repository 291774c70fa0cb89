/**
 * `qcow2-lens convert -O qcow2 -o encrypt.format=luks,encrypt.key-secret=ID,…`: plain, LUKS and
 * legacy-AES sources (the encrypted ones through --image-opts) into a new LUKS image, each data
 * cluster encrypted for its new host offset. qemu-img must find the output clean (check, with the
 * key) and equal to the source (compare --object …, both keys), and must read it with the key.
 */
import { before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, tmpDir } from '../helpers/qemu';
import { capture, findLeaks, passphrase, qemuRaw, runOk, secretArgs } from './util';

const dir = tmpDir('qcow2-lens-crypt-convert-');
const PASS = passphrase('conv-out');
const SRC_PASS = passphrase('conv-src');
const AES_PASS = 'legacy-aes-16byt' + passphrase('-tail');
const errors: string[] = [];

const plain = path.join(dir, 'plain.qcow2');
const luks = path.join(dir, 'luks.qcow2');
const legacy = path.join(dir, 'legacy.qcow2');
const opts = (file: string, id: string) => `driver=qcow2,file.filename=${file},encrypt.key-secret=${id}`;
const writes = ['write -P 0x11 3M 64k', 'write -P 0x22 0 4k', 'write -P 0x33 1M 130k', 'write -P 0x44 4095k 1k'].flatMap(c => ['-c', c]);

before(async () => {
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', plain, '4M']);
  await runOk('qemu-io', [...writes, plain]);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...secretArgs(['s', SRC_PASS]), '-o', 'encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256', luks, '4M']);
  await runOk('qemu-io', [...secretArgs(['s', SRC_PASS]), '--image-opts', opts(luks, 's'), ...writes]);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...secretArgs(['s', AES_PASS]), '-o', 'encrypt.format=aes,encrypt.key-secret=s', legacy, '4M']);
  await runOk('qemu-io', [...secretArgs(['s', AES_PASS]), '--image-opts', opts(legacy, 's'), ...writes]);
});

const cases: { name: string; src: () => string[]; srcOpts?: string; srcPass?: string; o: string }[] = [
  { name: 'plain → LUKS (default cipher)', src: () => [plain], o: '' },
  { name: 'plain → LUKS aes-128-cbc-plain64, 4 KiB clusters', src: () => [plain], o: ',encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.hash-alg=sha1,cluster_size=4096' },
  { name: 'LUKS → LUKS with another passphrase and cipher', src: () => ['--image-opts', opts(luks, 's')], srcPass: SRC_PASS, srcOpts: opts(luks, 's'), o: ',encrypt.cipher-alg=aes-256,encrypt.cipher-mode=xts' },
  { name: 'legacy AES → LUKS', src: () => ['--image-opts', opts(legacy, 's')], srcPass: AES_PASS, srcOpts: opts(legacy, 's'), o: ',encrypt.cipher-mode=ecb,encrypt.cipher-alg=aes-128' },
];

for (const [i, c] of cases.entries()) {
  test(`convert ${c.name}: qemu-img check clean, compare equal, reads the same bytes`, async () => {
    const out = path.join(dir, `out-${i}.qcow2`);
    const secrets = ['--object', `secret,id=k,data=${PASS}`, ...(c.srcPass ? ['--object', `secret,id=s,data=${c.srcPass}`] : [])];
    const r = cli('convert', ...secrets, '-O', 'qcow2', '-o', `encrypt.format=luks,encrypt.key-secret=k,encrypt.iter-time=10${c.o}`, ...c.src(), out);
    assert.equal(r.status, 0, r.stderr);
    capture(r.stderr);
    const info = JSON.parse(await runOk('qemu-img', ['info', '--output=json', out]));
    assert.equal(info.encrypted, true);
    assert.equal(info['format-specific'].data.encrypt.format, 'luks');
    assert.match(await runOk('qemu-img', ['check', ...secretArgs(['k', PASS]), '--image-opts', opts(out, 'k')]), /No errors were found/);
    const qsecrets = secretArgs(['k', PASS], ...(c.srcPass ? [['s', c.srcPass] as [string, string]] : []));
    assert.match(await runOk('qemu-img', ['compare', ...qsecrets, '--image-opts', c.srcOpts ?? `driver=qcow2,file.filename=${plain}`, opts(out, 'k')]), /Images are identical/);
    const expected = await qemuRaw(opts(out, 'k'), [['k', PASS]], `${out}.raw`);
    assert.equal(expected[3 << 20], 0x11);
    const back = cli('read', '--object', `secret,id=k,data=${PASS}`, '--image-opts', opts(out, 'k'));
    assert.ok(back.stdout.equals(expected));
    // the ciphertext is not the plaintext: no cluster of the output holds the 0x11 pattern
    assert.ok(!fs.readFileSync(out).includes(Buffer.alloc(4096, 0x11)), 'the data is encrypted on disk');
  });
}

test('convert refuses -c with encryption and an unknown secret id, leaving nothing behind', () => {
  const out = path.join(dir, 'refused.qcow2');
  const obj = `secret,id=k,data=${PASS}`;
  const a = cli('convert', '--object', obj, '-c', '-O', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=k', plain, out);
  assert.equal(a.status, 1);
  assert.match(a.stderr, /-c with encrypt\.format is not supported/);
  const b = cli('convert', '--object', obj, '-O', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=k9', plain, out);
  assert.equal(b.status, 1);
  assert.match(b.stderr, /No secret with id 'k9'/);
  assert.ok(!fs.existsSync(out));
  errors.push(a.stderr, b.stderr);
});

test('no passphrase in any file, output or error message of this test file', () => {
  assert.deepEqual(findLeaks([dir], [PASS, SRC_PASS, AES_PASS], errors), []);
});
