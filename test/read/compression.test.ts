/**
 * Compressed clusters (zlib and zstd, written by `qemu-img convert -c` and by qemu-io `write -c`)
 * and zero clusters.
 */
import { test } from 'node:test';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu';
import { assertMatchesQemu } from './compare';

const dir = tmpDir('qcow2-lens-compress-');
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A raw source with incompressible, compressible and all-zero stretches. */
function rawSource(): string {
  const raw = path.join(dir, 'source.raw');
  if (fs.existsSync(raw)) return raw;
  const text = Buffer.from('QCOW2 Lens compresses nicely. '.repeat(40000)).subarray(0, 1024 * 1024);
  fs.writeFileSync(raw, Buffer.concat([crypto.randomBytes(1024 * 1024), text, Buffer.alloc(1024 * 1024), crypto.randomBytes(100 * 1024), text]));
  return raw;
}

for (const type of ['zlib', 'zstd']) {
  test(`qemu-img convert -c, ${type}`, () => {
    const img = path.join(dir, `convert-${type}.qcow2`);
    qemuImg('convert', '-c', '-O', 'qcow2', '-o', `compression_type=${type}`, rawSource(), img);
    assertMatchesQemu(img, dir);
  });

  test(`qemu-io write -c next to plain and zero clusters, ${type}`, () => {
    const img = path.join(dir, `io-${type}.qcow2`);
    qemuImg('create', '-q', '-f', 'qcow2', '-o', `compression_type=${type}`, img, '8M');
    qemuIo(img, ['write -c -P 0x41 0 64k', 'write -P 0x42 64k 64k', 'write -c -P 0x43 128k 64k', 'write -z 256k 192k', 'write -c -P 0x44 1M 64k', 'write -P 0x45 1M 4k']);
    assertMatchesQemu(img, dir);
  });

  test(`compressed 512-byte and 2 MiB clusters, ${type}`, () => {
    for (const cs of ['512', '2M']) {
      const img = path.join(dir, `cs-${cs}-${type}.qcow2`);
      qemuImg('convert', '-c', '-O', 'qcow2', '-o', `compression_type=${type},cluster_size=${cs}`, rawSource(), img);
      assertMatchesQemu(img, dir);
    }
  });
}

test('zero clusters: zero writes over data, unallocated zero writes, and a discard', () => {
  const img = path.join(dir, 'zeros.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '8M');
  qemuIo(img, ['write -P 0x51 0 1M', 'write -z 128k 256k', 'write -z -u 512k 128k', 'write -z 4M 1M', 'discard 768k 64k']);
  assertMatchesQemu(img, dir);
});
