/**
 * A tab's view model is closed when the file changes or a key is added (the provider opens a new
 * one): requests it is still answering finish on the image they started on. Before, a summary asked
 * just before the close awaited the crypto header while the image closed under it and said
 * "locked" although the image had been unlocked (the e2e Unlock test failed that way on a loaded
 * CI machine); a guest read was answered from a closed file.
 */
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Secret } from '../../src/engine/crypto/secret';
import { ViewModel } from '../../src/extension/viewModel';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu';

describe('ViewModel.close() waits for the requests being answered', { timeout: 60000 }, () => {
  const pass = `close-${crypto.randomBytes(6).toString('hex')}`;
  let dir: string, img: string, plain: string;

  before(() => {
    dir = tmpDir('qcow2-lens-vm-close-');
    img = path.join(dir, 'enc.qcow2');
    plain = path.join(dir, 'plain.qcow2');
    const secret = ['--object', `secret,id=s0,data=${pass}`];
    qemuImg('create', '-q', '-f', 'qcow2', ...secret, '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10', img, '4M');
    qemuImg('create', '-q', '-f', 'qcow2', plain, '4M');
    qemuIo(plain, ['write -P 0x6b 0 64k']);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('a summary asked just before close() reports the unlocked image, not a half-closed one', async () => {
    const key = Secret.fromString(pass);
    const vm = await ViewModel.open(img, { keys: () => key });
    const asked = vm.handle({ type: 'getSummary', requestId: 1 });
    const closed = vm.close();
    const r = await asked;
    await closed;
    assert.ok(r && r.type === 'summary', JSON.stringify(r));
    assert.equal(r.summary.encryption?.unlocked, true);
    key.wipe();
  });

  it('guest reads asked before close() are answered with the bytes, and the file is closed after them', async () => {
    const vm = await ViewModel.open(plain);
    const asked = [0, 4096, 65536].map((off, i) => vm.handle({ type: 'readGuest', requestId: 10 + i, guestOffset: off, length: 4096 }));
    await vm.close();
    const [a, b, c] = await Promise.all(asked);
    for (const r of [a, b]) {
      assert.ok(r && r.type === 'bytes', JSON.stringify(r));
      assert.ok(Buffer.from(r.data, 'base64').equals(Buffer.alloc(4096, 0x6b)));
    }
    assert.ok(c && c.type === 'bytes', JSON.stringify(c));
    assert.ok(Buffer.from(c.data, 'base64').equals(Buffer.alloc(4096)));
    // after close, the file is closed: a new request is an error, not a crash
    const late = await vm.handle({ type: 'readGuest', requestId: 20, guestOffset: 0, length: 16 });
    assert.equal(late?.type, 'error');
  });

  it('close({ wait: false }) (the tab closed) stops a space report it was computing', async () => {
    // the report of a 1 TiB disk with data in each of its 2,048 L2 tables walks all of them: long
    // enough that a report not stopped would answer with figures
    const big = path.join(dir, 'wide.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', big, '1T');
    qemuIo(big, Array.from({ length: 2048 }, (_, i) => `write -P 0x11 ${i * 512}M 64k`));
    const done = await ViewModel.open(big);
    const whole = await done.handle({ type: 'getSpaceReport', requestId: 30 });
    await done.close();
    assert.ok(whole && whole.type === 'spaceReport' && whole.report, JSON.stringify(whole)); // left alone, it completes
    const vm = await ViewModel.open(big);
    const asked = vm.handle({ type: 'getSpaceReport', requestId: 31 });
    await vm.close({ wait: false });
    const r = await asked;
    assert.ok(r && r.type === 'spaceReport', JSON.stringify(r));
    assert.equal(r.report, undefined);
    // stopped: by the closing signal at its next pause, or by the closed file at its next read
    assert.match(r.unavailable ?? '', /cancelled|file closed/);
    assert.equal(vm.closing.aborted, true);
  });
});
