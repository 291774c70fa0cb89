/* global document, performance, requestAnimationFrame -- page.evaluate callbacks run in the browser */
// The editor's speed in a real VS Code (code-server with the packaged .vsix, headless chromium), for
// the editor section of npm run bench (bench/editor.ts runs this and reads the JSON it prints last):
//   open    from the double-click in the explorer to the first tree row and to the badges, split
//           where it goes — the workbench making the webview (its document's timeOrigin), the
//           webview's script running (lens:script), the host answering the summary (lens:summary) and the tree levels asked for with it (lens:root),
//           the badges drawn (lens:badges), the tree's first level drawn (lens:tree); marks set by
//           webview/main.ts. The first open of the session (extension activation included) is
//           reported apart from the warm ones.
//   scroll  one scroll step in the hex view (File and Disk): the render's own work (what must fit in a
//           16 ms frame), and the latency from setting scrollTop to the rows being drawn (the browser's
//           scroll event and animation frame included) and to their bytes being filled in (they come
//           from the host).
// Usage: node bench/editor-view.mjs RUNS IMAGE...   (prints progress on stderr, JSON on stdout)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { OUT } from '../e2e/harness.mjs';
import { openWorkbench, poll, workbenchActions } from '../e2e/workbench.mjs';

const [runsArg, ...images] = process.argv.slice(2);
const RUNS = Number(runsArg) || 5;
const log = what => process.stderr.write(`  ${what}\n`);
const mark = log;
const folder = fs.mkdtempSync(path.join(os.tmpdir(), 'qcow2-lens-bench-editor-'));
const names = images.map((img, i) => {
  const name = `${i}-${path.basename(img)}`;
  fs.symlinkSync(path.resolve(img), path.join(folder, name));
  return name;
});
fs.mkdirSync(OUT, { recursive: true });

const median = xs => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN; };
const p95 = xs => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.min(s.length - 1, Math.ceil(s.length * 0.95) - 1)] : NaN; };

let wb;
const result = { images: [] };
try {
  wb = await openWorkbench({ folder, firstRow: names[0], mark, settings: { 'qcow2Lens.checkOnOpen': 'never' } });
  const { page, row } = wb;
  const actions = workbenchActions(page, { row, mark });
  for (const [i, name] of names.entries()) {
    const opens = [];
    for (let run = 0; run <= RUNS; run++) {
      await actions.palette('View: Close All Editors');
      await poll('all editors closed', async () => (await page.locator('.tab').count()) === 0);
      await page.waitForTimeout(500);
      const t0 = Date.now();
      await row(name).dblclick();
      const frame = await actions.imageFrame(name);
      const m = await poll('the open milestones', () => frame.evaluate(() => {
        const at = n => performance.getEntriesByName(n)[0]?.startTime;
        const tree = at('lens:tree');
        return tree === undefined ? undefined : {
          origin: performance.timeOrigin, script: at('lens:script'), summary: at('lens:summary'), root: at('lens:root'), badges: at('lens:badges'), tree,
        };
      }), 60000);
      // epoch milliseconds → milliseconds after the double-click
      const after = rel => m.origin + rel - t0;
      const o = { webview: m.origin - t0, script: after(m.script), summary: after(m.summary), root: after(m.root), badges: after(m.badges), tree: after(m.tree) };
      opens.push(o);
      log(`${name} open ${run === 0 ? '(first)' : run}: tree ${o.tree.toFixed(0)} ms (webview ${o.webview.toFixed(0)}, script ${o.script.toFixed(0)}, summary ${o.summary.toFixed(0)}, tree levels ${o.root.toFixed(0)}, badges ${o.badges.toFixed(0)})`);
    }
    // scroll steps in the hex view of the last open tab, File then Disk
    const frame = await actions.imageFrame(name);
    const scroll = {};
    for (const space of ['File', 'Disk']) {
      await frame.getByRole('button', { name: space, exact: true }).click();
      await page.waitForTimeout(300);
      scroll[space] = await frame.evaluate(async steps => {
        const sc = document.querySelector('.hex-scroll');
        const rows = document.querySelector('.hex-view .hex-row')?.parentElement;
        const frameWait = () => new Promise(r => { let done = false; const fin = () => { if (!done) { done = true; r(); } }; requestAnimationFrame(fin); setTimeout(fin, 50); });
        const drawn = [], filled = [], work = [];
        for (let k = 0; k < steps; k++) {
          const renders = Number(rows.dataset.renders ?? 0);
          const t = performance.now();
          sc.scrollTop += sc.clientHeight * 0.8 + k;
          while (Number(rows.dataset.renders ?? 0) === renders && performance.now() - t < 2000) await new Promise(r => setTimeout(r, 0));
          drawn.push(performance.now() - t);
          work.push(Number(rows.dataset.renderMs));
          while (/··/.test(rows.textContent) && performance.now() - t < 5000) await new Promise(r => setTimeout(r, 0));
          filled.push(performance.now() - t);
          await frameWait();
        }
        return { drawn, filled, work };
      }, 30);
      log(`${name} scroll ${space}: render work median ${median(scroll[space].work).toFixed(1)} ms, drawn median ${median(scroll[space].drawn).toFixed(1)} ms, filled median ${median(scroll[space].filled).toFixed(1)} ms`);
    }
    await page.screenshot({ path: path.join(OUT, `bench-editor-${i}.png`) });
    const warm = opens.slice(1);
    const pick = key => median(warm.map(o => o[key]));
    result.images.push({
      image: images[i],
      first: opens[0],
      open: { webview: pick('webview'), script: pick('script'), summary: pick('summary'), root: pick('root'), badges: pick('badges'), tree: pick('tree') },
      scroll: Object.fromEntries(Object.entries(scroll).map(([k, v]) => [k, { workMedian: median(v.work), workP95: p95(v.work), drawnMedian: median(v.drawn), drawnP95: p95(v.drawn), filledMedian: median(v.filled), filledP95: p95(v.filled) }])),
    });
  }
  console.log(JSON.stringify(result));
} catch (e) {
  console.error('editor bench failed:', e && e.stack || e);
  process.exitCode = 1;
} finally {
  await wb?.close();
  fs.rmSync(folder, { recursive: true, force: true });
}
