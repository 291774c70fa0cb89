/**
 * The healthy images the fuzzer damages: each made by QEMU itself (qemu-img create, qemu-io write,
 * qemu-img snapshot, qemu-img bitmap), built once per run into a scratch folder and copied for
 * every mutant. Small virtual sizes keep a mutant's qemu-img convert and compare fast.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export type BaseStep =
  | { io: string[] } // qemu-io -c … commands
  | { snapshot: string } // qemu-img snapshot -c NAME
  | { bitmap: string }; // qemu-img bitmap --add NAME (persistent, enabled)

export interface BaseConfig {
  name: string;
  /** qemu-img create -o … */
  options: string;
  size: string;
  steps: BaseStep[];
}


export const BASES: readonly BaseConfig[] = [
  {
    name: 'v3-64k-rb16-snapshots',
    options: 'cluster_size=65536,refcount_bits=16,compat=1.1',
    size: '32M',
    steps: [{ io: ['write -P 0x11 0 256k', 'write -P 0x22 5M 64k', 'write -c -P 0x66 8M 128k'] }, { snapshot: 's1' }, { io: ['write -P 0x33 64k 64k', 'write -P 0x44 12M 128k'] }, { snapshot: 's2' }, { io: ['write -z 5M 64k'] }],
  },
  {
    name: 'v2-64k-snapshot',
    options: 'cluster_size=65536,compat=0.10',
    size: '32M',
    steps: [{ io: ['write -P 0x11 0 192k', 'write -P 0x22 9M 64k'] }, { snapshot: 'base' }, { io: ['write -P 0x33 0 64k'] }],
  },
  {
    name: 'v3-512-rb8',
    options: 'cluster_size=512,refcount_bits=8',
    size: '4M',
    steps: [{ io: ['write -P 0x11 0 8k', 'write -P 0x22 1M 2k', 'write -c -P 0x33 2M 4k'] }, { snapshot: 'a' }, { io: ['write -P 0x44 0 1k'] }],
  },
  {
    name: 'v3-4k-rb1',
    options: 'cluster_size=4096,refcount_bits=1',
    size: '16M',
    steps: [{ io: ['write -P 0x11 0 40k', 'write -P 0x22 3M 8k', 'write -P 0x33 15M 4k'] }],
  },
  {
    name: 'v3-4k-rb2-compressed',
    options: 'cluster_size=4096,refcount_bits=2',
    size: '16M',
    steps: [{ io: ['write -c -P 0x11 0 32k', 'write -P 0x22 1M 16k', 'write -c -P 0x33 8M 8k'] }],
  },
  {
    name: 'v3-64k-rb4-zstd',
    options: 'cluster_size=65536,refcount_bits=4,compression_type=zstd',
    size: '32M',
    steps: [{ io: ['write -c -P 0x11 0 128k', 'write -P 0x22 4M 64k', 'write -c -P 0x55 20M 64k'] }],
  },
  {
    name: 'v3-64k-rb32-bitmap',
    options: 'cluster_size=65536,refcount_bits=32',
    size: '32M',
    steps: [{ io: ['write -P 0x11 0 128k'] }, { bitmap: 'b0' }, { io: ['write -P 0x22 6M 64k', 'write -P 0x33 30M 64k'] }],
  },
  {
    name: 'v3-64k-rb64-snapshot',
    options: 'cluster_size=65536,refcount_bits=64',
    size: '32M',
    steps: [{ io: ['write -P 0x11 0 128k', 'write -P 0x22 7M 64k'] }, { snapshot: 'x' }, { io: ['write -P 0x33 0 64k'] }],
  },
  {
    name: 'v3-2M-rb16',
    options: 'cluster_size=2097152',
    size: '64M',
    steps: [{ io: ['write -P 0x11 0 64k', 'write -P 0x22 40M 4k'] }],
  },
  {
    name: 'v3-64k-extl2',
    options: 'cluster_size=65536,extended_l2=on',
    size: '32M',
    steps: [{ io: ['write -P 0x11 0 4k', 'write -P 0x22 68k 8k', 'write -z 128k 64k', 'write -P 0x33 3M 64k'] }, { snapshot: 'e' }],
  },
];


const QUIET = { stdio: ['ignore', 'pipe', 'pipe'] as ['ignore', 'pipe', 'pipe'] };

function build(cfg: BaseConfig, file: string): void {
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', cfg.options, file, cfg.size], QUIET);
  for (const s of cfg.steps) {
    if ('io' in s) execFileSync('qemu-io', [...s.io.flatMap(c => ['-c', c]), file], QUIET);
    else if ('snapshot' in s) execFileSync('qemu-img', ['snapshot', '-c', s.snapshot, file], QUIET);
    else execFileSync('qemu-img', ['bitmap', '--add', file, s.bitmap], QUIET);
  }
}

/** Builds each base on first use into `dir` and returns its path (the cache lives as long as the run). */
export class BaseCache {
  private readonly built = new Map<string, string>();
  constructor(private readonly dir: string) {}
  get(cfg: BaseConfig): string {
    let p = this.built.get(cfg.name);
    if (!p) {
      p = path.join(this.dir, `base-${cfg.name}.qcow2`);
      if (!fs.existsSync(p)) build(cfg, p);
      this.built.set(cfg.name, p);
    }
    return p;
  }
}

/** The shell commands that rebuild a base, written into each failing mutant's JSON. */
export function recipe(cfg: BaseConfig, file = 'base.qcow2'): string[] {
  const out = [`qemu-img create -f qcow2 -o ${cfg.options} ${file} ${cfg.size}`];
  for (const s of cfg.steps) {
    if ('io' in s) out.push(`qemu-io ${s.io.map(c => `-c '${c}'`).join(' ')} ${file}`);
    else if ('snapshot' in s) out.push(`qemu-img snapshot -c ${s.snapshot} ${file}`);
    else out.push(`qemu-img bitmap --add ${file} ${s.bitmap}`);
  }
  return out;
}
