/**
 * The CLI loads only the command it runs: dist/cli.js dispatches, and each command is its own bundle
 * in dist/cli/ (build.mjs). Counted by the modules Node loads, not by time (speed is `npm run bench`'s).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadCommands } from '../../src/cli/commands';
import { ROOT, tmpDir } from '../helpers/qemu';

const CLI = path.join(ROOT, 'dist', 'cli.js');

/** The files under dist/ that running `qcow2-lens ARGS…` loads as JavaScript modules. */
function loadedBundles(args: string[]): string[] {
  const probe = `
    const Module = require('node:module');
    const seen = new Set();
    const load = Module._load;
    Module._load = function (request, parent, isMain) {
      try { const f = Module._resolveFilename(request, parent, isMain); if (f.startsWith(${JSON.stringify(path.join(ROOT, 'dist'))})) seen.add(f); } catch {}
      return load.apply(this, arguments);
    };
    process.on('exit', () => process.stderr.write('\\nLOADED ' + JSON.stringify([...seen]) + '\\n'));
    process.argv = [process.argv[0], ${JSON.stringify(CLI)}, ...${JSON.stringify(args)}];
    require(${JSON.stringify(CLI)});`;
  const r = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8' });
  const line = r.stderr.split('\n').find(l => l.startsWith('LOADED '));
  assert.ok(line, `the probe ran: ${r.stderr}`);
  return (JSON.parse(line.slice(7)) as string[]).map(f => path.relative(ROOT, f)).sort();
}

test('qcow2-lens info loads dist/cli.js and the info command only', () => {
  const dir = tmpDir('qcow2-lens-startup-');
  const img = path.join(dir, 'a.qcow2');
  assert.equal(spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', img, '1M']).status, 0);
  assert.deepEqual(loadedBundles(['info', img]), ['dist/cli.js', path.join('dist', 'cli', 'info.js')]);
  assert.deepEqual(loadedBundles(['--version']), ['dist/cli.js']);
});

test('every command has its own bundle, and --help loads them all', async () => {
  const names = (await loadCommands()).map(c => c.name);
  for (const n of names) assert.ok(fs.existsSync(path.join(ROOT, 'dist', 'cli', `${n}.js`)), `dist/cli/${n}.js is built`);
  assert.deepEqual(loadedBundles(['--help']), ['dist/cli.js', ...names.map(n => path.join('dist', 'cli', `${n}.js`))].sort());
});

/** Node's built-in modules among `names` that running `qcow2-lens ARGS…` loaded (process.moduleLoadList). */
function loadedBuiltins(args: string[], names: string[]): string[] {
  const probe = `
    process.on('exit', () => process.stderr.write('\\nBUILTINS ' + JSON.stringify(process.moduleLoadList.filter(m => m.startsWith('NativeModule ')).map(m => m.slice(13))) + '\\n'));
    process.argv = [process.argv[0], ${JSON.stringify(CLI)}, ...${JSON.stringify(args)}];
    require(${JSON.stringify(CLI)});`;
  const r = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8' });
  const line = r.stderr.split('\n').find(l => l.startsWith('BUILTINS '));
  assert.ok(line, `the probe ran: ${r.stderr}`);
  const all = JSON.parse(line.slice(9)) as string[];
  return names.filter(n => all.includes(n));
}

test('info of a plain image loads neither node:crypto nor node:zlib; of a compressed one, zlib only when it reads a cluster', () => {
  const dir = tmpDir('qcow2-lens-startup-');
  const img = path.join(dir, 'a.qcow2');
  assert.equal(spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', img, '1M']).status, 0);
  assert.deepEqual(loadedBuiltins(['info', img], ['crypto', 'zlib']), []);
  // the probe sees them when they are used: reading a compressed cluster inflates it
  assert.equal(spawnSync('qemu-io', ['-c', 'write -c -P 0x61 0 64k', img]).status, 0);
  assert.deepEqual(loadedBuiltins(['read', '--offset', '0', '--length', '16', img], ['zlib']), ['zlib']);
  fs.rmSync(dir, { recursive: true, force: true });
});
