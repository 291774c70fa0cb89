/**
 * Both zstd implementations (qcow2/compress.ts): Node's own (node:zlib, Node ≥ 22.15) where the
 * running Node has it, and the fallbacks (fzstd to decode, WebAssembly libzstd to encode), forced
 * with QCOW2_LENS_ZSTD=wasm. Each one reads qemu-img's zstd clusters, encodes frames the other one
 * and qemu-img decode, and compacts with --compress zstd into an image qemu-img judges clean and
 * equal. On a Node without native zstd only the fallback runs (run this file with a newer Node,
 * e.g. the one under .vscode-e2e, for the native half).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { Qcow2Image } from '../../src/engine/image/image';
import { compactImage } from '../../src/engine/ops/compact';
import { decompressCluster, loadZstd, zstdFrameLength, zstdImplementation } from '../../src/engine/qcow2/compress';
import { COMPRESSION_ZSTD } from '../../src/engine/qcow2/layout';
import { qemuImg, qemuImgStatus, tmpDir } from '../helpers/qemu';

const hasNative = typeof (zlib as unknown as { zstdCompressSync?: unknown }).zstdCompressSync === 'function';
const impls = hasNative ? ['native', 'wasm'] as const : ['wasm'] as const;

function use(impl: 'native' | 'wasm'): void {
  if (impl === 'wasm') process.env.QCOW2_LENS_ZSTD = 'wasm';
  else delete process.env.QCOW2_LENS_ZSTD;
}
test.afterEach(() => { delete process.env.QCOW2_LENS_ZSTD; });

const CS = 65536;
function sample(): Buffer {
  const text = Buffer.from('QCOW2 Lens compresses nicely. '.repeat(8000)).subarray(0, 3 * CS);
  return Buffer.concat([text, crypto.randomBytes(CS), Buffer.alloc(CS), text.subarray(0, CS)]);
}

test('the implementation is detected at run time', () => {
  assert.equal(zstdImplementation(), hasNative ? 'native' : 'wasm');
  use('wasm');
  assert.equal(zstdImplementation(), 'wasm');
});

for (const impl of impls) {
  test(`${impl}: reads qemu-img's zstd clusters`, async () => {
    use(impl);
    const dir = tmpDir();
    const raw = path.join(dir, 's.raw'), img = path.join(dir, 'z.qcow2');
    const data = sample();
    fs.writeFileSync(raw, data);
    qemuImg('convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', raw, img);
    const q = await Qcow2Image.open(img);
    try {
      assert.ok((await q.readGuest(0, data.length)).equals(data));
    } finally {
      await q.close();
    }
  });

  test(`${impl}: its frames decode with every implementation`, async () => {
    use(impl);
    const enc = await loadZstd();
    const data = sample();
    for (let at = 0; at < data.length; at += CS) {
      const c = data.subarray(at, at + CS);
      const frame = Buffer.from(enc(c));
      assert.equal(zstdFrameLength(Buffer.concat([frame, Buffer.from([1, 2, 3])])), frame.length);
      for (const other of impls) {
        use(other);
        assert.ok(decompressCluster(COMPRESSION_ZSTD, Buffer.concat([frame, Buffer.alloc(512, 0x77)]), CS).equals(c), `${impl} frame, ${other} decoder`);
      }
      use(impl);
    }
  });

  test(`${impl}: compact --compress zstd is clean and equal under qemu-img`, async () => {
    use(impl);
    const dir = tmpDir();
    const raw = path.join(dir, 's.raw'), img = path.join(dir, 'p.qcow2'), out = path.join(dir, 'c.qcow2');
    fs.writeFileSync(raw, sample());
    qemuImg('convert', '-O', 'qcow2', raw, img);
    await compactImage(img, { output: out, compress: 'zstd' });
    const chk = qemuImgStatus('check', out);
    assert.equal(chk.status, 0, chk.stdout + chk.stderr);
    const cmp = qemuImgStatus('compare', raw, out);
    assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
    assert.ok(fs.statSync(out).size < fs.statSync(img).size);
  });
}
