/**
 * LUKS areas we build, read by QEMU: for every AES cipher/mode/IV generator QEMU 7.2 can open
 * (each PBKDF2 hash rotated over them), a raw LUKS file of our header, key slot and payload
 * encrypted by us must be read by `qemu-img compare` as the plaintext, `qemu-img info` must show
 * our parameters, and — where this machine's cryptsetup can check without root — cryptsetup must
 * accept the header and the passphrase. Since QEMU decrypts what we encrypt in every combination,
 * our sector ciphers are QEMU's (encryption is a bijection), in both directions.
 *
 * Then key slots: passphrases we add open the image in QEMU, erased ones no longer do, and the
 * refusals are qemu-img amend's.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AesAlgorithm, CipherMode, HASH_ALGORITHMS, HashAlgorithm, IvGenAlgorithm } from '../../src/engine/crypto/algorithms';
import { luksDataCipher } from '../../src/engine/crypto/dataCipher';
import { CreatedLuks, createLuks } from '../../src/engine/crypto/luksCreate';
import { LuksHeader, readLuksHeader } from '../../src/engine/crypto/luksHeader';
import { LuksEdit, addKeySlot, amendLuks, eraseKeySlots } from '../../src/engine/crypto/luksKeySlots';
import { unlockLuks } from '../../src/engine/crypto/luksUnlock';
import { Secret } from '../../src/engine/crypto/secret';
import { Qcow2Error } from '../../src/engine/errors';
import { tmpDir } from '../helpers/qemu';
import { capture, findLeaks, passphrase, rawLuksArea, run, runOk, secretArgs } from './util';

const dir = tmpDir('qcow2-lens-luks-write-');
const PASS = passphrase('write');
const SECOND = passphrase('second');
const THIRD = passphrase('third');
const WRONG = passphrase('wrong');
const errors: string[] = [];
const FAST = { slotIterations: 1000, masterKeyIterations: 1000 };

const hasCryptsetup = spawnSync('cryptsetup', ['--version']).status === 0;

interface Combo { alg: AesAlgorithm; mode: CipherMode; ivgen: IvGenAlgorithm; ivgenHash?: HashAlgorithm; hash: HashAlgorithm }
const combos: Combo[] = [];
for (const mode of ['xts', 'cbc', 'ctr', 'ecb'] as const) {
  // aes-192 outside XTS has key material that is no whole number of sectors; QEMU 7.2 cannot open it.
  for (const alg of mode === 'xts' ? ['aes-128', 'aes-192', 'aes-256'] as const : ['aes-128', 'aes-256'] as const) {
    for (const [ivgen, ivgenHash] of [['plain'], ['plain64'], ['essiv', 'sha256'], ['essiv', 'md5'], ['plain64', 'sha256']] as [IvGenAlgorithm, HashAlgorithm?][]) {
      combos.push({ alg, mode, ivgen, ivgenHash, hash: HASH_ALGORITHMS[combos.length % HASH_ALGORITHMS.length] });
    }
  }
}

/** Writes area + payload encrypted by us as a raw LUKS file; returns the plaintext's file too. */
function writeRawLuks(name: string, c: CreatedLuks, plain: Buffer): { file: string; plainFile: string } {
  const file = path.join(dir, `${name}.luks`);
  const plainFile = path.join(dir, `${name}.plain`);
  const enc = Buffer.from(plain);
  const cipher = luksDataCipher({ file, offset: 0 }, c.header, c.masterKey, 'raw');
  cipher.encryptRun(enc, c.area.length);
  cipher.dispose();
  fs.writeFileSync(file, Buffer.concat([c.area, enc]));
  fs.writeFileSync(plainFile, plain);
  return { file, plainFile };
}

const luksOpts = (file: string, id = 'sec0') => `driver=luks,file.filename=${file},key-secret=${id}`;

async function qemuSees(file: string, pass: string, plainFile: string): Promise<boolean> {
  const r = await run('qemu-img', ['compare', ...secretArgs(['sec0', pass]), '--image-opts', luksOpts(file), `driver=raw,file.filename=${plainFile}`]);
  if (r.status !== 0) errors.push(r.stderr);
  return r.status === 0;
}

function cryptsetupAccepts(file: string, pass: string): boolean {
  const r = spawnSync('cryptsetup', ['open', '--test-passphrase', '--key-file=-', file], { input: pass, encoding: 'utf8' });
  capture(r.stdout + r.stderr);
  return r.status === 0;
}

/** Whether this machine's cryptsetup can check a passphrase without root (kernel AF_ALG). */
let cryptsetupChecks: boolean | undefined;

