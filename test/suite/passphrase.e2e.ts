/**
 * LUKS key slots in a real VS Code extension host: the Encryption node lists the eight key slots
 * (active with their iteration count, or inactive) as qemu-img info reports them; Add Passphrase
 * (with the session's passphrase once the image is unlocked) puts a new one in the first free
 * slot, and qemu-img then opens the image with it, guest data unchanged; Remove Passphrase erases
 * the slot a passphrase opens, qemu-img refuses that passphrase afterwards, and the last
 * passphrase cannot be removed. Passphrases are passed as the commands' options (as
 * unlock.e2e.ts does), and never appear in an error.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { FromWebviewMessage, TreeChildrenReply } from '../../src/protocol';
import { askTab as ask, openTab, qemu as qemuOk, qemuRun as qemu, sleep, tabSummary as summary, ws } from './util';

const PASS = 'lens-keyslot-e2e first';
const ADDED = 'lens-keyslot-e2e added';
let requestId = 1; // names of the scratch files

suite('Encrypted images: key slots, Add and Remove Passphrase', () => {
  let img: vscode.Uri;
  let file: string;
  let plain: Buffer;
  const opts = (id: string) => `driver=qcow2,file.filename=${file},encrypt.key-secret=${id}`;
  /** qemu-img convert with this passphrase: the guest bytes, or the error. */
  const convert = (pass: string) => {
    const raw = path.join(ws(), `keyslots-${requestId++}.raw`);
    const r = qemu('qemu-img', 'convert', '--object', `secret,id=k,data=${pass}`, '--image-opts', opts('k'), '-O', 'raw', raw);
    const data = r.status === 0 ? fs.readFileSync(raw) : undefined;
    fs.rmSync(raw, { force: true });
    return { data, stderr: r.stderr };
  };
  const qemuSlots = () => (JSON.parse(qemuOk('qemu-img', 'info', '--output=json', '-U', file)) as { 'format-specific': { data: { encrypt: { slots: { active: boolean; iters?: number }[] } } } })['format-specific'].data.encrypt.slots;
  /** The key slot nodes of the tab's Encryption node. */
  const treeSlots = async () => (await ask<TreeChildrenReply>(img, { type: 'getTreeChildren', nodeId: 'encryption' } as FromWebviewMessage)).children.filter(c => /^key slot \d$/.test(c.label));
  /** The tab re-reads the file after a write; wait until its tree shows `n` active slots. */
  const untilActive = async (n: number) => {
    for (let i = 0; i < 100; i++) {
      if ((await treeSlots()).filter(c => (c.description ?? '').startsWith('active')).length === n) return;
      await sleep(100);
    }
    assert.fail(`the tree never showed ${n} active key slots`);
  };

  suiteSetup(() => {
    file = path.join(ws(), 'keyslots.qcow2');
    fs.rmSync(file, { force: true });
    const secret = ['--object', `secret,id=s0,data=${PASS}`];
    qemuOk('qemu-img', 'create', '-q', '-f', 'qcow2', ...secret, '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10', file, '8M');
    qemuOk('qemu-io', ...secret, '--image-opts', '-c', 'write -P 0x5a 0 64k', '-c', 'write -P 0xa5 3M 128k', opts('s0'));
    plain = convert(PASS).data!;
    img = vscode.Uri.file(file);
  });
  suiteTeardown(async () => {
    await vscode.commands.executeCommand('qcow2Lens.lockImage', img);
    await vscode.commands.executeCommand('workbench.action.closeAllEditors');
  });

  test('the Encryption node lists the eight key slots as qemu-img info reports them', async () => {
    await openTab(img);
    const nodes = await treeSlots();
    const q = qemuSlots();
    assert.equal(nodes.length, 8);
    nodes.forEach((n, i) => {
      assert.equal(n.label, `key slot ${i}`);
      assert.equal((n.description ?? '').startsWith('active'), q[i].active);
      if (q[i].active) assert.ok((n.description ?? '').includes(`${q[i].iters!.toLocaleString('en-US')} PBKDF2 iterations`), n.description);
      else assert.equal(n.description, 'inactive');
      assert.equal(n.hostLength, 48, 'the slot record in the LUKS header');
    });
  });

  test('Add Passphrase with the session\'s passphrase: slot 1 active, qemu-img opens with the new one, data unchanged', async () => {
    assert.equal(await vscode.commands.executeCommand('qcow2Lens.unlockImage', img, { passphrase: PASS, remember: false }), true);
    const r = await vscode.commands.executeCommand<{ slots: number[] }>('qcow2Lens.addPassphrase', img, { newPassphrase: ADDED, confirm: false, iterTimeMs: 10 });
    assert.deepEqual(r.slots, [1]);
    assert.deepEqual(qemuSlots().map(s => s.active), [true, true, false, false, false, false, false, false]);
    const c = convert(ADDED);
    assert.ok(c.data?.equals(plain), `qemu-img opens with the added passphrase: ${c.stderr}`);
    assert.match(qemuOk('qemu-img', 'check', '--object', `secret,id=k,data=${ADDED}`, '--image-opts', opts('k')), /No errors were found/);
    await untilActive(2);
  });

  test('Add Passphrase with a wrong existing passphrase is refused without echoing it, the file unchanged', async () => {
    const before = fs.readFileSync(file);
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.addPassphrase', img, { existing: 'not it at all', newPassphrase: 'whatever else', confirm: false, iterTimeMs: 10 })),
      (e: Error) => /Wrong passphrase/.test(e.message) && !e.message.includes('not it at all') && !e.message.includes('whatever else'));
    assert.ok(fs.readFileSync(file).equals(before));
  });

  test('Remove Passphrase erases the slot it opens: qemu-img refuses it, the other still opens; the session forgets it', async () => {
    const r = await vscode.commands.executeCommand<{ slots: number[] }>('qcow2Lens.removePassphrase', img, { passphrase: PASS, confirm: false });
    assert.deepEqual(r.slots, [0]);
    assert.deepEqual(qemuSlots().map(s => s.active), [false, true, false, false, false, false, false, false]);
    assert.match(convert(PASS).stderr, /Invalid password, cannot unlock any keyslot/);
    assert.ok(convert(ADDED).data?.equals(plain));
    await untilActive(1);
    assert.equal((await summary(img)).encryption?.unlocked, false, 'the removed passphrase no longer unlocks the tab');
  });

  test('the last passphrase cannot be removed: a clear refusal, the file unchanged', async () => {
    const before = fs.readFileSync(file);
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.removePassphrase', img, { passphrase: ADDED, confirm: false })),
      (e: Error) => /only one passphrase: removing it would make the image's data unreadable forever/.test(e.message) && !e.message.includes(ADDED));
    assert.ok(fs.readFileSync(file).equals(before));
    assert.ok(convert(ADDED).data?.equals(plain));
  });
});
