// Packaging: `vsce package` makes a .vsix that holds only what runs (no sources, tests, maps or
// node_modules — esbuild bundles the dependencies into dist/extension.js), and code-server's
// --install-extension accepts it. Exports packageVsix() for ui.mjs, which runs the installed copy.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT, NODE24, CODE_SERVER } from './harness.mjs';

const vsce = (...args) => execFileSync(process.execPath, [path.join(ROOT, 'node_modules/@vscode/vsce/vsce'), ...args], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** The files `vsce ls` says the package holds. */
export function packageFiles() {
  return vsce('ls').split('\n').map(s => s.trim()).filter(Boolean).sort();
}

/** The exact set allowed in the .vsix; anything else (src/, test/, e2e/, *.map, node_modules) is a defect. */
export function assertPackageFiles(files) {
  const allowed = [/^package\.json$/, /^README\.md$/, /^LICENSE(\.md)?$/, /^dist\/extension\.js$/, /^dist\/[\w.-]+\.worker\.js$/, /^dist\/[\w.-]+\.wasm$/, /^dist\/holes\.node$/,
    /^media\/webview\.(js|css)$/, /^media\/icon\.png$/, /^media\/[\w.-]+\.svg$/, /^media\/walkthrough\/[\w-]+\.md$/, /^media\/sample\.qcow2\.gz$/, /^CHANGELOG\.md$/,
    // the zstd encoder compaction loads at run time (WebAssembly, read next to its loader)
    /^node_modules\/@bokuweb\/zstd-wasm\/(package\.json|LICENSE[\w.]*|dist\/common\/[\w./-]+\.(js|wasm))$/];
  for (const f of files) assert.ok(allowed.some(r => r.test(f)), `unexpected file in the .vsix: ${f}`);
  for (const must of ['package.json', 'dist/extension.js', 'media/webview.js', 'media/webview.css']) assert.ok(files.includes(must), `${must} missing from the .vsix`);
}

export function packageVsix(outDir) {
  const out = path.join(outDir, 'qcow2-lens.vsix');
  // the same flags as `npm run package`: README's relative picture needs a base URL when the repository is not on GitHub
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  const flags = pkg.scripts.package.split(/\s+/).slice(2);
  vsce('package', ...flags, '--allow-missing-repository', '-o', out);
  return out;
}

export function installVsix(vsix, extensionsDir) {
  return execFileSync(NODE24, [CODE_SERVER, '--install-extension', vsix, '--extensions-dir', extensionsDir, '--force'],
    { encoding: 'utf8', env: { ...process.env, XDG_CONFIG_HOME: path.join(extensionsDir, '..', 'xdg'), XDG_DATA_HOME: path.join(extensionsDir, '..', 'xdg') } });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const t0 = Date.now();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'qcow2-lens-vsix-'));
  let ok = false;
  try {
    const files = packageFiles();
    assertPackageFiles(files);
    console.log(`vsix: ${files.length} files: ${files.join(', ')}`);
    const vsix = packageVsix(tmp);
    // the Marketplace listing's budget: under 2 MiB (compressed, as users download it)
    const size = fs.statSync(vsix).size;
    console.log(`vsix: ${(size / 1024).toFixed(0)} KiB packed (budget 2048 KiB)`);
    assert.ok(size < 2 * 1024 * 1024, `the .vsix is ${(size / 1048576).toFixed(2)} MiB, over the 2 MiB budget`);
    const exts = path.join(tmp, 'extensions');
    fs.mkdirSync(exts);
    console.log(installVsix(vsix, exts).trim().split('\n').pop());
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    const dir = path.join(exts, `${pkg.publisher}.${pkg.name}-${pkg.version}`);
    assert.ok(fs.existsSync(path.join(dir, 'dist/extension.js')), `installed at ${dir}`);
    assert.ok(!fs.existsSync(path.join(dir, 'src')) && !fs.existsSync(path.join(dir, 'test')), 'no sources or tests installed');
    assert.ok(fs.existsSync(path.join(dir, 'node_modules/@bokuweb/zstd-wasm/dist/common/zstd.wasm')), 'the zstd encoder is installed');
    ok = true;
  } catch (e) {
    console.error('FAIL:', e?.stderr || '', e?.stack || e);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  console.log(`vsix: ${ok ? '1 passed, 0 failed' : '0 passed, 1 failed'} in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
  process.exit(ok ? 0 : 1);
}
