/**
 * Encrypted images in a real VS Code extension host: a LUKS image made by qemu-img opens locked (its
 * structure shown, its guest bytes an "encrypted" error), Unlock Image with the passphrase makes the
 * tab's guest reads equal qemu-img's decrypted convert, a wrong passphrase is refused without
 * echoing it, remembering puts it in SecretStorage (a reopened tab is unlocked at once), and Lock
 * forgets it everywhere.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import type { FromWebviewMessage } from '../../src/protocol';
import { askTab as ask, luksImage, luksOpts, openTab, qemu, tabSummary as summary } from './util';

const PASS = 'lens-unlock-e2e passphrase';
const guest = (uri: vscode.Uri, offset: number, length: number) =>
  ask<{ type: string; data?: string; code?: string; message?: string }>(uri, { type: 'readGuest', guestOffset: offset, length } as FromWebviewMessage);

suite('Encrypted images: Unlock and Lock', () => {
  let img: vscode.Uri;
  let plain: Buffer;
  suiteSetup(() => {
    const made = luksImage('secret-disk.qcow2', PASS);
    plain = made.plain;
    img = vscode.Uri.file(made.file);
  });
  suiteTeardown(async () => {
    await vscode.commands.executeCommand('qcow2Lens.lockImage', img);
    await vscode.commands.executeCommand('workbench.action.closeAllEditors');
  });

  test('locked: structure shown, guest bytes refused as encrypted; a wrong passphrase is refused without echoing it', async () => {
    await openTab(img);
    const s = await summary(img);
    assert.equal(s.encryption?.format, 'luks');
    assert.equal(s.encryption?.unlocked, false);
    const r = await guest(img, 0, 4096);
    assert.equal(r.type, 'error');
    assert.equal(r.code, 'encrypted');
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.unlockImage', img, { passphrase: 'not it at all', remember: false })),
      (e: Error) => /Wrong passphrase/.test(e.message) && !e.message.includes('not it at all'));
    assert.equal((await summary(img)).encryption?.unlocked, false);
  });

  test('Unlock: the tab reads the guest decrypted, equal to qemu-img convert with the key', async () => {
    assert.equal(await vscode.commands.executeCommand('qcow2Lens.unlockImage', img, { passphrase: PASS, remember: false }), true);
    assert.equal((await summary(img)).encryption?.unlocked, true);
    for (const [off, len] of [[0, 65536], [3 * 2 ** 20 - 4096, 139264], [6 * 2 ** 20, 4096]]) {
      const r = await guest(img, off, len);
      assert.equal(r.type, 'bytes', r.message);
      assert.ok(Buffer.from(r.data!, 'base64').equals(plain.subarray(off, off + len)), `guest bytes at ${off}`);
    }
  });

  test('Compact Image of the unlocked image uses the session key: the copy stays encrypted and reads the same (qemu-img); locked, it is refused', async () => {
    const out = `${img.fsPath}.compact.qcow2`;
    fs.rmSync(out, { force: true });
    // the settings' default compression does not apply: an encrypted image is not compressed
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.compactImage', img, { output: out, compress: 'zlib' })),
      (e: Error) => /not.*compress|without compression/i.test(e.message));
    const r = await vscode.commands.executeCommand<{ output: string; compress: string }>('qcow2Lens.compactImage', img, { output: out });
    assert.equal(r.compress, 'none');
    const secret = ['--object', `secret,id=s0,data=${PASS}`];
    assert.match(qemu('qemu-img', 'info', out), /encrypted: yes/);
    qemu('qemu-img', 'check', ...secret, '--image-opts', luksOpts(out, 's0'));
    qemu('qemu-img', 'compare', ...secret, '--image-opts', luksOpts(img.fsPath, 's0'), luksOpts(out, 's0'));
    fs.rmSync(out, { force: true });
    await vscode.commands.executeCommand('qcow2Lens.lockImage', img);
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.compactImage', img, { output: out, compress: 'none' })),
      (e: Error) => /encrypted and locked/.test(e.message) && !e.message.includes(PASS));
    assert.equal(fs.existsSync(out), false, 'nothing written while locked');
  });

  test('Convert / Export and Compare with use the session key: the qcow2 copy stays encrypted, a raw one needs the modal; locked, both refused', async () => {
    const outQ = `${img.fsPath}.export.qcow2`, outRaw = `${img.fsPath}.export.img`;
    for (const f of [outQ, outRaw]) fs.rmSync(f, { force: true });
    const secret = ['--object', `secret,id=s0,data=${PASS}`];
    assert.equal(await vscode.commands.executeCommand('qcow2Lens.unlockImage', img, { passphrase: PASS, remember: false }), true);
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.convertImage', img, { format: 'qcow2', output: outQ, compress: 'zlib' })),
      (e: Error) => /stays encrypted, without compression/.test(e.message));
    const q = await vscode.commands.executeCommand<{ output: string }>('qcow2Lens.convertImage', img, { format: 'qcow2', output: outQ, iterTimeMs: 10 });
    assert.equal(q.output, outQ);
    assert.match(qemu('qemu-img', 'info', outQ), /encrypted: yes/);
    qemu('qemu-img', 'check', ...secret, '--image-opts', luksOpts(outQ, 's0'));
    qemu('qemu-img', 'compare', ...secret, '--image-opts', luksOpts(img.fsPath, 's0'), luksOpts(outQ, 's0'));
    assert.ok(!fs.readFileSync(outQ).includes(plain.subarray(0, 4096)), 'the copy holds no plaintext guest data');

    // a raw copy is the guest unencrypted: declined, nothing is written; accepted, it is qemu-img's decryption
    await vscode.commands.executeCommand('qcow2Lens.internal.scriptPrompts', [{ confirm: false }]);
    assert.equal(await vscode.commands.executeCommand('qcow2Lens.convertImage', img, { format: 'raw', output: outRaw }), undefined);
    const [modal] = await vscode.commands.executeCommand<{ message: string; detail?: string }[]>('qcow2Lens.internal.scriptPrompts');
    assert.match(modal.message, /unencrypted\?$/);
    assert.match(modal.detail!, /holds its guest disk unencrypted/);
    assert.equal(fs.existsSync(outRaw), false, 'declined: nothing written');
    await vscode.commands.executeCommand('qcow2Lens.internal.scriptPrompts', [{ confirm: true }]);
    await vscode.commands.executeCommand('qcow2Lens.convertImage', img, { format: 'raw', output: outRaw });
    assert.ok(fs.readFileSync(outRaw).equals(plain), 'the raw copy is the decrypted guest');

    for (const other of [outQ, outRaw]) {
      const r = await vscode.commands.executeCommand<{ identical: boolean }>('qcow2Lens.compareImages', img, { other });
      assert.equal(r.identical, true, other);
    }
    await vscode.commands.executeCommand('qcow2Lens.lockImage', img);
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.compareImages', img, { other: outRaw })),
      (e: Error) => /encrypted and locked/.test(e.message) && !e.message.includes(PASS));
    fs.rmSync(outQ);
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.convertImage', img, { format: 'qcow2', output: outQ })),
      (e: Error) => /encrypted and locked/.test(e.message) && !e.message.includes(PASS));
    assert.equal(fs.existsSync(outQ), false, 'nothing written while locked');
    fs.rmSync(outRaw);
  });

  test('Commit Overlay into an encrypted backing file: refused while it is locked; unlocked, written encrypted and equal to the chain before (qemu-img)', async () => {
    const base = luksImage('secret-base.qcow2', PASS);
    const top = `${base.file}.top.qcow2`, before = `${base.file}.chain.raw`;
    const secret = ['--object', `secret,id=s0,data=${PASS}`];
    const chainOpts = `driver=qcow2,file.filename=${top},backing.encrypt.key-secret=s0`;
    qemu('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base.file, '-F', 'qcow2', '-u', top, '8M');
    qemu('qemu-io', ...secret, '--image-opts', '-c', 'write -P 0x77 32k 64k', '-c', 'write -z 3M 64k', chainOpts);
    qemu('qemu-img', 'convert', ...secret, '--image-opts', chainOpts, '-O', 'raw', before);
    const baseUri = vscode.Uri.file(base.file), topUri = vscode.Uri.file(top);
    const was = fs.readFileSync(base.file);
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.commitImage', topUri, { keepOverlay: false, confirm: false })),
      (e: Error) => /secret-base\.qcow2 is encrypted and locked: unlock it \(Unlock…\) first, then commit/.test(e.message) && !e.message.includes(PASS));
    assert.ok(fs.readFileSync(base.file).equals(was), 'locked: nothing written');
    await openTab(baseUri);
    assert.equal(await vscode.commands.executeCommand('qcow2Lens.unlockImage', baseUri, { passphrase: PASS, remember: false }), true);
    const r = await vscode.commands.executeCommand<{ emptied: boolean }>('qcow2Lens.commitImage', topUri, { keepOverlay: false, confirm: false });
    assert.equal(r.emptied, true);
    qemu('qemu-img', 'check', ...secret, '--image-opts', luksOpts(base.file, 's0'));
    qemu('qemu-img', 'compare', ...secret, '--image-opts', luksOpts(base.file, 's0'), `driver=raw,file.filename=${before}`);
    assert.equal(fs.readFileSync(base.file).indexOf(Buffer.alloc(4096, 0x77)), -1, 'the committed data is stored encrypted');
    await vscode.commands.executeCommand('qcow2Lens.lockImage', baseUri);
    for (const f of [top, before]) fs.rmSync(f, { force: true });
  });

  test('Remember: a reopened tab is unlocked from SecretStorage; Lock forgets it there too', async () => {
    await vscode.commands.executeCommand('qcow2Lens.lockImage', img);
    assert.equal((await summary(img)).encryption?.unlocked, false);
    await vscode.commands.executeCommand('qcow2Lens.unlockImage', img, { passphrase: PASS, remember: true });
    await vscode.commands.executeCommand('workbench.action.closeAllEditors');
    // as a new session: nothing in memory, so only SecretStorage can unlock the reopened tab
    await vscode.commands.executeCommand('qcow2Lens.internal.dropSessionKeys');
    await openTab(img);
    assert.equal((await summary(img)).encryption?.unlocked, true);
    await vscode.commands.executeCommand('qcow2Lens.lockImage', img);
    await vscode.commands.executeCommand('workbench.action.closeAllEditors');
    await vscode.commands.executeCommand('qcow2Lens.internal.dropSessionKeys');
    await openTab(img);
    assert.equal((await summary(img)).encryption?.unlocked, false, 'after Lock, a reopened tab is locked');
    const r = await guest(img, 0, 512);
    assert.equal(r.code, 'encrypted');
  });
});
