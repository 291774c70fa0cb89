/**
 * The guest disk the space and sparsify tests share: GPT with an ext4 partition (mkfs.ext4 -d, then
 * a big file removed with debugfs -w rm, so its blocks are free but still hold data), a FAT16
 * partition (mkfs.vfat + mcopy, then mdel of a big file) and a Linux swap partition full of old
 * bytes (random data, then mkswap); and the host-side readers that judge a sparsified copy.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { qemuImg, qemuIo, sha256 } from '../helpers/qemu';
import { buildDisk, bytes, debugfs, hostTree, run, runBuffer } from './common';

export const MiB = 1024 * 1024;
export const EXT = { number: 1, start: 2048, sectors: 24 * 2048 };
export const FAT = { number: 2, start: 2048 + 24 * 2048, sectors: 16 * 2048 };
export const SWAP = { number: 3, start: 2048 + 40 * 2048, sectors: 8 * 2048 };

export interface GuestDiskFiles { raw: string; ext4: string; fat: string; swap: string; extFiles: string; fatFiles: string[] }

export function buildSpaceDisk(dir: string): GuestDiskFiles {
  const src = path.join(dir, 'ext-src');
  fs.mkdirSync(path.join(src, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(src, 'deleted.bin'), bytes(3 * MiB, 'deleted'));
  fs.writeFileSync(path.join(src, 'keep.bin'), bytes(2 * MiB + 777, 'keep'));
  fs.writeFileSync(path.join(src, 'etc', 'fstab'), 'UUID=abc / ext4 defaults 0 1\n');
  const sparse = path.join(src, 'sparse.img');
  fs.writeFileSync(sparse, 'head');
  fs.truncateSync(sparse, 4 * MiB);
  fs.appendFileSync(sparse, 'tail');
  fs.symlinkSync('etc/fstab', path.join(src, 'link'));
  const ext4 = path.join(dir, 'ext4.fs');
  run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', src, ext4, '24M']);
  run('debugfs', ['-w', '-R', 'rm /deleted.bin', ext4]);
  fs.rmSync(path.join(src, 'deleted.bin'));

  const fsrc = path.join(dir, 'fat-src');
  fs.mkdirSync(path.join(fsrc, 'DIR'), { recursive: true });
  fs.writeFileSync(path.join(fsrc, 'DELETED.BIN'), bytes(MiB + 5, 'fat-deleted'));
  fs.writeFileSync(path.join(fsrc, 'KEEP.DAT'), bytes(500 * 1024 + 3, 'fat-keep'));
  fs.writeFileSync(path.join(fsrc, 'DIR', 'HELLO.TXT'), 'hello, fat\n');
  const fat = path.join(dir, 'fat16.fs');
  run('mkfs.vfat', ['-F', '16', '-C', fat, String(16 * 1024)]);
  run('mcopy', ['-s', '-m', '-i', fat, ...fs.readdirSync(fsrc).map(n => path.join(fsrc, n)), '::/']);
  run('mdel', ['-i', fat, '::/DELETED.BIN']);

  const swap = path.join(dir, 'swap.fs');
  fs.writeFileSync(swap, bytes(8 * MiB, 'old swap'));
  run('mkswap', ['-q', swap]);

  const raw = path.join(dir, 'disk.raw');
  buildDisk(raw, 56, 'gpt', [
    { ...part(EXT), type: '8300', image: ext4 },
    { ...part(FAT), type: '0700', image: fat },
    { ...part(SWAP), type: '8200', image: swap },
  ]);
  return { raw, ext4, fat, swap, extFiles: src, fatFiles: ['/KEEP.DAT', '/DIR/HELLO.TXT'] };
}

function part(p: { start: number; sectors: number }): { start: number; size: number } {
  return { start: p.start, size: p.sectors };
}

/** A partition of a raw disk copied out to a file of its own (for e2fsck, debugfs, fsck.vfat, mtools). */
export function extractPartition(raw: string, p: { start: number; sectors: number }, out: string): string {
  run('dd', [`if=${raw}`, `of=${out}`, 'bs=512', `skip=${p.start}`, `count=${p.sectors}`, 'status=none']);
  return out;
}

