/**
 * Guest reads of encrypted qcow2 images through Qcow2Image and the CLI (`read`, `convert`,
 * `compare`, `map` with `--object secret,…` and `--image-opts …,encrypt.key-secret=ID`), against
 * `qemu-img convert --object … --image-opts … -O raw` of the same image. Images are made by
 * qemu-img 7.2 in a spread of ciphers, modes, IV generators and hashes (aes-192 only in xts: QEMU
 * aborts creating it in cbc/ecb), plus legacy AES; written by qemu-io out of guest order so host
 * offsets differ from guest offsets (LUKS IVs follow the host offset), with compressed clusters
 * (stored unencrypted) in one, and chains: an encrypted overlay over a plain base and a plain
 * overlay over an encrypted base (backing.encrypt.key-secret).
 */
import { before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { sharedBuffer } from '../../src/engine/io/bufferRing';
import { Secret } from '../../src/engine/crypto/secret';
import type { SectorCipher } from '../../src/engine/crypto/sectorCipher';
import { Qcow2Error } from '../../src/engine/errors';
import { Qcow2Image } from '../../src/engine/image/image';
import { cli, tmpDir } from '../helpers/qemu';
import { capture, findLeaks, passphrase, qemuRaw, run, runOk, secretArgs } from './util';

const dir = tmpDir('qcow2-lens-image-read-');
const PASS = passphrase('imgread');
const PASS2 = passphrase('imgread-base');
const WRONG = passphrase('wrong');
/** Legacy AES keys with the first 16 bytes only: QEMU ignores the tail, and so must we. */
const AES_PASS = 'legacy-aes-16byt' + passphrase('-tail');
const errors: string[] = [];

interface Img { name: string; file: string; create: string; pass: string; compressed?: boolean; cluster?: number }
const images: Img[] = [];
function add(name: string, create: string, extra: Partial<Img> = {}): Img {
  const img: Img = { name, file: path.join(dir, `${name}.qcow2`), create, pass: PASS, ...extra };
  images.push(img);
  return img;
}
const luks = (alg: string, mode: string, ivgen: string, hash: string, ivgenHash?: string) =>
  `encrypt.format=luks,encrypt.cipher-alg=${alg},encrypt.cipher-mode=${mode},encrypt.ivgen-alg=${ivgen},encrypt.hash-alg=${hash}${ivgenHash ? `,encrypt.ivgen-hash-alg=${ivgenHash}` : ''},encrypt.iter-time=10`;
add('default', 'encrypt.format=luks,encrypt.iter-time=10', { compressed: true });
add('aes128-xts-plain64-sha1', luks('aes-128', 'xts', 'plain64', 'sha1'), { cluster: 4096 });
add('aes192-xts-plain-sha512', luks('aes-192', 'xts', 'plain', 'sha512'));
add('aes256-xts-essiv-sha256', luks('aes-256', 'xts', 'essiv', 'sha256', 'sha256'));
add('aes128-cbc-essiv-sha256', luks('aes-128', 'cbc', 'essiv', 'sha256', 'sha256'));
add('aes256-cbc-plain64-sha512', luks('aes-256', 'cbc', 'plain64', 'sha512'));
add('aes128-cbc-plain-sha1', luks('aes-128', 'cbc', 'plain', 'sha1'));
add('aes256-ecb-sha256', luks('aes-256', 'ecb', 'plain64', 'sha256'));
add('aes128-ecb-sha1', luks('aes-128', 'ecb', 'plain64', 'sha1'), { compressed: true });
const legacy = add('legacy-aes', 'encrypt.format=aes', { pass: AES_PASS, compressed: true });

const opts = (file: string, ...ids: [prefix: string, id: string][]) =>
  `driver=qcow2,file.filename=${file}${ids.map(([p, id]) => `,${p}encrypt.key-secret=${id}`).join('')}`;

/** Chains: encrypted overlay over a plain base, plain overlay over an encrypted base. */
const plainBase = path.join(dir, 'plain-base.qcow2');
const encOverPlain = path.join(dir, 'enc-over-plain.qcow2');
const encBase = path.join(dir, 'enc-base.qcow2');
const plainOverEnc = path.join(dir, 'plain-over-enc.qcow2');
const encOverEnc = path.join(dir, 'enc-over-enc.qcow2');

const made = new Map<Img, Promise<void>>();
let chains: Promise<void>;

async function make(img: Img): Promise<void> {
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...secretArgs(['sec0', img.pass]),
    '-o', `${img.create},encrypt.key-secret=sec0${img.cluster ? `,cluster_size=${img.cluster}` : ''}`, img.file, '4M']);
  const io = [...secretArgs(['sec0', img.pass]), '--image-opts', opts(img.file, ['', 'sec0'])];
  // Out of guest order, unaligned within sectors nowhere (qemu-io writes sectors), one run across clusters.
  const cmds = ['write -P 0x11 3M 64k', 'write -P 0x22 0 4k', 'write -P 0x33 1M 130k', 'write -P 0x44 4095k 1k', 'write -z 1M 8k'];
  if (img.compressed) cmds.push('write -c -P 0x55 2M 64k');
  await runOk('qemu-io', [...io, ...cmds.flatMap(c => ['-c', c])]);
}

