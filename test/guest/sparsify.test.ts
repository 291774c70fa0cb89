/**
 * `sparsify` on qemu-img-made images of one guest disk (ext4 + FAT16 + swap with freed-but-allocated
 * clusters): plain, compressed, with snapshots, as an overlay, to a new file and in place. After
 * it `qemu-img check` is clean, e2fsck -fn and fsck.vfat -n are clean, every file reads as before
 * (debugfs rdump, mcopy), the only guest blocks that changed now read as zero, snapshots keep
 * their content and an overlay keeps its backing file. Dirty file systems are refused with the
 * reason; a crash after any write leaves the original untouched.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, cli, pokeBytes, qemuGuestHash, qemuImg, qemuImgStatus, qemuIo, sha256, tmpDir } from '../helpers/qemu';
import { asImage, buildDisk, bytes, cliJsonOk, cliOk, dumpe2fsFreeRuns, run, runBuffer } from './common';
import { assertFileSystemsClean, buildSpaceDisk, changedBlocksAreZero, EXT, extractPartition, FAT, guestFiles, guestRaw, MiB, overlayImage } from './spaceDisk';

const dir = tmpDir('qcow2-lens-sparsify-');
const disk = buildSpaceDisk(dir);
const before = guestFiles(disk.raw, dir, disk.fatFiles);

function assertClean(image: string): void {
  const r = qemuImgStatus('check', image);
  assert.equal(r.status, 0, `qemu-img check ${image}:\n${r.stdout}${r.stderr}`);
}

/** The sparsified image holds the same files, clean file systems, and zeros where it changed. */
function assertSparsified(original: string, out: string, what: string): number {
  assertClean(out);
  const a = guestRaw(original, path.join(dir, 'a.raw')), b = guestRaw(out, path.join(dir, 'b.raw'));
  assertFileSystemsClean(b, dir);
  assert.deepEqual(guestFiles(b, dir, disk.fatFiles), before, `${what}: every file reads as before`);
  const changed = changedBlocksAreZero(a, b);
  fs.rmSync(a);
  fs.rmSync(b);
  return changed;
}

for (const v of ['plain', 'compressed', 'overlay'] as const) {
  test(`sparsify -o (${v}): smaller than compact, clean, files unchanged, free space reads as zero`, t => {
    const image = v === 'overlay' ? overlayImage(disk.raw) : asImage(disk.raw, v);
    const out = path.join(dir, `${v}.sparse.qcow2`), compacted = path.join(dir, `${v}.compact.qcow2`);
    fs.rmSync(out, { force: true });
    fs.rmSync(compacted, { force: true });
    const r = cliJsonOk<{ bytesBefore: number; bytesAfter: number; droppedClusters: number; output: string }>('sparsify', '--json', '-o', out, image);
    cliOk('compact', '-q', '-o', compacted, image);
    assert.equal(r.bytesAfter, fs.statSync(out).size);
    assert.ok(r.droppedClusters >= (3 * MiB) / 65536, `${v}: dropped ${r.droppedClusters} clusters`);
    assert.ok(r.bytesAfter + 3 * MiB <= fs.statSync(compacted).size, `${v}: ${r.bytesAfter} vs compact ${fs.statSync(compacted).size}`);
    const changed = assertSparsified(image, out, v);
    assert.ok(changed * 4096 >= 3 * MiB, `${v}: the freed files' blocks now read as zero (${changed} blocks)`);
    if (v === 'overlay') {
      const info = JSON.parse(qemuImg('info', '--output=json', out)) as { 'backing-filename'?: string };
      assert.equal(info['backing-filename'], path.basename(image).replace('.ov.qcow2', '.ovbase.qcow2'), 'the overlay keeps its backing file');
      // dropped clusters are zero clusters, not unallocated (which would show the base's old bytes)
      const map = JSON.parse(qemuImg('map', '--output=json', out)) as Array<{ depth: number; zero: boolean; data: boolean }>;
      assert.ok(map.some(e => e.depth === 0 && e.zero && !e.data), 'zero clusters in the overlay');
    }
    t.diagnostic(`${v}: ${fs.statSync(image).size} → compact ${fs.statSync(compacted).size}, sparsify ${r.bytesAfter}`);
  });
}

