/**
 * Review findings on the write paths, each proven against qemu-img before its fix.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { qemuImg, qemuImgStatus, qemuIo, sha256, tmpDir } from '../helpers/qemu';
import { applySnapshot, createSnapshot } from '../../src/engine/ops/snapshot';
import { compactImage } from '../../src/engine/ops/compact';
import { applySnapshotAt } from '../../src/extension/engineApi';
import { assertClean } from './util';

test('editor apply by name reverts to the snapshot with that name, not to another snapshot whose id equals the name', async () => {
  const dir = tmpDir();
  const img = path.join(dir, 'a.qcow2');
  const other = path.join(dir, 'b.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '1M');
  qemuIo(img, ['write -P 0x11 0 64k']);
  qemuImg('snapshot', '-c', 'base', img); // id 1, name "base"
  qemuIo(img, ['write -P 0x22 0 64k']);
  qemuImg('snapshot', '-c', '1', img); // id 2, name "1"
  qemuIo(img, ['write -P 0x33 0 64k']);
  // the editor's picker offers names; the user picks the snapshot named "1" (content 0x22)
  await applySnapshotAt(img, '1');
  assertClean(img);
  qemuImg('create', '-q', '-f', 'qcow2', other, '1M');
  qemuIo(other, ['write -P 0x22 0 64k']);
  const r = qemuImgStatus('compare', img, other);
  assert.equal(r.status, 0, `the disk must hold snapshot "1"'s content: ${r.stdout}${r.stderr}`);
});

test('in-place compaction keeps the file owner and group', { skip: process.getuid?.() !== 0 ? 'needs root to chown' : false }, async () => {
  const dir = tmpDir();
  const img = path.join(dir, 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '4M');
  qemuIo(img, ['write -P 0x11 0 64k', 'write -P 0 1M 64k']);
  fs.chownSync(img, 65534, 65534);
  fs.chmodSync(img, 0o640);
  await compactImage(img);
  const st = fs.statSync(img);
  assert.equal(st.uid, 65534);
  assert.equal(st.gid, 65534);
  assert.equal(st.mode & 0o7777, 0o640);
  assertClean(img);
});

test('in-place compaction through a symbolic link compacts the linked file and keeps the link', async () => {
  const dir = tmpDir();
  const real = path.join(dir, 'real.qcow2');
  const link = path.join(dir, 'link.qcow2');
  const ref = path.join(dir, 'ref.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', real, '4M');
  qemuIo(real, ['write -P 0x11 0 64k', 'write -P 0 1M 64k']);
  fs.copyFileSync(real, ref);
  fs.symlinkSync(real, link);
  await compactImage(link);
  assert.ok(fs.lstatSync(link).isSymbolicLink(), 'the link must stay a link');
  assertClean(real);
  assert.equal(qemuImgStatus('compare', real, ref).status, 0);
  assert.ok(fs.statSync(real).size < fs.statSync(ref).size, 'the linked file itself is compacted');
  assert.deepEqual(fs.readdirSync(dir).filter(n => n.includes('.tmp')), []);
});

test('snapshot create refused for 2-bit refcount overflow (compressed clusters sharing a host cluster) leaves the file unchanged', async () => {
  const dir = tmpDir();
  const img = path.join(dir, 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=2', img, '8M');
  qemuIo(img, ['write -P 0x11 0 1M', 'write -c -P 0x22 2M 64k', 'write -c -P 0x23 4M 64k']);
  assertClean(img);
  const before = sha256(fs.readFileSync(img));
  await assert.rejects(createSnapshot(img, 'a'), /refcount would exceed 3/);
  assertClean(img);
  assert.equal(sha256(fs.readFileSync(img)), before);
});

test('snapshot apply is refused on an image with persistent bitmaps, as qemu-img refuses it (a revert the bitmaps do not record breaks incremental backups)', async () => {
  const dir = tmpDir();
  const img = path.join(dir, 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '8M');
  qemuIo(img, ['write -P 0x11 0 64k']);
  qemuImg('snapshot', '-c', 's1', img);
  qemuImg('bitmap', '--add', img, 'b0');
  qemuIo(img, ['write -P 0x22 0 64k']);
  const q = path.join(dir, 'q.qcow2');
  fs.copyFileSync(img, q);
  const byQemu = qemuImgStatus('snapshot', '-a', 's1', q);
  assert.notEqual(byQemu.status, 0, 'qemu-img refuses it');
  const before = sha256(fs.readFileSync(img));
  await assert.rejects(applySnapshot(img, 's1'), /bitmap/);
  assert.equal(sha256(fs.readFileSync(img)), before);
  assertClean(img);
});

test('a write to the image while it is being compacted in place is not lost: the compaction is abandoned', async () => {
  const dir = tmpDir();
  const img = path.join(dir, 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '64M');
  qemuIo(img, ['write -P 0x11 0 16M']);
  let wrote = false;
  // mid-compaction (after the first batch is read), something that takes the image's locks writes to it
  const run = compactImage(img, { onProgress: () => { if (!wrote) { wrote = true; qemuIo(img, ['write -P 0x77 1M 64k']); } } });
  await assert.rejects(run, /changed/);
  assert.ok(wrote);
  assertClean(img);
  assert.match(qemuIo(img, ['read -P 0x77 1M 64k']), /read 65536\/65536/);
  assert.deepEqual(fs.readdirSync(dir).filter(n => n.includes('.tmp')), []);
});

test('compaction into another folder keeps a relative backing file name pointing at the same backing file', async () => {
  const dir = tmpDir();
  const a = path.join(dir, 'A'), b = path.join(dir, 'B', 'sub');
  fs.mkdirSync(a); fs.mkdirSync(b, { recursive: true });
  qemuImg('create', '-q', '-f', 'qcow2', path.join(a, 'base.qcow2'), '4M');
  qemuIo(path.join(a, 'base.qcow2'), ['write -P 0x09 0 4M']);
  const ov = path.join(a, 'ov.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', ov, '4M');
  qemuIo(ov, ['write -P 0x01 0 64k']);
  // a different image of the same name next to the output must not be picked up
  qemuImg('create', '-q', '-f', 'qcow2', path.join(b, 'base.qcow2'), '4M');
  const out = path.join(b, 'out.qcow2');
  await compactImage(ov, { output: out });
  assertClean(out);
  const r = qemuImgStatus('compare', ov, out);
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  const info = JSON.parse(qemuImg('info', '--output=json', out)) as { 'full-backing-filename': string };
  assert.equal(fs.realpathSync(info['full-backing-filename']), fs.realpathSync(path.join(a, 'base.qcow2')));
});

/** An image whose snapshot "s1" carries 64 KiB of VM state (as savevm stores it: past the disk size in the snapshot's L1). */
function imageWithVmState(dir: string): string {
  const img = path.join(dir, 'vm.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '1G');
  qemuIo(img, ['write -P 0x11 0 64k', 'write -P 0xaa 512M 64k']);
  qemuImg('snapshot', '-c', 's1', img);
  // make the snapshot a 1 MiB disk with 64 KiB of VM state: the second L1 entry (512 MiB) is the VM state area
  const fd = fs.openSync(img, 'r+');
  const h = Buffer.alloc(12);
  fs.readSync(fd, h, 0, 12, 60);
  const off = Number(h.readBigUInt64BE(4));
  const e = Buffer.alloc(4); e.writeUInt32BE(65536); fs.writeSync(fd, e, 0, 4, off + 32);
  const x = Buffer.alloc(16); x.writeBigUInt64BE(65536n, 0); x.writeBigUInt64BE(1n << 20n, 8); fs.writeSync(fd, x, 0, 16, off + 40);
  fs.closeSync(fd);
  qemuIo(img, ['write -z 512M 64k']);
  qemuImg('resize', '-q', '--shrink', img, '1M');
  assertClean(img);
  return img;
}
/** The VM state bytes of s1, made guest-visible by qemu-img: apply s1, grow the disk over the VM state area. */
function vmStateReads(img: string, dir: string): boolean {
  const c = path.join(dir, 'vv.qcow2');
  fs.copyFileSync(img, c);
  qemuImg('snapshot', '-a', 's1', c);
  qemuImg('resize', '-q', c, '1G');
  return qemuIoStatus(c, ['read -P 0xaa 512M 64k']) === 0;
}
function qemuIoStatus(img: string, cmds: string[]): number {
  try { qemuIo(img, cmds); return 0; } catch { return 1; }
}

test('compaction keeps the VM state of a savevm snapshot, and refuses a cluster size change that would drop it', async () => {
  const dir = tmpDir();
  const img = imageWithVmState(dir);
  assert.ok(vmStateReads(img, dir), 'the source carries the VM state');
  const same = path.join(dir, 'same.qcow2');
  await compactImage(img, { output: same });
  assertClean(same);
  assert.ok(vmStateReads(same, dir), 'kept by a same-size compaction');
  const other = path.join(dir, 'other.qcow2');
  await assert.rejects(compactImage(img, { output: other, clusterSize: 4096 }), /VM state/);
  assert.ok(!fs.existsSync(other));
  assert.deepEqual(fs.readdirSync(dir).filter(n => n.includes('.tmp')), []);
});

test('snapshot apply refused for 4-bit refcount overflow leaves the file unchanged (overflow found in a later L1 window)', async () => {
  const dir = tmpDir();
  const img = path.join(dir, 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=4,cluster_size=4096', img, '1200M');
  qemuIo(img, ['write -P 1 1G 64k']); // L1 entry 512: the third window of 256 entries
  for (let i = 1; i <= 13; i++) qemuImg('snapshot', '-c', `s${i}`, img); // its clusters now at 14 of 15
  qemuIo(img, ['write -P 2 0 64k']);
  qemuImg('snapshot', '-c', 's14', img); // 15
  qemuIo(img, ['write -P 3 0 64k']);
  assertClean(img);
  const before = sha256(fs.readFileSync(img));
  await assert.rejects(applySnapshot(img, 's14'), /refcount would exceed 15/);
  assertClean(img);
  assert.equal(sha256(fs.readFileSync(img)), before);
});
