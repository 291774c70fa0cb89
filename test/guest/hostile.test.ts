/**
 * Damaged and hostile guest structures: an EBR chain that loops, GPT headers with bad CRCs (the
 * backup is used, as sfdisk does) or an absurd entry count, ext superblocks and group descriptors
 * with impossible values, a FAT chain that loops. Each gives one clear error line (exit 1) naming
 * the structure and the guest offset — no crash, no hang (every run has a time limit).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, pokeBytes, tmpDir } from '../helpers/qemu';
import { crc32 } from '../../src/guest/crc32';
import { buildDisk, cliJsonOk, debugfs, mkfsExt, run } from './common';

const dir = tmpDir('qcow2-lens-guest-hostile-');

function lens(...args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000, maxBuffer: 64 * 1024 * 1024 });
  assert.notEqual(r.signal, 'SIGTERM', `qcow2-lens ${args.join(' ')} timed out`);
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function assertOneError(r: { status: number; stderr: string }, re: RegExp): void {
  assert.equal(r.status, 1, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.ok(lines.length <= 2, `one or two lines: ${r.stderr}`);
  assert.match(r.stderr, re);
  assert.doesNotMatch(r.stderr, /at .*\.js:\d+|TypeError|RangeError/);
}

test('an EBR chain that loops back to itself is refused with the EBR named', () => {
  const disk = path.join(dir, 'loop.raw');
  buildDisk(disk, 16, 'dos', [{ start: 2048, size: 20000, type: '5' }, { start: 4096, size: 4096, type: '83' }, { start: 10240, size: 4096, type: '83' }]);
  // EBR 1 sits at sector 2048; its link (entry 2) points at the second EBR. Point it back at itself.
  const ebr = 2048 * 512;
  const link = Buffer.alloc(16);
  link[4] = 0x05;
  link.writeUInt32LE(0, 8);
  link.writeUInt32LE(1, 12);
  pokeBytes(disk, ebr + 446 + 16, link);
  assertOneError(lens('partitions', disk), /EBR 2 at 0x100000: the chain of extended boot records loops/);
});

function writeGptHeaderField(disk: string, lba: number, field: number, value: number): void {
  const fd = fs.openSync(disk, 'r+');
  const h = Buffer.alloc(92);
  fs.readSync(fd, h, 0, 92, lba * 512);
  h.writeUInt32LE(value, field);
  h.writeUInt32LE(0, 16);
  h.writeUInt32LE(crc32(h), 16);
  fs.writeSync(fd, h, 0, 92, lba * 512);
  fs.closeSync(fd);
}

test('GPT: a damaged primary header falls back to the backup (as sfdisk does); both damaged, or absurd entry counts, are one clear error', () => {
  const disk = path.join(dir, 'gpt.raw');
  buildDisk(disk, 16, 'gpt', [{ start: 2048, size: 8192, type: '8300' }, { start: 10240, size: 8192, type: 'ef00' }]);
  const lastLba = 16 * 2048 - 1;
  pokeBytes(disk, 512 + 40, [0xff]); // first_usable_lba: the header CRC no longer matches
  const r = cliJsonOk<{ table: string; partitions: Array<{ number: number; start: number }>; warnings: string[] }>('partitions', '--json', disk);
  const theirs = JSON.parse(run('sfdisk', ['--json', disk])).partitiontable;
  assert.deepEqual(r.partitions.map(p => p.start), theirs.partitions.map((p: { start: number }) => p.start * 512));
  assert.match(r.warnings.join('\n'), /primary GPT is damaged \(primary header: header CRC32 does not match\); the backup/);
  pokeBytes(disk, lastLba * 512 + 40, [0xff]);
  assertOneError(lens('partitions', disk), /GPT at 0x200: no valid GPT: primary header: header CRC32 does not match; backup header: header CRC32 does not match/);

  const huge = path.join(dir, 'gpt-huge.raw');
  buildDisk(huge, 16, 'gpt', [{ start: 2048, size: 8192, type: '8300' }]);
  writeGptHeaderField(huge, 1, 80, 0x7fffffff);
  writeGptHeaderField(huge, lastLba, 80, 0x7fffffff);
  assertOneError(lens('partitions', huge), /2147483647 entries of 128 bytes exceed 1048576 bytes/);
});

test('ext: an impossible block size, inode count or table location is one error naming the superblock or descriptor and its offset', () => {
  const src = path.join(dir, 'tree');
  fs.mkdirSync(src, { recursive: true });
  fs.writeFileSync(path.join(src, 'a.txt'), 'a\n'.repeat(5000));
  const good = path.join(dir, 'good.fs');
  mkfsExt('ext4', good, 8, src, ['-b', '1024']);
  const cases: Array<[string, number, number[], RegExp]> = [
    ['log-block-size', 1024 + 24, [30, 0, 0, 0], /superblock at 0x400: s_log_block_size 30/],
    ['inodes-per-group', 1024 + 40, [0, 0, 0, 0], /superblock at 0x400: s_inodes_per_group 0/],
    ['blocks-count', 1024 + 4, [0xff, 0xff, 0xff, 0x7f], /superblock at 0x400: the superblock says 2147483647 blocks/],
    // Group descriptor 0 (block 2 with 1 KiB blocks): inode table far outside the file system.
    ['inode-table', 2048 + 8, [0xff, 0xff, 0xff, 0x0f], /group descriptor 0 at 0x800: inode table at block 268435455 lies outside/],
  ];
  for (const [name, at, bytes, re] of cases) {
    const img = path.join(dir, `bad-${name}.fs`);
    fs.copyFileSync(good, img);
    pokeBytes(img, at, bytes);
    assertOneError(lens('ls', img, '/'), re);
    const p = cliJsonOk<{ partitions: Array<{ fs: string; error?: string }> }>('partitions', '--json', img);
    assert.equal(p.partitions[0].fs, 'ext4');
    assert.match(p.partitions[0].error ?? '', re);
  }
  // A damaged extent header: our map says which inode and where; libext2fs's read is one line too.
  const img = path.join(dir, 'bad-extent.fs');
  fs.copyFileSync(good, img);
  const m = /located at block (\d+), offset (0x[0-9a-f]+)/.exec(debugfs(img, 'imap /a.txt'))!;
  pokeBytes(img, Number(m[1]) * 1024 + Number(m[2]) + 0x28, [0, 0]);
  assertOneError(lens('cat', img, '/a.txt'), /a\.txt: libext2fs .* failed|extent header/);
  const blk = Number(debugfs(good, 'blocks /a.txt').trim().split(/\s+/)[0]);
  assertOneError(lens('whose', img, '--guest-offset', String(blk * 1024)), /inode 12 → extent header at 0x[0-9a-f]+: no extent header magic/);
});

test('FAT: a chain that loops is refused instead of read as repeated data; a bad BPB is not taken for FAT', () => {
  const img = path.join(dir, 'loop16.fs');
  run('mkfs.vfat', ['-F', '16', '-C', img, '20000']);
  const data = path.join(dir, 'data.bin');
  fs.writeFileSync(data, Buffer.alloc(20000, 7));
  run('mcopy', ['-i', img, data, '::/DATA.BIN']);
  const first = Number(/<(\d+)/.exec(run('mshowfat', ['-i', img, '::/DATA.BIN']))![1]);
  const fatAt = Buffer.alloc(2);
  fs.readSync(fs.openSync(img, 'r'), fatAt, 0, 2, 14);
  const reserved = fatAt.readUInt16LE(0);
  pokeBytes(img, reserved * 512 + (first + 1) * 2, [first & 0xff, first >> 8]); // cluster first+1 → first
  assertOneError(lens('cat', img, '/DATA.BIN'), /cluster chain does not end after \d+ clusters \(a loop in the FAT/);
  pokeBytes(img, 13, [3]); // sectors per cluster 3: not a power of two
  const r = lens('ls', img, '/');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /loop16.fs: (no browsable file system|the disk has no partitions)/);
});
