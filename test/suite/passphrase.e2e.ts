/**
 * LUKS key slots in a real VS Code extension host: the Encryption node lists the eight key slots
 * (active with their iteration count, or inactive) as qemu-img info reports them; Add Passphrase
 * (with the session's passphrase once the image is unlocked) puts a new one in the first free
 * slot, or the slot asked for, and qemu-img then opens the image with it, guest data unchanged;
 * Remove Passphrase's picker lists the active slots as qemu-img info does (this session's marked),
 * erases the slot chosen only after the modal confirmation (declined: not a byte of the file
 * changes), or erases the slot a passphrase opens; qemu-img refuses an erased passphrase
 * afterwards, and the last passphrase cannot be removed. Passphrases are passed as the commands'
 * options (as unlock.e2e.ts does), and never appear in an error; the modal and the picker are
 * answered through qcow2Lens.internal.scriptPrompts (src/extension/prompts.ts), which also tells
 * what they showed.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { ScriptedAnswer, ShownPrompt } from '../../src/extension/prompts';
import type { FromWebviewMessage, TreeChildrenReply } from '../../src/protocol';
import { askTab as ask, luksImage, luksOpts, openTab, qemu as qemuOk, qemuRun as qemu, sleep, tabSummary as summary, ws } from './util';

const PASS = 'lens-keyslot-e2e first';
const ADDED = 'lens-keyslot-e2e added';
const THIRD = 'lens-keyslot-e2e third';
/** Queues the answers of the next prompts; returns what the prompts answered since the last call showed. */
const script = (answers?: ScriptedAnswer[]) => vscode.commands.executeCommand<ShownPrompt[]>('qcow2Lens.internal.scriptPrompts', answers);
let requestId = 1; // names of the scratch files

