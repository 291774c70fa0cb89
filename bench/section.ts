/**
 * What a benchmark section is: bench/bench.ts runs a list of them and prints their rows in one
 * table. Apart from bench.ts so that a section's file can import these (and where the CLI is) without
 * importing the runner that imports it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { BenchImages } from './images';

/** The repository root (the nearest folder above the built bench file holding package.json) and our CLI in it. */
export const ROOT = (() => {
  let d = __dirname;
  while (!fs.existsSync(path.join(d, 'package.json')) && path.dirname(d) !== d) d = path.dirname(d);
  return d;
})();
export const CLI = path.join(ROOT, 'dist', 'cli.js');

export interface Row {
  section: string;
  /** What was measured, e.g. "info  100G prealloc". */
  name: string;
  /** Wall time of our command-line run, seconds (Node start-up included). */
  oursSeconds: number;
  /** The same work inside an already running Node (the editor's case), when measured. */
  oursInProcessSeconds?: number;
  /** qemu-img's wall time for the same work; absent where qemu-img has no counterpart (an editor's scroll). */
  qemuSeconds?: number;
  /** CPU time (user + system) of our CLI run and of qemu-img's, seconds (median). */
  oursCpuSeconds?: number;
  qemuCpuSeconds?: number;
  /** Peak resident memory of our CLI process and of qemu-img's, MiB (largest of the runs). */
  oursPeakMiB?: number;
  qemuPeakMiB?: number;
  /** What both sides guarantee, so the comparison is like for like: durability, cache mode, threads. */
  mode?: string;
  note?: string;
}

export interface BenchContext {
  images: BenchImages;
  cli: string;
  /** Runs per measurement (median taken). */
  runs: number;
  log(line: string): void;
}

export interface BenchSection {
  name: string;
  run(ctx: BenchContext): Promise<Row[]>;
}