async function makeChains(): Promise<void> {
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', plainBase, '4M']);
  await runOk('qemu-io', ['-c', 'write -P 0x61 0 1M', '-c', 'write -P 0x62 2M 512k', plainBase]);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...secretArgs(['sec0', PASS]), '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10',
    '-b', plainBase, '-F', 'qcow2', encOverPlain]);
  await runOk('qemu-io', [...secretArgs(['sec0', PASS]), '--image-opts', opts(encOverPlain, ['', 'sec0']), '-c', 'write -P 0x71 512k 1M']);

  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...secretArgs(['sec1', PASS2]), '-o', 'encrypt.format=luks,encrypt.key-secret=sec1,encrypt.iter-time=10,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256', encBase, '4M']);
  await runOk('qemu-io', [...secretArgs(['sec1', PASS2]), '--image-opts', opts(encBase, ['', 'sec1']), '-c', 'write -P 0x81 1M 2M']);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', encBase, '-F', 'qcow2', plainOverEnc]);
  await runOk('qemu-io', [...secretArgs(['sec1', PASS2]), '--image-opts', opts(plainOverEnc, ['backing.', 'sec1']), '-c', 'write -P 0x91 1536k 64k']);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...secretArgs(['sec0', PASS]), '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10',
    '-b', encBase, '-F', 'qcow2', encOverEnc]);
  await runOk('qemu-io', [...secretArgs(['sec0', PASS], ['sec1', PASS2]), '--image-opts', opts(encOverEnc, ['', 'sec0'], ['backing.', 'sec1']), '-c', 'write -P 0xa1 1M 4k']);
}

before(() => {
  for (const img of images) made.set(img, make(img));
  chains = makeChains();
  for (const p of [...made.values(), chains]) p.catch(() => undefined);
});

/** The CLI with a passphrase given by file (kept out of the process list), format=base64. */
function secretFile(id: string, pass: string): string {
  const f = path.join(dir, `${id}-${Math.random().toString(36).slice(2)}.b64`);
  fs.writeFileSync(f, Buffer.from(pass).toString('base64'));
  return `secret,id=${id},file=${f},format=base64`;
}

for (const img of images) {
  test(`${img.name}: Qcow2Image and qcow2-lens read decrypt to qemu-img convert's bytes`, async () => {
    await made.get(img);
    const expected = await qemuRaw(opts(img.file, ['', 'sec0']), [['sec0', img.pass]], `${img.file}.raw`);
    assert.equal(expected[0], 0x22);
    if (img.compressed) assert.equal(expected[2 * 1024 * 1024], 0x55);

    const key = Secret.fromString(img.pass);
    const im = await Qcow2Image.open(img.file, { keys: ({ depth }) => (depth === 0 ? key : undefined) });
    try {
      assert.ok(im.cipher);
      assert.equal(im.cipher.ivOffset, img === legacy ? 'guest' : 'host');
      assert.ok((await im.readGuest(0, im.virtualSize)).equals(expected));
      // unaligned reads: inside a sector, across sectors, across clusters
      for (const [off, len] of [[1, 1], [511, 2], [1000, 3000], [3 * 1024 * 1024 + 65000, 1000], [1024 * 1024 + 4095, 130 * 1024]]) {
        assert.ok((await im.readGuest(off, len)).equals(expected.subarray(off, off + len)), `read ${len} at ${off}`);
      }
      // into shared memory (a copy loop's window), every run decrypted on the worker threads, none here
      const sectors = (im.cipher as unknown as { sectors: SectorCipher }).sectors;
      const here = { runs: 0 };
      const own = sectors.decrypt.bind(sectors);
      sectors.decrypt = (b, s) => { here.runs++; own(b, s); };
      im.cipher.parallelMin = 512;
      const shared = sharedBuffer(im.virtualSize);
      await im.readGuestInto(0, im.virtualSize, shared, 0);
      assert.ok(shared.equals(expected), 'decrypted on the workers differs from qemu-img convert');
      assert.equal(here.runs, 0, 'runs were decrypted on the main thread');
    } finally {
      await im.close();
      key.wipe();
    }

    const r = cli('read', '--object', secretFile('s0', img.pass), '--image-opts', opts(img.file, ['', 's0']));
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.equals(expected), 'qcow2-lens read differs from qemu-img convert');
    const part = cli('read', '--offset', '1000', '--length', '5000', '--object', `secret,id=s0,data=${img.pass}`, '--image-opts', opts(img.file, ['', 's0']));
    assert.equal(part.status, 0, part.stderr);
    assert.ok(part.stdout.equals(expected.subarray(1000, 6000)));
    capture(r.stderr + part.stderr);
  });
}

