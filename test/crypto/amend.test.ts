/**
 * `qcow2-lens amend -o encrypt.*` (LUKS key slots) against qemu-img 7.2: on qemu-img-made LUKS
 * images, each of our amends is done by `qemu-img amend` on a twin copy too, and both headers must
 * show the same active slots; qemu-img then opens ours with the new passphrase (guest data equal
 * to before), refuses the erased one, and checks it clean. Refusals carry qemu-img's own message
 * and leave the file byte for byte as it was. A crash after each write (the write-count hook)
 * leaves an image that opens with a passphrase it had before or the one being added, and checks
 * clean. No passphrase may appear in any file, output or message.
 */
import { before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { readLuksHeader } from '../../src/engine/crypto/luksHeader';
import { isLockedByQemu } from '../../src/engine/io/lock';
import { tryKeySlot } from '../../src/engine/crypto/luksUnlock';
import { Secret } from '../../src/engine/crypto/secret';
import { CLI, sha256, tmpDir } from '../helpers/qemu';
import { capture, fileReader, findLeaks, mapQcow2, passphrase, qemuRaw, run, runOk, secretArgs } from './util';

const dir = tmpDir('qcow2-lens-amend-luks-');
const P0 = passphrase('first');
const P1 = passphrase('second');
const P2 = passphrase('third');
const WRONG = passphrase('wrong');
const base = path.join(dir, 'base.qcow2');
let expected: Buffer;

/** Every secret the tests use, as --object arguments (s0..s2 and sw). */
const SECRETS: [string, string][] = [['s0', P0], ['s1', P1], ['s2', P2], ['sw', WRONG]];
const opts = (file: string, id: string) => `driver=qcow2,file.filename=${file},encrypt.key-secret=${id}`;

before(async () => {
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...secretArgs(['s0', P0]), '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10', base, '8M']);
  await runOk('qemu-io', [...secretArgs(['s0', P0]), '--image-opts', opts(base, 's0'), '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0xa5 7M 64k']);
  expected = await qemuRaw(opts(base, 's0'), [['s0', P0]], path.join(dir, 'base.raw'));
});

function copy(name: string, from = base): string {
  const f = path.join(dir, name);
  fs.copyFileSync(from, f);
  return f;
}

/** Which key slots the image's LUKS header marks active (read with the engine's header codec over plain reads). */
async function activeSlots(file: string): Promise<boolean[]> {
  const c = mapQcow2(file).crypto;
  assert.ok(c, `${file} has a LUKS area`);
  const h = await readLuksHeader({ file, reader: fileReader(file), offset: c.offset, length: c.length });
  return h.slots.map(s => s.active);
}

/**
 * Every slot the header calls active opens with one of the test's passphrases: no crash may leave
 * an active slot over garbage key material (which opening with another passphrase would not show).
 */
async function everyActiveSlotOpens(file: string): Promise<void> {
  const c = mapQcow2(file).crypto;
  assert.ok(c);
  const area = { file, reader: fileReader(file), offset: c.offset, length: c.length };
  const h = await readLuksHeader(area);
  for (const s of h.slots.filter(x => x.active)) {
    let opened = false;
    for (const p of [P0, P1, P2]) {
      const key = await tryKeySlot(area, h, s.index, Secret.fromString(p));
      if (key) { key.wipe(); opened = true; break; }
    }
    assert.ok(opened, `${path.basename(file)}: active key slot ${s.index} opens with a known passphrase`);
  }
}

/** The eight 48-byte key slot records of the LUKS header (at 208 + 48 i), raw. */
function slotRecords(file: string): Buffer[] {
  const c = mapQcow2(file).crypto;
  assert.ok(c);
  const b = fs.readFileSync(file).subarray(c.offset, c.offset + 592);
  return Array.from({ length: 8 }, (_, i) => Buffer.from(b.subarray(208 + 48 * i, 256 + 48 * i)));
}

/** The file with its LUKS area zeroed: what an amend of the key slots must leave untouched. */
function outsideLuks(file: string): string {
  const b = fs.readFileSync(file);
  const c = mapQcow2(file).crypto;
  assert.ok(c);
  b.fill(0, c.offset, c.offset + c.length);
  return sha256(b);
}

