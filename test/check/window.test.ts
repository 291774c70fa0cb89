/**
 * The check reads L2 tables and refcount blocks through one reused, bounded window
 * (paddedReads.ts TableWindow): results must not depend on how many tables a window holds. With
 * 1 MiB clusters a window holds two L2 tables, so an image whose data lies under many L1 entries
 * (and a snapshot's second L1 table) is walked over several refills; qemu-img check must agree,
 * also when a finding sits in a late window. The window itself: padded reads, reused slots.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TableWindow } from '../../src/engine/check/paddedReads';
import { ImageFile } from '../../src/engine/io/reader';
import { qemuImg, qemuIo, readBE64, writeBE64 } from '../helpers/qemu';
import { assertCheckMatches, layout, scratchDir } from './common';

/** One L2 table of 1 MiB clusters maps 128 GiB. */
const L2_SPAN = 128 * 2 ** 30;

function manyTables(dir: string): string {
  const img = path.join(dir, 'w.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=1M', img, '1T');
  qemuIo(img, Array.from({ length: 7 }, (_, i) => `write -q -P ${i + 1} ${i * L2_SPAN + i * 2 ** 20} 4k`));
  qemuImg('snapshot', '-c', 's1', img);
  qemuIo(img, ['write -q -P 9 0 4k', `write -q -P 9 ${6 * L2_SPAN + 6 * 2 ** 20} 4k`, `write -q -P 9 ${3 * L2_SPAN + 50 * 2 ** 20} 4k`]);
  return img;
}

test('a walk over many window refills agrees with qemu-img check', () => {
  const img = manyTables(scratchDir());
  const r = assertCheckMatches(img, 'clean, 7 L2 tables, snapshot');
  assert.equal(r.corruptions, undefined);
  assert.ok((r['allocated-clusters'] as number) >= 8);
});

test('a COPIED-flag finding in the last window is found as qemu-img finds it', () => {
  const img = manyTables(scratchDir());
  const l = layout(img);
  // L1[6]'s table: its first allocated entry (guest 6 × 128 GiB + 6 MiB) is entry 6
  const at = l.l2(6) + 6 * 8;
  const e = readBE64(img, at);
  assert.ok(e & (1n << 63n), 'the rewritten cluster has refcount 1, so COPIED is set');
  writeBE64(img, at, e & ~(1n << 63n));
  const r = assertCheckMatches(img, 'COPIED cleared in L1[6]\'s table');
  assert.equal(r.corruptions, 1);
  assert.ok(r.findings!.some(f => f.kind === 'copied-flag-mismatch' && f.structure.includes('L1[6]')), JSON.stringify(r.findings));
});

test('the window pads past the end of the file and reuses its slots', async () => {
  const dir = scratchDir();
  const p = path.join(dir, 'raw');
  const bytes = Buffer.alloc(3 * 512);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i >> 9) + 1;
  fs.writeFileSync(p, bytes.subarray(0, 2 * 512 + 100)); // the third table is cut short
  const f = await ImageFile.open(p);
  try {
    const w = new TableWindow(f, 512, 2 * 512);
    assert.equal(w.capacity, 2);
    const a = await w.read([512, 0]);
    assert.ok(a.get(0)!.every(b => b === 1));
    assert.ok(a.get(512)!.every(b => b === 2));
    const first = a.get(0)!;
    const b = await w.read([1024, 4096]);
    const t = b.get(1024)!;
    assert.ok(t.subarray(0, 100).every(x => x === 3));
    assert.ok(t.subarray(100).every(x => x === 0), 'bytes past the end read as zero');
    assert.ok(b.get(4096)!.every(x => x === 0), 'a table wholly past the end reads as zero');
    assert.ok(first.every(x => x === 3 || x === 0), 'the earlier view now shows the refilled slot');
    await assert.rejects(w.read([0, 512, 1024]), /window of 2/);
  } finally {
    await f.close();
  }
});
