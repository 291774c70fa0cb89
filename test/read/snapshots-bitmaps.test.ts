/** Internal snapshots (3 of them, the active layer diverging) and persistent dirty bitmaps. */
import { test } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu';
import { assertMatchesQemu } from './compare';

const dir = tmpDir('qcow2-lens-snap-');
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

for (const compat of ['1.1', '0.10']) {
  test(`three internal snapshots, compat ${compat}`, () => {
    const img = path.join(dir, `snap-${compat}.qcow2`);
    qemuImg('create', '-q', '-f', 'qcow2', '-o', `compat=${compat}`, img, '8M');
    for (let i = 1; i <= 3; i++) {
      qemuIo(img, [`write -P ${i} ${i * 64}k 64k`, `write -P ${0x10 + i} 0 4k`]);
      qemuImg('snapshot', '-c', `snap${i}`, img);
    }
    qemuIo(img, ['write -P 0x99 0 64k', 'write -z 128k 64k', 'discard 192k 64k']); // active layer diverges
    assertMatchesQemu(img, dir);
  });
}

test('bitmaps added with qemu-img bitmap --add (default and custom granularity, disabled)', () => {
  const img = path.join(dir, 'bitmaps.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '8M');
  qemuImg('bitmap', '--add', img, 'b0');
  qemuImg('bitmap', '--add', '-g', '128k', img, 'b1');
  qemuImg('bitmap', '--add', '--disable', img, 'b2');
  qemuIo(img, ['write -P 0x61 0 192k']);
  assertMatchesQemu(img, dir);
});
