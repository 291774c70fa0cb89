/**
 * Navigation in a large sparse disk, host side (ViewModel, no browser): "allocated only" L1/L2
 * lists, no entries past the end of the disk, next/previous allocated range and where a guest
 * byte lives in words. Expected values come from qemu-img map and from the image's raw bytes.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { nodeId } from '../../src/extension/nodeId';
import { ViewModel } from '../../src/extension/viewModel';
import { ask } from '../helpers/viewModel';
import type { AllocatedRangeReply, GuestDescriptionReply, TreeChildrenReply } from '../../src/protocol';
import { qemuImg, qemuIo, readBE64, tmpDir, qemuMap } from '../helpers/qemu';

const CS = 65536;
const L1_ID = nodeId({ kind: 'l1', table: 'active' });
const TIB = 2 ** 40;

const children = async (vm: ViewModel, nodeId: string, allocatedOnly = false) =>
  (await ask<TreeChildrenReply>(vm, { type: 'getTreeChildren', nodeId, allocatedOnly })).children;

/** qemu-img map's present entries merged where they touch: the ranges next/previous visit. */
function presentRuns(file: string): Array<{ start: number; length: number }> {
  const map = qemuMap(file);
  const out: Array<{ start: number; length: number }> = [];
  for (const e of map) {
    if (!e.present) continue;
    const last = out[out.length - 1];
    if (last && last.start + last.length === e.start) last.length += e.length;
    else out.push({ start: e.start, length: e.length });
  }
  return out;
}

