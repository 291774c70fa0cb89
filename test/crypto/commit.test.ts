/**
 * Guest writes into a LUKS-encrypted qcow2 image, in place: `commit` of a plain overlay into an
 * encrypted base and `rebase -b ""` (flatten) of an encrypted overlay, each against qemu-img 7.2
 * doing the same on a twin copy. The image we write checks clean, reads (qemu-img, with the key)
 * equal to qemu-img's result, and holds no plaintext of what was written; a missing or wrong
 * passphrase is one clear error with the file unchanged; a SIGKILL after any write of the commit
 * leaves an encrypted base `qemu-img check` finds at most leaking and the overlay's content as it
 * was. No passphrase may appear in any file, output or message.
 */
import { before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, tmpDir } from '../helpers/qemu';
import { capture, findLeaks, passphrase, qemuRaw, run, runOk, secretArgs } from './util';

const dir = tmpDir('qcow2-lens-crypt-commit-');
const P0 = passphrase('commit');
const WRONG = passphrase('wrong');
const SECRETS: [string, string][] = [['s0', P0], ['sw', WRONG]];
const src = path.join(dir, 'src');
/** The pattern the overlay writes (0x5e): its plaintext must not reach the encrypted base. */
const PATTERN = Buffer.alloc(4096, 0x5e);

const luks = (file: string, id = 's0') => `driver=qcow2,file.filename=${file},encrypt.key-secret=${id}`;
const overLuks = (file: string, id = 's0') => `driver=qcow2,file.filename=${file},backing.encrypt.key-secret=${id}`;

/** An encrypted base (4 KiB clusters, data at 0 and 1 MiB) under a plain overlay writing over part of it, zeros and new data. */
async function buildChain(at: string): Promise<void> {
  fs.rmSync(at, { recursive: true, force: true });
  fs.mkdirSync(at, { recursive: true });
  const base = path.join(at, 'base.qcow2'), top = path.join(at, 'top.qcow2');
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...secretArgs(['s0', P0]), '-o', 'cluster_size=4k,encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10', base, '2M']);
  await runOk('qemu-io', [...secretArgs(['s0', P0]), '--image-opts', luks(base), '-c', 'write -P 0x11 0 128k', '-c', 'write -P 0x22 1M 64k']);
  await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'base.qcow2', '-F', 'qcow2', '-u', top, '2M']);
  await runOk('qemu-io', [...secretArgs(['s0', P0]), '--image-opts', overLuks(top), '-c', 'write -P 0x5e 64k 96k', '-c', 'write -z 1M 16k', '-c', 'write -P 0x5e 1536k 40k']);
}

function copyChain(from: string, to: string): void {
  fs.rmSync(to, { recursive: true, force: true });
  fs.mkdirSync(to, { recursive: true });
  for (const f of fs.readdirSync(from)) fs.copyFileSync(path.join(from, f), path.join(to, f));
}

const guestHash = async (imageOpts: string, name: string) =>
  crypto.createHash('sha256').update(await qemuRaw(imageOpts, [['s0', P0]], path.join(dir, `${name}.raw`))).digest('hex');

async function checkClean(file: string): Promise<void> {
  const r = await run('qemu-img', ['check', ...secretArgs(['s0', P0]), '--image-opts', luks(file)]);
  assert.equal(r.status, 0, `${file}: ${r.stdout}${r.stderr}`);
}

before(async () => {
  await buildChain(src);
});

test('commit of a plain overlay into an encrypted base: equal to qemu-img commit\'s base, clean, no plaintext in the file', async () => {
  const ours = path.join(dir, 'ours'), theirs = path.join(dir, 'theirs');
  copyChain(src, ours);
  copyChain(src, theirs);
  const r = await run(process.execPath, [CLI, 'commit', ...secretArgs(['s0', P0]), '--image-opts', overLuks(path.join(ours, 'top.qcow2'))]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /Image committed\./);
  await runOk('qemu-img', ['commit', '-q', ...secretArgs(['s0', P0]), '--image-opts', overLuks(path.join(theirs, 'top.qcow2'))]);
  await checkClean(path.join(ours, 'base.qcow2'));
  await runOk('qemu-img', ['compare', ...secretArgs(['s0', P0]), '--image-opts', luks(path.join(ours, 'base.qcow2')), luks(path.join(theirs, 'base.qcow2'))]);
  assert.equal(fs.readFileSync(path.join(ours, 'base.qcow2')).indexOf(PATTERN), -1, 'the committed data is stored encrypted');
  // the overlay was emptied as qemu-img empties it: both chains read the same
  await runOk('qemu-img', ['compare', ...secretArgs(['s0', P0]), '--image-opts', overLuks(path.join(ours, 'top.qcow2')), overLuks(path.join(theirs, 'top.qcow2'))]);
});