for (const c of combos) {
  const name = `${c.alg}-${c.mode}-${c.ivgen}${c.ivgenHash ? ':' + c.ivgenHash : ''}-${c.hash}`;
  test(`our ${name} LUKS file: qemu-img reads our payload, info shows our header${hasCryptsetup && c.hash !== 'md5' ? ', cryptsetup agrees' : ''}`, async () => {
    const created = await createLuks(name, Secret.fromString(PASS), { cipherAlg: c.alg, cipherMode: c.mode, ivgenAlg: c.ivgen, ivgenHashAlg: c.ivgenHash, hashAlg: c.hash, ...FAST });
    const plain = crypto.randomBytes(192 * 1024);
    const { file, plainFile } = writeRawLuks(name, created, plain);
    assert.ok(await qemuSees(file, PASS, plainFile), `qemu-img compare: ${errors.at(-1)}`);
    const info = JSON.parse(await runOk('qemu-img', ['info', '--output=json', file]))['format-specific'].data;
    assert.deepEqual([info['cipher-alg'], info['cipher-mode'], info['ivgen-alg'], info['ivgen-hash-alg'], info['hash-alg'], info['payload-offset'], info.uuid],
      [c.alg, c.mode, c.ivgen, c.ivgen === 'essiv' ? c.ivgenHash : undefined, c.hash, created.area.length, created.header.uuid], 'qemu-img info shows the IV generator hash for essiv only');
    assert.deepEqual(info.slots.map((s: { active: boolean }) => s.active), [true, false, false, false, false, false, false, false]);
    // Our own reader reads back what we wrote.
    const back = await readLuksHeader(rawLuksArea(file));
    assert.equal(back.cipherModeSpec, created.header.cipherModeSpec);
    const { masterKey } = await unlockLuks(rawLuksArea(file), back, Secret.fromString(PASS));
    assert.ok(masterKey.equals(created.masterKey));
    // cryptsetup refuses md5 as a LUKS hash.
    if (hasCryptsetup && c.hash !== 'md5') {
      const dump = spawnSync('cryptsetup', ['luksDump', file], { encoding: 'utf8' });
      assert.equal(dump.status, 0, dump.stderr);
      assert.match(dump.stdout, new RegExp(`Cipher mode:\\s+${created.header.cipherModeSpec}`));
      assert.match(dump.stdout, new RegExp(`UUID:\\s+${created.header.uuid}`));
      // The kernel crypto cryptsetup uses unprivileged has no aes-192-xts and no ecb, and takes no
      // hash after plain/plain64.
      if (c.mode !== 'ecb' && !(c.mode === 'xts' && c.alg === 'aes-192') && (c.ivgen === 'essiv' || !c.ivgenHash)) {
        cryptsetupChecks ??= cryptsetupAccepts(file, PASS);
        if (cryptsetupChecks) {
          assert.ok(cryptsetupAccepts(file, PASS), 'cryptsetup refuses our passphrase');
          assert.ok(!cryptsetupAccepts(file, WRONG));
        }
      }
    }
  });
}

test("QEMU's iteration benchmark (iter-time) and a kept master key: re-encryption under a new header reads the same", async () => {
  const a = await createLuks('bench.luks', Secret.fromString(PASS), { iterTimeMs: 10 });
  assert.ok(a.header.slots[0].iterations >= 1000 && a.header.masterKeyIterations >= 1000);
  assert.equal(a.header.cipherModeSpec, 'xts-plain64');
  assert.equal(a.header.hashSpec, 'sha256');
  assert.equal(a.area.length, 2068480, 'aes-256-xts: 8 + 8 × 504 sectors, as QEMU lays it out');
  assert.deepEqual(a.header.slots.map(s => s.keyMaterialSector), [8, 512, 1016, 1520, 2024, 2528, 3032, 3536]);
  const plain = crypto.randomBytes(64 * 1024);
  const { file, plainFile } = writeRawLuks('bench', a, plain);
  assert.ok(await qemuSees(file, PASS, plainFile));
  // Same master key, a new header (new salts, a new passphrase): the old ciphertext still reads.
  const b = await createLuks('rekeyed.luks', Secret.fromString(SECOND), { masterKey: a.masterKey, ...FAST });
  const rekeyed = path.join(dir, 'rekeyed.luks');
  fs.writeFileSync(rekeyed, Buffer.concat([b.area, fs.readFileSync(file).subarray(a.area.length)]));
  assert.ok(await qemuSees(rekeyed, SECOND, plainFile));
  assert.ok(!b.header.masterKeyDigest.equals(a.header.masterKeyDigest), 'a new digest salt');
});

