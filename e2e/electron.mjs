// The same extension-host suite under @vscode/test-electron (desktop VS Code), for machines that can
// download VS Code (this one cannot: test-electron fetches it from update.code.visualstudio.com).
// Usage: node build.mjs && node e2e/electron.mjs
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { ROOT } from './harness.mjs';
import { makeFixtures } from './fixtures.mjs';

const { runTests } = createRequire(import.meta.url)('@vscode/test-electron');
const folder = makeFixtures(fs.mkdtempSync(path.join(os.tmpdir(), 'qcow2-lens-ws-')));
try {
  await runTests({
    extensionDevelopmentPath: ROOT,
    extensionTestsPath: path.join(ROOT, 'dist-test/suite/index.js'),
    launchArgs: [folder, '--disable-extensions', '--disable-workspace-trust'],
  });
} catch (e) {
  console.error(e);
  process.exitCode = 1;
} finally {
  fs.rmSync(folder, { recursive: true, force: true });
}
