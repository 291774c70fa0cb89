/**
 * ext2/3/4 inside partitioned guest disks, read through raw files and qcow2 images made by
 * qemu-img (plain, compressed, with snapshots, as an overlay written by qemu-io), compared with
 * e2fsprogs: listings and contents with debugfs rdump, whose with icheck/ncheck, file maps with
 * debugfs blocks, free space with dumpe2fs.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, tmpDir, sha256 } from '../helpers/qemu';
import { openGuest } from '../../src/guest/guest';
import { openDiskImage } from '../../src/guest/qcow2Disk';
import type { GuestFileSystem } from '../../src/guest/fs';
import { asImage, buildDisk, cliJsonOk, cliOk, debugfs, dumpe2fsFreeRuns, hostTree, makeTree, mkfsExt, run, Variant } from './common';

const dir = tmpDir('qcow2-lens-guest-ext-');
const src = makeTree(path.join(dir, 'src'));
const MiB = 1024 * 1024;

// ext4 with 4 KiB blocks (extents, flex_bg, metadata_csum), ext3 with 1 KiB blocks and a journal,
// ext2 with 1 KiB blocks (big.bin needs double-indirect blocks).
const fsImages = {
  ext4: path.join(dir, 'ext4.fs'),
  ext3: path.join(dir, 'ext3.fs'),
  ext2: path.join(dir, 'ext2.fs'),
};
mkfsExt('ext4', fsImages.ext4, 40, src, ['-b', '4096']);
mkfsExt('ext3', fsImages.ext3, 30, src, ['-b', '1024']);
mkfsExt('ext2', fsImages.ext2, 30, src, ['-b', '1024']);
// A freed-but-allocated file: its blocks stay in the image but the block bitmap says free.
const deletedBlocks = debugfs(fsImages.ext4, 'blocks /many/file-100.txt').trim().split(/\s+/).map(Number);
run('debugfs', ['-w', '-R', 'rm /many/file-100.txt', fsImages.ext4]);

// GPT: 1 = ext4, 2 = ext3. MBR: 1 = ext2 (primary), 2 = extended, 5 = ext2 again (logical).
const gptRaw = path.join(dir, 'gpt.raw');
buildDisk(gptRaw, 80, 'gpt', [
  { start: 2048, size: 40 * 2048, type: '8300', image: fsImages.ext4 },
  { start: 2048 + 40 * 2048, size: 30 * 2048, type: '8300', image: fsImages.ext3 },
]);
const mbrRaw = path.join(dir, 'mbr.raw');
buildDisk(mbrRaw, 72, 'dos', [
  { start: 2048, size: 30 * 2048, type: '83', image: fsImages.ext2 },
  { start: 2048 + 30 * 2048, size: 34 * 2048, type: '5' },
  { start: 4096 + 30 * 2048, size: 30 * 2048, type: '83', image: fsImages.ext2 },
]);

interface Layout { disk: string; partition: number; fsImage: string; start: number }
const layouts: Layout[] = [
  { disk: gptRaw, partition: 1, fsImage: fsImages.ext4, start: 2048 * 512 },
  { disk: gptRaw, partition: 2, fsImage: fsImages.ext3, start: (2048 + 40 * 2048) * 512 },
  { disk: mbrRaw, partition: 1, fsImage: fsImages.ext2, start: 2048 * 512 },
  { disk: mbrRaw, partition: 5, fsImage: fsImages.ext2, start: (4096 + 30 * 2048) * 512 },
];

function rdump(fsImage: string): string {
  const out = fs.mkdtempSync(path.join(dir, 'rdump-'));
  debugfs(fsImage, `rdump / ${out}`);
  return out;
}
const rdumps = new Map<string, string>();
function rdumpOf(fsImage: string): string {
  if (!rdumps.has(fsImage)) rdumps.set(fsImage, rdump(fsImage));
  return rdumps.get(fsImage)!;
}

interface LsEntry { name: string; path: string; type: string; size: number; mode: number; mtime: string; target?: string }

function assertListingMatches(image: string, l: Layout): void {
  const ours = cliJsonOk<{ entries: LsEntry[] }>('ls', '--json', '-R', image, `${l.partition}:/`).entries.filter(e => !e.path.startsWith('/lost+found'));
  const theirs = hostTree(rdumpOf(l.fsImage));
  assert.deepEqual(ours.map(e => e.path).sort(), [...theirs.keys()].sort(), `${image} ${l.partition}: paths`);
  for (const e of ours) {
    const t = theirs.get(e.path)!;
    assert.equal(e.type, t.type, e.path);
    assert.equal(e.mode & 0o7777, t.mode, `${e.path}: mode`);
    if (t.type === 'symlink') assert.equal(e.target, t.target, `${e.path}: target`);
    else assert.equal(Date.parse(e.mtime) / 1000, t.mtime, `${e.path}: mtime`);
    if (t.type === 'file') assert.equal(e.size, t.size, `${e.path}: size`);
  }
}

test('partitions equal sfdisk --json, logical partitions numbered from 5, file systems identified and sized', () => {
  for (const disk of [gptRaw, mbrRaw]) {
    const theirs = JSON.parse(run('sfdisk', ['--json', disk])).partitiontable;
    const ours = cliJsonOk<{ table: string; partitions: Array<{ number: number; start: number; size: number; type: string; fs: string | null; fsSize?: number }> }>('partitions', '--json', disk);
    assert.equal(ours.table, theirs.label === 'dos' ? 'mbr' : 'gpt');
    const want = theirs.partitions.map((p: { node: string; start: number; size: number; type: string }) => ({ number: Number(/(\d+)$/.exec(p.node)![1]), start: p.start * 512, size: p.size * 512, type: p.type }));
    assert.deepEqual(ours.partitions.map(p => ({ number: p.number, start: p.start, size: p.size, type: p.type })).sort((a, b) => a.number - b.number), want.sort((a: { number: number }, b: { number: number }) => a.number - b.number));
  }
  const gpt = cliJsonOk<{ partitions: Array<{ number: number; fs: string; fsSize: number }> }>('partitions', '--json', gptRaw);
  assert.deepEqual(gpt.partitions.map(p => [p.number, p.fs, p.fsSize]), [[1, 'ext4', 40 * MiB], [2, 'ext3', 30 * MiB]]);
  const mbr = cliJsonOk<{ partitions: Array<{ number: number; fs: string }> }>('partitions', '--json', mbrRaw);
  assert.deepEqual(mbr.partitions.map(p => [p.number, p.fs]), [[1, 'ext2'], [2, 'extended'], [5, 'ext2']]);
});

for (const variant of ['raw', 'plain', 'compressed', 'snapshot', 'overlay'] as Variant[]) {
  test(`${variant}: ls -R equals debugfs rdump, cat equals the files' bytes`, () => {
    // Every layout on the raw disks and the plain conversion; the other qcow2 forms on one partition each (wall time).
    const full = variant === 'raw' || variant === 'plain';
    for (const disk of full ? [gptRaw, mbrRaw] : [gptRaw]) {
      const image = asImage(disk, variant);
      for (const l of layouts.filter(x => x.disk === disk && (full || x.partition === 1))) assertListingMatches(image, l);
      const part = disk === gptRaw ? 1 : 5;
      const files = ['big.bin', 'sparse.img', 'ünïcødé — 名前.txt', 'deep/level0/level1/level2/level3/level4/level5/level6/level7/leaf.txt', 'empty'];
      for (const f of full ? files : files.slice(0, 2)) {
        assert.equal(sha256(cliOk('cat', image, `${part}:/${f}`)), sha256(fs.readFileSync(path.join(src, f))), `${variant} ${part}:/${f}`);
      }
    }
  });
}

test('ls text forms: names, -l shows symlink targets; a path that is not there is one clear error', () => {
  const names = cliOk('ls', gptRaw, '1:/').toString().trim().split('\n');
  assert.deepEqual(names, fs.readdirSync(rdumpOf(fsImages.ext4)).sort());
  const long = cliOk('ls', '-l', gptRaw, '1:/').toString();
  assert.match(long, /^l.* link -> hello\.txt$/m);
  assert.match(long, /^-rwxr-xr-x .* run\.sh$/m);
  const missing = cliJsonOk<{ entries: unknown[] }>('ls', '--json', gptRaw, '1:/etc/fstab').entries;
  assert.equal(missing.length, 1);
  const { status, stderr } = cli('ls', gptRaw, '1:/nope');
  assert.equal(status, 1);
  assert.match(stderr, /\/nope: no such file or directory/);
});

test('cp copies a folder out with modes, times and symlinks as debugfs rdump does, and never outside DEST', () => {
  const image = asImage(gptRaw, 'plain');
  const dest = fs.mkdtempSync(path.join(dir, 'cp-'));
  cliOk('cp', image, '1:/', dest);
  const ours = hostTree(dest), theirs = hostTree(rdumpOf(fsImages.ext4));
  assert.deepEqual([...ours.keys()].sort(), [...theirs.keys()].sort());
  for (const [p, t] of theirs) {
    const o = ours.get(p)!;
    if (t.type === 'symlink') assert.deepEqual([o.type, o.target], [t.type, t.target], p);
    else assert.deepEqual({ ...o }, { ...t }, p);
  }
  // A single file into an existing folder, and refusing to overwrite.
  cliOk('cp', image, '1:/etc/fstab', dest);
  assert.equal(fs.readFileSync(path.join(dest, 'fstab'), 'utf8'), fs.readFileSync(path.join(src, 'etc/fstab'), 'utf8'));
  const again = cli('cp', image, '1:/etc/fstab', dest);
  assert.equal(again.status, 1);
  // A symlink planted in DEST is not followed.
  const trap = fs.mkdtempSync(path.join(dir, 'trap-'));
  const dest2 = fs.mkdtempSync(path.join(dir, 'cp2-'));
  fs.symlinkSync(trap, path.join(dest2, 'etc'));
  const r = cli('cp', image, '1:/etc', dest2);
  assert.equal(r.status, 1);
  assert.deepEqual(fs.readdirSync(trap), []);
});

async function withFs<T>(disk: string, partition: number, fn: (f: GuestFileSystem) => Promise<T>): Promise<T> {
  const d = await openDiskImage(disk);
  try {
    const g = await openGuest(d.disk);
    try { return await fn(g.fileSystem(partition)); } finally { await g.close(); }
  } finally { await d.close(); }
}

for (const l of layouts.slice(0, 3)) {
  const name = `${path.basename(l.fsImage)} (partition ${l.partition})`;
  test(`${name}: whose agrees with debugfs icheck/ncheck, fileRanges with debugfs blocks, freeRanges with dumpe2fs`, async () => {
    const bs = Number(/Block size:\s+(\d+)/.exec(run('dumpe2fs', ['-h', l.fsImage]))![1]);
    const blocks = Number(/Block count:\s+(\d+)/.exec(run('dumpe2fs', ['-h', l.fsImage]))![1]);
    const freeRuns = dumpe2fsFreeRuns(l.fsImage);
    await withFs(l.disk, l.partition, async f => {
      // Free space, streamed, equals dumpe2fs's free blocks.
      const ours: Array<[number, number]> = [];
      for await (const [s, n] of f.freeRanges()) ours.push([(s - l.start) / bs, (s - l.start) / bs + n / bs - 1]);
      assert.deepEqual(ours, freeRuns);

      // File → blocks equals debugfs blocks (data and mapping blocks).
      for (const file of ['/big.bin', '/sparse.img', '/many/file-119.txt', '/deep/level0']) {
        const theirs = debugfs(l.fsImage, `blocks ${file}`).trim().split(/\s+/).filter(Boolean).map(Number).sort((a, b) => a - b);
        const mine: number[] = [];
        for (const r of await f.fileRanges(file)) for (let b = 0; b < r.length / bs; b++) mine.push((r.guestOffset - l.start) / bs + b);
        assert.deepEqual(mine.sort((a, b) => a - b), theirs, `${name} ${file}`);
      }

      // Allocated blocks sampled across the file system: icheck names the inode, ncheck its path.
      const isFree = (b: number): boolean => freeRuns.some(([a, z]) => b >= a && b <= z);
      const sample: number[] = [];
      const step = Math.max(1, Math.floor(blocks / 90));
      for (let b = 1; b < blocks; b += step) if (!isFree(b)) sample.push(b);
      const icheck = new Map<number, number | null>();
      for (const line of debugfs(l.fsImage, `icheck ${sample.join(' ')}`).split('\n').slice(1)) {
        const m = /^(\d+)\s+(\d+|<block not found>)/.exec(line);
        if (m) icheck.set(Number(m[1]), m[2].startsWith('<') ? null : Number(m[2]));
      }
      const inodes = [...new Set([...icheck.values()].filter((x): x is number => x !== null && x >= 11))];
      const ncheck = new Map<number, string>();
      if (inodes.length) {
        for (const line of debugfs(l.fsImage, `ncheck ${inodes.join(' ')}`).split('\n').slice(1)) {
          const m = /^(\d+)\s+(.*)$/.exec(line);
          if (m && !ncheck.has(Number(m[1]))) ncheck.set(Number(m[1]), m[2].replace(/^\/+/, '/'));
        }
      }
      let files = 0, metadata = 0;
      for (const b of sample) {
        const w = await f.whose(l.start + b * bs + 7);
        const ino = icheck.get(b);
        if (ino === null || ino === undefined) {
          assert.equal(w.kind, 'metadata', `block ${b}: ${JSON.stringify(w)}`);
          assert.match(w.metadata!, /superblock|group descriptors|reserved GDT|bitmap|inode table|boot block/, `block ${b}`);
          metadata++;
        } else if (ino === 8) {
          assert.deepEqual([w.kind, w.metadata], ['metadata', 'journal'], `block ${b}`);
        } else if (ino === 7) {
          assert.equal(w.kind, 'metadata', `block ${b}`);
        } else {
          assert.equal(w.kind, 'file', `block ${b}: ${JSON.stringify(w)}`);
          assert.equal(w.inode, ino, `block ${b}`);
          if (ino >= 11) assert.equal(w.path, ncheck.get(ino), `block ${b}`);
          files++;
        }
      }
      assert.ok(files > 0 && metadata > 0, `sampled ${files} file blocks and ${metadata} metadata blocks`);
      const freeBlock = freeRuns[freeRuns.length - 1][0];
      assert.equal((await f.whose(l.start + freeBlock * bs)).kind, 'free');
    });
  });
}

test('a deleted file (debugfs rm): its blocks are still in the image but whose says free; the CLI agrees', async () => {
  const image = asImage(gptRaw, 'plain');
  const start = 2048 * 512;
  for (const b of deletedBlocks) {
    const w = cliJsonOk<{ kind: string; partition: number }>('whose', '--json', image, '--guest-offset', String(start + b * 4096));
    assert.deepEqual([w.kind, w.partition], ['free', 1]);
  }
  const big = Number(debugfs(fsImages.ext4, 'blocks /big.bin').trim().split(/\s+/)[5]);
  const w = cliJsonOk<{ kind: string; path: string; fileOffset: number }>('whose', '--json', image, '--guest-offset', String(start + big * 4096 + 100));
  assert.deepEqual([w.kind, w.path, w.fileOffset], ['file', '/big.bin', 5 * 4096 + 100]);
  assert.match(cliOk('whose', image, '--guest-offset', String(start + 1024)).toString(), /superblock/);
  assert.match(cliOk('whose', image, '--guest-offset', '512').toString(), /partition table/);
  assert.match(cliOk('whose', image, '--guest-offset', String(79 * MiB)).toString(), /unpartitioned|partition table/);
});

test('an ext4 that needs journal recovery or has errors is shown read-only with the warning; a disk without a table is one entry at 0', () => {
  const dirty = path.join(dir, 'dirty.fs');
  fs.copyFileSync(fsImages.ext4, dirty);
  run('debugfs', ['-w', '-R', 'feature needs_recovery', dirty]);
  run('debugfs', ['-w', '-R', 'ssv state 2', dirty]);
  const r = cliJsonOk<{ table: string; partitions: Array<{ number: number; start: number; fs: string; readOnly: boolean; warnings: string[] }> }>('partitions', '--json', dirty);
  assert.equal(r.table, 'none');
  assert.deepEqual([r.partitions[0].number, r.partitions[0].start, r.partitions[0].fs, r.partitions[0].readOnly], [0, 0, 'ext4', true]);
  assert.ok(r.partitions[0].warnings.some(w => /needs_recovery/.test(w)), JSON.stringify(r));
  assert.ok(r.partitions[0].warnings.some(w => /not cleanly unmounted/.test(w)));
  assert.ok(r.partitions[0].warnings.some(w => /errors/.test(w)));
  const ls = cli('ls', dirty, '/etc');
  assert.equal(ls.status, 0);
  assert.match(ls.stderr, /needs recovery/);
  assert.deepEqual(ls.stdout.toString().trim().split('\n'), ['fstab', 'shadow']);
});
