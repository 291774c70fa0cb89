/**
 * The editor's space summary and disk usage on a LUKS-encrypted image (qemu-img convert with
 * encrypt.format=luks of an ext4 guest made by mkfs.ext4 -d): locked, the report says why it has
 * no guest split; unlocked (the session's key, as the tab's ViewModel gets it from the keyring),
 * the active data is split into in use by files / guest free space / all zero exactly as
 * `qcow2-lens space --json` splits the same guest read from a plain copy, and the disk usage lists
 * the guest's files; locked again (the tab reopened without the key), it is refused again.
 */
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Secret } from '../../src/engine/crypto/secret';
import { ViewModel } from '../../src/extension/viewModel';
import type { FromWebviewMessage, ToWebviewMessage } from '../../src/protocol';
import { cliJson, qemuImg, tmpDir } from '../helpers/qemu';
import { run } from '../guest/common';

async function ask<T extends ToWebviewMessage['type']>(vm: ViewModel, m: FromWebviewMessage, type: T): Promise<Extract<ToWebviewMessage, { type: T }>> {
  const r = await vm.handle(m);
  assert.ok(r && r.type === type, JSON.stringify(r));
  return r as Extract<ToWebviewMessage, { type: T }>;
}

interface Part { name: string; bytes: number; parts?: Part[] }

describe('space summary of an encrypted image (spaceReport.ts with the session key)', { timeout: 120000 }, () => {
  const pass = `space-${crypto.randomBytes(6).toString('hex')}`;
  let dir: string, enc: string, plain: string;

  before(() => {
    dir = tmpDir('qcow2-lens-space-luks-');
    const src = path.join(dir, 'src');
    fs.mkdirSync(path.join(src, 'etc'), { recursive: true });
    fs.mkdirSync(path.join(src, 'data'));
    fs.writeFileSync(path.join(src, 'etc', 'fstab'), 'UUID=42 / ext4 defaults 0 1\n');
    fs.writeFileSync(path.join(src, 'data', 'big.bin'), crypto.randomBytes(300 * 1024));
    const raw = path.join(dir, 'fs.raw');
    run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', src, raw, '16M']);
    fs.writeFileSync(path.join(src, 'gone.bin'), crypto.randomBytes(200 * 1024));
    run('debugfs', ['-w', '-R', `write ${path.join(src, 'gone.bin')} gone.bin`, raw]);
    // deleted: its blocks keep their bytes (qemu-img convert copies them) but are guest free space
    run('debugfs', ['-w', '-R', 'rm /gone.bin', raw]);
    enc = path.join(dir, 'enc.qcow2');
    qemuImg('convert', '-q', '--object', `secret,id=s,data=${pass}`, '-O', 'qcow2',
      '-o', 'encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10,cluster_size=4096', raw, enc);
    // the same guest, unencrypted, for the CLI's split to compare with
    plain = path.join(dir, 'plain.qcow2');
    qemuImg('convert', '-q', '-O', 'qcow2', '-o', 'cluster_size=4096', raw, plain);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const activeOf = (parts: Part[]) => Object.fromEntries(parts.find(p => p.name === 'active')!.parts!.map(p => [p.name, p.bytes]));

  it('locked: no split, and why; unlocked: split as the CLI splits the same guest; locked again: refused', async () => {
    const key = Secret.fromString(pass);
    let held: Secret | undefined;
    const vm = await ViewModel.open(enc, { keys: () => held });
    try {
      const locked = await ask(vm, { type: 'getSpaceReport', requestId: 1 }, 'spaceReport');
      assert.equal(locked.report, undefined);
      assert.match(locked.unavailable ?? '', /encrypted and locked/);
      const lockedUsage = await ask(vm, { type: 'getDiskUsage', requestId: 2 }, 'diskUsage');
      assert.match(lockedUsage.unavailable ?? '', /encrypted and locked/);

      // Unlock: the keyring holds the key and the tab reopens its image (document.fileChanged → reload)
      held = key;
      await vm.reload();
      const r = await ask(vm, { type: 'getSpaceReport', requestId: 3 }, 'spaceReport');
      assert.ok(r.report, r.unavailable);
      assert.equal(r.report.guestBrowsable, true, JSON.stringify(r.report.notes));
      const truth = cliJson<{ parts: Part[]; guest: { freeBytes: number } }>('space', '--json', plain);
      const got = activeOf(r.report.parts), want = activeOf(truth.parts);
      assert.deepEqual(got, want);
      assert.ok(got['in use by files'] > 300 * 1024, `the files' data is in use: ${JSON.stringify(got)}`);
      assert.ok(got['guest free space'] >= 200 * 1024, `the deleted file's blocks are guest free space: ${JSON.stringify(got)}`);
      assert.equal(r.report.guestFreeBytes, truth.guest.freeBytes);
      assert.ok(!r.report.notes.some(n => /could not be read/.test(n)), r.report.notes.join('\n'));
      assert.equal(r.report.parts.reduce((s, p) => s + p.bytes, 0), fs.statSync(enc).size);

      const u = await ask(vm, { type: 'getDiskUsage', requestId: 4 }, 'diskUsage');
      assert.equal(u.unavailable, undefined);
      const names = u.fileSystems[0].root.children!.map(c => c.name);
      assert.ok(names.includes('data') && names.includes('etc'), names.join(','));

      // Lock: the key is forgotten and the tab reopens without it
      held = undefined;
      await vm.reload();
      const again = await ask(vm, { type: 'getSpaceReport', requestId: 5 }, 'spaceReport');
      assert.match(again.unavailable ?? '', /encrypted and locked/);
    } finally {
      await vm.close();
      key.wipe();
    }
  });
});