/** Our amend (the image's key given as -o encrypt.key-secret, or in --image-opts with `imageOpts`). */
function ours(file: string, o: string, extra: string[] = [], imageOpts?: string) {
  return run(process.execPath, [CLI, 'amend', ...secretArgs(...SECRETS), ...extra, '-o', o, ...(imageOpts ? ['--image-opts', opts(file, imageOpts)] : [file])]);
}

function qemuAmend(file: string, key: string, o: string, extra: string[] = []) {
  return run('qemu-img', ['amend', ...secretArgs(...SECRETS), ...extra, '-o', o, '--image-opts', opts(file, key)]);
}

/** qemu-img opens it with this passphrase: guest data equal to the original, check clean. */
async function opensWith(file: string, pass: string): Promise<void> {
  assert.ok((await qemuRaw(opts(file, 'k'), [['k', pass]], `${file}.${sha256(pass).slice(0, 8)}.raw`)).equals(expected), `${path.basename(file)}: guest data as before`);
  assert.match(await runOk('qemu-img', ['check', ...secretArgs(['k', pass]), '--image-opts', opts(file, 'k')]), /No errors were found on the image/);
}

async function refusesPass(file: string, pass: string): Promise<void> {
  const r = await run('qemu-img', ['convert', ...secretArgs(['k', pass]), '--image-opts', opts(file, 'k'), '-O', 'raw', `${file}.refused.raw`]);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /Invalid password, cannot unlock any keyslot/);
}

/** Runs the same amend with both tools on twins; both succeed and the headers agree on the active slots. */
async function both(ourFile: string, twin: string, key: string, o: string, useImageOpts = false, extra: string[] = []): Promise<boolean[]> {
  const before = outsideLuks(ourFile);
  const a = await ours(ourFile, useImageOpts ? o : `${o},encrypt.key-secret=${key}`, extra, useImageOpts ? key : undefined);
  assert.equal(a.status, 0, a.stderr);
  assert.equal(a.stdout + a.stderr, '', 'a successful amend prints nothing');
  const q = await qemuAmend(twin, key, o, extra);
  assert.equal(q.status, 0, q.stderr);
  const slots = await activeSlots(ourFile);
  assert.deepEqual(slots, await activeSlots(twin), 'the same slots active as qemu-img leaves');
  const [mine, theirs] = [slotRecords(ourFile), slotRecords(twin)];
  slots.forEach((active, i) => {
    if (!active) assert.ok(mine[i].equals(theirs[i]), `inactive key slot ${i}: the same 48-byte record as qemu-img's (state, no iterations, zero salt)`);
    else assert.ok(mine[i].subarray(40).equals(theirs[i].subarray(40)), `key slot ${i}: the same key material offset and stripes`);
  });
  assert.equal(outsideLuks(ourFile), before, 'nothing outside the LUKS area changed');
  return slots;
}

const T = true, F = false;

test('adding passphrases (first free slot, then slot 5 via --image-opts), erasing by passphrase and by slot: as qemu-img amend does, and qemu-img opens the result', async () => {
  const mine = copy('mine.qcow2'), twin = copy('twin.qcow2');
  assert.deepEqual(await both(mine, twin, 's0', 'encrypt.state=active,encrypt.new-secret=s1,encrypt.iter-time=10'), [T, T, F, F, F, F, F, F]);
  await opensWith(mine, P1);
  await opensWith(mine, P0);
  assert.deepEqual(await both(mine, twin, 's1', 'encrypt.state=active,encrypt.new-secret=s2,encrypt.keyslot=5,encrypt.iter-time=10', true), [T, T, F, F, F, T, F, F]);
  await opensWith(mine, P2);
  // the passphrase added in slot 0 is erased wherever it is
  assert.deepEqual(await both(mine, twin, 's2', 'encrypt.state=inactive,encrypt.old-secret=s0'), [F, T, F, F, F, T, F, F]);
  await refusesPass(mine, P0);
  await opensWith(mine, P1);
  assert.deepEqual(await both(mine, twin, 's1', 'encrypt.state=inactive,encrypt.keyslot=5', true), [F, T, F, F, F, F, F, F]);
  await refusesPass(mine, P2);
  await opensWith(mine, P1);
  // the freed slot 0 is the first free one again
  assert.deepEqual(await both(mine, twin, 's1', 'encrypt.state=active,encrypt.new-secret=s0,encrypt.iter-time=10'), [T, T, F, F, F, F, F, F]);
  await opensWith(mine, P0);
});

