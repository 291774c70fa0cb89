// Builds the images the end-to-end tests and `npm start` open, with qemu-img/qemu-io only
// (generated every run, never checked in):
//   sample.qcow2   64 MiB, data at a few offsets, an internal snapshot "base", more data after it
//   base.qcow2 + overlay.qcow2   a backing chain (overlay writes over part of base)
//   damaged.qcow2  a clean image whose L2 entry for guest cluster 0 is zeroed: its data cluster leaks
//   sparse.qcow2   data written then discarded, so compaction has something to drop
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const img = (...a) => execFileSync('qemu-img', a, { encoding: 'utf8' });
const io = (file, ...cmds) => execFileSync('qemu-io', [...cmds.flatMap(c => ['-c', c]), file], { encoding: 'utf8' });

export function makeFixtures(dir, { only } = {}) {
  fs.mkdirSync(dir, { recursive: true });
  const p = n => path.join(dir, n);
  const want = n => !only || only.includes(n);
  if (want('sample.qcow2')) {
    img('create', '-q', '-f', 'qcow2', p('sample.qcow2'), '64M');
    io(p('sample.qcow2'), 'write -P 0x11 0 1M', 'write -P 0x22 8M 512k', 'write -z 16M 1M');
    img('snapshot', '-c', 'base', p('sample.qcow2'));
    io(p('sample.qcow2'), 'write -P 0x33 512k 1M', 'write -P 0x44 40M 64k');
  }
  if (want('overlay.qcow2')) {
    img('create', '-q', '-f', 'qcow2', p('base.qcow2'), '32M');
    io(p('base.qcow2'), 'write -P 0x55 0 4M');
    img('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', p('overlay.qcow2'));
    io(p('overlay.qcow2'), 'write -P 0x66 1M 1M');
  }
  if (want('damaged.qcow2')) {
    img('create', '-q', '-f', 'qcow2', p('damaged.qcow2'), '16M');
    io(p('damaged.qcow2'), 'write -P 0x77 0 256k', 'write -P 0x78 4M 64k');
    // Zero L2 entry 0 (guest cluster 0): its data cluster keeps refcount 1 with no user = a leak.
    const fd = fs.openSync(p('damaged.qcow2'), 'r+');
    const hdr = Buffer.alloc(48);
    fs.readSync(fd, hdr, 0, 48, 0);
    const l1Offset = Number(hdr.readBigUInt64BE(40));
    const l1 = Buffer.alloc(8);
    fs.readSync(fd, l1, 0, 8, l1Offset);
    const l2Offset = Number(l1.readBigUInt64BE(0) & 0x00fffffffffffe00n);
    fs.writeSync(fd, Buffer.alloc(8), 0, 8, l2Offset);
    fs.closeSync(fd);
  }
  if (want('sparse.qcow2')) {
    img('create', '-q', '-f', 'qcow2', p('sparse.qcow2'), '32M');
    io(p('sparse.qcow2'), 'write -P 0x99 0 8M', 'write -P 0x9a 16M 2M', 'discard 0 6M');
  }
  if (want('notes.txt')) fs.writeFileSync(p('notes.txt'), 'Not an image: QCOW2 Lens must refuse it when asked to open it.\n');
  return dir;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const dir = path.resolve(process.argv[2] || 'sample');
  makeFixtures(dir);
  console.log(dir);
}
