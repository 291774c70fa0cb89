/**
 * `npm run bench`: our CLI and engine against qemu-img on large QEMU-generated images, printed
 * side by side as wall time (median of a few runs, page cache warm for both) and the ratio
 * ours / qemu-img (below 1: we are faster), with each side's CPU time (user + system) and peak
 * resident memory from GNU time, and each row's mode: what both sides guarantee (durability,
 * cache mode, threads), so every comparison is like for like. On a shared machine wall time is
 * noisy; CPU time and memory are the steadier columns.
 *
 * The benchmark is a list of sections. To add one: write bench/<name>.ts exporting a
 * `BenchSection` (or a function returning rows) and add one line to SECTIONS below.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Qcow2Image } from '../src/engine/image/image';
import { imageInfo } from '../src/engine/image/info';
import { writeMapJson } from '../src/engine/image/map';
import { checkSection } from './check';
import { editorSection } from './editor';
import { prepareImages } from './images';
import { type Measured, measureRuns } from './measure';
import { CLI, type BenchContext, type BenchSection, type Row } from './section';
import { metadataWalk } from './walk';

export type { BenchContext, BenchSection, Row } from './section';


export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Median wall and CPU time, peak memory of a command (stdout captured and returned from the last run). */
export function timeCommand(cmd: string, args: string[], runs: number): Measured {
  return measureRuns(cmd, args, runs);
}

/** A row's measured fields: ours against qemu-img's. */
export function versus(o: Measured, q: Measured): Pick<Row, 'oursSeconds' | 'qemuSeconds' | 'oursCpuSeconds' | 'qemuCpuSeconds' | 'oursPeakMiB' | 'qemuPeakMiB'> {
  return { oursSeconds: o.seconds, qemuSeconds: q.seconds, oursCpuSeconds: o.cpuSeconds, qemuCpuSeconds: q.cpuSeconds, oursPeakMiB: o.peakMiB, qemuPeakMiB: q.peakMiB };
}

/** Read-only rows: nothing written, page cache warm for both. */
const READ_ONLY = 'read-only, page cache warm, 1 thread each';

export async function timeAsync<T>(fn: () => Promise<T>, runs: number): Promise<{ seconds: number; result: T }> {
  const times: number[] = [];
  let result!: T;
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    result = await fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return { seconds: median(times), result };
}

async function inProcess<T>(image: string, fn: (img: Qcow2Image) => Promise<T>, runs: number): Promise<{ seconds: number; result: T }> {
  return timeAsync(async () => {
    const img = await Qcow2Image.open(image);
    try {
      return await fn(img);
    } finally {
      await img.close();
    }
  }, runs);
}

/** Node's own start-up, the floor under every CLI time. */
const startupSection: BenchSection = {
  name: 'startup',
  async run(ctx) {
    const node = timeCommand(process.execPath, ['-e', '0'], ctx.runs * 2);
    const qemu = timeCommand('qemu-img', ['--version'], ctx.runs * 2);
    // the CLI's own start-up on top of Node's: `info` of a 1 MiB image (issue goal: node + 15 ms)
    const small = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'qcow2-lens-bench-')), 'small.qcow2');
    spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', small, '1M']);
    const ours = timeCommand(process.execPath, [ctx.cli, 'info', small], ctx.runs * 2);
    const qInfo = timeCommand('qemu-img', ['info', small], ctx.runs * 2);
    fs.rmSync(path.dirname(small), { recursive: true, force: true });
    return [
      { section: 'startup', name: 'node -e 0  vs  qemu-img --version', ...versus(node, qemu), mode: 'no I/O' },
      { section: 'startup', name: 'info 1 MiB image', ...versus(ours, qInfo), mode: READ_ONLY, note: `${((ours.seconds - node.seconds) * 1000).toFixed(1)} ms over node -e 0` },
    ];
  },
};