describe('navigation in a sparse 1 TiB disk', () => {
  let dir: string, base: string, mid: string, top: string, odd: string;
  let vm: ViewModel;
  before(async () => {
    dir = tmpDir();
    base = path.join(dir, 'base.qcow2');
    mid = path.join(dir, 'mid.qcow2');
    top = path.join(dir, 'top.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', base, '1T');
    qemuIo(base, ['write -P 0x11 5M 64k', `write -P 0x12 ${300 * 2 ** 30} 64k`]);
    qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', mid);
    qemuImg('create', '-q', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', top);
    qemuIo(top, ['write -P 0xab 1M 64k', 'write -c -P 0xcd 2M 64k', 'write -z 3M 64k', `write -P 0x5a ${TIB - CS} 64k`]);
    vm = await ViewModel.open(top);
    // a disk whose last L2 table is only partly inside it: 1000 MiB with 512 MiB per L2 table
    odd = path.join(dir, 'odd.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', odd, '1000M');
    qemuIo(odd, [`write -P 0x33 ${1000 * 2 ** 20 - CS} 64k`]);
  });
  after(async () => {
    await vm?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('"allocated only" lists the L1 entries that map an L2 table, and only their allocated L2 entries', async () => {
    const all = await children(vm, L1_ID);
    // 2,048 entries come in pages; the filtered list is the used entries themselves
    assert.ok(all.every(n => n.kind === 'page'), 'the full list is paged');
    const used = await children(vm, L1_ID, true);
    const perL2 = 8192 * CS;
    const l1Offset = Number(readBE64(top, 40));
    const expected: number[] = [];
    for (let i = 0; i < 2048; i++) if (readBE64(top, l1Offset + i * 8) !== 0n) expected.push(i);
    assert.deepEqual(used.map(n => n.guestOffset! / perL2), expected);
    assert.deepEqual(expected, [0, Math.floor((TIB - CS) / perL2)]);
    // in L1[0]: the data, compressed and zero clusters at 1, 2 and 3 MiB, nothing else
    const l2 = await children(vm, used[0].id, true);
    assert.deepEqual(l2.map(n => n.guestOffset), [1, 2, 3].map(m => m * 2 ** 20));
    assert.match(l2[1].description!, /^compressed at 0x/);
    assert.equal(l2[2].description, 'zero');
  });

  it('never lists entries past the end of the disk', async () => {
    const o = await ViewModel.open(odd);
    try {
      const l1 = await children(o, L1_ID);
      assert.equal(l1.length, 2);
      const pages = await children(o, l1[1].id);
      const last = pages[pages.length - 1];
      const entries = (1000 - 512) * 2 ** 20 / CS; // 7808 of the table's 8192 entries are inside the disk
      assert.equal(last.label, `[${Math.floor((entries - 1) / 256) * 256} … ${entries - 1}]`);
      const leaves = await children(o, last.id);
      assert.equal(leaves[leaves.length - 1].guestOffset! + CS, 1000 * 2 ** 20);
      const used = await children(o, l1[1].id, true);
      assert.deepEqual(used.map(n => n.guestOffset), [1000 * 2 ** 20 - CS]);
    } finally {
      await o.close();
    }
  });

  it('next and previous allocated range visit the ranges qemu-img map reports present, through the chain', async () => {
    const runs = presentRuns(top);
    assert.ok(runs.length >= 5, `qemu-img map: ${JSON.stringify(runs)}`);
    const next: Array<{ start: number; length: number }> = [];
    let at = 0;
    for (let k = 0; k < runs.length + 1; k++) {
      const r = await ask<AllocatedRangeReply>(vm, { type: 'findAllocated', guestOffset: at, direction: 'next' });
      if (r.start === undefined) break;
      next.push({ start: r.start, length: r.length! });
      at = r.start;
    }
    assert.deepEqual(next, runs.filter(r => r.start > 0));
    const prev: number[] = [];
    at = TIB;
    for (let k = 0; k < runs.length + 1; k++) {
      const r = await ask<AllocatedRangeReply>(vm, { type: 'findAllocated', guestOffset: at, direction: 'previous' });
      if (r.start === undefined) break;
      prev.push(r.start);
      at = r.start;
    }
    assert.deepEqual(prev, runs.map(r => r.start).reverse());
    // from inside a range, previous goes to its start
    const inside = runs[runs.length - 1].start + 100;
    assert.equal((await ask<AllocatedRangeReply>(vm, { type: 'findAllocated', guestOffset: inside, direction: 'previous' })).start, runs[runs.length - 1].start);
  });

  it('says in words where a guest byte lives', async () => {
    const where = async (off: number) => (await ask<GuestDescriptionReply>(vm, { type: 'describeGuest', guestOffset: off })).location;
    const map = qemuMap(top);
    const at = (off: number) => map.find(e => off >= e.start && off < e.start + e.length)!;

    const u = await where(700 * 2 ** 30);
    assert.equal(u.kind, 'unallocated');
    assert.match(u.text, /^unallocated: reads zeros/);
    assert.equal(u.structure, 'L1[1400]');

    const b = await where(300 * 2 ** 30 + 10);
    assert.equal(at(300 * 2 ** 30).depth, 2);
    assert.equal(b.text, `from backing file base.qcow2 at depth 2, at 0x${(at(300 * 2 ** 30).offset! + 10).toString(16)} in that file`);

    const d = await where(2 ** 20 + 5);
    assert.equal(d.text, `data at 0x${(at(2 ** 20).offset! + 5).toString(16)} in this file`);
    assert.equal(d.structure, 'L1[0] → L2[0x10]');
    assert.equal(d.hostOffset, at(2 ** 20).offset! + 5);

    // the compressed cluster's descriptor, read from the L2 entry's raw bits (offset: bits 0 … 62 − (cluster_bits − 8))
    const l2 = Number(readBE64(top, Number(readBE64(top, 40))) & ((1n << 56n) - 1n)) & ~0x1ff;
    const entry = readBE64(top, l2 + 32 * 8);
    const compressedAt = Number(entry & ((1n << 54n) - 1n));
    const c = await where(2 * 2 ** 20);
    assert.equal(c.text, `compressed cluster at 0x${compressedAt.toString(16)} in this file`);
    assert.equal((await where(3 * 2 ** 20)).text, 'zero cluster: reads zeros');
    assert.equal((await where(TIB)).kind, 'beyondEnd');
  });
});
