/**
 * Damaged and hostile LUKS headers, wrong passphrases and the limits of unlocking. Every damage
 * is one clear Qcow2Error naming the field (`encryption header.key_slot[3].stripes`) and its host
 * offset — and qemu-img 7.2 refuses the same bytes, with the message quoted here. Unlocking never
 * blocks the event loop for its PBKDF2, never spends unbounded time on a hostile iteration count,
 * and can be cancelled.
 *
 * The base image is one of ours (luks-write.test.ts shows QEMU reads those in every combination),
 * so that a slow QEMU create is not needed here.
 */
import { before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { luksDataCipher } from '../../src/engine/crypto/dataCipher';
import { createLuks } from '../../src/engine/crypto/luksCreate';
import { LUKS_FIELD, LUKS_SLOT_FIELD, slotDescriptorOffset } from '../../src/engine/crypto/luksLayout';
import { readLuksHeader } from '../../src/engine/crypto/luksHeader';
import { unlockLuks } from '../../src/engine/crypto/luksUnlock';
import { Secret } from '../../src/engine/crypto/secret';
import { Qcow2Error } from '../../src/engine/errors';
import { pokeBytes, tmpDir } from '../helpers/qemu';
import { capture, findLeaks, passphrase, rawLuksArea, run, secretArgs } from './util';

const dir = tmpDir('qcow2-lens-luks-damage-');
const PASS = passphrase('damage');
const WRONG = passphrase('wrong');
const errors: string[] = [];
let base: string;
let payloadOffset: number;

before(async () => {
  const c = await createLuks('base.luks', Secret.fromString(PASS), { slotIterations: 1000, masterKeyIterations: 1000 });
  base = path.join(dir, 'base.luks');
  const data = crypto.randomBytes(64 * 1024);
  luksDataCipher({ file: base, offset: 0 }, c.header, c.masterKey, 'raw').encryptRun(data, c.area.length);
  fs.writeFileSync(base, Buffer.concat([c.area, data]));
  payloadOffset = c.header.payloadOffsetSector;
});

function damaged(name: string, at: number, bytes: Buffer | number[]): string {
  const f = path.join(dir, `${name}.luks`);
  fs.copyFileSync(base, f);
  pokeBytes(f, at, bytes);
  return f;
}

const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n >>> 0); return b; };
const str32 = (s: string) => { const b = Buffer.alloc(32); b.write(s, 'latin1'); return b; };
const slotField = (i: number, f: keyof typeof LUKS_SLOT_FIELD) => slotDescriptorOffset(i) + LUKS_SLOT_FIELD[f];

function expectError(e: unknown, structure: string, hostOffset: number, code: Qcow2Error['code'], detail: RegExp): true {
  assert.ok(e instanceof Qcow2Error, String(e));
  assert.equal(e.structure, structure);
  assert.equal(e.hostOffset, hostOffset);
  assert.equal(e.code, code, e.message);
  assert.match(e.detail, detail);
  assert.ok(e.message.startsWith(`${e.file}: ${structure} at 0x${hostOffset.toString(16)}: `), e.message);
  errors.push(capture(e.message));
  return true;
}

interface Damage {
  name: string;
  at: number;
  bytes: Buffer | number[];
  structure: string;
  code?: Qcow2Error['code'];
  ours: RegExp;
  /** What qemu-img info says about the same bytes (it opens the header without a key). */
  qemu: RegExp;
}