/** Applies an edit's writes to a raw LUKS file, in order. */
function apply(file: string, edit: LuksEdit): void {
  const fd = fs.openSync(file, 'r+');
  try {
    for (const w of edit.writes) fs.writeSync(fd, w.bytes, 0, w.bytes.length, w.offsetInArea);
  } finally {
    fs.closeSync(fd);
  }
}

async function refused(p: Promise<unknown>, code: Qcow2Error['code'], message: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof Qcow2Error, String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    errors.push(capture(e.message));
    return true;
  });
}

test('adding and erasing key slots: QEMU opens with the passphrases we add, not with those we erase', async () => {
  const created = await createLuks('slots.luks', Secret.fromString(PASS), { cipherAlg: 'aes-128', cipherMode: 'cbc', ivgenAlg: 'essiv', hashAlg: 'sha1', ...FAST });
  const plain = crypto.randomBytes(64 * 1024);
  const { file, plainFile } = writeRawLuks('slots', created, plain);
  const area = () => rawLuksArea(file);
  let h: LuksHeader = await readLuksHeader(area());

  // Add SECOND in the first free slot (1), THIRD in slot 5.
  let edit = await addKeySlot(area(), h, { secret: Secret.fromString(PASS), newSecret: Secret.fromString(SECOND), slotIterations: 1000 });
  assert.deepEqual(edit.slots, [1]);
  assert.deepEqual(edit.writes.map(w => w.what), ['key_slot[1] key material', 'header'], 'key material before the header');
  apply(file, edit);
  h = await readLuksHeader(area());
  edit = await amendLuks(area(), h, { state: 'active', secret: Secret.fromString(SECOND), newSecret: Secret.fromString(THIRD), keyslot: 5, slotIterations: 1000 });
  apply(file, edit);
  h = await readLuksHeader(area());
  assert.deepEqual(h.slots.map(s => s.active), [true, true, false, false, false, true, false, false]);
  for (const p of [PASS, SECOND, THIRD]) assert.ok(await qemuSees(file, p, plainFile), 'QEMU opens with every added passphrase');
  if (hasCryptsetup && cryptsetupChecks) for (const p of [PASS, SECOND, THIRD]) assert.ok(cryptsetupAccepts(file, p));
  // qemu-img info agrees on the slots.
  const info = JSON.parse(await runOk('qemu-img', ['info', '--output=json', file]))['format-specific'].data;
  assert.deepEqual(info.slots.map((s: { active: boolean }) => s.active), h.slots.map(s => s.active));

  // The refusals qemu-img amend makes, in its order.
  await refused(addKeySlot(area(), h, { secret: Secret.fromString(PASS) }), 'unsupported', /'new-secret' is required to activate a keyslot/);
  await refused(addKeySlot(area(), h, { secret: Secret.fromString(PASS), newSecret: Secret.fromString(WRONG), oldSecret: Secret.fromString(PASS) }), 'unsupported', /'old-secret' must not be given/);
  await refused(addKeySlot(area(), h, { secret: Secret.fromString(PASS), newSecret: Secret.fromString(WRONG), keyslot: 8 }), 'unsupported', /encrypt\.keyslot: Invalid keyslot 8 specified, must be between 0 and 7/);
  await refused(addKeySlot(area(), h, { secret: Secret.fromString(PASS), newSecret: Secret.fromString(WRONG), keyslot: 5 }), 'unsupported', /key_slot\[5\] at 0x1c0: Refusing to overwrite active keyslot 5 - please erase it first/);
  await refused(addKeySlot(area(), h, { secret: Secret.fromString(WRONG), newSecret: Secret.fromString(WRONG) }), 'bad-passphrase', /Invalid password, cannot unlock any keyslot \(tried the 3 active key slots: 0, 1, 5\)/);
  await refused(eraseKeySlots(area(), h, { keyslot: 1, newSecret: Secret.fromString(WRONG) }), 'unsupported', /'new-secret' must not be given when erasing keyslots/);
  await refused(eraseKeySlots(area(), h, { keyslot: 1, iterTimeMs: 10 }), 'unsupported', /'iter-time' must not be given/);
  await refused(eraseKeySlots(area(), h, {}), 'unsupported', /either explicit keyslot index or the password currently contained in them must be given/);
  await refused(eraseKeySlots(area(), h, { keyslot: 2 }), 'unsupported', /Given keyslot 2 is already erased \(inactive\)/);
  await refused(eraseKeySlots(area(), h, { keyslot: 1, oldSecret: Secret.fromString(THIRD) }), 'bad-passphrase', /Given keyslot 1 doesn't contain the given old password for erase operation/);
  await refused(eraseKeySlots(area(), h, { oldSecret: Secret.fromString(WRONG) }), 'bad-passphrase', /No keyslots match given \(old\) password for erase operation/);

  // Erase PASS by passphrase, then slot 5 by index: only SECOND opens.
  edit = await eraseKeySlots(area(), h, { oldSecret: Secret.fromString(PASS) });
  assert.deepEqual(edit.slots, [0]);
  assert.deepEqual(edit.writes.map(w => w.what), ['header', 'key_slot[0] key material'], 'header before the key material');
  assert.deepEqual(edit.writes.map(w => w.randomPasses), [undefined, 40], 'the key material overwritten 40 times, as QEMU does');
  const oldMaterial = fs.readFileSync(file).subarray(8 * 512, 8 * 512 + 16 * 4000);
  apply(file, edit);
  assert.ok(!fs.readFileSync(file).subarray(8 * 512, 8 * 512 + 16 * 4000).equals(oldMaterial), 'the key material is overwritten');
  h = await readLuksHeader(area());
  apply(file, await eraseKeySlots(area(), h, { keyslot: 5 }));
  h = await readLuksHeader(area());
  assert.deepEqual(h.slots.map(s => s.active), [false, true, false, false, false, false, false, false]);
  assert.ok(!await qemuSees(file, PASS, plainFile), 'an erased passphrase no longer opens the image');
  assert.match(errors.at(-1)!, /Invalid password, cannot unlock any keyslot/);
  assert.ok(!await qemuSees(file, THIRD, plainFile));
  assert.ok(await qemuSees(file, SECOND, plainFile));

  // The last active slot is refused, by index and by passphrase, as qemu-img amend refuses it.
  await refused(eraseKeySlots(area(), h, { keyslot: 1 }), 'unsupported', /Attempt to erase the only active keyslot 1 which will erase all the data/);
  await refused(eraseKeySlots(area(), h, { oldSecret: Secret.fromString(SECOND) }), 'unsupported', /All the active keyslots match the \(old\) password/);
  const q = await run('qemu-img', ['amend', ...secretArgs(['sec0', SECOND]), '--image-opts', luksOpts(file), '-o', 'state=inactive,keyslot=1']);
  assert.notEqual(q.status, 0);
  assert.match(q.stderr, /Attempt to erase the only active keyslot 1/);
  // Forced, it goes (the data is then unreadable, as the user asked).
  const forced = await eraseKeySlots(area(), h, { keyslot: 1, force: true });
  assert.deepEqual(forced.header.slots.map(s => s.active), [false, false, false, false, false, false, false, false]);
});

test('a full set of eight slots refuses a ninth; force overwrites an active slot', async () => {
  const created = await createLuks('full.luks', Secret.fromString(PASS), { cipherAlg: 'aes-128', cipherMode: 'xts', ...FAST });
  const { file, plainFile } = writeRawLuks('full', created, crypto.randomBytes(8192));
  for (let i = 1; i < 8; i++) apply(file, await addKeySlot(rawLuksArea(file), await readLuksHeader(rawLuksArea(file)), { secret: Secret.fromString(PASS), newSecret: Secret.fromString(`${SECOND}${i}`), slotIterations: 1000 }));
  const h = await readLuksHeader(rawLuksArea(file));
  assert.ok(h.slots.every(s => s.active));
  await refused(addKeySlot(rawLuksArea(file), h, { secret: Secret.fromString(PASS), newSecret: Secret.fromString(THIRD) }), 'unsupported', /Can't add a keyslot - all keyslots are in use/);
  apply(file, await addKeySlot(rawLuksArea(file), h, { secret: Secret.fromString(PASS), newSecret: Secret.fromString(THIRD), keyslot: 7, force: true, slotIterations: 1000 }));
  assert.ok(await qemuSees(file, THIRD, plainFile));
  assert.ok(!await qemuSees(file, `${SECOND}7`, plainFile));
  assert.ok(await qemuSees(file, `${SECOND}6`, plainFile));
});

test('no passphrase in any file, output or error message of this test file', () => {
  const all = [PASS, SECOND, THIRD, WRONG, ...Array.from({ length: 7 }, (_, i) => `${SECOND}${i + 1}`)];
  assert.deepEqual(findLeaks([dir], all, errors), []);
});
