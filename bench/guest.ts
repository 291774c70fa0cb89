/**
 * Benchmark section: the guest lens on a multi-GiB ext4 guest. A 16 GiB disk (no partition table)
 * made by `mkfs.ext4 -d` from 1 GiB of files, of which half are then deleted with debugfs (their
 * blocks freed in the guest but still holding data, so `qemu-img convert` keeps them), turned into
 * qcow2 by `qemu-img convert`.
 *
 * - `space --json` (metadata reads only: the L1/L2 tables, ext4's group descriptors and block
 *   bitmaps) and `ls /` against `qemu-img map`, the nearest qemu-img walk; the issue's goal is under
 *   a second on a 16 GiB guest, whatever qemu-img takes.
 * - `sparsify -o` (drops the freed-but-allocated clusters, fsyncs its output once before the rename)
 *   against `qemu-img convert -t writeback` of the same image (same durability; qemu-img copies the
 *   freed clusters too, it cannot know they are free).
 * Each row notes the peak resident memory of both processes (GNU time's %M).
 *
 * Run alone: `node build.mjs && node dist-test/bench/guest.js`.
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { benchCacheDir } from './images';
import { type Measured, bestOf } from './measure';
import { CLI } from './section';

const MiB = 1024 ** 2;
const SBIN = { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` };

export interface GuestBenchRow { name: string; oursSeconds: number; qemuSeconds: number; note?: string }

/** The 16 GiB ext4 guest as qcow2, built once into the bench cache. */
export function ext4Guest(log: (line: string) => void): string {
  const img = path.join(benchCacheDir(), 'guest-ext4-16g.qcow2');
  if (fs.existsSync(img)) return img;
  log('building the 16 GiB ext4 guest (1 GiB of files, half deleted)…');
  const work = fs.mkdtempSync(path.join(benchCacheDir(), 'guest-build-'));
  try {
    const tree = path.join(work, 'tree');
    const names: string[] = [];
    for (let d = 0; d < 16; d++) {
      fs.mkdirSync(path.join(tree, `dir${d}`), { recursive: true });
      for (let f = 0; f < 16; f++) {
        const name = `dir${d}/file${f}.bin`;
        fs.writeFileSync(path.join(tree, name), crypto.randomBytes(4 * MiB));
        names.push(name);
      }
    }
    const raw = path.join(work, 'disk.raw');
    fs.writeFileSync(raw, '');
    fs.truncateSync(raw, 16 * 1024 * MiB);
    execFileSync('mkfs.ext4', ['-q', '-F', '-d', tree, raw], { env: SBIN, stdio: 'ignore' });
    // every other file deleted: 512 MiB freed in the guest, still data on the disk
    const rm = names.filter((_, i) => i % 2 === 0).map(n => `rm /${n}`).join('\n');
    fs.writeFileSync(path.join(work, 'rm.cmds'), rm + '\n');
    execFileSync('debugfs', ['-w', '-f', path.join(work, 'rm.cmds'), raw], { env: SBIN, stdio: 'ignore' });
    const tmp = img + '.tmp';
    execFileSync('qemu-img', ['convert', '-O', 'qcow2', raw, tmp]);
    fs.renameSync(tmp, img);
    return img;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

const mib = (m: Measured) => (m.peakMiB === undefined ? '?' : `${m.peakMiB.toFixed(0)} MiB`);
const peaks = (o: Measured, q: Measured) => `peak RSS ours ${mib(o)}, qemu-img ${mib(q)}`;

export function benchGuest(log: (line: string) => void = l => console.log(l)): GuestBenchRow[] {
  const src = ext4Guest(log);
  const rows: GuestBenchRow[] = [];
  const node = process.execPath;

  const qMap = bestOf(3, 'qemu-img', ['map', '--output=json', src]);
  const space = bestOf(3, node, [CLI, 'space', '--json', src]);
  const report = JSON.parse(space.stdout.toString('utf8')) as { reclaim: { compact: number; sparsify: number } };
  rows.push({ name: 'space 16 GiB ext4 guest vs qemu-img map', oursSeconds: space.seconds, qemuSeconds: qMap.seconds,
    note: `goal < 1 s; forecast: sparsify reclaims ${(report.reclaim.sparsify / MiB).toFixed(0)} MiB; ${peaks(space, qMap)}` });
  const ls = bestOf(3, node, [CLI, 'ls', src, '/']);
  rows.push({ name: 'ls / 16 GiB ext4 guest vs qemu-img map', oursSeconds: ls.seconds, qemuSeconds: qMap.seconds, note: `goal < 1 s; ${peaks(ls, qMap)}` });

  const dir = fs.mkdtempSync(path.join(benchCacheDir(), 'sparsify-'));
  try {
    const ours = path.join(dir, 'ours.qcow2'), theirs = path.join(dir, 'qemu.qcow2');
    const q = bestOf(2, 'qemu-img', ['convert', '-t', 'writeback', '-O', 'qcow2', src, theirs], () => fs.rmSync(theirs, { force: true }));
    const o = bestOf(2, node, [CLI, 'sparsify', '-q', '-o', ours, src], () => fs.rmSync(ours, { force: true }));
    const sizes = `output ${(fs.statSync(ours).size / MiB).toFixed(0)} MiB vs ${(fs.statSync(theirs).size / MiB).toFixed(0)} MiB`;
    rows.push({ name: 'sparsify 16 GiB ext4 guest vs qemu-img convert -t writeback', oursSeconds: o.seconds, qemuSeconds: q.seconds, note: `${sizes}; ${peaks(o, q)}` });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  for (const r of rows) log(`${r.name}: ours ${r.oursSeconds.toFixed(2)} s, qemu-img ${r.qemuSeconds.toFixed(2)} s, ratio ${(r.oursSeconds / r.qemuSeconds).toFixed(2)} (${r.note})`);
  return rows;
}

if (require.main === module) benchGuest();
