/** Shared helpers for the management-command tests: qemu-img twins and their comparison. */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { qemuImg } from '../helpers/qemu';

/** `qemu-img info --output=json` with the file name removed (twins differ only by name). */
export function infoOf(img: string, keepActualSize = true): Record<string, unknown> {
  const j = JSON.parse(qemuImg('info', '--output=json', img)) as Record<string, unknown>;
  delete j.filename;
  if (!keepActualSize) delete j['actual-size'];
  return j;
}

export function mapOf(img: string): unknown {
  return JSON.parse(qemuImg('map', '--output=json', img));
}

/** The two files hold the same bytes (an assertion naming the first difference). */
export function assertSameBytes(a: string, b: string): void {
  const x = fs.statSync(a).size, y = fs.statSync(b).size;
  assert.equal(y, x, `${b} is ${y} bytes, qemu-img's ${x}`);
  const r = spawnSync('cmp', [a, b], { encoding: 'utf8' });
  assert.equal(r.status, 0, `${b} differs from qemu-img's: ${r.stdout}`);
}

/** Allocated bytes of a file (st_blocks), as qemu-img info's actual-size reports them. */
export function allocated(p: string): number {
  return fs.statSync(p).blocks * 512;
}