test('the same passphrase in two slots: old-secret erases both', async () => {
  const mine = copy('dup.qcow2');
  for (const slot of [3, 6]) assert.equal((await ours(mine, `encrypt.state=active,encrypt.new-secret=s1,encrypt.keyslot=${slot},encrypt.iter-time=10,encrypt.key-secret=s0`)).status, 0);
  const twin = copy('dup-twin.qcow2', mine);
  assert.deepEqual(await both(mine, twin, 's0', 'encrypt.state=inactive,encrypt.old-secret=s1'), [T, F, F, F, F, F, F, F]);
  await refusesPass(mine, P1);
  await opensWith(mine, P0);
});

/** The message qemu-img printed, without its "qemu-img: " prefix. */
function qemuMessage(stderr: string): string {
  const m = /^qemu-img: (.*?)\s*$/m.exec(stderr);
  assert.ok(m, stderr);
  return m[1];
}

test('refusals: qemu-img refuses too, we print its message and the file is unchanged', async () => {
  // a two-slot image (P0 in 0, P1 in 1) and the one-slot base
  const two = copy('two.qcow2');
  assert.equal((await ours(two, 'encrypt.state=active,encrypt.new-secret=s1,encrypt.iter-time=10,encrypt.key-secret=s0')).status, 0);
  const cases: { image: string; o: string; message: RegExp }[] = [
    { image: base, o: 'encrypt.state=inactive,encrypt.keyslot=0', message: /^Attempt to erase the only active keyslot 0 which will erase all the data in the image irreversibly - refusing operation$/ },
    { image: base, o: 'encrypt.state=inactive,encrypt.old-secret=s0', message: /^All the active keyslots match the \(old\) password that was given and erasing them will erase all the data/ },
    { image: two, o: 'encrypt.state=inactive,encrypt.old-secret=sw', message: /^No keyslots match given \(old\) password for erase operation$/ },
    { image: two, o: 'encrypt.state=inactive,encrypt.keyslot=1,encrypt.old-secret=s0', message: /^Given keyslot 1 doesn't contain the given old password for erase operation$/ },
    { image: two, o: 'encrypt.state=active,encrypt.new-secret=s2,encrypt.keyslot=8', message: /^Invalid keyslot 8 specified, must be between 0 and 7$/ },
    { image: two, o: 'encrypt.state=active,encrypt.new-secret=s2,encrypt.keyslot=-1', message: /^Invalid keyslot 4294967295 specified/ },
    { image: two, o: 'encrypt.state=inactive,encrypt.keyslot=9', message: /^Invalid keyslot 9 specified, must be between 0 and 7$/ },
    { image: two, o: 'encrypt.state=active,encrypt.new-secret=s2,encrypt.keyslot=1', message: /^Refusing to overwrite active keyslot 1 - please erase it first$/ },
    { image: two, o: 'encrypt.state=inactive,encrypt.keyslot=4', message: /^Given keyslot 4 is already erased \(inactive\)$/ },
    { image: two, o: 'encrypt.state=active', message: /^'new-secret' is required to activate a keyslot$/ },
    { image: two, o: 'encrypt.state=active,encrypt.new-secret=s2,encrypt.old-secret=s1', message: /^'old-secret' must not be given when activating keyslots$/ },
    { image: two, o: 'encrypt.state=inactive,encrypt.keyslot=1,encrypt.iter-time=10', message: /^'iter-time' must not be given when erasing keyslots$/ },
    { image: two, o: 'encrypt.state=inactive', message: /^To erase keyslot\(s\), either explicit keyslot index or the password currently contained in them must be given$/ },
    { image: two, o: 'encrypt.new-secret=s2', message: /^Parameter 'state' is missing$/ },
    { image: two, o: 'encrypt.state=inactive,encrypt.keyslot=x', message: /^Parameter 'encrypt.keyslot' expects a number$/ },
  ];
  for (const c of cases) {
    const q = await qemuAmend(copy('refused-twin.qcow2', c.image), 's0', c.o);
    assert.notEqual(q.status, 0, `qemu-img refuses ${c.o}`);
    const msg = qemuMessage(q.stderr);
    assert.match(msg, c.message, `qemu-img's message for ${c.o}`);
    const before = sha256(fs.readFileSync(c.image));
    const a = await ours(c.image, `${c.o},encrypt.key-secret=s0`);
    assert.equal(a.status, 1, `${c.o}: ${a.stderr}`);
    assert.ok(a.stderr.includes(msg), `${c.o}: ours says ${a.stderr.trim()}, qemu-img says ${msg}`);
    assert.equal(a.stderr.split('\n').filter(Boolean).length, 1, 'one line, no stack trace');
    assert.equal(sha256(fs.readFileSync(c.image)), before, `${c.o}: the file is unchanged`);
  }
  // the image's key: missing, or one no slot takes (qemu-img fails to open it, before the options)
  const before = sha256(fs.readFileSync(two));
  const noKey = await ours(two, 'encrypt.state=inactive,encrypt.keyslot=1');
  assert.equal(noKey.status, 1);
  assert.match(noKey.stderr, /Parameter 'encrypt\.key-secret' is required for cipher/);
  const wrongKey = await ours(two, 'encrypt.state=inactive,encrypt.keyslot=1', [], 'sw');
  assert.equal(wrongKey.status, 1);
  const qemuWrongKey = qemuMessage((await qemuAmend(copy('wrong-twin.qcow2', two), 'sw', 'encrypt.state=inactive,encrypt.keyslot=1')).stderr);
  assert.match(qemuWrongKey, /Invalid password, cannot unlock any keyslot$/);
  // qemu-img's words after its "Could not open '…': ", then which slots were tried
  assert.ok(wrongKey.stderr.includes(`${path.basename(two)}: encryption header.key_slots at 0x`), wrongKey.stderr);
  assert.ok(wrongKey.stderr.includes(`${qemuWrongKey.replace(/^.*: /, '')} (tried the 2 active key slots: 0, 1)`), wrongKey.stderr);
  assert.equal(sha256(fs.readFileSync(two)), before);
});

test('--force overwrites an active slot and erases the last one, as qemu-img amend --force', async () => {
  const mine = copy('force.qcow2'), twin = copy('force-twin.qcow2');
  assert.deepEqual(await both(mine, twin, 's0', 'encrypt.state=active,encrypt.new-secret=s1,encrypt.keyslot=0,encrypt.iter-time=10', false, ['--force']), [T, F, F, F, F, F, F, F]);
  await refusesPass(mine, P0);
  await opensWith(mine, P1);
  assert.deepEqual(await both(mine, twin, 's1', 'encrypt.state=inactive,encrypt.keyslot=0', false, ['--force']), [F, F, F, F, F, F, F, F]);
  await refusesPass(mine, P1);
});

test('an image without LUKS, and other options mixed in, are refused', async () => {
  const plain = path.join(dir, 'plain.qcow2');
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', plain, '1M']);
  const q = await run('qemu-img', ['amend', ...secretArgs(...SECRETS), '-o', 'encrypt.state=inactive,encrypt.keyslot=1', '--image-opts', opts(plain, 's0')]);
  const a = await ours(plain, 'encrypt.state=inactive,encrypt.keyslot=1,encrypt.key-secret=s0');
  assert.equal(a.status, 1);
  assert.ok(a.stderr.includes(qemuMessage(q.stderr)), a.stderr);
  const mixed = await ours(copy('mixed.qcow2'), 'compat=1.1,encrypt.state=inactive,encrypt.keyslot=1,encrypt.key-secret=s0');
  assert.equal(mixed.status, 1);
  assert.match(mixed.stderr, /together with other options is not supported/);
});

test('an image a running QEMU holds is refused, nothing written', async () => {
  const held = copy('held.qcow2');
  const q = spawn('qemu-io', [...secretArgs(['s0', P0]), '--image-opts', '-c', 'sleep 20000', opts(held, 's0')], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 200 && !isLockedByQemu(held); i++) await new Promise(r => setTimeout(r, 50));
    assert.ok(isLockedByQemu(held), 'qemu-io took its lock');
    const before = sha256(fs.readFileSync(held));
    const r = await ours(held, 'encrypt.state=active,encrypt.new-secret=s1,encrypt.iter-time=10,encrypt.key-secret=s0');
    assert.equal(r.status, 1);
    assert.match(r.stderr, /in use by a running QEMU/);
    assert.equal(sha256(fs.readFileSync(held)), before);
  } finally {
    q.kill('SIGKILL');
    await new Promise(r => q.once('exit', r));
  }
});

