/**
 * The editor section: the editor's speed in a real VS Code (bench/editor-view.mjs drives code-server
 * with the packaged .vsix in headless chromium). Goals from the editor issue: from the open to the
 * first tree row and the badges under 300 ms on the 1 TiB scattered image, a hex scroll step under
 * 16 ms. The qemu-img column is `qemu-img info` of the same image — the command-line look at an
 * image the editor's first screen replaces — so the ratio says how the first picture compares with
 * the first text; scroll rows have no qemu-img counterpart.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { measureRuns } from './measure';
import { ROOT, type BenchSection, type Row } from './section';

interface Open { webview: number; script: number; summary: number; badges: number; tree: number }
interface Scroll { workMedian: number; workP95: number; drawnMedian: number; drawnP95: number; filledMedian: number; filledP95: number }
interface ImageResult { image: string; first: Open; open: Open; scroll: Record<'File' | 'Disk', Scroll> }

const MODE = 'read-only; real VS Code (code-server) + headless chromium, check on open off';
const ms = (x: number) => `${x.toFixed(0)} ms`;

export const editorSection: BenchSection = {
  name: 'editor',
  async run(ctx) {
    const setup = spawnSync('bash', [path.join(ROOT, 'e2e/setup.sh')], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
    if (setup.status !== 0) throw new Error('e2e/setup.sh failed: the editor section needs code-server');
    const images = [ctx.images.scattered1T, ctx.images.prealloc100G];
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bench/editor-view.mjs'), String(ctx.runs), ...images.map(i => i.path)],
      { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, stdio: ['ignore', 'pipe', 'pipe'] });
    for (const line of r.stderr.split('\n').filter(Boolean)) ctx.log(line);
    if (r.status !== 0) throw new Error(`bench/editor-view.mjs exited ${r.status}`);
    const { images: results } = JSON.parse(r.stdout.trim().split('\n').pop()!) as { images: ImageResult[] };
    const rows: Row[] = [];
    for (const [i, res] of results.entries()) {
      const im = images[i];
      const info = measureRuns('qemu-img', ['info', '--output=json', im.path], ctx.runs);
      const o = res.open;
      rows.push({
        section: 'editor', name: `open → tree ${im.label}`, oursSeconds: o.tree / 1000, qemuSeconds: info.seconds, qemuCpuSeconds: info.cpuSeconds, qemuPeakMiB: info.peakMiB, mode: MODE,
        note: `goal 300 ms; badges ${ms(o.badges)}; webview made ${ms(o.webview)}, script ${ms(o.script)}, summary ${ms(o.summary)}; first open ${ms(res.first.tree)}`,
      });
      for (const space of ['File', 'Disk'] as const) {
        const s = res.scroll[space];
        rows.push({
          section: 'editor', name: `hex scroll ${space.toLowerCase()} ${im.label}`, oursSeconds: s.workMedian / 1000, mode: MODE,
          note: `goal 16 ms a step (render work; p95 ${s.workP95.toFixed(1)} ms); on screen after ${s.drawnMedian.toFixed(0)} ms (p95 ${s.drawnP95.toFixed(0)}), bytes from the host after ${s.filledMedian.toFixed(0)} ms (p95 ${s.filledP95.toFixed(0)})`,
        });
      }
    }
    return rows;
  },
};
