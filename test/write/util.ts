/** Shared helpers for the write-path tests: image configurations and qemu-img check parsing. */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { qemuImg, qemuImgStatus, qemuIo } from '../helpers/qemu';

export interface Config {
  name: string;
  create: string[]; // qemu-img create -o options
  zstd?: boolean;
}

export const CONFIGS: Config[] = [
  { name: '64 KiB clusters', create: [] },
  { name: '512 B clusters', create: ['-o', 'cluster_size=512'] },
  { name: 'refcount bits 64', create: ['-o', 'refcount_bits=64'] },
  { name: 'v2 (compat 0.10)', create: ['-o', 'compat=0.10'] },
  { name: 'zstd image', create: ['-o', 'compression_type=zstd'], zstd: true },
];

/** A 64 MiB image with data, zeroes and (for compressible configs) a compressed cluster. */
export function makeImage(dir: string, cfg: Config, file = 'a.qcow2'): string {
  const img = path.join(dir, file);
  qemuImg('create', '-q', '-f', 'qcow2', ...cfg.create, img, '64M');
  qemuIo(img, ['write -P 0x11 0 1M', 'write -P 0x22 3M 192k', 'write -z 8M 1M', 'write -P 0 20M 64k', 'write -P 0x33 40M 64k', 'write -c -P 0x44 50M 64k']);
  return img;
}

/** qemu-img check: exit status and the error lines; asserts no errors and no leaks when `clean`. */
export function check(img: string): { status: number; out: string; errors: string[]; leaks: number } {
  const r = qemuImgStatus('check', img);
  const out = r.stdout + r.stderr;
  const errors = out.split('\n').filter(l => /^ERROR/.test(l.trim()));
  const m = /(\d+) leaked clusters were found/.exec(out);
  return { status: r.status, out, errors, leaks: m ? Number(m[1]) : 0 };
}

export function assertClean(img: string): void {
  const c = check(img);
  assert.equal(c.status, 0, `qemu-img check ${img}:\n${c.out}`);
  assert.match(c.out, /No errors were found on the image/);
}

export function copy(src: string, dst: string): string {
  fs.copyFileSync(src, dst);
  return dst;
}

export function snapshotList(img: string): { id: string; name: string }[] {
  const info = JSON.parse(qemuImg('info', '--output=json', img)) as { snapshots?: { id: string; name: string }[] };
  return (info.snapshots ?? []).map(s => ({ id: s.id, name: s.name }));
}