test('erasing a slot leaves none of its key material in the file: qemu-img no longer opens with that passphrase, still opens with the other', async () => {
  const mine = copy('wipe.qcow2');
  assert.equal((await ours(mine, 'encrypt.state=active,encrypt.new-secret=s1,encrypt.keyslot=3,encrypt.iter-time=10,encrypt.key-secret=s0')).status, 0);
  const c = mapQcow2(mine).crypto;
  assert.ok(c);
  const area = { file: mine, reader: fileReader(mine), offset: c.offset, length: c.length };
  const h = await readLuksHeader(area);
  const slot = h.slots[3];
  assert.ok(slot.active);
  const at = c.offset + slot.keyMaterialSector * 512, len = h.keyBytes * slot.stripes;
  const old = Buffer.from(fs.readFileSync(mine).subarray(at, at + len));
  const twin = copy('wipe-twin.qcow2', mine);
  assert.deepEqual(await both(mine, twin, 's0', 'encrypt.state=inactive,encrypt.keyslot=3'), [T, F, F, F, F, F, F, F]);
  const after = fs.readFileSync(mine);
  // no 32-byte piece of the old material is anywhere in the file (samples across the whole area)
  for (let o = 0; o + 32 <= len; o += 4096) assert.equal(after.indexOf(old.subarray(o, o + 32)), -1, `old key material at +${o} still in the file`);
  let same = 0;
  for (let i = 0; i < len; i++) if (after[at + i] === old[i]) same++;
  assert.ok(same < len / 64, `${same} of ${len} bytes of the key material area unchanged (random chance is 1 in 256)`);
  // and qemu-img's erase leaves it changed the same way (its twin's material is not the old one either)
  assert.equal(fs.readFileSync(twin).indexOf(old.subarray(0, 32)), -1);
  await refusesPass(mine, P1);
  await opensWith(mine, P0);
});