suite('Encrypted images: key slots, Add and Remove Passphrase', () => {
  let img: vscode.Uri;
  let file: string;
  let plain: Buffer;
  const opts = (id: string) => luksOpts(file, id);
  /** qemu-img convert with this passphrase: the guest bytes, or the error. */
  const convert = (pass: string) => {
    const raw = path.join(ws(), `keyslots-${requestId++}.raw`);
    const r = qemu('qemu-img', 'convert', '--object', `secret,id=k,data=${pass}`, '--image-opts', opts('k'), '-O', 'raw', raw);
    const data = r.status === 0 ? fs.readFileSync(raw) : undefined;
    fs.rmSync(raw, { force: true });
    return { data, stderr: r.stderr };
  };
  const qemuEncrypt = () => (JSON.parse(qemuOk('qemu-img', 'info', '--output=json', '-U', file)) as { 'format-specific': { data: { encrypt: { 'hash-alg': string; slots: { active: boolean; iters?: number }[] } } } })['format-specific'].data.encrypt;
  const qemuSlots = () => qemuEncrypt().slots;
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
    ({ file, plain } = luksImage('keyslots.qcow2', PASS));
    img = vscode.Uri.file(file);
  });
  suiteTeardown(async () => {
    await script([]);
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

  test('Add Passphrase into the slot asked for: the modal declined writes nothing; through the picker, slot 3 filled', async () => {
    const before = fs.readFileSync(file);
    await script([{ confirm: false }]);
    assert.equal(await vscode.commands.executeCommand('qcow2Lens.addPassphrase', img, { newPassphrase: THIRD, slot: 3, iterTimeMs: 10 }), undefined);
    const [asked, ...more] = await script();
    assert.equal(more.length, 0, 'one prompt: the confirmation');
    assert.equal(asked.kind, 'confirm');
    assert.match(asked.message, /^Add a passphrase to .*keyslots\.qcow2\?$/);
    assert.match(asked.detail!, /Key slot 3 will hold the new passphrase/);
    assert.ok(fs.readFileSync(file).equals(before), 'declined: the file is unchanged, byte for byte');

    // the whole dialogue, as from the palette: the free slots offered (the first free one first), the new passphrase twice, the modal
    await script([{ pick: 'key slot 3' }, { input: THIRD }, { input: THIRD }, { confirm: true }]);
    const r = await vscode.commands.executeCommand<{ slots: number[] }>('qcow2Lens.addPassphrase', img, { iterTimeMs: 10 });
    const [pick, first, again, modal, ...rest] = await script();
    assert.equal(rest.length, 0, 'no passphrase asked for the image: the session has it');
    assert.deepEqual(pick.items!.map(i => i.label), [2, 3, 4, 5, 6, 7].map(i => `key slot ${i}`));
    assert.match(pick.items![0].description!, /first free slot \(default\)/);
    assert.deepEqual([first.kind, again.kind], ['input', 'input']);
    assert.match(again.message, /\(3\/3\)/);
    assert.ok(!JSON.stringify([pick, first, again, modal]).includes(THIRD), 'the passphrase is not in what the prompts showed');
    assert.match(modal.detail!, /Key slot 3 will hold the new passphrase/);
    assert.deepEqual(r.slots, [3]);
    assert.deepEqual(qemuSlots().map(s => s.active), [true, true, false, true, false, false, false, false]);
    assert.ok(convert(THIRD).data?.equals(plain), 'qemu-img opens with the passphrase in slot 3');
    await untilActive(3);
  });

  test('Remove Passphrase\'s picker lists the active slots as qemu-img info does, the session\'s marked; declining the modal writes nothing', async () => {
    const before = fs.readFileSync(file);
    await script([{ pick: 'key slot 0' }, { confirm: false }]);
    assert.equal(await vscode.commands.executeCommand('qcow2Lens.removePassphrase', img, {}), undefined);
    const [pick, modal, ...more] = await script();
    assert.equal(more.length, 0);
    assert.equal(pick.kind, 'pick');
    const q = qemuEncrypt();
    const active = q.slots.flatMap((sl, i) => (sl.active ? [i] : []));
    assert.deepEqual(active, [0, 1, 3]);
    assert.deepEqual(pick.items!.map(i => i.label), [...active.map(i => `key slot ${i}`), 'By passphrase…']);
    active.forEach((slot, n) => {
      const d = pick.items![n].description ?? '';
      assert.ok(d.startsWith(`${q.slots[slot].iters!.toLocaleString('en-US')} PBKDF2 iterations, ${q['hash-alg']}`), d);
      assert.equal(d.includes('this session\'s passphrase'), slot === 0, `slot ${slot}: ${d}`); // the session unlocked with PASS, in slot 0
    });
    assert.equal(modal.kind, 'confirm');
    assert.match(modal.message, /^Erase key slot 0 of .*keyslots\.qcow2\?$/);
    assert.match(modal.detail!, /overwritten 40 times/);
    assert.match(modal.detail!, /holds the passphrase this session unlocked the image with/);
    assert.ok(fs.readFileSync(file).equals(before), 'declined: the file is unchanged, byte for byte');
    // By passphrase…: the passphrase typed, then the same modal, declined
    await script([{ pick: 'By passphrase…' }, { input: ADDED }, { confirm: false }]);
    assert.equal(await vscode.commands.executeCommand('qcow2Lens.removePassphrase', img, {}), undefined);
    const byPassphrase = await script();
    assert.deepEqual(byPassphrase.map(p => p.kind), ['pick', 'input', 'confirm']);
    assert.match(byPassphrase[2].message, /^Remove this passphrase from .*keyslots\.qcow2\?$/);
    assert.match(byPassphrase[2].detail!, /every key slot it opens is erased.*overwritten 40 times/);
    assert.ok(!JSON.stringify(byPassphrase).includes(ADDED));
    assert.ok(fs.readFileSync(file).equals(before), 'declined: the file is unchanged, byte for byte');
    assert.deepEqual(qemuSlots().map(s => s.active), [true, true, false, true, false, false, false, false]);
    assert.equal((await summary(img)).encryption?.unlocked, true);
  });

  test('Remove a slot by index whose passphrase is another: refused, the file unchanged', async () => {
    const before = fs.readFileSync(file);
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.removePassphrase', img, { slot: 1, passphrase: PASS, confirm: false })),
      (e: Error) => /does not open key slot 1/.test(e.message) && !e.message.includes(PASS));
    assert.ok(fs.readFileSync(file).equals(before));
  });

  test('Remove Passphrase through the picker and the modal: slot 3 erased, qemu-img refuses its passphrase; the session stays unlocked', async () => {
    await script([{ pick: 'key slot 3' }, { confirm: true }]);
    const r = await vscode.commands.executeCommand<{ slots: number[] }>('qcow2Lens.removePassphrase', img, {});
    const shown = await script();
    assert.deepEqual(shown.map(p => p.kind), ['pick', 'confirm']);
    assert.match(shown[1].message, /^Erase key slot 3 of/);
    assert.doesNotMatch(shown[1].detail!, /this session/, 'slot 3 is not the session\'s');
    assert.deepEqual(r.slots, [3]);
    assert.deepEqual(qemuSlots().map(s => s.active), [true, true, false, false, false, false, false, false]);
    assert.match(convert(THIRD).stderr, /Invalid password, cannot unlock any keyslot/);
    assert.ok(convert(PASS).data?.equals(plain));
    assert.match(qemuOk('qemu-img', 'check', '--object', `secret,id=k,data=${PASS}`, '--image-opts', opts('k')), /No errors were found/);
    await untilActive(2);
    assert.equal((await summary(img)).encryption?.unlocked, true, 'the session\'s passphrase (slot 0) still unlocks the tab');
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

  test('Erasing by index the slot the session\'s passphrase opens: the image opens with the session\'s passphrase, which is then forgotten', async () => {
    assert.equal(await vscode.commands.executeCommand('qcow2Lens.unlockImage', img, { passphrase: ADDED, remember: false }), true);
    const added = await vscode.commands.executeCommand<{ slots: number[] }>('qcow2Lens.addPassphrase', img, { newPassphrase: THIRD, confirm: false, iterTimeMs: 10 });
    assert.deepEqual(added.slots, [0], 'the first free slot');
    await untilActive(2);
    const r = await vscode.commands.executeCommand<{ slots: number[] }>('qcow2Lens.removePassphrase', img, { slot: 1, confirm: false });
    assert.deepEqual(r.slots, [1]);
    assert.deepEqual(qemuSlots().map(s => s.active), [true, false, false, false, false, false, false, false]);
    assert.match(convert(ADDED).stderr, /Invalid password, cannot unlock any keyslot/);
    assert.ok(convert(THIRD).data?.equals(plain));
    await untilActive(1);
    assert.equal((await summary(img)).encryption?.unlocked, false, 'the session\'s passphrase opens no slot now: forgotten, the tab locked');
  });

  test('the last passphrase cannot be removed: a clear refusal, the file unchanged', async () => {
    const before = fs.readFileSync(file);
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.removePassphrase', img, { passphrase: THIRD, confirm: false })),
      (e: Error) => /only one passphrase: removing it would make the image's data unreadable forever/.test(e.message) && !e.message.includes(THIRD));
    assert.ok(fs.readFileSync(file).equals(before));
    assert.ok(convert(THIRD).data?.equals(plain));
  });
});
