/** Backing chains for the commit and rebase tests: built once by qemu-img/qemu-io in a folder with relative names, copied per run. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { qemuImg, qemuIo } from '../helpers/qemu';

export interface Layer {
  name: string;
  size: string;
  /** qemu-img create -o options. */
  opts?: string[];
  /** qemu-io commands run on the layer after it is created. */
  io?: string[];
  /** qemu-img snapshot -c after the writes. */
  snapshot?: boolean;
  /** A raw file of this content (first layer only). */
  raw?: boolean;
}

/** Creates the layers in `dir`, bottom first, each backed by the previous one (relative names). Returns the top's path. */
export function buildChain(dir: string, layers: Layer[]): string {
  fs.mkdirSync(dir, { recursive: true });
  let below: Layer | undefined;
  for (const l of layers) {
    const p = path.join(dir, l.name);
    if (l.raw) {
      qemuImg('create', '-q', '-f', 'raw', p, l.size);
      if (l.io?.length) qemuIo(p, l.io, ['-f', 'raw']);
    } else {
      const back = below ? ['-b', below.name, '-F', below.raw ? 'raw' : 'qcow2'] : [];
      qemuImg('create', '-q', '-f', 'qcow2', ...(l.opts ?? []), ...back, p, l.size);
      if (l.io?.length) qemuIo(p, l.io);
      if (l.snapshot) {
        qemuImg('snapshot', '-c', 'snap', p);
        qemuIo(p, ['write -P 0x5a 0 64k']);
      }
    }
    below = l;
  }
  return path.join(dir, layers[layers.length - 1].name);
}

/** A copy of every file of `src` in `dst` (the chain's relative names keep working). */
export function copyDir(src: string, dst: string): void {
  fs.rmSync(dst, { recursive: true, force: true });
  fs.mkdirSync(dst, { recursive: true });
  for (const f of fs.readdirSync(src)) fs.copyFileSync(path.join(src, f), path.join(dst, f));
}
