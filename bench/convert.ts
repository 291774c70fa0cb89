/**
 * Benchmark section: `qcow2-lens convert` against `qemu-img convert -t writeback` (the same
 * durability: qemu-img's default `-t unsafe` never flushes, ours syncs the output once before the
 * rename) on the compaction bench's 10 GiB image with 1 GiB of data, into qcow2, qcow2 -c, raw,
 * vpc and vmdk. Best of two runs each, the page cache warm for both.
 *
 * Run alone: `node build.mjs && node dist-test/bench/convert.js`; with BENCH_CONVERT_SMALL=1 a
 * 1 GiB source with 128 MiB of data is made instead (a quick look, not the reported figure).
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { benchCacheDir } from './images';
import { bestOf } from './measure';
import { CLI } from './section';

const MiB = 1024 ** 2;

export interface ConvertBenchRow { name: string; oursSeconds: number; qemuSeconds: number; oursCpuSeconds?: number; qemuCpuSeconds?: number; oursPeakMiB?: number; qemuPeakMiB?: number; mode: string }

function smallSource(): string {
  const img = path.join(benchCacheDir(), 'convert-1g-128m.qcow2');
  if (fs.existsSync(img)) return img;
  const tmp = img + '.tmp', data = path.join(benchCacheDir(), 'random-16m.bin');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, '1G']);
  fs.writeFileSync(data, crypto.randomBytes(16 * MiB));
  const cmds: string[] = [];
  for (let i = 0; i < 8; i++) cmds.push('-c', `write -s ${data} ${i * 128 * MiB} ${16 * MiB}`);
  execFileSync('qemu-io', [...cmds, tmp], { stdio: 'ignore' });
  fs.rmSync(data);
  fs.renameSync(tmp, img);
  return img;
}

const TARGETS: Array<{ label: string; args: string[]; ext: string }> = [
  { label: 'qcow2', args: ['-O', 'qcow2'], ext: 'qcow2' },
  { label: 'qcow2 -c', args: ['-c', '-O', 'qcow2'], ext: 'qcow2' },
  { label: 'raw', args: ['-O', 'raw'], ext: 'raw' },
  { label: 'vpc', args: ['-O', 'vpc'], ext: 'vhd' },
  { label: 'vmdk', args: ['-O', 'vmdk'], ext: 'vmdk' },
];

export function benchConvert(log: (line: string) => void = l => console.log(l)): ConvertBenchRow[] {
  const small = process.env.BENCH_CONVERT_SMALL === '1';
  // the compaction bench's source, loaded from its own built file (bundling it would run its main)
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded by path at run time, on purpose
  const src = small ? smallSource() : (require(path.join(__dirname, 'compact.js')) as { compactSource(): string }).compactSource();
  const dir = fs.mkdtempSync(path.join(benchCacheDir(), 'convert-'));
  const rows: ConvertBenchRow[] = [];
  try {
    for (const t of TARGETS) {
      const ours = path.join(dir, `ours.${t.ext}`), theirs = path.join(dir, `qemu.${t.ext}`);
      const q = bestOf(2, 'qemu-img', ['convert', '-t', 'writeback', ...t.args, src, theirs], () => fs.rmSync(theirs, { force: true }));
      const o = bestOf(2, process.execPath, [CLI, 'convert', ...t.args, src, ours], () => fs.rmSync(ours, { force: true }));
      const name = `${small ? '1 GiB, 128 MiB data' : '10 GiB, 1 GiB data'} → ${t.label} vs qemu-img convert -t writeback`;
      rows.push({
        name, oursSeconds: o.seconds, qemuSeconds: q.seconds, oursCpuSeconds: o.cpuSeconds, qemuCpuSeconds: q.cpuSeconds, oursPeakMiB: o.peakMiB, qemuPeakMiB: q.peakMiB,
        mode: 'durable: ours fsync+rename, qemu-img -t writeback flush; qemu-img -m 8, no -W',
      });
      log(`${name}: ours ${o.seconds.toFixed(2)} s, qemu-img ${q.seconds.toFixed(2)} s, ratio ${(o.seconds / q.seconds).toFixed(2)}`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

if (require.main === module) benchConvert();
