// Bundles the extension host, the CLI, the webview and the tests with esbuild.
// Usage: node build.mjs [--watch] [--production]
import * as esbuild from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

const prod = process.argv.includes('--production');
const common = { bundle: true, sourcemap: !prod, minify: prod, logLevel: 'warning' };

function walk(dir, pred, out = []) {
  if (!fs.existsSync(dir)) return out;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) { if (e.name !== 'fixtures' && e.name !== 'suite') walk(p, pred, out); }
    else if (pred(p)) out.push(p);
  }
  return out;
}

// native/holes.c → dist/holes.node: lseek(SEEK_DATA/SEEK_HOLE) as a Node-API addon, compiled with the
// machine's C compiler against Node's own headers (no download). Optional: without it `map` cannot
// see host-file holes on metadata-preallocated images and says so.
function buildHoleSeeker() {
  const src = 'native/holes.c', out = 'dist/holes.node';
  if (!fs.existsSync(src)) return;
  if (fs.existsSync(out) && fs.statSync(out).mtimeMs >= fs.statSync(src).mtimeMs) return;
  const include = [process.env.NODE_API_INCLUDE, path.join(path.dirname(path.dirname(process.execPath)), 'include', 'node'), '/usr/include/node']
    .find(d => d && fs.existsSync(path.join(d, 'node_api.h')));
  if (!include) { console.warn('build: Node-API headers not found; map will not see host-file holes'); return; }
  fs.mkdirSync('dist', { recursive: true });
  const r = spawnSync(process.env.CC || 'cc', ['-O2', '-shared', '-fPIC', '-Wall', `-I${include}`, src, '-o', out], { stdio: 'inherit' });
  if (r.status !== 0) console.warn('build: could not compile native/holes.c; map will not see host-file holes');
}

const builds = [];
if (fs.existsSync('src/extension/extension.ts')) builds.push({ ...common, entryPoints: ['src/extension/extension.ts'], outfile: 'dist/extension.js', platform: 'node', format: 'cjs', target: 'node18', external: ['vscode'] });
// The CLI: dist/cli.js (argument dispatch and help) and one bundle per command in dist/cli/, which
// main loads when that command runs (commands/index.ts's import('./x') resolves to ./cli/x.js), so
// `qcow2-lens info` does not load the compactor, the guest file systems or the crypto code.
const cliCommands = fs.readdirSync('src/cli/commands').filter(f => f.endsWith('.ts') && f !== 'index.ts').map(f => f.slice(0, -3));
const commandIndex = path.resolve('src/cli/commands/index.ts');
const commandsApart = {
  name: 'cli-commands-apart',
  setup(b) {
    // a stand-in module that require()s the command's bundle when the import() runs (a plain require:
    // an external import() would go through Node's slower ES-module loader)
    b.onResolve({ filter: /^\.\/[\w-]+$/ }, a => a.importer === commandIndex && cliCommands.includes(a.path.slice(2)) ? { path: a.path.slice(2), namespace: 'cli-command' } : undefined);
    b.onLoad({ filter: /.*/, namespace: 'cli-command' }, a => ({ contents: `module.exports = require('./cli/${a.path}.js');`, loader: 'js' }));
    b.onResolve({ filter: /^\.\/cli\/[\w-]+\.js$/ }, a => ({ path: a.path, external: true }));
  },
};
builds.push({ ...common, entryPoints: ['src/cli/main.ts'], outfile: 'dist/cli.js', platform: 'node', format: 'cjs', target: 'node18', banner: { js: '#!/usr/bin/env node' }, plugins: [commandsApart] });
builds.push({ ...common, entryPoints: Object.fromEntries(cliCommands.map(c => [c, `src/cli/commands/${c}.ts`])), outdir: 'dist/cli', platform: 'node', format: 'cjs', target: 'node18' });
const workerEntries = walk('src/engine', p => p.endsWith('.worker.ts'));
// flat names (dist/NAME.worker.js), wherever the source sits: io/workerFile.ts finds them there
if (workerEntries.length) builds.push({ ...common, entryPoints: Object.fromEntries(workerEntries.map(p => [path.basename(p, '.ts'), p])), outdir: 'dist', platform: 'node', format: 'cjs', target: 'node18' });
if (fs.existsSync('webview/main.ts')) builds.push({ ...common, entryPoints: ['webview/main.ts'], outfile: 'media/webview.js', platform: 'browser', format: 'iife', target: 'es2022' });
if (!prod) {
  const tests = [...walk('test', p => p.endsWith('.test.ts') || p === path.join('test', 'fuzz', 'run.ts')), ...walk('bench', p => p.endsWith('.ts') && !p.endsWith('.d.ts'))];
  if (tests.length) builds.push({ ...common, entryPoints: tests, outdir: 'dist-test', outbase: '.', platform: 'node', format: 'cjs', target: 'node18', external: ['vscode', 'playwright-core'] });
  if (fs.existsSync('test/suite')) builds.push({ ...common, entryPoints: walk('test/suite', p => p.endsWith('.ts')), outdir: 'dist-test/suite', platform: 'node', format: 'cjs', target: 'node18', external: ['vscode', 'mocha'] });
}
await Promise.all(builds.map(b => esbuild.build(b)));
buildHoleSeeker();
if (fs.existsSync('dist/cli.js')) fs.chmodSync('dist/cli.js', 0o755);
