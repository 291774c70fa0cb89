/**
 * Encryption inside qcow2, against qemu-img 7.2. The data clusters are found by a test-only reader
 * (header, crypto header extension, L1/L2 by plain byte reads), decrypted with our DataCipher and
 * assembled into the guest disk, which must equal `qemu-img convert -O raw`.
 *
 * Which offset the IVs follow is proved by moving a data cluster in the file (a copy at the end,
 * its L2 entry re-pointed): for LUKS, QEMU then reads different bytes — exactly what we decrypt at
 * the new host offset — so IVs follow the host offset; for legacy AES QEMU reads the same bytes,
 * so IVs follow the guest offset.
 */
import { before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isAes } from '../../src/engine/crypto/algorithms';
import { DataCipher, luksDataCipher } from '../../src/engine/crypto/dataCipher';
import { legacyAesDataCipher } from '../../src/engine/crypto/legacyAes';
import { LuksArea } from '../../src/engine/crypto/luksArea';
import { createLuks } from '../../src/engine/crypto/luksCreate';
import { readLuksHeader } from '../../src/engine/crypto/luksHeader';
import { addKeySlot, eraseKeySlots, LuksEdit } from '../../src/engine/crypto/luksKeySlots';
import { unlockLuks } from '../../src/engine/crypto/luksUnlock';
import { Secret } from '../../src/engine/crypto/secret';
import { Qcow2Error } from '../../src/engine/errors';
import { readBE64, tmpDir, writeBE64 } from '../helpers/qemu';
import { capture, fileReader, findLeaks, mapQcow2, passphrase, qemuRaw, run, runOk, secretArgs } from './util';

const dir = tmpDir('qcow2-lens-luks-qcow2-');
const PASS = passphrase('qcow2');
const NEW_PASS = passphrase('qcow2-added');
/** Legacy AES keys from the first 16 bytes only: this one has 16 + a suffix. */
const AES_PASS = `aes16-${passphrase('x').slice(0, 10)}`.padEnd(16, 'z') + passphrase('-tail');
const errors: string[] = [];

interface Image { file: string; create: string[]; pass: string }
const luksDefault: Image = { file: path.join(dir, 'luks-default.qcow2'), create: ['encrypt.format=luks'], pass: PASS };
const luksCbc: Image = {
  file: path.join(dir, 'luks-cbc.qcow2'), pass: PASS,
  create: ['encrypt.format=luks', 'encrypt.cipher-alg=aes-128', 'encrypt.cipher-mode=cbc', 'encrypt.ivgen-alg=essiv', 'encrypt.ivgen-hash-alg=sha256', 'encrypt.hash-alg=sha1', 'cluster_size=4096'],
};
const legacy: Image = { file: path.join(dir, 'legacy-aes.qcow2'), create: ['encrypt.format=aes'], pass: AES_PASS };

const opts = (img: Image | string, id = 'sec0') => `driver=qcow2,file.filename=${typeof img === 'string' ? img : img.file},encrypt.key-secret=${id}`;

before(async () => {
  await Promise.all([luksDefault, luksCbc, legacy].map(async img => {
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...secretArgs(['sec0', img.pass]),
      '-o', [...img.create, 'encrypt.key-secret=sec0', ...(img.create[0].endsWith('luks') ? ['encrypt.iter-time=10'] : [])].join(','), img.file, '4M']);
    // Written out of guest order, so host clusters are not at their guest offsets.
    await runOk('qemu-io', [...secretArgs(['sec0', img.pass]), '--image-opts', opts(img),
      '-c', 'write -P 0x11 3M 64k', '-c', 'write -P 0x22 0 4k', '-c', 'write -P 0x33 1M 130k', '-c', 'write -P 0x44 4095k 1k']);
  }));
});

/** The guest disk as we read it: every data cluster decrypted at the offset its cipher wants. */
function guestDisk(file: string, cipher: DataCipher, ivFrom?: 'host' | 'guest'): Buffer {
  const m = mapQcow2(file);
  const f = fs.readFileSync(file);
  const disk = Buffer.alloc(m.size);
  for (const c of m.clusters) {
    const len = Math.min(m.clusterSize, m.size - c.guestOffset);
    const buf = Buffer.from(f.subarray(c.hostOffset, c.hostOffset + len));
    cipher.decryptRun(buf, (ivFrom ?? cipher.ivOffset) === 'host' ? c.hostOffset : c.guestOffset);
    buf.copy(disk, c.guestOffset);
  }
  return disk;
}

