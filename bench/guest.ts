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
import { execFileSync, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { benchCacheDir } from './images';
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

/** Wall seconds and peak resident KiB of one run (GNU time), stdout returned. */
function measured(cmd: string, args: string[]): { seconds: number; peakKiB: number; stdout: string } {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%M', cmd, ...args], { encoding: 'utf8', maxBuffer: 256 * MiB });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  return { seconds, peakKiB: Number(lines[lines.length - 1]), stdout: r.stdout };
}

const best = (runs: number, fn: () => { seconds: number; peakKiB: number; stdout: string }) => {
  let out = fn();
  for (let i = 1; i < runs; i++) { const r = fn(); if (r.seconds < out.seconds) out = r; }
  return out;
};

const mib = (kib: number) => `${(kib / 1024).toFixed(0)} MiB`;
const peaks = (o: { peakKiB: number }, q: { peakKiB: number }) => `peak RSS ours ${mib(o.peakKiB)}, qemu-img ${mib(q.peakKiB)}`;

export function benchGuest(log: (line: string) => void = l => console.log(l)): GuestBenchRow[] {
  const src = ext4Guest(log);
  const rows: GuestBenchRow[] = [];
  const node = process.execPath;

  const qMap = best(3, () => measured('qemu-img', ['map', '--output=json', src]));
  const space = best(3, () => measured(node, [CLI, 'space', '--json', src]));
  const report = JSON.parse(space.stdout) as { reclaim: { compact: number; sparsify: number } };
  rows.push({ name: 'space 16 GiB ext4 guest vs qemu-img map', oursSeconds: space.seconds, qemuSeconds: qMap.seconds,
    note: `goal < 1 s; forecast: sparsify reclaims ${(report.reclaim.sparsify / MiB).toFixed(0)} MiB; ${peaks(space, qMap)}` });
  const ls = best(3, () => measured(node, [CLI, 'ls', src, '/']));
  rows.push({ name: 'ls / 16 GiB ext4 guest vs qemu-img map', oursSeconds: ls.seconds, qemuSeconds: qMap.seconds, note: `goal < 1 s; ${peaks(ls, qMap)}` });

  const dir = fs.mkdtempSync(path.join(benchCacheDir(), 'sparsify-'));
  try {
    const ours = path.join(dir, 'ours.qcow2'), theirs = path.join(dir, 'qemu.qcow2');
    const q = best(2, () => { fs.rmSync(theirs, { force: true }); return measured('qemu-img', ['convert', '-t', 'writeback', '-O', 'qcow2', src, theirs]); });
    const o = best(2, () => { fs.rmSync(ours, { force: true }); return measured(node, [CLI, 'sparsify', '-q', '-o', ours, src]); });
    const sizes = `output ${(fs.statSync(ours).size / MiB).toFixed(0)} MiB vs ${(fs.statSync(theirs).size / MiB).toFixed(0)} MiB`;
    rows.push({ name: 'sparsify 16 GiB ext4 guest vs qemu-img convert -t writeback', oursSeconds: o.seconds, qemuSeconds: q.seconds, note: `${sizes}; ${peaks(o, q)}` });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  for (const r of rows) log(`${r.name}: ours ${r.oursSeconds.toFixed(2)} s, qemu-img ${r.qemuSeconds.toFixed(2)} s, ratio ${(r.oursSeconds / r.qemuSeconds).toFixed(2)} (${r.note})`);
  return rows;
}

if (require.main === module) benchGuest();
