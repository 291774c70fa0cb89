/**
 * Benchmark section: compaction of a 10 GiB image holding 1 GiB of data against
 * `qemu-img convert -O qcow2` (uncompressed) and `qemu-img convert -c -O qcow2` (compressed: zlib, and zstd),
 * each as a time ratio (ours / qemu-img; below 1 is faster) and a size ratio.
 *
 * The source image is generated once (half incompressible, half text-like clusters, scattered
 * over the disk with qemu-io, plus zeroed ranges) and cached in bench/images.ts's cache folder
 * ($QCOW2_LENS_BENCH_CACHE or /var/tmp/qcow2-lens-bench). Run alone: `node build.mjs && node dist-test/bench/compact.js`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { benchCacheDir } from './images';
import { CLI } from './section';

const MiB = 1024 ** 2;

export interface CompactBenchRow {
  name: string;
  oursSeconds: number;
  qemuSeconds: number;
  timeRatio: number;
  oursBytes: number;
  qemuBytes: number;
  sizeRatio: number;
}

function cacheDir(): string {
  return benchCacheDir();
}

/** The 10 GiB / 1 GiB-of-data source, made with qemu-io writes from generated data files. */
export function compactSource(): string {
  const img = path.join(cacheDir(), 'compact-10g-1g.qcow2');
  if (fs.existsSync(img)) return img;
  const tmp = img + '.tmp';
  fs.rmSync(tmp, { force: true });
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, '10G']);
  // two 64 MiB data files: random bytes (incompressible) and words (compresses about 3:1)
  const rnd = path.join(cacheDir(), 'random-64m.bin'), txt = path.join(cacheDir(), 'text-64m.bin');
  fs.writeFileSync(rnd, crypto.randomBytes(64 * MiB));
  const words = ['qcow2', 'cluster', 'refcount', 'snapshot', 'table', 'guest', 'host', 'offset', 'bitmap', 'backing', 'lens', 'image'];
  const parts: string[] = [];
  let n = 0;
  const r = crypto.randomBytes(16 * MiB);
  for (let i = 0; n < 64 * MiB; i++) { const w = words[r[i % r.length] % words.length] + (r[(i * 7) % r.length] % 100) + ' '; parts.push(w); n += w.length; }
  fs.writeFileSync(txt, parts.join('').slice(0, 64 * MiB));
  // 16 extents of 64 MiB spread over the 10 GiB disk = 1 GiB of data; then a few zeroed ranges
  const cmds: string[] = [];
  for (let i = 0; i < 16; i++) cmds.push('-c', `write -s ${i % 2 ? txt : rnd} ${i * 640 * MiB} ${64 * MiB}`);
  for (let i = 0; i < 4; i++) cmds.push('-c', `write -z ${i * 2560 * MiB + 4 * MiB} ${8 * MiB}`);
  execFileSync('qemu-io', [...cmds, tmp], { stdio: 'ignore' });
  fs.renameSync(tmp, img);
  fs.rmSync(rnd); fs.rmSync(txt);
  return img;
}

function timed(cmd: string, args: string[]): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

export function benchCompact(log: (line: string) => void = l => console.log(l)): CompactBenchRow[] {
  const src = compactSource();
  const dir = fs.mkdtempSync(path.join(cacheDir(), 'run-'));
  const rows: CompactBenchRow[] = [];
  try {
    for (const compress of [false, 'zlib', 'zstd'] as const) {
      const ours = path.join(dir, 'ours.qcow2'), theirs = path.join(dir, 'qemu.qcow2');
      // best of two runs each, the page cache warm for both
      let o = Infinity, q = Infinity;
      for (let i = 0; i < 2; i++) {
        fs.rmSync(theirs, { force: true });
        q = Math.min(q, timed('qemu-img', ['convert', ...(compress ? ['-c'] : []), ...(compress === 'zstd' ? ['-o', 'compression_type=zstd'] : []), '-O', 'qcow2', src, theirs]));
        fs.rmSync(ours, { force: true });
        o = Math.min(o, timed(process.execPath, [CLI, 'compact', src, '-o', ours, ...(compress ? ['--compress', compress] : [])]));
      }
      const row: CompactBenchRow = {
        name: `compact 10 GiB image, 1 GiB data${compress ? `, ${compress}` : ''} vs qemu-img convert${compress ? ` -c${compress === 'zstd' ? ' -o compression_type=zstd' : ''}` : ''}`,
        oursSeconds: o, qemuSeconds: q, timeRatio: o / q,
        oursBytes: fs.statSync(ours).size, qemuBytes: fs.statSync(theirs).size, sizeRatio: fs.statSync(ours).size / fs.statSync(theirs).size,
      };
      rows.push(row);
      log(`${row.name}: ours ${o.toFixed(2)} s, qemu-img ${q.toFixed(2)} s, time ratio ${row.timeRatio.toFixed(2)}; size ratio ${row.sizeRatio.toFixed(3)} (${row.oursBytes} vs ${row.qemuBytes} bytes)`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

if (require.main === module) benchCompact();