test('sparsify --in-place on an image with snapshots: snapshots keep their content, only the active disk\'s own free clusters go', () => {
  const image = asImage(disk.raw, 'snapshot');
  // the active disk then writes into ext4 free space (as a file written and deleted again would):
  // 256 KiB that only it maps, at free guest clusters — those go, nothing the snapshots map does
  const fsStart = EXT.start * 512, bs = 4096, cs = 65536;
  const run0 = dumpe2fsFreeRuns(disk.ext4).map(([a, b]) => [fsStart + a * bs, fsStart + (b + 1) * bs]).find(([a, b]) => Math.floor(b / cs) * cs - Math.ceil(a / cs) * cs >= 4 * cs)!;
  const at = Math.ceil(run0[0] / cs) * cs;
  qemuIo(image, [`write -P 0x77 ${at} 256k`]);
  const snapHashes = new Map<string, string>();
  for (const name of ['before', 'after']) {
    const c = path.join(dir, 'applied.qcow2');
    fs.copyFileSync(image, c);
    qemuImg('snapshot', '-a', name, c);
    snapHashes.set(name, qemuGuestHash(c, dir));
  }
  const mode = 0o640;
  fs.chmodSync(image, mode);
  const pristine = path.join(dir, 'snapshot.pristine.qcow2');
  fs.copyFileSync(image, pristine);
  const r = cliJsonOk<{ output: string; droppedClusters: number }>('sparsify', '--json', '--in-place', image);
  assert.equal(r.output, fs.realpathSync(image));
  assert.equal(r.droppedClusters, 4, 'the 256 KiB only the active disk maps; its other free clusters are shared with snapshot "before"');
  assert.equal(fs.statSync(image).mode & 0o7777, mode, 'the file keeps its mode');
  assert.equal(assertSparsified(pristine, image, 'snapshot'), (4 * cs) / bs, 'the 0x77 blocks now read as zero, nothing else changed');
  const list = qemuImg('snapshot', '-l', image);
  for (const [name, h] of snapHashes) {
    assert.match(list, new RegExp(`\\b${name}\\b`));
    const c = path.join(dir, 'applied.qcow2');
    fs.copyFileSync(image, c);
    qemuImg('snapshot', '-a', name, c);
    assert.equal(qemuGuestHash(c, dir), h, `snapshot ${name} keeps its content`);
  }
});

test('sparsify refuses a file system that needs journal recovery or carries the FAT dirty bit, saying why', () => {
  const dirty = path.join(dir, 'dirty.raw');
  fs.copyFileSync(disk.raw, dirty);
  const ext = extractPartition(dirty, EXT, path.join(dir, 'dirty-p1.fs'));
  run('debugfs', ['-w', '-R', 'feature needs_recovery', ext]);
  run('dd', [`if=${ext}`, `of=${dirty}`, 'bs=512', `seek=${EXT.start}`, 'conv=notrunc', 'status=none']);
  const image = path.join(dir, 'dirty.qcow2');
  qemuImg('convert', '-q', '-O', 'qcow2', dirty, image);
  const want = sha256(fs.readFileSync(image));
  const out = path.join(dir, 'dirty.out.qcow2');
  const r = cli('sparsify', '-o', out, image);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /sparsify refused: partition 1 \(ext4\): the journal needs recovery \(needs_recovery\)/);
  assert.ok(r.stderr.trim().split('\n').length <= 2, r.stderr);
  assert.equal(fs.existsSync(out), false);
  assert.equal(sha256(fs.readFileSync(image)), want);
  const space = cliJsonOk<{ reclaim: { sparsify: number }; notes: string[] }>('space', '--json', image);
  assert.equal(space.reclaim.sparsify, 0);
  assert.ok(space.notes.some(n => /sparsify would refuse: partition 1 \(ext4\)/.test(n)), space.notes.join('\n'));

  const fatDirty = path.join(dir, 'fatdirty.raw');
  fs.copyFileSync(disk.raw, fatDirty);
  const stateByte = FAT.start * 512 + 37; // FAT16 BS_Reserved1 / Linux's state byte: bit 0 = dirty
  pokeBytes(fatDirty, stateByte, [1]);
  const fimage = path.join(dir, 'fatdirty.qcow2');
  qemuImg('convert', '-q', '-O', 'qcow2', fatDirty, fimage);
  const f = cli('sparsify', '--in-place', fimage);
  assert.equal(f.status, 1);
  assert.match(f.stderr, /sparsify refused: partition 2 \(vfat\): the dirty bit is set/);
});

test('sparsify: usage errors and images it cannot sparsify', () => {
  const image = asImage(disk.raw, 'plain');
  const neither = cli('sparsify', image);
  assert.equal(neither.status, 64);
  assert.match(neither.stderr, /exactly one of -o OUT and --in-place/);
  assert.equal(cli('sparsify', '-o', path.join(dir, 'x.qcow2'), '--in-place', image).status, 64);
  // a version 2 overlay cannot say "zero" for a dropped cluster: refused, not silently leaving the base's bytes visible
  const base = path.join(dir, 'v2base.qcow2'), ov = path.join(dir, 'v2ov.qcow2');
  qemuImg('convert', '-q', '-O', 'qcow2', '-o', 'compat=0.10', disk.raw, base);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', '-b', path.basename(base), '-F', 'qcow2', ov);
  const r = cli('sparsify', '-o', path.join(dir, 'v2out.qcow2'), ov);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /version 2 \(compat 0\.10\) overlay/);
  const raw = cli('sparsify', '-o', path.join(dir, 'raw.out'), disk.raw);
  assert.equal(raw.status, 1);
  assert.match(raw.stderr, /not a qcow2 image/);
});

