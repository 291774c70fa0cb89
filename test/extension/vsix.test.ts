/**
 * What `vsce package` puts into the .vsix (`vsce ls`): only what runs — no sources, tests, source
 * maps or node_modules beyond the zstd encoder loaded at run time. The same rule e2e/vsix.mjs
 * applies before installing the package into code-server.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { ROOT } from '../helpers/qemu';

test('the .vsix holds only the bundles, the webview, the zstd encoder and the manifest', async () => {
  const modulePath = pathToFileURL(path.join(ROOT, 'e2e', 'vsix.mjs')).href;
  const vsix = (await import(modulePath)) as { packageFiles(): string[]; assertPackageFiles(files: string[]): void };
  const files = vsix.packageFiles();
  vsix.assertPackageFiles(files);
  assert.ok(!files.some(f => f.startsWith('src/') || f.startsWith('test/') || f.startsWith('e2e/') || f.endsWith('.map') || f.endsWith('.ts')), files.join(', '));
  assert.ok(files.includes('dist/compress.worker.js'), 'the compression worker compaction starts');
  assert.ok(files.includes('dist/sector.worker.js'), 'the encryption worker decrypting copies start');
});