function luksArea(file: string): LuksArea {
  const m = mapQcow2(file);
  assert.ok(m.crypto, 'a LUKS qcow2 image has the full disk encryption header extension');
  return { file, reader: fileReader(file), offset: m.crypto.offset, length: m.crypto.length };
}

/** Copies guest cluster `guestOffset`'s host cluster to the end of the file and points its L2 entry there. */
function moveCluster(file: string, guestOffset: number): { from: number; to: number } {
  const m = mapQcow2(file);
  const c = m.clusters.find(x => x.guestOffset === guestOffset)!;
  const f = fs.readFileSync(file);
  const to = Math.ceil(f.length / m.clusterSize) * m.clusterSize;
  const data = Buffer.alloc(m.clusterSize);
  f.copy(data, 0, c.hostOffset, c.hostOffset + m.clusterSize);
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, data, 0, data.length, to);
  fs.closeSync(fd);
  // Find the L2 entry holding c.hostOffset and re-point it (flags kept).
  const l1Offset = Number(f.readBigUInt64BE(40));
  const l2Entries = m.clusterSize / 8;
  const l1Index = Math.floor(guestOffset / m.clusterSize / l2Entries);
  const l2 = Number(readBE64(file, l1Offset + l1Index * 8) & 0x00fffffffffffe00n);
  const at = l2 + (guestOffset / m.clusterSize % l2Entries) * 8;
  const e = readBE64(file, at);
  writeBE64(file, at, (e & ~0x00fffffffffffe00n) | BigInt(to));
  return { from: c.hostOffset, to };
}

for (const img of [luksDefault, luksCbc]) {
  test(`qcow2 ${path.basename(img.file)}: decrypting every data cluster at its HOST offset gives qemu-img convert's guest disk`, async () => {
    const area = luksArea(img.file);
    const h = await readLuksHeader(area);
    const { masterKey } = await unlockLuks(area, h, Secret.fromString(img.pass));
    const cipher = luksDataCipher(area, h, masterKey, 'qcow2');
    assert.equal(cipher.ivOffset, 'host');
    // The area we would build for the same parameters is laid out as QEMU's: same length (the
    // extension's), same key slot places, same payload offset.
    const alg = h.cipherAlg;
    assert.ok(isAes(alg));
    const ours = await createLuks('x', Secret.fromString(img.pass), { cipherAlg: alg, cipherMode: h.cipherMode, ivgenAlg: h.ivgenAlg, ivgenHashAlg: h.ivgenHashAlg, hashAlg: h.hashAlg, slotIterations: 1000, masterKeyIterations: 1000 });
    assert.equal(ours.area.length, area.length);
    assert.deepEqual(ours.header.slots.map(s => [s.keyMaterialSector, s.stripes]), h.slots.map(s => [s.keyMaterialSector, s.stripes]));
    assert.equal(ours.header.payloadOffsetSector, h.payloadOffsetSector);
    assert.equal(ours.header.cipherModeSpec, h.cipherModeSpec);
    ours.masterKey.wipe();
    const expected = await qemuRaw(opts(img), [['sec0', img.pass]], img.file + '.raw');
    assert.ok(guestDisk(img.file, cipher).equals(expected), 'guest disk differs from qemu-img convert');
    assert.equal(expected[3 << 20], 0x11);
    // The clusters do not sit at their guest offsets, so guest-offset IVs would be wrong.
    assert.ok(mapQcow2(img.file).clusters.some(c => c.hostOffset !== c.guestOffset));
    assert.ok(!guestDisk(img.file, cipher, 'guest').equals(expected));

    // Moving a cluster changes what QEMU reads, to what we decrypt at the new host offset.
    const moved = path.join(dir, `moved-${path.basename(img.file)}`);
    fs.copyFileSync(img.file, moved);
    const mv = moveCluster(moved, 1 << 20);
    assert.notEqual(mv.from, mv.to);
    const afterMove = await qemuRaw(opts(moved), [['sec0', img.pass]], moved + '.raw');
    assert.ok(!afterMove.subarray(1 << 20, (1 << 20) + 4096).equals(expected.subarray(1 << 20, (1 << 20) + 4096)), 'QEMU reads other bytes: LUKS IVs follow the host offset');
    assert.ok(guestDisk(moved, cipher).equals(afterMove), 'and they are what we decrypt at the new host offset');
    cipher.dispose();
    masterKey.wipe();
  });
}