test('rebase -b "" of an encrypted overlay over an encrypted base: equal to qemu-img rebase\'s result, clean, no plaintext', async () => {
  const mk = async (at: string) => {
    copyChain(src, at);
    const top = path.join(at, 'enc-top.qcow2');
    await runOk('qemu-img', ['create', '-q', '-f', 'qcow2', ...secretArgs(['s0', P0]), '-o', 'cluster_size=4k,encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10', '-b', 'base.qcow2', '-F', 'qcow2', '-u', top, '2M']);
    await runOk('qemu-io', [...secretArgs(['s0', P0]), '--image-opts', `${luks(top)},backing.encrypt.key-secret=s0`, '-c', 'write -P 0x33 8k 8k']);
    return top;
  };
  const ours = await mk(path.join(dir, 'rb-ours')), theirs = await mk(path.join(dir, 'rb-theirs'));
  const before = await guestHash(`${luks(ours)},backing.encrypt.key-secret=s0`, 'rb-before');
  const r = await run(process.execPath, [CLI, 'rebase', ...secretArgs(['s0', P0]), '-b', '', '--image-opts', `${luks(ours)},backing.encrypt.key-secret=s0`]);
  assert.equal(r.status, 0, r.stderr);
  await runOk('qemu-img', ['rebase', ...secretArgs(['s0', P0]), '-b', '', '--image-opts', `${luks(theirs)},backing.encrypt.key-secret=s0`]);
  await checkClean(ours);
  assert.doesNotMatch(await runOk('qemu-img', ['info', ours]), /backing file/);
  assert.equal(await guestHash(luks(ours), 'rb-after'), before, 'the flattened image reads what the chain read');
  await runOk('qemu-img', ['compare', ...secretArgs(['s0', P0]), '--image-opts', luks(ours), luks(theirs)]);
  assert.equal(fs.readFileSync(ours).indexOf(Buffer.alloc(4096, 0x11)), -1, 'the base\'s data copied in is stored encrypted');
});

test('commit into an encrypted base without its passphrase, or with a wrong one: one clear error, the files unchanged', async () => {
  const at = path.join(dir, 'refused');
  copyChain(src, at);
  const base = path.join(at, 'base.qcow2'), top = path.join(at, 'top.qcow2');
  const was = [fs.readFileSync(base), fs.readFileSync(top)];
  const none = await run(process.execPath, [CLI, 'commit', top]);
  assert.equal(none.status, 1);
  assert.match(none.stderr, /base\.qcow2: header\.crypt_method at 0x20: the image is encrypted \(LUKS\)/);
  const wrong = await run(process.execPath, [CLI, 'commit', ...secretArgs(['sw', WRONG]), '--image-opts', overLuks(top, 'sw')]);
  assert.equal(wrong.status, 1);
  assert.match(wrong.stderr, /Invalid password, cannot unlock any keyslot/);
  assert.equal(wrong.stderr.split('\n').filter(Boolean).length, 1, wrong.stderr);
  assert.ok(fs.readFileSync(base).equals(was[0]) && fs.readFileSync(top).equals(was[1]), 'nothing written');
});

test('commit into an encrypted base: a SIGKILL after any write leaves at most leaks and the overlay\'s content', async () => {
  const work = path.join(dir, 'crash');
  const topHash = await guestHash(overLuks(path.join(src, 'top.qcow2')), 'crash-top');
  let k = 0;
  for (; k < 200; k++) {
    copyChain(src, work);
    const args = [CLI, 'commit', '-q', ...secretArgs(['s0', P0]), '--image-opts', overLuks(path.join(work, 'top.qcow2'))];
    const r = spawnSync(process.execPath, args, { env: { ...process.env, QCOW2_LENS_CRASH_AFTER_WRITES: String(k) }, encoding: 'utf8' });
    capture(r.stdout);
    capture(r.stderr);
    if (r.status !== 0) assert.equal(r.signal, 'SIGKILL', `k=${k}: expected a crash, got status ${r.status}: ${r.stderr}`);
    for (const [f, opts] of [['base.qcow2', luks], ['top.qcow2', overLuks]] as const) {
      const c = await run('qemu-img', ['check', ...secretArgs(['s0', P0]), '--image-opts', opts(path.join(work, f))]);
      assert.ok(c.status === 0 || c.status === 3, `k=${k} ${f}: qemu-img check status ${c.status}\n${c.stdout}${c.stderr}`);
      assert.doesNotMatch(c.stdout, /ERROR/, `k=${k} ${f}`);
    }
    assert.equal(await guestHash(overLuks(path.join(work, 'top.qcow2')), 'crash-now'), topHash, `k=${k}: the overlay's content changed`);
    if (r.status === 0) break;
  }
  assert.ok(k >= 5 && k < 200, `${k} writes`);
  console.log(`encrypted commit crash points: ${k}`);
});

test('no passphrase in any file, output or message of these tests', () => {
  assert.deepEqual(findLeaks([dir], SECRETS.map(([, p]) => p)), []);
});
