/**
 * Divergences the fuzzer (test/fuzz) found, each as a regular test against qemu-img:
 * - a file cut inside its last sector: QEMU measures the file in whole 512-byte sectors, so a table
 *   that ends in that sector (or less than a cluster past it) is inside the file; `-r all` must not
 *   place the rebuilt refcount structure over a table that lies there (seed 0xd0572ce3);
 * - an L1 table offset of 2^53 or more: QEMU opens it up to INT64_MAX minus the table's size (the
 *   table reads as zeros) and refuses it past its block layer's limit; the offset stays exact through
 *   a repair (seed 0xdb6d1429).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, qemuImg, qemuImgStatus, qemuIo, readBE64, writeBE64 } from '../helpers/qemu';
import { assertCheckMatches, assertRepairMatches, scratchDir } from './common';

/** The fuzzer's v3-64k-extl2 base: extended L2 entries, data, a zeroed range and a snapshot. */
function extl2(dir: string, name: string): string {
  const img = path.join(dir, name);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536,extended_l2=on', img, '32M');
  qemuIo(img, ['write -P 0x11 0 4k', 'write -P 0x22 68k 8k', 'write -z 128k 64k', 'write -P 0x33 3M 64k']);
  qemuImg('snapshot', '-c', 'e', img);
  return img;
}

test('a file cut inside a sector: judged with the file measured in sectors, and -r all ends as clean as qemu-img\'s', () => {
  const dir = scratchDir();
  const orig = extl2(dir, 'orig.qcow2');
  assert.equal(readBE64(orig, 40), 0x30000n, 'the active L1 table is the fourth cluster');
  // 131074 is the fuzzer's cut: the L1 table at 0x30000 then starts less than a cluster past the
  // file's last sector; the others cut at, just before and just after a sector boundary
  for (const size of [131074, 131072 + 511, 131072 + 512, 131072 + 513, 196608 + 100]) {
    const img = path.join(dir, `cut-${size}.qcow2`);
    fs.copyFileSync(orig, img);
    fs.truncateSync(img, size);
    assertCheckMatches(img, `cut to ${size}`);
    const { qemuStatus } = assertRepairMatches(img, dir, `cut to ${size}`);
    if (size === 131074) assert.equal(qemuStatus, 0, 'qemu-img\'s repair ends clean on the fuzzer\'s cut');
  }
});

test('an L1 table offset past 2^53: opened, checked and repaired as qemu-img does, the offset kept exact', () => {
  const dir = scratchDir();
  const orig = extl2(dir, 'orig.qcow2');
  const cases: { offset: bigint; opens: boolean; qemuSays?: RegExp }[] = [
    { offset: 0x30000n | (1n << 54n), opens: true }, // the fuzzer's bit flip
    { offset: 0x7fffffffc0000000n - 0x10000n, opens: true }, // the last cluster QEMU's block layer reads
    { offset: 0x7fffffffc0000000n, opens: false, qemuSays: /Could not read L1 table: Input\/output error/ },
    { offset: 0x7fffffffffff0000n, opens: false, qemuSays: /Could not read L1 table: Input\/output error/ },
    { offset: 1n << 63n, opens: false, qemuSays: /Active L1 table offset invalid/ },
  ];
  for (const c of cases) {
    const what = `l1_table_offset 0x${c.offset.toString(16)}`;
    const img = path.join(dir, `l1-${c.offset.toString(16)}.qcow2`);
    fs.copyFileSync(orig, img);
    writeBE64(img, 40, c.offset);
    const qi = qemuImgStatus('info', '--output=json', img);
    const oi = cli('info', '--output=json', img);
    assert.equal(qi.status, c.opens ? 0 : 1, `${what}: qemu-img info`);
    assert.equal(oi.status, qi.status, `${what}: our info exits as qemu-img's (${oi.stderr.trim()})`);
    if (!c.opens) {
      assert.match(qi.stderr, c.qemuSays!);
      assert.match(oi.stderr, /header\.l1_table_offset/, `${what}: our error names the field`);
      assert.equal(cli('check', img).status, 1, `${what}: check cannot open it either`);
      continue;
    }
    assert.deepEqual(JSON.parse(oi.stdout.toString()), { ...JSON.parse(qi.stdout), filename: img });
    assertCheckMatches(img, what);
    assertRepairMatches(img, dir, what);
    const repaired = path.join(dir, `ours-${path.basename(img)}`);
    assert.equal(readBE64(repaired, 40), c.offset, `${what}: our repair kept the offset digit for digit`);
    // a write that would put L1 entries there is refused, not rounded
    const snap = cli('snapshot', '-c', 'x', img);
    assert.notEqual(snap.status, 0, `${what}: snapshot -c refused`);
    assert.match(snap.stderr, /l1_table_offset/);
  }
});

test('a refcount block beyond the largest offset QEMU reads: its clusters are check errors, not corruptions, and -r all rebuilds', () => {
  const dir = scratchDir();
  const orig = path.join(dir, 'orig.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', orig, '64M');
  qemuIo(orig, ['write -P 1 0 128k']);
  qemuImg('snapshot', '-c', 's', orig);
  const reftable = Number(readBE64(orig, 48));
  // past the end of the file but readable (zeros), QEMU's last readable cluster, and beyond it (EIO in QEMU)
  for (const off of [0x10000000n, 0x7fffffffc0000000n - 0x10000n, 0x7fffffffc0000000n, 1n << 63n]) {
    const img = path.join(dir, `rb-${off.toString(16)}.qcow2`);
    fs.copyFileSync(orig, img);
    writeBE64(img, reftable, off);
    const r = assertCheckMatches(img, `refcount block at 0x${off.toString(16)}`);
    if (off < 0x7fffffffc0000000n) continue; // (QEMU's -r all grows the file to hold such a block and counts it as one more fix; ours does not grow it)
    assert.ok(Number(r['check-errors']) > 0, 'QEMU cannot read those refcounts');
    assertRepairMatches(img, dir, `refcount block at 0x${off.toString(16)}`);
  }
});
