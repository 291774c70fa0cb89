/**
 * "Metadata reads only": a 16 GiB guest disk (GPT, one ext4 partition filling it, a handful of
 * files) as a qcow2 image. Opening it, listing the first level and walking all free space must read
 * a few MiB through the GuestDisk, never the disk — asserted by the bytes the block cache fetched.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { qemuImg, tmpDir } from '../helpers/qemu';
import { openGuest } from '../../src/guest/guest';
import { openDiskImage } from '../../src/guest/qcow2Disk';
import { bytes, run } from './common';

const GiB = 1024 ** 3, MiB = 1024 ** 2;

test('a 16 GiB ext4 guest: first-level listing and the free-space walk read only metadata', async t => {
  const dir = tmpDir('qcow2-lens-guest-16g-');
  const src = path.join(dir, 'src');
  fs.mkdirSync(path.join(src, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(src, 'etc', 'fstab'), 'UUID=x / ext4 defaults 0 1\n');
  fs.writeFileSync(path.join(src, 'data.bin'), bytes(4 * MiB, '16g'));
  const raw = path.join(dir, 'big.raw');
  fs.writeFileSync(raw, '');
  fs.truncateSync(raw, 16 * GiB);
  run('sgdisk', ['-n', '1:2048:0', '-t', '1:8300', raw]);
  const fsBytes = 16 * GiB - 2 * MiB;
  run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-E', `offset=${MiB},lazy_itable_init=1,lazy_journal_init=1`, '-d', src, raw, `${fsBytes / 1024}k`]);
  const image = path.join(dir, 'big.qcow2');
  qemuImg('convert', '-q', '-O', 'qcow2', raw, image);
  const freeBlocks = Number(/Free blocks:\s+(\d+)/.exec(run('dumpe2fs', ['-h', `${raw}?offset=${MiB}`]))![1]);
  fs.rmSync(raw);

  const d = await openDiskImage(image);
  try {
    const g = await openGuest(d.disk);
    const f = g.fileSystem(1);
    const names = (await f.readdir('/')).map(e => e.name);
    assert.deepEqual(names, ['data.bin', 'etc', 'lost+found']);
    const listed = g.disk.bytesRead;
    let free = 0, runs = 0;
    for await (const [, n] of f.freeRanges()) { free += n; runs++; }
    const walked = g.disk.bytesRead - listed;
    t.diagnostic(`open + first-level listing read ${listed} bytes; the free-space walk (${runs} runs) read ${walked} more`);
    assert.equal(free, freeBlocks * 4096);
    assert.equal((await f.usage()).free, freeBlocks * 4096);
    assert.ok(listed < 4 * MiB, `listing read ${listed} bytes`);
    assert.ok(walked < 4 * MiB, `free-space walk read ${walked} bytes`);
    await g.close();
  } finally {
    await d.close();
  }
});