test('no key, a wrong key, an unknown secret id: one clear error each, no passphrase in it', async () => {
  const img = images[0];
  await made.get(img);
  const none = cli('read', img.file);
  assert.equal(none.status, 1);
  assert.match(none.stderr, /default\.qcow2: L1\[0\] → L2\[0x0\] → data at 0x[0-9a-f]+: guest data is encrypted \(LUKS\); reading it needs the passphrase/);
  const wrong = cli('read', '--object', `secret,id=s0,data=${WRONG}`, '--image-opts', opts(img.file, ['', 's0']));
  assert.equal(wrong.status, 1);
  assert.equal(wrong.stderr.trim().split('\n').length, 1, wrong.stderr);
  assert.match(wrong.stderr, /default\.qcow2: encryption header\.key_slots at 0x[0-9a-f]+: Invalid password, cannot unlock any keyslot \(tried the 1 active key slot: 0\)/);
  assert.equal(wrong.stdout.length, 0);
  const missing = cli('read', '--object', `secret,id=s0,data=${PASS}`, '--image-opts', opts(img.file, ['', 's9']));
  assert.equal(missing.status, 64);
  assert.match(missing.stderr, /--image-opts encrypt\.key-secret: no --object secret with id s9/);
  const key = Secret.fromString(WRONG);
  await assert.rejects(Qcow2Image.open(img.file, { keys: () => key }), (e: unknown) => e instanceof Qcow2Error && e.code === 'bad-passphrase' && !!errors.push(e.message));
  errors.push(none.stderr, wrong.stderr, missing.stderr);
});

/** What qemu-img or qemu-io says after "Could not open '…': " / "can't open: ", one line. */
function qemuOpenError(stderr: string): string {
  const line = stderr.trim().split('\n').filter(l => !/Unable to get accurate CPU usage/.test(l)).pop() ?? '';
  const m = /^qemu-(?:img|io): (?:Could not open '[^']*': |can't open: )(.+)$/.exec(line);
  assert.ok(m, `unexpected qemu message: ${stderr}`);
  return m[1];
}