test('a crash after any write of sparsify --in-place leaves the original untouched', t => {
  const work = fs.mkdtempSync(path.join(dir, 'crash-'));
  const pristine = asImage(disk.raw, 'plain');
  const want = sha256(fs.readFileSync(pristine));
  const img = path.join(work, 'img.qcow2');
  let crashes = 0;
  for (let k = 0; k < 100; k++) {
    fs.copyFileSync(pristine, img);
    const r = spawnSync(process.execPath, [CLI, 'sparsify', '-q', '--in-place', img], { env: { ...process.env, QCOW2_LENS_CRASH_AFTER_WRITES: String(k) }, encoding: 'utf8' });
    if (r.status === 0) {
      assertClean(img);
      assert.ok(fs.statSync(img).size < fs.statSync(pristine).size - 3 * MiB);
      // the killed runs' temporary files were removed by the run that completed
      assert.deepEqual(fs.readdirSync(work).filter(f => f.includes('.compact-')), []);
      break;
    }
    assert.equal(r.signal, 'SIGKILL', `k=${k}: expected a crash, got status ${r.status}: ${r.stderr}`);
    crashes++;
    assert.equal(sha256(fs.readFileSync(img)), want, `k=${k}: the original is untouched`);
  }
  assert.ok(crashes >= 2, `crashed at ${crashes} points`);
  assertSparsified(pristine, img, 'after crashes');
  t.diagnostic(`sparsify: ${crashes} crash points, original untouched at each`);
});

test('sparsify on MBR: ext3 with 1 KiB blocks in a logical partition and FAT32 with 512-byte clusters', () => {
  const src = path.join(dir, 'mbr-src');
  fs.mkdirSync(src, { recursive: true });
  fs.writeFileSync(path.join(src, 'gone.bin'), bytes(2 * MiB + 100, 'gone'));
  fs.writeFileSync(path.join(src, 'kept.bin'), bytes(MiB + 1, 'kept'));
  const ext3 = path.join(dir, 'mbr-ext3.fs'), fat32 = path.join(dir, 'mbr-fat32.fs');
  run('mkfs.ext3', ['-q', '-F', '-b', '1024', '-d', src, ext3, '20M']);
  run('debugfs', ['-w', '-R', 'rm /gone.bin', ext3]);
  run('mkfs.vfat', ['-F', '32', '-s', '1', '-C', fat32, String(40 * 1024)]);
  run('mcopy', ['-i', fat32, path.join(src, 'gone.bin'), path.join(src, 'kept.bin'), '::/']);
  run('mdel', ['-i', fat32, '::/gone.bin']);
  const ext3Part = { start: 4096 + 40 * 2048, sectors: 20 * 2048 }, fatPart = { start: 2048, sectors: 40 * 2048 };
  const raw = path.join(dir, 'mbr.raw');
  buildDisk(raw, 64, 'dos', [
    { start: fatPart.start, size: fatPart.sectors, type: 'c', image: fat32 },
    { start: 2048 + 40 * 2048, size: 22 * 2048, type: '5' },
    { start: ext3Part.start, size: ext3Part.sectors, type: '83', image: ext3 },
  ]);
  const image = asImage(raw, 'plain'), out = path.join(dir, 'mbr.sparse.qcow2');
  const forecast = cliJsonOk<{ reclaim: { sparsify: number }; guest: { fileSystems: Array<{ partition: number; fs: string }> } }>('space', '--json', image);
  assert.deepEqual(forecast.guest.fileSystems.map(f => [f.partition, f.fs]), [[1, 'vfat'], [5, 'ext3']]);
  cliOk('sparsify', '-q', '-o', out, image);
  assert.ok(Math.abs(fs.statSync(image).size - fs.statSync(out).size - forecast.reclaim.sparsify) <= 2 * 65536);
  assert.ok(forecast.reclaim.sparsify >= 3 * MiB, `${forecast.reclaim.sparsify}`);
  assertClean(out);
  const a = guestRaw(image, path.join(dir, 'mbr-a.raw')), b = guestRaw(out, path.join(dir, 'mbr-b.raw'));
  assert.ok(changedBlocksAreZero(a, b) * 4096 >= 3 * MiB);
  const e = extractPartition(b, ext3Part, path.join(dir, 'mbr-p5.fs')), f = extractPartition(b, fatPart, path.join(dir, 'mbr-p1.fs'));
  run('e2fsck', ['-fn', e]);
  assert.doesNotMatch(run('fsck.vfat', ['-n', f]), /differ|Dirty|corrupt|wrong|Reclaimed/i);
  const kept = sha256(fs.readFileSync(path.join(src, 'kept.bin')));
  assert.equal(sha256(runBuffer('debugfs', ['-R', 'cat /kept.bin', e])), kept);
  assert.equal(sha256(runBuffer('mcopy', ['-n', '-i', f, '::/kept.bin', '-'])), kept);
});
