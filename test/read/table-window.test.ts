/**
 * The bounded table window (io/tableWindow.ts) shared by check (padded) and compaction (strict):
 * the L2 tables of a qemu-img-made image read through windows of 1, 2 and many tables equal the
 * bytes read one by one, in the callers' order, duplicates included; with the file cut through
 * the last table, padded reads its missing bytes as zero and strict refuses, naming the table.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Qcow2Image } from '../../src/engine/image/image';
import { ImageFile } from '../../src/engine/io/reader';
import { TableWindow } from '../../src/engine/io/tableWindow';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu';

const cs = 4096;

test('table windows read what one-by-one reads do; at a cut file padded gives zeros, strict an error', async () => {
  const dir = tmpDir();
  const img = path.join(dir, 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cs}`, img, '64M');
  // 4 KiB clusters: an L2 table maps 2 MiB; a write every 5 MiB makes one table each
  qemuIo(img, Array.from({ length: 12 }, (_, i) => `write -P ${i + 1} ${i * 5}M 4k`));
  const q = await Qcow2Image.open(img);
  const l2: number[] = [];
  for (let i = 0; i < q.l1.length / 8; i++) { const o = q.l1Entry(i).l2Offset; if (o) l2.push(o); }
  await q.close();
  assert.equal(l2.length, 12);
  // the callers' order: reversed, with a repeat
  const order = [...l2].reverse().concat([l2[3]]);
  const f = await ImageFile.open(img);
  try {
    const want = new Map<number, Buffer>();
    for (const o of l2) want.set(o, await f.read(o, cs, 'L2'));
    for (const end of ['padded', 'strict'] as const) {
      for (const tables of [1, 2, 64]) {
        const win = new TableWindow(f, cs, tables * cs, end);
        const seen: number[] = [];
        await win.forEach(order, o => `L2 table at 0x${o.toString(16)}`, (o, t) => { seen.push(o); assert.ok(t.equals(want.get(o)!), `${end}, ${tables}: table at ${o}`); });
        assert.deepEqual(seen, order);
      }
    }
  } finally { await f.close(); }

  // the file cut in the middle of its last L2 table
  const last = Math.max(...l2);
  const cut = path.join(dir, 'cut.qcow2');
  fs.copyFileSync(img, cut);
  fs.truncateSync(cut, last + cs / 2);
  const g = await ImageFile.open(cut);
  try {
    const half = (await g.read(last, cs / 2, 'L2'));
    const padded = (await new TableWindow(g, cs, 8 * cs, 'padded').read([last])).get(last)!;
    assert.ok(padded.subarray(0, cs / 2).equals(half));
    assert.ok(padded.subarray(cs / 2).equals(Buffer.alloc(cs / 2)));
    await assert.rejects(new TableWindow(g, cs, 8 * cs, 'strict').read([last], o => `L2 table at 0x${o.toString(16)}`),
      (e: Error) => e.message.includes(`L2 table at 0x${last.toString(16)}`) && e.message.includes('past the end of the file'));
  } finally { await g.close(); }
});