test('a wrong passphrase: read, convert, compare and map say what qemu-img 7.2 (and qemu-io) say, in its words, naming the file', async () => {
  const img = images[1];
  await made.get(img);
  const o = opts(img.file, ['', 's0']);
  const obj = ['--object', `secret,id=s0,data=${WRONG}`];
  const out = path.join(dir, 'wrong-out.raw');
  const cases: { cmd: string; ours: string[]; tool: string; qemu: string[] }[] = [
    { cmd: 'read', ours: ['read', ...obj, '--image-opts', o], tool: 'qemu-io', qemu: [...obj, '--image-opts', o, '-c', 'read 0 512'] },
    { cmd: 'convert', ours: ['convert', ...obj, '--image-opts', o, '-O', 'raw', out], tool: 'qemu-img', qemu: ['convert', ...obj, '--image-opts', o, '-O', 'raw', out] },
    { cmd: 'compare', ours: ['compare', ...obj, '--image-opts', o, o], tool: 'qemu-img', qemu: ['compare', ...obj, '--image-opts', o, o] },
    { cmd: 'map', ours: ['map', ...obj, '--image-opts', o], tool: 'qemu-img', qemu: ['map', ...obj, '--image-opts', o] },
  ];
  for (const c of cases) {
    const q = await run(c.tool, c.qemu);
    const theirs = qemuOpenError(q.stderr);
    assert.equal(theirs, 'Invalid password, cannot unlock any keyslot', `${c.cmd}: qemu's message changed: ${q.stderr}`);
    const r = cli(...c.ours);
    assert.equal(r.status, q.status, `${c.cmd}: our exit status ${r.status}, ${c.tool}'s ${q.status}: ${r.stderr}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `${c.cmd}: ${r.stderr}`);
    assert.ok(lines[0].startsWith(`qcow2-lens: ${img.file}: `), `${c.cmd} names the file: ${lines[0]}`);
    assert.ok(lines[0].includes(`: ${theirs} (tried the 1 active key slot: 0)`), `${c.cmd}: ours says ${lines[0]}, ${c.tool} says ${theirs}`);
    assert.equal(r.stdout.length, 0, `${c.cmd} printed nothing else`);
    assert.ok(!fs.existsSync(out), `${c.cmd} left no output file`);
    errors.push(r.stderr, q.stderr);
  }
});

test('chains: encrypted overlay over a plain base, plain over encrypted, encrypted over encrypted (two keys)', async () => {
  await chains;
  const cases: { file: string; secrets: [string, string][]; ids: [string, string][]; }[] = [
    { file: encOverPlain, secrets: [['sec0', PASS]], ids: [['', 'sec0']] },
    { file: plainOverEnc, secrets: [['sec1', PASS2]], ids: [['backing.', 'sec1']] },
    { file: encOverEnc, secrets: [['sec0', PASS], ['sec1', PASS2]], ids: [['', 'sec0'], ['backing.', 'sec1']] },
  ];
  for (const c of cases) {
    const o = opts(c.file, ...c.ids);
    const expected = await qemuRaw(o, c.secrets, `${c.file}.raw`);
    const r = cli('read', ...c.secrets.flatMap(([id, p]) => ['--object', secretFile(id, p)]), '--image-opts', o);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.equals(expected), `${path.basename(c.file)}: read differs from qemu-img convert`);
    // without the backing file's key the encrypted base cannot be read
    if (c.ids.length > 1 || c.ids[0][0] === 'backing.') {
      const partial = cli('read', ...c.secrets.flatMap(([id, p]) => ['--object', secretFile(id, p)]), '--image-opts', opts(c.file, ...c.ids.filter(([p]) => p === '')));
      assert.equal(partial.status, 1);
      assert.match(partial.stderr, /enc-base\.qcow2: .*guest data is encrypted/);
      errors.push(partial.stderr);
    }
  }
  assert.equal((await qemuRaw(opts(plainOverEnc, ['backing.', 'sec1']), [['sec1', PASS2]], path.join(dir, 'poe.raw')))[1536 * 1024], 0x91);
});

test('convert, compare and map take --object and --image-opts', async () => {
  const img = images.find(i => i.name === 'aes256-cbc-plain64-sha512')!;
  await made.get(img);
  await chains;
  const o = opts(img.file, ['', 's0']);
  const obj = secretFile('s0', img.pass);
  const raw = path.join(dir, 'converted.raw');
  const c = cli('convert', '--object', obj, '--image-opts', o, '-O', 'raw', raw);
  assert.equal(c.status, 0, c.stderr);
  assert.ok(fs.readFileSync(raw).equals(await qemuRaw(o, [['s0', img.pass]], `${img.file}.raw2`)));
  const plain = path.join(dir, 'converted.qcow2');
  const c2 = cli('convert', '--object', obj, '--image-opts', o, '-O', 'qcow2', plain);
  assert.equal(c2.status, 0, c2.stderr);

  const same = cli('compare', '--object', obj, '--image-opts', o, `driver=qcow2,file.filename=${plain}`);
  assert.equal(same.status, 0, same.stderr);
  assert.match(same.stdout.toString(), /Images are identical/);
  // qemu-img agrees
  const q = await runOk('qemu-img', ['compare', ...secretArgs(['s0', img.pass]), '--image-opts', o, `driver=qcow2,file.filename=${plain}`]);
  assert.match(q, /Images are identical/);
  const differ = cli('compare', '--object', obj, '--image-opts', o, `driver=qcow2,file.filename=${plainBase}`);
  assert.equal(differ.status, 1, differ.stderr);
  const noKey = cli('compare', plain, img.file);
  assert.equal(noKey.status, 4, noKey.stderr);

  const m = cli('map', '--json', '--object', obj, '--image-opts', o);
  assert.equal(m.status, 0, m.stderr);
  const qm = await runOk('qemu-img', ['map', '--output=json', ...secretArgs(['s0', img.pass]), '--image-opts', o]);
  assert.deepEqual(JSON.parse(m.stdout.toString()), JSON.parse(qm));
  errors.push(c.stderr, c2.stderr, same.stderr, differ.stderr, noKey.stderr, m.stderr);
});

test('no passphrase in any file, output or error message of this test file', async () => {
  await Promise.allSettled([...made.values(), chains]);
  assert.ok(errors.length >= 5);
  // the base64 secret files hold the passphrase in base64 only, never in clear
  assert.deepEqual(findLeaks([dir], [PASS, PASS2, WRONG, AES_PASS, AES_PASS.slice(0, 16)], errors), []);
});
