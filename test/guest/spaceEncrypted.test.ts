/**
 * `space` and `sparsify` of a LUKS-encrypted image (qemu-img convert with encrypt.format=luks of an
 * ext4 guest made by mkfs.ext4 -d, a file deleted with debugfs, zeros written past the file system
 * with qemu-io), next to a plain copy of the same guest:
 * - CLI `space --json` with the passphrase (--object secret,file=… --image-opts …) splits the
 *   active data exactly as for the plain copy (with and without --zero-scan, which must decrypt to
 *   see the zeros), and its reclaim figures are what `compact -o` / `sparsify -o` then save;
 * - without the passphrase: a report without a guest split, figures 0, and a note (also on
 *   stderr) saying what to give; a wrong one: an error naming the image, non-zero exit;
 * - the editor's path (engineApi.sparsifyPath and spaceReport with the keyring's lookup, as
 *   guestCommands.ts calls them): the forecast and the sparsify reopen the image with the
 *   session key; the result stays encrypted, qemu-img check is clean, e2fsck -fn of its guest is
 *   clean, and its guest equals the sparsified plain copy's (qemu-img compare);
 * - the passphrase never appears in any output.
 */
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Secret } from '../../src/engine/crypto/secret';
import { sparsifyPath } from '../../src/extension/engineApi';
import { Keyring } from '../../src/extension/keyring';
import { LOCKED_NOTE, spaceReport, type SpacePart, type SpaceReport } from '../../src/guest/space/report';
import { sparsifyImage } from '../../src/guest/sparsify';
import { cli, qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../helpers/qemu';
import { bytes, run, runBuffer } from './common';

const CLUSTER = 4096;

describe('space and sparsify of a LUKS-encrypted image', { timeout: 240000 }, () => {
  const pass = `luks-${crypto.randomBytes(6).toString('hex')}`;
  const wrong = `wrong-${crypto.randomBytes(6).toString('hex')}`;
  /** Everything our CLI printed, for the leak check. */
  const printed: string[] = [];
  let dir: string, enc: string, plain: string, passFile: string, wrongFile: string, bigFile: string;

  const opts = (file: string) => `driver=qcow2,file.filename=${file},encrypt.key-secret=k`;
  const ours = (...args: string[]) => {
    const r = cli(...args);
    printed.push(r.stdout.toString(), r.stderr);
    return r;
  };
  /** Our CLI with the passphrase: the secret from a file, the image as an option list. */
  const withKey = (cmd: string, file: string, secret = passFile, ...flags: string[]) =>
    ours(cmd, ...flags, '--object', `secret,id=k,file=${secret}`, '--image-opts', opts(file));
  const json = (r: ReturnType<typeof cli>): SpaceReport => {
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout.toString()) as SpaceReport;
  };
  const part = (r: SpaceReport | SpacePart, name: string): SpacePart => {
    const p = r.parts!.find(x => x.name === name);
    assert.ok(p, `part ${name}`);
    return p;
  };
  const split = (r: SpaceReport) => Object.fromEntries(part(r, 'active').parts!.map(p => [p.name, p.bytes]));
  const qemuSecret = () => ['--object', `secret,id=k,file=${passFile}`];

  before(() => {
    dir = tmpDir('qcow2-lens-space-luks-');
    passFile = path.join(dir, 'pass');
    wrongFile = path.join(dir, 'wrong');
    fs.writeFileSync(passFile, pass, { mode: 0o600 });
    fs.writeFileSync(wrongFile, wrong, { mode: 0o600 });
    const src = path.join(dir, 'src');
    fs.mkdirSync(path.join(src, 'etc'), { recursive: true });
    fs.mkdirSync(path.join(src, 'data'));
    fs.writeFileSync(path.join(src, 'etc', 'fstab'), 'UUID=42 / ext4 defaults 0 1\n');
    bigFile = path.join(src, 'data', 'big.bin');
    fs.writeFileSync(bigFile, bytes(300 * 1024, 'luks-big'));
    const raw = path.join(dir, 'disk.raw');
    run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', src, raw, '16M']);
    const gone = path.join(dir, 'gone.bin');
    fs.writeFileSync(gone, bytes(200 * 1024, 'luks-gone'));
    run('debugfs', ['-w', '-R', `write ${gone} gone.bin`, raw]);
    // deleted: its blocks keep their bytes (qemu-img convert copies them) but are guest free space
    run('debugfs', ['-w', '-R', 'rm /gone.bin', raw]);
    fs.truncateSync(raw, 20 * 1024 * 1024); // 4 MiB after the file system: outside it
    enc = path.join(dir, 'enc.qcow2');
    plain = path.join(dir, 'plain.qcow2');
    qemuImg('convert', '-q', ...qemuSecret(), '-O', 'qcow2',
      '-o', `encrypt.format=luks,encrypt.key-secret=k,encrypt.iter-time=10,cluster_size=${CLUSTER}`, raw, enc);
    qemuImg('convert', '-q', '-O', 'qcow2', '-o', `cluster_size=${CLUSTER}`, raw, plain);
    // written zeros outside the file system: data clusters that only a (decrypting) zero scan finds
    qemuIo(plain, ['write -P 0 17M 64k']);
    qemuIo(opts(enc), ['write -P 0 17M 64k'], [...qemuSecret(), '--image-opts']);
  });
  after(() => {
    for (const text of printed) {
      assert.ok(!text.includes(pass) && !text.includes(wrong), 'a passphrase was printed');
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('with the passphrase: the guest split equals the plain copy\'s, with and without --zero-scan', () => {
    for (const flags of [[], ['--zero-scan']]) {
      const e = json(withKey('space', enc, passFile, '--json', ...flags));
      const p = json(ours('space', '--json', ...flags, plain));
      const what = flags.join(' ') || 'no zero scan';
      assert.deepEqual(split(e), split(p), what);
      assert.equal(e.guest.freeBytes, p.guest.freeBytes, what);
      assert.deepEqual(e.guest.fileSystems, p.guest.fileSystems, what);
      assert.ok(split(e)['guest free space'] >= 196 * 1024, `${what}: the deleted file's blocks are guest free space: ${JSON.stringify(split(e))}`);
      assert.ok(split(e)['in use by files'] >= 300 * 1024, `${what}: ${JSON.stringify(split(e))}`);
      if (flags.length) assert.equal(split(e)['all zero'], 64 * 1024, 'the zeros qemu-io wrote, seen through the decryption');
      else assert.equal(split(e)['outside browsable file systems'], 64 * 1024, 'unscanned, written zeros are data outside the file system');
      assert.ok(!e.notes.some(n => n === LOCKED_NOTE || /could not be read|would refuse/.test(n)), e.notes.join('\n'));
      assert.equal(e.parts.reduce((s, x) => s + x.bytes, 0), fs.statSync(enc).size, `${what}: parts add up to the file size`);
      assert.ok(part(part(e, 'metadata'), 'encryption header').bytes > 0);
    }
  });

  it('with the passphrase: the reclaim figures are what compact -o and sparsify -o save, and the result stays encrypted', () => {
    const r = json(withKey('space', enc, passFile, '--json', '--zero-scan'));
    assert.ok(r.reclaim.sparsify > r.reclaim.compact + 150 * 1024, JSON.stringify(r.reclaim));
    for (const cmd of ['compact', 'sparsify'] as const) {
      const out = path.join(dir, `cli-${cmd}.qcow2`);
      const w = withKey(cmd, enc, passFile, '-q', '-o', out);
      assert.equal(w.status, 0, w.stderr);
      const saved = r.fileSize - fs.statSync(out).size;
      assert.ok(Math.abs(saved - r.reclaim[cmd]) <= 2 * CLUSTER, `${cmd} saved ${saved}, space said ${r.reclaim[cmd]}`);
      const info = JSON.parse(qemuImg('info', '--output=json', out)) as { encrypted?: boolean };
      assert.equal(info.encrypted, true, `${cmd}: the output is encrypted`);
      assert.match(qemuImg('check', ...qemuSecret(), '--image-opts', opts(out)), /No errors were found/);
    }
  });

  it('without the passphrase: no guest split, figures 0, and a note saying what to give; a wrong one: an error', () => {
    const r = ours('space', '--json', enc);
    const s = json(r);
    assert.ok(s.notes.includes(LOCKED_NOTE), s.notes.join('\n'));
    assert.match(r.stderr, /encrypted.*passphrase was not given.*--image-opts/);
    assert.equal(split(s)['guest free space'], 0);
    assert.equal(s.guest.fileSystems.length, 0);
    assert.deepEqual(s.reclaim, { compact: 0, sparsify: 0 });
    assert.equal(s.parts.reduce((a, x) => a + x.bytes, 0), fs.statSync(enc).size, 'the file is still split');
    const text = ours('space', enc);
    assert.equal(text.status, 0, text.stderr);
    assert.ok(text.stdout.toString().includes(`note: ${LOCKED_NOTE}`), text.stdout.toString());

    const bad = withKey('space', enc, wrongFile, '--json');
    assert.notEqual(bad.status, 0);
    assert.equal(bad.stdout.length, 0);
    assert.match(bad.stderr, /enc\.qcow2.*(password|passphrase|key ?slot)/i);
    assert.ok(bad.stderr.trim().split('\n').length <= 2, bad.stderr);
  });

  it('the editor\'s path: forecast and sparsify reopen the image with the keyring\'s session key', async () => {
    const storage = new Map<string, string>();
    const keyring = new Keyring({
      get: async (k: string) => storage.get(k), store: async (k: string, v: string) => { storage.set(k, v); },
      delete: async (k: string) => { storage.delete(k); }, keys: async () => [...storage.keys()], onDidChange: () => ({ dispose() {} }),
    } as unknown as ConstructorParameters<typeof Keyring>[0]);
    // locked: the forecast says so, and sparsify refuses as compact does, naming no passphrase
    const locked = await spaceReport(enc, { keys: keyring.lookup });
    assert.ok(locked.notes.includes(LOCKED_NOTE));
    const out = path.join(dir, 'editor-sparse.qcow2');
    await assert.rejects(sparsifyPath(enc, { output: out, keys: keyring.lookup }), /encrypted.*passphrase/);
    assert.ok(!fs.existsSync(out));

    await keyring.set(enc, Secret.fromString(pass), false);
    try {
      const forecast = await spaceReport(enc, { keys: keyring.lookup, zeroScan: true });
      assert.ok(!forecast.notes.some(n => /could not be read|would refuse/.test(n)), forecast.notes.join('\n'));
      assert.ok(part(part(forecast, 'active'), 'guest free space').sparsify! >= 196 * 1024);
      const r = await sparsifyPath(enc, { output: out, keys: keyring.lookup });
      assert.ok(r.droppedClusters >= 49, `the deleted file's clusters were dropped (${r.droppedClusters})`);
      const saved = forecast.fileSize - fs.statSync(out).size;
      assert.ok(Math.abs(saved - forecast.reclaim.sparsify) <= 2 * CLUSTER, `saved ${saved}, forecast ${forecast.reclaim.sparsify}`);
      assert.match(qemuImg('check', ...qemuSecret(), '--image-opts', opts(out)), /No errors were found/);

      // the same guest as the plain copy sparsified: only free space changed, and the same of it
      const plainOut = path.join(dir, 'plain-sparse.qcow2');
      await sparsifyImage(plain, { output: plainOut });
      const cmp = qemuImgStatus('compare', ...qemuSecret(), '--image-opts', opts(out), `driver=qcow2,file.filename=${plainOut}`);
      assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
      const guestRaw = path.join(dir, 'sparse-guest.raw');
      qemuImg('convert', ...qemuSecret(), '--image-opts', opts(out), '-O', 'raw', guestRaw);
      fs.truncateSync(guestRaw, 16 * 1024 * 1024); // the file system alone, for e2fsck
      run('e2fsck', ['-fn', guestRaw]);
      assert.ok(runBuffer('debugfs', ['-R', 'cat /data/big.bin', guestRaw]).equals(fs.readFileSync(bigFile)), 'a file reads as before');
    } finally {
      await keyring.forget(enc);
    }
  });
});
