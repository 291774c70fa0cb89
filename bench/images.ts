/**
 * The benchmark's large images, generated with QEMU's own tools and cached between runs in
 * $QCOW2_LENS_BENCH_CACHE or /var/tmp/qcow2-lens-bench (reused when the stamp written after a
 * successful generation still matches the file's size and modification time):
 *  - prealloc100G: `qemu-img create -o preallocation=metadata`, 100 GiB, 1,638,400 allocated
 *    clusters in 200 full L2 tables, sparse on disk (~16 MiB);
 *  - scattered1T: 1 TiB, 64 KiB clusters, 200,000 allocated clusters at pseudo-random guest
 *    offsets (every one of the 2,048 L2 tables in use), written by qemu-io reading `write`
 *    commands on stdin, with an internal snapshot taken halfway so later writes copy-on-write
 *    (a second L1 table to walk, shared clusters with refcount 2).
 * Other sections may use these paths; they are created on first use (~1 minute for the 1 TiB one,
 * ~13 GiB of disk because qemu-io zero-fills the rest of each written cluster).
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export function benchCacheDir(): string {
  const d = process.env.QCOW2_LENS_BENCH_CACHE ?? '/var/tmp/qcow2-lens-bench';
  fs.mkdirSync(d, { recursive: true });
  return d;
}

export interface BenchImage {
  /** Short label for tables. */
  label: string;
  path: string;
  description: string;
}

/** Bumped whenever the recipe below changes, so stale caches are regenerated. */
const RECIPE = 1;

interface Stamp {
  recipe: number;
  size: number;
  mtimeMs: number;
}

function stampPath(img: string): string {
  return img + '.stamp.json';
}

function isCached(img: string): boolean {
  try {
    const s = JSON.parse(fs.readFileSync(stampPath(img), 'utf8')) as Stamp;
    const st = fs.statSync(img);
    return s.recipe === RECIPE && s.size === st.size && s.mtimeMs === st.mtimeMs;
  } catch {
    return false;
  }
}

function writeStamp(img: string): void {
  const st = fs.statSync(img);
  fs.writeFileSync(stampPath(img), JSON.stringify({ recipe: RECIPE, size: st.size, mtimeMs: st.mtimeMs } satisfies Stamp));
}

async function generate(img: string, log: (s: string) => void, make: (tmp: string) => Promise<void>): Promise<void> {
  if (isCached(img)) return;
  const tmp = img + '.tmp';
  fs.rmSync(tmp, { force: true });
  fs.rmSync(stampPath(img), { force: true });
  log(`generating ${img} (cached for later runs)…`);
  const t0 = Date.now();
  await make(tmp);
  fs.renameSync(tmp, img);
  writeStamp(img);
  log(`  done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
}

/** Feeds qemu-io commands through its stdin (one process for many commands, cache=unsafe). */
function qemuIoStdin(image: string, commands: Iterable<string>): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn('qemu-io', ['-t', 'unsafe', image], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', d => { stderr += d; });
    p.on('error', reject);
    p.on('close', code => (code === 0 && stderr === '' ? resolve() : reject(new Error(`qemu-io exited ${code}: ${stderr.slice(0, 500)}`))));
    const lines: string[] = [];
    for (const c of commands) lines.push(c);
    lines.push('quit');
    p.stdin.end(lines.join('\n') + '\n');
  });
}

/** 200,000 distinct cluster indexes out of 2^24, from a fixed-seed xorshift (reproducible). */
function scatteredClusters(count: number, clusters: number): number[] {
  let x = 0x9e3779b9;
  const seen = new Set<number>();
  const out: number[] = [];
  while (out.length < count) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    const c = x % clusters;
    if (!seen.has(c)) { seen.add(c); out.push(c); }
  }
  return out;
}

export interface BenchImages {
  prealloc100G: BenchImage;
  scattered1T: BenchImage;
}

export const SCATTERED_CLUSTERS = 200000;

export async function prepareImages(log: (s: string) => void = s => console.error(s)): Promise<BenchImages> {
  const dir = benchCacheDir();
  const prealloc = path.join(dir, 'prealloc-100g.qcow2');
  await generate(prealloc, log, async tmp => {
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', tmp, '100G']);
  });
  const scattered = path.join(dir, 'scattered-1t.qcow2');
  await generate(scattered, log, async tmp => {
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, '1T']);
    const clusters = scatteredClusters(SCATTERED_CLUSTERS, 2 ** 24);
    const half = clusters.length / 2;
    const write = (c: number) => `write -q -P ${c & 0xff} ${c * 65536} 4k`;
    await qemuIoStdin(tmp, clusters.slice(0, half).map(write));
    execFileSync('qemu-img', ['snapshot', '-c', 'halfway', tmp]);
    // the second half, plus rewrites of every 10th cluster of the first half (copy-on-write)
    await qemuIoStdin(tmp, [...clusters.slice(half), ...clusters.slice(0, half).filter((_, i) => i % 10 === 0)].map(write));
  });
  return {
    prealloc100G: { label: '100G prealloc', path: prealloc, description: '100 GiB, preallocation=metadata, 1.6 M clusters' },
    scattered1T: { label: '1T scattered', path: scattered, description: `1 TiB, ${SCATTERED_CLUSTERS} scattered clusters + snapshot` },
  };
}

// (bundled into bench.js too, so the script name tells whether this file was run directly)
if (/[\\/]images\.js$/.test(process.argv[1] ?? '')) {
  prepareImages().then(i => console.log(JSON.stringify(i, null, 2)), e => { console.error(e); process.exitCode = 1; });
}
