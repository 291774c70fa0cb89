/**
 * Benchmark section: `qcow2-lens check --json` against `qemu-img check --output=json` on two
 * images, as a time ratio (ours / qemu-img; below 1 is faster), best of three runs each with the
 * page cache warm for both:
 *  - a 100 GiB image with preallocation=metadata (1.6 M data clusters, 200 L2 tables);
 *  - an 8 GiB image with 60 000 scattered 4 KiB writes in shuffled order and one snapshot
 *    (fragmented: many L2 tables, shared clusters, a snapshot L1 table).
 * Both are generated once and cached in $QCOW2_LENS_BENCH_CACHE or the system temp folder. The
 * results must also agree (same JSON without `findings`), or the section fails.
 * Run alone: `node build.mjs && node dist-test/bench/check.js`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const ROOT = (() => {
  let d = __dirname;
  while (!fs.existsSync(path.join(d, 'package.json')) && path.dirname(d) !== d) d = path.dirname(d);
  return d;
})();
const CLI = path.join(ROOT, 'dist', 'cli.js');

export interface CheckBenchRow {
  name: string;
  oursSeconds: number;
  qemuSeconds: number;
  timeRatio: number;
}

function cacheDir(): string {
  const d = process.env.QCOW2_LENS_BENCH_CACHE ?? path.join(os.tmpdir(), 'qcow2-lens-bench');
  fs.mkdirSync(d, { recursive: true });
  return d;
}

export function checkImages(): { name: string; path: string }[] {
  const big = path.join(cacheDir(), 'check-100g-prealloc.qcow2');
  if (!fs.existsSync(big)) {
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', big + '.tmp', '100G']);
    fs.renameSync(big + '.tmp', big);
  }
  const frag = path.join(cacheDir(), 'check-8g-fragmented.qcow2');
  if (!fs.existsSync(frag)) {
    const tmp = frag + '.tmp';
    fs.rmSync(tmp, { force: true });
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, '8G']);
    const n = 60000, slots = (8 * 1024 ** 3) / 65536;
    // a fixed permutation-like order (multiplicative stride) so host order differs from guest order
    const offsets = Array.from({ length: n }, (_, i) => ((i * 2654435761) % slots) * 65536);
    for (let i = 0; i < n; i += 4000) {
      const args: string[] = [];
      for (const o of offsets.slice(i, i + 4000)) args.push('-c', `write -P ${(o >> 16) & 0xff} ${o} 4k`);
      execFileSync('qemu-io', [...args, tmp], { stdio: 'ignore' });
      if (i === 32000) execFileSync('qemu-img', ['snapshot', '-c', 'half', tmp]);
    }
    fs.renameSync(tmp, frag);
  }
  return [{ name: '100 GiB preallocated (1.6 M clusters)', path: big }, { name: '8 GiB fragmented + snapshot (60 k writes)', path: frag }];
}

function timed(cmd: string, args: string[]): { seconds: number; stdout: string } {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return { seconds: Number(process.hrtime.bigint() - t0) / 1e9, stdout: r.stdout };
}

export function benchCheck(log: (line: string) => void = l => console.log(l)): CheckBenchRow[] {
  const rows: CheckBenchRow[] = [];
  for (const { name, path: img } of checkImages()) {
    let ours = Infinity, qemu = Infinity, oursOut = '', qemuOut = '';
    for (let i = 0; i < 3; i++) {
      const q = timed('qemu-img', ['check', '--output=json', img]);
      const o = timed(process.execPath, [CLI, 'check', img, '--json']);
      qemu = Math.min(qemu, q.seconds);
      ours = Math.min(ours, o.seconds);
      qemuOut = q.stdout; oursOut = o.stdout;
    }
    const mine = JSON.parse(oursOut) as Record<string, unknown>;
    delete mine.findings;
    if (JSON.stringify(mine, null, 4) + '\n' !== qemuOut) throw new Error(`check results differ on ${img}:\n${JSON.stringify(mine)}\n${qemuOut}`);
    const row = { name, oursSeconds: ours, qemuSeconds: qemu, timeRatio: ours / qemu };
    rows.push(row);
    log(`check  ${name.padEnd(44)} ours ${ours.toFixed(3)} s  qemu-img ${qemu.toFixed(3)} s  ratio ${row.timeRatio.toFixed(2)}`);
  }
  return rows;
}

if (require.main === module) benchCheck();
