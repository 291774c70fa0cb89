/**
 * Benchmark section: `qcow2-lens check --json` against `qemu-img check --output=json` on the two
 * benchmark images of bench/images.ts (100 GiB preallocated: 1.6 M data clusters; 1 TiB scattered
 * with a snapshot: 2,048 L2 tables, shared clusters), as wall time of the CLI (Node start-up
 * included) and of the same check inside a running Node (the editor's case), median of the runs,
 * page cache warm for both; CPU time and peak memory of both processes beside it. The results must agree (our JSON without `findings` is byte-for-byte
 * qemu-img's), or the section fails.
 * Run alone: `node build.mjs && node dist-test/bench/bench.js check`.
 */
import { checkImage, formatCheckJson } from '../src/engine/check/check';
import { Qcow2Image } from '../src/engine/image/image';
import { measureRuns } from './measure';
import type { BenchContext, BenchSection, Row } from './section';

function med(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

export const checkSection: BenchSection = {
  name: 'check',
  async run(ctx: BenchContext): Promise<Row[]> {
    const rows: Row[] = [];
    for (const im of [ctx.images.prealloc100G, ctx.images.scattered1T]) {
      ctx.log(`  check on ${im.label}…`);
      const q = measureRuns('qemu-img', ['check', '--output=json', im.path], ctx.runs);
      const o = measureRuns(process.execPath, [ctx.cli, 'check', im.path, '--json'], ctx.runs);
      const inProc: number[] = [];
      let json = '';
      for (let i = 0; i < ctx.runs; i++) {
        const t0 = process.hrtime.bigint();
        const img = await Qcow2Image.open(im.path, { openBacking: false, openDataFile: false, zeroPastEof: true });
        try {
          json = formatCheckJson(await checkImage(img), false);
        } finally {
          await img.close();
        }
        inProc.push(Number(process.hrtime.bigint() - t0) / 1e9);
      }
      const mine = JSON.parse(o.stdout.toString()) as Record<string, unknown>;
      delete mine.findings;
      const qOut = q.stdout.toString();
      const same = JSON.stringify(mine, null, 4) + '\n' === qOut && json === qOut;
      if (!same) throw new Error(`check results differ on ${im.path}:\nours ${JSON.stringify(mine)}\nqemu-img ${qOut}`);
      rows.push({
        section: 'check', name: `check     ${im.label}`, oursSeconds: o.seconds, oursInProcessSeconds: med(inProc), qemuSeconds: q.seconds,
        oursCpuSeconds: o.cpuSeconds, qemuCpuSeconds: q.cpuSeconds, oursPeakMiB: o.peakMiB, qemuPeakMiB: q.peakMiB,
        mode: 'read-only, page cache warm, 1 thread each', note: 'same JSON',
      });
    }
    return rows;
  },
};