/** Runs our amend with the crash hook at k writes; the output is captured for the leak scan. */
function crashAt(k: number, file: string, o: string) {
  const r = spawnSync(process.execPath, [CLI, 'amend', ...secretArgs(...SECRETS), '-o', o, file],
    { env: { ...process.env, QCOW2_LENS_CRASH_AFTER_WRITES: String(k) }, encoding: 'utf8' });
  capture(r.stdout + r.stderr);
  return r;
}

test('a crash after each kind of write of an add and of an erase (header, then 40 passes over the key material) leaves an image qemu-img opens with an old or the new passphrase, clean', async t => {
  const pristine = copy('crash-pristine.qcow2');
  assert.equal((await ours(pristine, 'encrypt.state=active,encrypt.new-secret=s1,encrypt.keyslot=1,encrypt.iter-time=10,encrypt.key-secret=s0')).status, 0);
  const outside = outsideLuks(pristine);
  const work = path.join(dir, 'crash.qcow2');
  let points = 0;
  for (const op of [
    // adding: key material, header; erasing one slot: header, then QEMU's 40 random passes
    { o: 'encrypt.state=active,encrypt.new-secret=s2,encrypt.iter-time=10,encrypt.key-secret=s0', always: [P0, P1], after: P2, gone: undefined, writes: 2 },
    { o: 'encrypt.state=inactive,encrypt.old-secret=s0,encrypt.key-secret=s1', always: [P1], after: undefined, gone: P0, writes: 41 },
  ]) {
    const n = op.writes;
    // every point of a short amend; of the erase's 40 alike passes the first, a middle one and the last
    const ks = [...new Set(n <= 4 ? Array.from({ length: n + 1 }, (_, i) => i) : [0, 1, 2, n >> 1, n - 2, n - 1, n])];
    for (const k of ks) {
      fs.copyFileSync(pristine, work);
      const r = crashAt(k, work, op.o);
      for (const p of op.always) await opensWith(work, p);
      await everyActiveSlotOpens(work);
      assert.equal(outsideLuks(work), outside, `k=${k}: nothing outside the LUKS area changed`);
      if (k === n) {
        assert.equal(r.status, 0, `${op.o}: finishes after ${n} writes: ${r.stderr}`);
        if (op.after) await opensWith(work, op.after);
        if (op.gone) await refusesPass(work, op.gone);
        break;
      }
      assert.equal(r.signal, 'SIGKILL', `${op.o}: k=${k} of ${n} writes: expected a crash, got status ${r.status}: ${r.stderr}`);
      points++;
    }
  }
  t.diagnostic(`key slot amend: ${points} crash points, each image opened and checked clean`);
});

test('no passphrase in any file, output or error message of this test file', () => {
  assert.deepEqual(findLeaks([dir], [P0, P1, P2, WRONG]), []);
});
