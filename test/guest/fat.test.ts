/**
 * FAT12/16/32 made by mkfs.vfat and filled by mcopy, as MBR partitions (one logical) and as a
 * whole disk without a table, read raw and through qcow2; compared with mtools: listings with
 * mdir, contents with mcopy to stdout, whose with the cluster chains mshowfat prints, free space
 * with mdir's "bytes free", and freed clusters after mdel.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, pokeBytes, sha256, tmpDir } from '../helpers/qemu';
import { openGuest } from '../../src/guest/guest';
import { openDiskImage } from '../../src/guest/qcow2Disk';
import { asImage, buildDisk, bytes, cliJsonOk, cliOk, run, runBuffer } from './common';

const dir = tmpDir('qcow2-lens-guest-fat-');
const src = path.join(dir, 'src');
fs.mkdirSync(path.join(src, 'EFI', 'BOOT'), { recursive: true });
fs.writeFileSync(path.join(src, 'EFI', 'BOOT', 'BOOTX64.EFI'), bytes(700 * 1024 + 3, 'efi'));
fs.writeFileSync(path.join(src, 'hello.txt'), 'hello, fat\n');
fs.writeFileSync(path.join(src, 'ReadMe.TXT'), 'mixed case\n');
fs.writeFileSync(path.join(src, 'A rather long file name with spaces.txt'), 'long\n');
fs.writeFileSync(path.join(src, 'ünïcødé 名前.txt'), 'unicode\n');
fs.writeFileSync(path.join(src, 'empty'), '');
fs.mkdirSync(path.join(src, 'many'));
for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(src, 'many', `entry-${i}.dat`), bytes(i * 700, `m${i}`));
const when = new Date('2023-04-05T06:07:08Z');
for (const p of ['hello.txt', 'ReadMe.TXT', 'EFI/BOOT/BOOTX64.EFI']) fs.utimesSync(path.join(src, p), when, when);

function mkfat(bits: 12 | 16 | 32, sizeK: number): string {
  const img = path.join(dir, `fat${bits}.fs`);
  run('mkfs.vfat', ['-F', String(bits), ...(bits === 32 ? ['-s', '1'] : []), '-C', img, String(sizeK)]);
  run('mcopy', ['-s', '-m', '-i', img, ...fs.readdirSync(src).map(n => path.join(src, n)), '::/']);
  return img;
}
const fat12 = mkfat(12, 3000), fat16 = mkfat(16, 20000), fat32 = mkfat(32, 40000);
const fat32Raw = path.join(dir, 'superfloppy.raw');
fs.copyFileSync(fat32, fat32Raw);

const mbrRaw = path.join(dir, 'fat-mbr.raw');
buildDisk(mbrRaw, 30, 'dos', [
  { start: 2048, size: 6000, type: '1', image: fat12 },
  { start: 10240, size: 44000, type: '5' },
  { start: 12288, size: 40000, type: '6', image: fat16 },
]);

const parts = [
  { disk: mbrRaw, partition: 1, fsImage: fat12, start: 2048 * 512 },
  { disk: mbrRaw, partition: 5, fsImage: fat16, start: 12288 * 512 },
  { disk: fat32Raw, partition: 0, fsImage: fat32, start: 0 },
];

function mdirPaths(img: string): string[] {
  return run('mdir', ['-/', '-b', '-i', img, '::']).split('\n').filter(Boolean).map(l => l.replace(/^::/, '').replace(/\/$/, ''));
}

test('partitions: FAT12 primary, FAT16 logical 5, FAT32 superfloppy (no table, one entry at 0), as sfdisk and mkfs.vfat made them', () => {
  const r = cliJsonOk<{ table: string; partitions: Array<{ number: number; start: number; fs: string | null; version?: string; fsSize?: number }> }>('partitions', '--json', mbrRaw);
  assert.equal(r.table, 'mbr');
  assert.deepEqual(r.partitions.map(p => [p.number, p.start, p.fs, p.version ?? null]), [[1, 2048 * 512, 'vfat', 'FAT12'], [2, 10240 * 512, 'extended', null], [5, 12288 * 512, 'vfat', 'FAT16']]);
  const s = cliJsonOk<{ table: string; partitions: Array<{ number: number; start: number; fs: string; version: string; fsSize: number }> }>('partitions', '--json', fat32Raw);
  assert.deepEqual([s.table, s.partitions.length, s.partitions[0].number, s.partitions[0].start, s.partitions[0].fs, s.partitions[0].version, s.partitions[0].fsSize], ['none', 1, 0, 0, 'vfat', 'FAT32', 40000 * 1024]);
});

for (const variant of ['raw', 'plain'] as const) {
  test(`${variant}: ls -R equals mdir, cat equals mcopy's bytes, times and modes as mtools keeps them`, () => {
    for (const p of parts) {
      const image = asImage(p.disk, variant);
      const ours = cliJsonOk<{ entries: Array<{ path: string; type: string; size: number; mtime: string; mode: number }> }>('ls', '--json', '-R', image, `${p.partition}:/`).entries;
      assert.deepEqual(ours.map(e => e.path).sort(), mdirPaths(p.fsImage).sort(), `${path.basename(p.fsImage)} listing`);
      for (const e of ours.filter(x => x.type === 'file')) {
        const theirs = runBuffer('mcopy', ['-n', '-i', p.fsImage, `::${e.path}`, '-']);
        assert.equal(e.size, theirs.length, e.path);
        assert.equal(sha256(cliOk('cat', image, `${p.partition}:${e.path}`)), sha256(theirs), e.path);
      }
      const hello = ours.find(e => e.path === '/hello.txt')!;
      assert.equal(hello.mtime, '2023-04-05T06:07:08Z');
      assert.equal(hello.mode, 0o100755);
      assert.ok(ours.some(e => e.path === '/ReadMe.TXT') && ours.some(e => e.path === '/ünïcødé 名前.txt'));
    }
  });
}

function chainOf(img: string, file: string): number[] {
  const out = run('mshowfat', ['-i', img, `::${file}`]);
  const clusters: number[] = [];
  for (const m of out.matchAll(/<(\d+)(?:-(\d+))?>/g)) for (let c = Number(m[1]); c <= Number(m[2] ?? m[1]); c++) clusters.push(c);
  return clusters;
}

function geometry(img: string): { dataOffset: number; clusterBytes: number } {
  const info = run('minfo', ['-i', img, '::']);
  const num = (re: RegExp): number => Number(re.exec(info)?.[1] ?? 0);
  const bps = num(/sector size: (\d+)/), spc = num(/cluster size: (\d+)/), reserved = num(/reserved \(boot\) sectors: (\d+)/);
  const fats = num(/fats: (\d+)/), rootSlots = num(/max available root directory slots: (\d+)/);
  const fatSectors = num(/sectors per fat: (\d+)/) || num(/Big fatlen=(\d+)/);
  return { dataOffset: (reserved + fats * fatSectors + Math.ceil((rootSlots * 32) / bps)) * bps, clusterBytes: spc * bps };
}

test('whose follows the FAT chains mshowfat prints; fileRanges are those chains; free space equals mdir; mdel frees clusters', async () => {
  for (const p of parts) {
    const work = path.join(dir, `whose-${path.basename(p.fsImage)}.raw`);
    fs.copyFileSync(p.disk, work);
    const fsImage = `${work}@@${p.start}`;
    const g = geometry(fsImage);
    const files = ['/EFI/BOOT/BOOTX64.EFI', '/hello.txt', '/many/entry-39.dat', '/A rather long file name with spaces.txt'];
    const chains = new Map(files.map(f => [f, chainOf(fsImage, f)]));
    const deleted = chainOf(fsImage, '/many/entry-30.dat');
    run('mdel', ['-i', fsImage, '::/many/entry-30.dat']);
    const d = await openDiskImage(work);
    try {
      const guest = await openGuest(d.disk);
      const f = guest.fileSystem(p.partition || undefined);
      for (const [file, chain] of chains) {
        const ranges = await f.fileRanges(file);
        const mine: number[] = [];
        for (const r of ranges) for (let k = 0; k < r.length / g.clusterBytes; k++) mine.push((r.guestOffset - p.start - g.dataOffset) / g.clusterBytes + 2 + k);
        assert.deepEqual(mine, chain, `${file}: chain`);
        for (const [i, c] of [[0, chain[0]], [chain.length - 1, chain[chain.length - 1]]]) {
          const w = await guest.whose(p.start + g.dataOffset + (c - 2) * g.clusterBytes + 5);
          assert.deepEqual([w.kind, w.path, w.fileOffset], ['file', file, i * g.clusterBytes + 5], `${file} cluster ${c}`);
        }
      }
      for (const c of deleted) assert.equal((await guest.whose(p.start + g.dataOffset + (c - 2) * g.clusterBytes)).kind, 'free');
      const freeBytes = Number(/([\d ]+) bytes free/.exec(run('mdir', ['-i', fsImage, '::']))![1].replace(/ /g, ''));
      let ours = 0;
      for await (const [, n] of f.freeRanges()) ours += n;
      assert.equal(ours, freeBytes, `${path.basename(p.fsImage)} free bytes`);
      assert.equal((await guest.whose(p.start + 3)).metadata, 'boot sector');
      const fatAt = p.start + Number(/reserved \(boot\) sectors: (\d+)/.exec(run('minfo', ['-i', fsImage, '::']))![1]) * 512 + 10;
      assert.equal((await guest.whose(fatAt)).metadata, 'FAT');
      await guest.close();
    } finally {
      await d.close();
    }
  }
});

test('the FAT dirty bit (boot sector state, as fsck.fat reports it) is shown as a read-only warning', () => {
  const img = path.join(dir, 'dirty16.fs');
  fs.copyFileSync(fat16, img);
  pokeBytes(img, 37, [0x01]);
  const fsck = spawnSync('fsck.fat', ['-n', img], { encoding: 'utf8' });
  assert.match(fsck.stdout + fsck.stderr, /dirty bit/i);
  const r = cliJsonOk<{ partitions: Array<{ readOnly: boolean; warnings: string[] }> }>('partitions', '--json', img);
  assert.equal(r.partitions[0].readOnly, true);
  assert.ok(r.partitions[0].warnings.some(w => /dirty bit/.test(w)), JSON.stringify(r));
  const ls = cli('ls', img, '/');
  assert.equal(ls.status, 0);
  assert.match(ls.stderr, /dirty bit/);
});
