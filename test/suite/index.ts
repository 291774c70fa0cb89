/**
 * Entry point of the extension-host test suite, the @vscode/test-electron convention: VS Code loads
 * this file (extensionTestsPath) inside its extension host and awaits run(). Here it runs under
 * code-server (e2e/exthost.mjs); @vscode/test-electron's runTests can load it unchanged.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { format } from 'node:util';
import Mocha from 'mocha';

/**
 * The reporter's lines carry this mark: the workbench forwards them to e2e/exthost.mjs mixed with its
 * own log (connection chatter, errors the tests provoke on purpose), which it prints only on failure.
 */
export const REPORTER_MARK = '[mocha] ';

export function run(): Promise<void> {
  const base = Mocha.reporters.Base as unknown as { consoleLog: (...args: unknown[]) => void };
  const log = base.consoleLog;
  base.consoleLog = (...args: unknown[]) => log(REPORTER_MARK + format(...args));
  const mocha = new Mocha({ ui: 'tdd', color: false, timeout: 60000, reporter: 'spec' });
  const grep = process.env.QCOW2_LENS_SUITE_GREP;
  if (grep) mocha.grep(grep);
  for (const f of fs.readdirSync(__dirname).sort()) if (f.endsWith('.e2e.js')) mocha.addFile(path.join(__dirname, f));
  return new Promise((resolve, reject) => {
    mocha.run(failures => (failures > 0 ? reject(new Error(`${failures} test(s) failed`)) : resolve()));
  });
}