/** info, map --json and the full metadata walk against qemu-img info / map / check. */
const readPathSection: BenchSection = {
  name: 'read path',
  async run(ctx) {
    const rows: Row[] = [];
    for (const im of [ctx.images.prealloc100G, ctx.images.scattered1T]) {
      ctx.log(`  info, map, walk on ${im.label}…`);
      const qInfo = timeCommand('qemu-img', ['info', '--output=json', im.path], ctx.runs);
      const oInfo = timeCommand(process.execPath, [ctx.cli, 'info', im.path, '--json'], ctx.runs);
      const pInfo = await inProcess(im.path, img => imageInfo(img), ctx.runs);
      const infoSame = deepEqualJson(JSON.parse(qInfo.stdout.toString()), JSON.parse(oInfo.stdout.toString()));
      rows.push({ section: 'read path', name: `info      ${im.label}`, ...versus(oInfo, qInfo), oursInProcessSeconds: pInfo.seconds, mode: READ_ONLY, note: infoSame ? 'same JSON' : 'JSON DIFFERS' });

      const qMap = timeCommand('qemu-img', ['map', '--output=json', im.path], ctx.runs);
      const oMap = timeCommand(process.execPath, [ctx.cli, 'map', im.path, '--json'], ctx.runs);
      const pMap = await inProcess(im.path, async img => { let bytes = 0; await writeMapJson(img, c => { bytes += c.length; }); return bytes; }, ctx.runs);
      const mapSame = qMap.stdout.equals(oMap.stdout);
      const lines = oMap.stdout.toString().split('\n').length - 1;
      rows.push({
        section: 'read path', name: `map       ${im.label}`, ...versus(oMap, qMap), oursInProcessSeconds: pMap.seconds, mode: READ_ONLY,
        note: `${lines} entries, ${mapSame ? 'same text' : 'TEXT DIFFERS (see README, Known differences)'}`,
      });

      const qCheck = timeCommand('qemu-img', ['check', im.path], ctx.runs);
      const oWalk = timeCommand(process.execPath, [path.join(__dirname, 'walk.js'), im.path], ctx.runs);
      const pWalk = await inProcess(im.path, img => metadataWalk(img), ctx.runs);
      const w = pWalk.result;
      rows.push({
        section: 'read path', name: `walk/check ${im.label}`, ...versus(oWalk, qCheck), oursInProcessSeconds: pWalk.seconds, mode: READ_ONLY,
        note: `${w.l1Tables} L1, ${w.l2Tables} L2 tables, ${w.allocatedEntries} entries, ${w.refcountedClusters} refcounted`,
      });
    }
    return rows;
  },
};

function deepEqualJson(a: unknown, b: unknown): boolean {
  if (typeof a !== typeof b) return false;
  if (a === null || b === null || typeof a !== 'object') return a === b;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a), kb = Object.keys(b as object);
  if (ka.length !== kb.length) return false;
  return ka.every(k => deepEqualJson((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

type LegacyRow = Omit<Row, 'section'>;

/**
 * A section living in its own bench/<file>.ts that exports a function returning
 * { name, oursSeconds, qemuSeconds } rows. It is loaded from its own built file (dist-test/bench/),
 * not bundled into this one, so its `require.main === module` guard keeps working.
 */
function fileSection(name: string, file: string, exportName: string): BenchSection {
  return {
    name,
    async run(ctx) {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded by path at run time, on purpose (above)
      const mod = require(path.join(__dirname, file)) as Record<string, (log: (l: string) => void) => LegacyRow[] | Promise<LegacyRow[]>>;
      const rows = await mod[exportName](l => ctx.log(`  ${l}`));
      return rows.map(r => ({ ...r, section: name, name: `${name.padEnd(9)} ${r.name}` }));
    },
  };
}

/** One line per section: add yours here. */
export const SECTIONS: BenchSection[] = [
  startupSection,
  readPathSection,
  checkSection,
  fileSection('compact', 'compact.js', 'benchCompact'),
  fileSection('convert', 'convert.js', 'benchConvert'),
  fileSection('manage', 'manage.js', 'benchManage'),
  fileSection('guest', 'guest.js', 'benchGuest'),
  fileSection('crypt', 'crypt.js', 'benchCrypt'),
  editorSection,
];

const num = (x: number | undefined, digits: number) => (x === undefined ? '' : x.toFixed(digits));

export function formatRows(rows: Row[]): string {
  const head = ['operation', 'ours CLI s', 'in-process s', 'qemu-img s', 'ours/qemu', 'ours CPU s', 'qemu CPU s', 'ours MiB', 'qemu MiB', 'mode (both sides)', 'note'];
  const body = rows.map(r => [
    r.name,
    r.oursSeconds.toFixed(3),
    num(r.oursInProcessSeconds, 3),
    num(r.qemuSeconds, 3),
    r.qemuSeconds ? (r.oursSeconds / r.qemuSeconds).toFixed(2) : '',
    num(r.oursCpuSeconds, 2),
    num(r.qemuCpuSeconds, 2),
    num(r.oursPeakMiB, 1),
    num(r.qemuPeakMiB, 1),
    r.mode ?? '',
    r.note ?? '',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map(b => b[i].length)));
  const left = new Set([0, head.length - 2, head.length - 1]);
  const fmt = (cells: string[]) => cells.map((c, i) => (left.has(i) ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  return [fmt(head), widths.map(w => '-'.repeat(w)).join('  '), ...body.map(fmt)].join('\n');
}

async function main(): Promise<void> {
  const only = process.argv.slice(2);
  const log = (l: string) => console.error(l);
  const images = await prepareImages(log);
  const ctx: BenchContext = { images, cli: CLI, runs: Number(process.env.BENCH_RUNS ?? 5), log };
  const rows: Row[] = [];
  for (const s of SECTIONS) {
    if (only.length && !only.includes(s.name)) continue;
    log(`section ${s.name}…`);
    try {
      rows.push(...(await s.run(ctx)));
    } catch (e) {
      log(`section ${s.name} failed: ${(e as Error).message}`);
      process.exitCode = 1;
    }
  }
  console.log(formatRows(rows));
}

if (/[\\/]bench\.js$/.test(process.argv[1] ?? '')) main().catch(e => { console.error(e); process.exitCode = 1; });