const S = 'encryption header';
const DAMAGES: Damage[] = [
  { name: 'magic', at: 0, bytes: Buffer.from('XUKS'), structure: `${S}.magic`, ours: /not a LUKS header/, qemu: /Volume is not in LUKS format/ },
  { name: 'version', at: LUKS_FIELD.version, bytes: [0, 2], structure: `${S}.version`, code: 'unsupported', ours: /LUKS version 2 is not supported/, qemu: /LUKS version 2 is not supported/ },
  { name: 'cipher-name-unterminated', at: LUKS_FIELD.cipher_name, bytes: Buffer.alloc(32, 0x61), structure: `${S}.cipher_name`, ours: /not NUL-terminated/, qemu: /cipher name is not NUL terminated/ },
  { name: 'cipher-mode-format', at: LUKS_FIELD.cipher_mode, bytes: str32('xtsplain64'), structure: `${S}.cipher_mode`, ours: /"xtsplain64" is not "<mode>-<ivgen>\[:<hash>\]"/, qemu: /Unexpected cipher mode string format 'xtsplain64'/ },
  { name: 'cipher-mode-unknown', at: LUKS_FIELD.cipher_mode, bytes: str32('gcm-plain64'), structure: `${S}.cipher_mode`, code: 'unsupported', ours: /cipher mode "gcm"/, qemu: /Cipher mode 'gcm' not supported/ },
  { name: 'cipher-name-unknown', at: LUKS_FIELD.cipher_name, bytes: str32('aez'), structure: `${S}.cipher_name`, code: 'unsupported', ours: /cipher "aez" is not one QEMU 7.2 knows/, qemu: /Algorithm 'aez' with key size 32 bytes not supported/ },
  { name: 'hash', at: LUKS_FIELD.hash_spec, bytes: str32('sha2566'), structure: `${S}.hash_spec`, code: 'unsupported', ours: /hash "sha2566"/, qemu: /Hash algorithm 'sha2566' not supported/ },
  { name: 'payload-offset', at: LUKS_FIELD.payload_offset, bytes: u32(4), structure: `${S}.payload_offset`, ours: /payload \(sector 4\) overlaps/, qemu: /LUKS payload is overlapping with the header/ },
  { name: 'key-bytes', at: LUKS_FIELD.key_bytes, bytes: u32(40), structure: `${S}.key_bytes`, ours: /40-byte keys are not a size of "aes" in xts mode/, qemu: /Algorithm 'aes' with key size 20 bytes not supported/ },
  { name: 'mk-iterations', at: LUKS_FIELD.mk_digest_iter, bytes: u32(0), structure: `${S}.mk_digest_iter`, ours: /iteration count is zero/, qemu: /LUKS key iteration count is zero/ },
  { name: 'essiv-no-hash', at: LUKS_FIELD.cipher_mode, bytes: str32('xts-essiv'), structure: `${S}.cipher_mode`, ours: /essiv IV generator needs a hash/, qemu: /Missing IV generator hash specification/ },
  { name: 'essiv-sha1', at: LUKS_FIELD.cipher_mode, bytes: str32('xts-essiv:sha1'), structure: `${S}.cipher_mode`, code: 'unsupported', ours: /essiv:sha1 needs/, qemu: /No AES cipher with key size 20 available/ },
  { name: 'stripes', at: slotField(3, 'stripes'), bytes: u32(3999), structure: `${S}.key_slot[3].stripes`, ours: /3999 stripes, LUKS1 requires 4000/, qemu: /Keyslot 3 is corrupted \(stripes 3999 != 4000\)/ },
  { name: 'slot-state', at: slotField(2, 'active'), bytes: u32(1), structure: `${S}.key_slot[2].active`, ours: /state 0x00000001 is neither active/, qemu: /Keyslot 2 state \(active\/disable\) is corrupted/ },
  { name: 'slot-iterations', at: slotField(0, 'iterations'), bytes: u32(0), structure: `${S}.key_slot[0].iterations`, ours: /iteration count of zero/, qemu: /Keyslot 0 iteration count is zero/ },
  { name: 'slot-in-header', at: slotField(0, 'key_material_offset'), bytes: u32(2), structure: `${S}.key_slot[0].key_material_offset`, ours: /sector 2 overlaps the LUKS header/, qemu: /Keyslot 0 is overlapping with the LUKS header/ },
  { name: 'slot-in-payload', at: slotField(7, 'key_material_offset'), bytes: u32(4040 - 8), structure: `${S}.key_slot[7].key_material_offset`, ours: /overlaps the payload at sector 4040/, qemu: /Keyslot 7 is overlapping with the encrypted payload/ },
  { name: 'slots-overlap', at: slotField(4, 'key_material_offset'), bytes: u32(8 + 3 * 504 + 8), structure: `${S}.key_slot[4].key_material_offset`, ours: /overlaps key slot 3's/, qemu: /Keyslots 3 and 4 are overlapping in the header/ },
];

for (const d of DAMAGES) {
  test(`damaged ${d.name}: one clear error naming ${d.structure}, and qemu-img refuses it too`, async () => {
    const f = damaged(d.name, d.at, d.bytes);
    await assert.rejects(readLuksHeader(rawLuksArea(f)), e => expectError(e, d.structure, d.at, d.code ?? 'corrupt', d.ours));
    const q = await run('qemu-img', ['info', '--image-opts', `driver=luks,file.filename=${f}`]);
    assert.notEqual(q.status, 0, `qemu-img accepts ${d.name}`);
    assert.match(q.stderr, d.qemu);
  });
}

test('the fixture is laid out as QEMU lays out aes-256-xts (payload at sector 4040, which the damages above rely on)', () => {
  assert.equal(payloadOffset, 4040);
});

test('a wrong passphrase is one bad-passphrase error; so is damaged key material (LUKS cannot tell them apart)', async () => {
  const h = await readLuksHeader(rawLuksArea(base));
  await assert.rejects(unlockLuks(rawLuksArea(base), h, Secret.fromString(WRONG)),
    e => expectError(e, `${S}.key_slots`, LUKS_FIELD.key_slots, 'bad-passphrase', /^Invalid password, cannot unlock any keyslot \(tried the 1 active key slot: 0\)$/));
  const f = damaged('material', 8 * 512 + 1000, crypto.randomBytes(16));
  await assert.rejects(unlockLuks(rawLuksArea(f), await readLuksHeader(rawLuksArea(f)), Secret.fromString(PASS)),
    e => expectError(e, `${S}.key_slots`, LUKS_FIELD.key_slots, 'bad-passphrase', /Invalid password, cannot unlock any keyslot/));
  const q = await run('qemu-img', ['convert', ...secretArgs(['sec0', PASS]), '--image-opts', `driver=luks,file.filename=${f},key-secret=sec0`, '-O', 'raw', f + '.raw']);
  assert.match(q.stderr, /Invalid password, cannot unlock any keyslot/);
  // A passphrase QEMU itself would refuse (not UTF-8, or with a NUL) is refused before any work.
  await assert.rejects(unlockLuks(rawLuksArea(base), h, Secret.fromBytes(Buffer.from([0x61, 0xff, 0x62]))),
    e => e instanceof Qcow2Error && e.code === 'bad-passphrase' && /not valid UTF-8/.test(e.message) && !!errors.push(e.message));
});

test('a cipher QEMU knows but Node lacks (serpent) reads as a header and is refused as unsupported when unlocking', async () => {
  const f = damaged('serpent', LUKS_FIELD.cipher_name, str32('serpent'));
  const h = await readLuksHeader(rawLuksArea(f));
  assert.equal(h.cipherAlg, 'serpent-256');
  await assert.rejects(unlockLuks(rawLuksArea(f), h, Secret.fromString(PASS)),
    e => expectError(e, `${S}.cipher_name`, LUKS_FIELD.cipher_name, 'unsupported', /serpent-256 is valid LUKS, but only AES is supported/));
  assert.equal((await run('qemu-img', ['info', '--image-opts', `driver=luks,file.filename=${f}`])).status, 0, 'QEMU accepts the header');
});

test('absurd iteration counts are refused at once, not run (4294967295 iterations: half an hour per try)', async () => {
  const f = damaged('iterations', slotField(0, 'iterations'), u32(0xffffffff));
  const h = await readLuksHeader(rawLuksArea(f));
  // Refused before any work: not even the key material is read.
  const area = rawLuksArea(f);
  let reads = 0;
  const counting = { ...area, reader: { read: (o: number, l: number, s: string) => { reads++; return area.reader.read(o, l, s); } } };
  await assert.rejects(unlockLuks(counting, h, Secret.fromString(PASS)),
    e => expectError(e, `${S}.key_slot[0].iterations`, slotField(0, 'iterations'), 'unsupported', /4,294,967,295 PBKDF2 iterations exceed the limit of 100,000,000/));
  assert.equal(reads, 0);
  const g = damaged('mk-iterations-huge', LUKS_FIELD.mk_digest_iter, u32(200_000_000));
  await assert.rejects(unlockLuks(rawLuksArea(g), await readLuksHeader(rawLuksArea(g)), Secret.fromString(PASS)),
    e => expectError(e, `${S}.mk_digest_iter`, LUKS_FIELD.mk_digest_iter, 'unsupported', /exceed the limit/));
  // The limit is the caller's to set: the base image's 1000 iterations pass by default, not under 500.
  const hb = await readLuksHeader(rawLuksArea(base));
  await assert.rejects(unlockLuks(rawLuksArea(base), hb, Secret.fromString(PASS), { maxIterations: 500 }), (e: Qcow2Error) => e.code === 'unsupported');
  (await unlockLuks(rawLuksArea(base), hb, Secret.fromString(PASS))).masterKey.wipe();
});

test('key material outside the LUKS area (a short qcow2 crypto header extension) is refused before it is read', async () => {
  const h = await readLuksHeader(rawLuksArea(base));
  const area = { ...rawLuksArea(base), length: 8 * 512 + 1000 };
  await assert.rejects(unlockLuks(area, h, Secret.fromString(PASS)),
    e => expectError(e, `${S}.key_slot[0].key_material`, 8 * 512, 'corrupt', /256000 bytes at 0x1000 lie outside the 5096-byte LUKS area/));
  await assert.rejects(readLuksHeader({ ...area, length: 500 }), e => expectError(e, `${S}.magic`, 0, 'corrupt', /too small for the 592-byte header/));
});

test('PBKDF2 runs off the JavaScript thread: timers keep firing while a slot is tried, and unlocking can be cancelled', async () => {
  // A slot of 300 000 iterations: a few hundred milliseconds of PBKDF2 per try.
  const c = await createLuks('slow.luks', Secret.fromString(PASS), { slotIterations: 300_000, masterKeyIterations: 1000 });
  const f = path.join(dir, 'slow.luks');
  fs.writeFileSync(f, c.area);
  const h = await readLuksHeader(rawLuksArea(f));
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  try {
    const t = process.hrtime.bigint();
    await assert.rejects(unlockLuks(rawLuksArea(f), h, Secret.fromString(WRONG)), (e: Qcow2Error) => e.code === 'bad-passphrase');
    const ms = Number(process.hrtime.bigint() - t) / 1e6;
    // A synchronous PBKDF2 would hold the thread for the whole run: no tick at all until it ends.
    assert.ok(ticks >= Math.min(10, ms / 50), `${ticks} timer ticks during ${ms.toFixed(0)} ms of unlocking`);
  } finally {
    clearInterval(timer);
  }
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(unlockLuks(rawLuksArea(f), h, Secret.fromString(PASS), { signal: ac.signal }), (e: Qcow2Error) => e.code === 'cancelled');
});

test('no passphrase in any file, output or error message of this test file', () => {
  assert.ok(errors.length >= DAMAGES.length);
  assert.deepEqual(findLeaks([dir], [PASS, WRONG], errors), []);
});
