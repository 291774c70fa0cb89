/**
 * The editor with a broken backing chain (host side, in node): the ViewModel opens the file alone
 * (a missing backing file, and an unknown backing format, which used to refuse the whole editor),
 * its summary names the file that failed; the check panel and the Problems entries (checkForEditor,
 * which diagnostics.ts publishes) judge the file alone with qemu-img's counts (image opened with
 * `backing: null`) plus one backing-chain-broken error naming the missing file.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkForEditor } from '../../src/extension/checkResult';
import { ViewModel } from '../../src/extension/viewModel';
import type { SummaryReply } from '../../src/protocol';
import { pokeBytes, qemuImg, qemuIo } from '../helpers/qemu';
import { qemuCheck, scratchDir } from './common';

async function summaryOf(vm: ViewModel): Promise<SummaryReply['summary']> {
  const r = await vm.handle({ type: 'getSummary', requestId: 1 });
  assert.equal(r?.type, 'summary', JSON.stringify(r));
  return r.summary;
}

function image(dir: string, fmt: 'qcow2' | 'raw'): { img: string; base: string } {
  const base = path.join(dir, `base.${fmt}`);
  qemuImg('create', '-q', '-f', fmt, base, '4M');
  const img = path.join(dir, 'top.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-b', path.basename(base), '-F', fmt, img);
  qemuIo(img, ['write -P 0x5a 0 64k']);
  return { img, base };
}

test('editor: a missing backing file opens the file alone, names the file, and the check adds backing-chain-broken', async () => {
  const dir = scratchDir();
  const { img, base } = image(dir, 'qcow2');
  fs.rmSync(base);
  const vm = await ViewModel.open(img, { readOnly: true });
  try {
    const s = await summaryOf(vm);
    const broken = s.backingChain.find(l => l.error);
    assert.ok(broken, 'the chain shows the broken layer');
    assert.equal(broken.path, base);
    assert.match(broken.error ?? '', /Could not open backing file: Could not open '.*base\.qcow2': No such file or directory/);
    // the file's own bytes read; what it does not hold reads as zeros
    const r = await vm.handle({ type: 'readGuest', requestId: 2, guestOffset: 0, length: 16 });
    assert.notEqual(r?.type, 'error', JSON.stringify(r));
  } finally {
    await vm.close();
  }
  const { summary, findings } = await checkForEditor(img);
  const q = qemuCheck(`json:${JSON.stringify({ driver: 'qcow2', backing: null, file: { driver: 'file', filename: img } })}`);
  assert.equal(q.status, 0);
  assert.equal(summary.corruptions, 0);
  assert.equal(summary.leaks, 0);
  assert.equal(summary.checkErrors, 0);
  assert.equal(summary.imageEnd, q.json['image-end-offset']);
  assert.equal(summary.allocatedClusters, q.json['allocated-clusters']);
  assert.equal(summary.clean, false, 'not "clean": the image cannot be used as it is');
  const f = findings.filter(x => x.kind === 'backing-chain-broken');
  assert.equal(f.length, 1);
  assert.equal(f[0].severity, 'error');
  assert.ok(f[0].message.includes(`"${base}"`), f[0].message);
});

test('editor: an unknown backing format no longer refuses the editor; the finding says "Unknown driver"', async () => {
  const dir = scratchDir();
  const { img } = image(dir, 'raw');
  const bytes = fs.readFileSync(img);
  const ext = bytes.indexOf(Buffer.from([0xe2, 0x79, 0x2a, 0xca, 0, 0, 0, 3]));
  assert.ok(ext > 0);
  pokeBytes(img, ext + 8, Buffer.from('foo'));
  const vm = await ViewModel.open(img, { readOnly: true });
  try {
    const s = await summaryOf(vm);
    assert.match(s.backingChain.find(l => l.error)?.error ?? '', /Unknown driver 'foo'/);
  } finally {
    await vm.close();
  }
  const { findings } = await checkForEditor(img);
  const f = findings.find(x => x.kind === 'backing-chain-broken');
  assert.match(f?.message ?? '', /Unknown driver 'foo'/);
});

test('editor: a chain that opens has no backing-chain-broken finding', async () => {
  const dir = scratchDir();
  const { img } = image(dir, 'qcow2');
  const { summary, findings } = await checkForEditor(img);
  assert.equal(summary.clean, true);
  assert.equal(findings.some(x => x.kind === 'backing-chain-broken'), false);
});
