/**
 * Where a built worker (`src/engine/**\/NAME.worker.ts`, bundled by build.mjs to `dist/NAME.worker.js`)
 * lives: next to the running bundle (dist/extension.js, dist/cli/*.js), or in the package's dist/
 * when the code runs from dist-test/.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Qcow2Error } from '../errors';

export function workerFile(name: string, what: string): string {
  const file = `${name}.worker.js`;
  const candidates = [path.join(__dirname, file)];
  for (let d = __dirname; path.dirname(d) !== d; d = path.dirname(d)) {
    candidates.push(path.join(d, 'dist', file));
    if (fs.existsSync(path.join(d, 'package.json'))) break;
  }
  const hit = candidates.find(p => fs.existsSync(p));
  if (!hit) throw new Qcow2Error(file, 'file', undefined, `the ${what} worker is not built (run node build.mjs)`, 'io');
  return hit;
}