/** The guest disk of an image as a raw file. */
export function guestRaw(image: string, out: string): string {
  fs.rmSync(out, { force: true });
  qemuImg('convert', '-q', '-O', 'raw', image, out);
  return out;
}

/** Files of the ext4 partition (debugfs rdump) as path → sha; of the FAT partition (mcopy), likewise. */
export function guestFiles(raw: string, dir: string, fatFiles: string[]): Map<string, string> {
  const out = new Map<string, string>();
  const ext = extractPartition(raw, EXT, path.join(dir, 'p1.fs'));
  const dump = fs.mkdtempSync(path.join(dir, 'rdump-'));
  debugfs(ext, `rdump / ${dump}`);
  for (const [p, e] of hostTree(dump)) out.set(`1:${p}`, e.type === 'file' ? e.sha! : `${e.type} ${e.target ?? ''}`);
  fs.rmSync(dump, { recursive: true, force: true });
  const fat = extractPartition(raw, FAT, path.join(dir, 'p2.fs'));
  for (const f of fatFiles) out.set(`2:${f}`, sha256(runBuffer('mcopy', ['-n', '-i', fat, `::${f}`, '-'])));
  return out;
}

/** e2fsck -fn and fsck.vfat -n of both file systems of a guest disk find nothing. */
export function assertFileSystemsClean(raw: string, dir: string): void {
  const ext = extractPartition(raw, EXT, path.join(dir, 'fsck-p1.fs'));
  run('e2fsck', ['-fn', ext]); // exits non-zero (and throws) on any problem
  const fat = extractPartition(raw, FAT, path.join(dir, 'fsck-p2.fs'));
  const out = run('fsck.vfat', ['-n', fat]);
  assert.doesNotMatch(out, /differ|Dirty|corrupt|Free cluster summary wrong|Reclaimed/i, out);
}

/** Every 4 KiB block that differs between two guest disks reads as zero in `after`: only free space was dropped. */
export function changedBlocksAreZero(before: string, after: string): number {
  const a = fs.readFileSync(before), b = fs.readFileSync(after);
  assert.equal(a.length, b.length);
  const zero = Buffer.alloc(4096);
  let changed = 0;
  for (let o = 0; o < a.length; o += 4096) {
    const x = a.subarray(o, o + 4096), y = b.subarray(o, o + 4096);
    if (x.equals(y)) continue;
    changed++;
    assert.ok(y.equals(zero.subarray(0, y.length)), `guest block at 0x${o.toString(16)} changed to something other than zeros`);
  }
  return changed;
}

/**
 * An overlay whose own clusters hold guest free space: the base is the whole disk (qemu-img
 * convert), and the overlay rewrites the disk's first 48 MiB through qemu-io in 1 MiB pieces (the
 * all-zero ones skipped), as a guest would after booting from the template — so the freed files'
 * clusters lie in the overlay, shadowing the same bytes in the base.
 */
export function overlayImage(raw: string): string {
  const base = raw.replace(/\.raw$/, '') + '.ovbase.qcow2', out = raw.replace(/\.raw$/, '') + '.ov.qcow2';
  fs.rmSync(base, { force: true });
  fs.rmSync(out, { force: true });
  qemuImg('convert', '-q', '-O', 'qcow2', raw, base);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', path.basename(base), '-F', 'qcow2', out);
  const fd = fs.openSync(raw, 'r');
  const chunk = Buffer.alloc(MiB), piece = out + '.piece';
  try {
    for (let at = 0; at < 48 * MiB; at += MiB) {
      const n = fs.readSync(fd, chunk, 0, MiB, at);
      if (chunk.subarray(0, n).every(b => b === 0)) continue;
      fs.writeFileSync(piece, chunk.subarray(0, n));
      qemuIo(out, [`write -s ${piece} ${at} ${n}`]);
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(piece, { force: true });
  }
  return out;
}
