/**
 * Every write path refuses images held by a running QEMU, images with the corrupt bit, and v3-only
 * features on v2 images — with a clear message and the file untouched.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, qemuImg, qemuIo, readBE64, sha256, tmpDir, writeBE64 } from '../helpers/qemu';
import { isLockedByQemu } from '../../src/engine/io/lock';

const WRITES: string[][] = [['snapshot', '-c', 'x'], ['snapshot', '-a', 's'], ['snapshot', '-d', 's'], ['compact'], ['compact', '--compress', 'zlib']];

function image(dir: string, opts: string[] = []): string {
  const img = path.join(dir, 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', ...opts, img, '16M');
  qemuIo(img, ['write -P 1 0 1M']);
  qemuImg('snapshot', '-c', 's', img);
  return img;
}

test('refuses an image held by a running qemu-io', async () => {
  const dir = tmpDir();
  const img = image(dir);
  const q = spawn('qemu-io', ['-c', 'sleep 20000', img], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 100 && !isLockedByQemu(img); i++) await new Promise(r => setTimeout(r, 50));
    assert.ok(isLockedByQemu(img), 'qemu-io took its lock');
    const before = sha256(fs.readFileSync(img));
    for (const w of WRITES) {
      const r = cli(w[0], img, ...w.slice(1));
      assert.equal(r.status, 1, w.join(' '));
      assert.match(r.stderr, /in use by a running QEMU/, w.join(' '));
    }
    assert.equal(sha256(fs.readFileSync(img)), before);
  } finally {
    q.kill('SIGKILL');
    await new Promise(r => q.once('exit', r));
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('refuses an image with the corrupt bit', () => {
  const dir = tmpDir();
  const img = image(dir);
  writeBE64(img, 72, readBE64(img, 72) | 2n);
  const before = sha256(fs.readFileSync(img));
  for (const w of WRITES) {
    const r = cli(w[0], img, ...w.slice(1));
    assert.equal(r.status, 1, w.join(' '));
    assert.match(r.stderr, /corrupt bit is set/, w.join(' '));
  }
  assert.equal(sha256(fs.readFileSync(img)), before);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('never writes zstd into a v2 image', () => {
  const dir = tmpDir();
  const img = image(dir, ['-o', 'compat=0.10']);
  const out = path.join(dir, 'out.qcow2');
  const r = cli('compact', img, '-o', out, '--compress', 'zstd');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /version 2 .* cannot carry zstd/);
  assert.equal(fs.existsSync(out), false);
  assert.deepEqual(fs.readdirSync(dir), ['a.qcow2']);
  fs.rmSync(dir, { recursive: true, force: true });
});
