/**
 * `npm pack` + `npm install -g` give a working `qcow2-lens` on PATH without the extension and
 * without the registry (--offline: the tarball carries everything it needs): --help, info and map
 * equal qemu-img's on a QEMU-made image, zstd compaction works from the installed copy (the bundled
 * WebAssembly encoder and the compression worker), and the CLI goes on without the hole-seeker
 * addon (a machine where the shipped binary cannot load).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { qemuImg, qemuImgStatus, qemuIo, ROOT, tmpDir } from '../helpers/qemu';

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): SpawnSyncReturns<string> {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...opts });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r;
}

test('the packed tarball installs globally and runs as qcow2-lens', () => {
  const work = tmpDir('qcow2-lens-pack-');
  // --ignore-scripts: pack what `node build.mjs` built (prepack would rebuild dist/ under the other
  // tests that are running it); npm's own cache and log stay in the scratch folder
  const npmEnv = { ...process.env, npm_config_cache: path.join(work, 'npm-cache'), npm_config_update_notifier: 'false', npm_config_loglevel: 'error' };
  const packed = run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: ROOT, env: npmEnv });
  const [info] = JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[];
  const files = info.files.map(f => f.path).sort();
  assert.ok(files.includes('dist/cli.js') && files.includes('dist/cli/info.js') && files.includes('dist/cli/compact.js') && files.includes('dist/compress.worker.js') && files.includes('dist/sector.worker.js'), files.join(', '));
  assert.ok(!files.some(f => f.startsWith('dist/') && f.endsWith('.map')), `no source maps of ours: ${files.join(', ')}`);
  assert.ok(!files.some(f => f.startsWith('src/') || f.startsWith('test/') || f === 'dist/extension.js' || f.startsWith('media/')), `no sources, tests or extension: ${files.join(', ')}`);

  const prefix = path.join(work, 'prefix');
  run('npm', ['install', '-g', '--offline', '--no-audit', '--no-fund', '--prefix', prefix, path.join(work, info.filename)], { cwd: work, env: npmEnv });
  const installed = path.join(prefix, 'lib', 'node_modules', 'qcow2-lens');
  assert.ok(fs.existsSync(path.join(installed, 'node_modules', '@bokuweb', 'zstd-wasm', 'package.json')), 'the zstd encoder is installed with it');
  // on PATH, run from elsewhere, with no repository around it
  const env = { ...process.env, PATH: `${path.join(prefix, 'bin')}${path.delimiter}${process.env.PATH ?? ''}` };
  const lens = (...args: string[]) => run('qcow2-lens', args, { cwd: work, env });

  const help = lens('--help');
  assert.match(help.stdout, /^qcow2-lens \d+\.\d+\.\d+: /);
  assert.match(help.stdout, /Commands:\n {2}info/);

  const img = path.join(work, 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '64M');
  qemuIo(img, ['write -P 7 0 1M', 'write -P 9 16M 64k', 'write -z 32M 64k']);
  assert.deepEqual(JSON.parse(lens('info', '--output=json', img).stdout), JSON.parse(qemuImg('info', '--output=json', img)));
  assert.equal(lens('map', '--output', 'json', img).stdout, qemuImg('map', '--output=json', img));

  const zstd = path.join(work, 'z.qcow2');
  lens('compact', img, '-o', zstd, '--compress', 'zstd');
  assert.equal(qemuImgStatus('compare', img, zstd).status, 0, 'the zstd-compacted image has the same guest content');
  assert.equal(qemuImgStatus('check', zstd).status, 0, 'and qemu-img check finds it clean');

  // a platform where the shipped addon cannot load behaves as one without it
  fs.rmSync(path.join(installed, 'dist', 'holes.node'), { force: true });
  const map = lens('map', '--output=json', img);
  assert.equal(map.stdout, qemuImg('map', '--output=json', img));
  assert.equal(map.stderr, '');
});
