// Bundles the extension host, the CLI, the webview and the tests with esbuild.
// Usage: node build.mjs [--watch] [--production]
import * as esbuild from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';

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

const builds = [];
if (fs.existsSync('src/extension/extension.ts')) builds.push({ ...common, entryPoints: ['src/extension/extension.ts'], outfile: 'dist/extension.js', platform: 'node', format: 'cjs', target: 'node18', external: ['vscode'] });
builds.push({ ...common, entryPoints: ['src/cli/main.ts'], outfile: 'dist/cli.js', platform: 'node', format: 'cjs', target: 'node18', banner: { js: '#!/usr/bin/env node' } });
const workerEntries = walk('src/engine', p => p.endsWith('.worker.ts'));
if (workerEntries.length) builds.push({ ...common, entryPoints: workerEntries, outdir: 'dist', platform: 'node', format: 'cjs', target: 'node18' });
if (fs.existsSync('webview/main.ts')) builds.push({ ...common, entryPoints: ['webview/main.ts'], outfile: 'media/webview.js', platform: 'browser', format: 'iife', target: 'es2022' });
if (!prod) {
  const tests = [...walk('test', p => p.endsWith('.test.ts')), ...walk('bench', p => p.endsWith('.ts') && !p.endsWith('.d.ts'))];
  if (tests.length) builds.push({ ...common, entryPoints: tests, outdir: 'dist-test', outbase: '.', platform: 'node', format: 'cjs', target: 'node18', external: ['vscode', 'playwright-core'] });
  if (fs.existsSync('test/suite')) builds.push({ ...common, entryPoints: walk('test/suite', p => p.endsWith('.ts')), outdir: 'dist-test/suite', platform: 'node', format: 'cjs', target: 'node18', external: ['vscode', 'mocha'] });
}
await Promise.all(builds.map(b => esbuild.build(b)));
if (fs.existsSync('dist/cli.js')) fs.chmodSync('dist/cli.js', 0o755);