test('legacy AES (crypt_method 1): IVs follow the GUEST offset, and only the first 16 passphrase bytes count', async () => {
  const m = mapQcow2(legacy.file);
  assert.equal(m.cryptMethod, 1);
  assert.equal(m.crypto, undefined);
  const expected = await qemuRaw(opts(legacy), [['sec0', legacy.pass]], legacy.file + '.raw');
  const cipher = legacyAesDataCipher(legacy.file, Secret.fromString(AES_PASS));
  assert.equal(cipher.ivOffset, 'guest');
  assert.ok(guestDisk(legacy.file, cipher).equals(expected), 'guest disk differs from qemu-img convert');
  assert.ok(m.clusters.some(c => c.hostOffset !== c.guestOffset));
  assert.ok(!guestDisk(legacy.file, cipher, 'host').equals(expected), 'host-offset IVs would be wrong');
  // Moving a cluster in the file changes nothing QEMU reads: the IV does not depend on where it lies.
  const moved = path.join(dir, 'moved-legacy.qcow2');
  fs.copyFileSync(legacy.file, moved);
  moveCluster(moved, 1 << 20);
  assert.ok((await qemuRaw(opts(moved), [['sec0', legacy.pass]], moved + '.raw')).equals(expected));
  assert.ok(guestDisk(moved, cipher).equals(expected));
  // Any passphrase with the same first 16 bytes works, in QEMU as here; another one decrypts to noise.
  const sameStart = AES_PASS.slice(0, 16) + 'another-tail';
  assert.ok((await qemuRaw(opts(legacy), [['sec0', sameStart]], legacy.file + '.raw2')).equals(expected));
  assert.ok(guestDisk(legacy.file, legacyAesDataCipher(legacy.file, Secret.fromString(sameStart))).equals(expected));
  assert.ok(!guestDisk(legacy.file, legacyAesDataCipher(legacy.file, Secret.fromString('X' + AES_PASS.slice(1)))).equals(expected));
  cipher.dispose();
});

/** Writes an edit into the LUKS area of a qcow2 file, in order, with an fsync between writes. */
function applyInQcow2(file: string, area: LuksArea, edit: LuksEdit): void {
  const fd = fs.openSync(file, 'r+');
  try {
    for (const w of edit.writes) {
      assert.ok(w.offsetInArea + w.bytes.length <= area.length);
      fs.writeSync(fd, w.bytes, 0, w.bytes.length, area.offset + w.offsetInArea);
      fs.fsyncSync(fd);
    }
  } finally {
    fs.closeSync(fd);
  }
}

test('key slots edited inside a qcow2 LUKS area: qemu-img opens with the added passphrase, not the erased one, and check stays clean', async () => {
  const file = path.join(dir, 'amend.qcow2');
  fs.copyFileSync(luksDefault.file, file);
  const expected = await qemuRaw(opts(file), [['sec0', PASS]], file + '.raw');
  let area = luksArea(file);
  let h = await readLuksHeader(area);
  applyInQcow2(file, area, await addKeySlot(area, h, { secret: Secret.fromString(PASS), newSecret: Secret.fromString(NEW_PASS), iterTimeMs: 10 }));
  assert.ok((await qemuRaw(opts(file), [['sec0', NEW_PASS]], file + '.raw2')).equals(expected));
  area = luksArea(file);
  h = await readLuksHeader(area);
  applyInQcow2(file, area, await eraseKeySlots(area, h, { oldSecret: Secret.fromString(PASS) }));
  const r = await run('qemu-img', ['convert', ...secretArgs(['sec0', PASS]), '--image-opts', opts(file), '-O', 'raw', file + '.raw3']);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /Invalid password, cannot unlock any keyslot/);
  assert.ok((await qemuRaw(opts(file), [['sec0', NEW_PASS]], file + '.raw4')).equals(expected));
  // qemu-img 7.2's check opens the image with its key.
  const check = await run('qemu-img', ['check', ...secretArgs(['sec0', NEW_PASS]), '--image-opts', opts(file)]);
  assert.equal(check.status, 0, check.stdout + check.stderr);
  await assert.rejects(unlockLuks(luksArea(file), await readLuksHeader(luksArea(file)), Secret.fromString(PASS)),
    (e: Qcow2Error) => e.code === 'bad-passphrase' && !!errors.push(capture(e.message)));
});

test('no passphrase in any file, output or error message of this test file', () => {
  assert.deepEqual(findLeaks([dir], [PASS, NEW_PASS, AES_PASS], errors), []);
});
