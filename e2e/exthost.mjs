// Runs the extension-host suite (test/suite → dist-test/suite/index.js exporting run(), the
// @vscode/test-electron convention, mocha inside) in code-server's Node extension host, with the
// real workbench rendered by headless chromium, on a fresh workspace of QEMU-made images.
// Exit code = test result.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ROOT, startCodeServer, launchChromium, automationHooks, withTimeout } from './harness.mjs';
import { makeFixtures } from './fixtures.mjs';

const devPath = path.resolve(process.argv[2] || ROOT);
const testsPath = path.resolve(process.argv[3] || path.join(ROOT, 'dist-test/suite/index.js'));
const folder = makeFixtures(fs.mkdtempSync(path.join(os.tmpdir(), 'qcow2-lens-ws-')));
const t0 = Date.now();
let server, browser, hooks, code = 1;
try {
  // A built VS Code only honours ?payload=[["extensionDevelopmentPath",..],["extensionTestsPath",..]]
  // when the server runs with --enable-smoke-test-driver; code-server forwards it via --vscode-option.
  server = await startCodeServer({ extraArgs: ['--vscode-option', 'enable-smoke-test-driver'] });
  browser = await launchChromium();
  hooks = await automationHooks(browser.page);
  const payload = [['extensionDevelopmentPath', server.remoteUri(devPath)], ['extensionTestsPath', server.remoteUri(testsPath)]];
  await browser.page.goto(`${server.url}/?folder=${encodeURIComponent(folder)}&payload=${encodeURIComponent(JSON.stringify(payload))}`);
  code = await withTimeout(hooks.exited, Number(process.env.E2E_TIMEOUT_MS || 300000), 'extension tests');
} catch (e) {
  console.error(e);
  if (server) console.error('--- code-server output (tail) ---\n' + server.output().slice(-3000));
}
if (code !== 0 && hooks) console.error('--- workbench log (tail) ---\n' + hooks.log());
try {
  await browser?.close();
  await server?.stop();
} finally {
  if (!process.env.E2E_KEEP) fs.rmSync(folder, { recursive: true, force: true });
}
console.log(`exthost: extension tests exited with ${code} after ${((Date.now() - t0) / 1000).toFixed(1)}s`);
process.exit(code);
