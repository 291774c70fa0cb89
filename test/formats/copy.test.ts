/**
 * The copy walk every raw/VHD/VMDK writer uses (formats/copy.ts forEachDataUnit), on a synthetic
 * source: every non-zero unit is visited once, in order, with its bytes, across windows and status
 * spans; the next window is read while the last is visited (the read-ahead is real: a read starts
 * before the previous window's visit ends); progress only grows and ends at the disk's size; a visit
 * that fails stops the walk with its error, and no read is left running once it has returned.
 * The writers' outputs against qemu-img are in raw/vpc/vmdk.test.ts.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { COPY_WINDOW, forEachDataUnit } from '../../src/engine/formats/copy';
import type { ImageSource, SourceRun } from '../../src/engine/formats/layer';

const MiB = 1024 * 1024;
const UNIT = 64 * 1024;

/** A 100 MiB disk (four 32 MiB status spans) with data units here and there, each filled with its unit number. */
function source(events: string[]): ImageSource & { reading: number } {
  const size = 100 * MiB;
  const data = new Set<number>();
  for (let u = 0; u < size / UNIT; u += 37) data.add(u);
  data.add(size / UNIT - 1);
  const src = {
    virtualSize: size,
    reading: 0,
    async status(start: number, end: number): Promise<SourceRun[]> {
      const runs: SourceRun[] = [];
      for (let at = start; at < end; at += UNIT) runs.push({ start: at, length: Math.min(UNIT, end - at), zero: !data.has(at / UNIT) });
      return runs;
    },
    async readGuest(off: number, len: number): Promise<Buffer> {
      src.reading++;
      events.push(`read ${off}`);
      await new Promise(r => setTimeout(r, 1));
      const b = Buffer.alloc(len);
      for (let at = 0; at < len; at += UNIT) b.fill(((off + at) / UNIT) % 251 + 1, at, Math.min(len, at + UNIT));
      src.reading--;
      return b;
    },
  };
  return src;
}

test('every data unit visited once, in order, with its bytes; reads run ahead of visits; progress grows to the size', async () => {
  const events: string[] = [];
  const src = source(events);
  const seen: number[] = [];
  const progress: number[] = [];
  await forEachDataUnit(src, UNIT, { onProgress: d => progress.push(d) }, 'test', async (at, b) => {
    events.push(`visit ${at}`);
    assert.equal(b.length, UNIT);
    assert.ok(b.every(x => x === (at / UNIT) % 251 + 1), `unit at ${at}`);
    seen.push(at);
    await new Promise(r => setTimeout(r, 1));
    events.push(`visited ${at}`);
  });
  const expected: number[] = [];
  for (let u = 0; u < src.virtualSize / UNIT; u += 37) expected.push(u * UNIT);
  expected.push(src.virtualSize - UNIT);
  assert.deepEqual(seen, expected);
  for (let i = 1; i < progress.length; i++) assert.ok(progress[i] >= progress[i - 1], `progress went back: ${progress.join(', ')}`);
  assert.equal(progress[progress.length - 1], src.virtualSize);
  // read-ahead: some window's read starts while an earlier window is still being visited
  let inVisit = 0, overlapped = false;
  for (const e of events) {
    if (e.startsWith('visit ')) inVisit++;
    else if (e.startsWith('visited ')) inVisit--;
    else if (e.startsWith('read ') && inVisit > 0) overlapped = true;
  }
  assert.ok(overlapped, 'no read started during a visit');
  assert.ok(COPY_WINDOW % UNIT === 0);
});

test('a failing visit stops the walk with its error, with no read left running', async () => {
  const src = source([]);
  let visits = 0;
  await assert.rejects(forEachDataUnit(src, UNIT, {}, 'test', async () => {
    if (++visits === 3) throw new Error('disk full');
  }), /disk full/);
  assert.equal(src.reading, 0);
  assert.equal(visits, 3);
});
