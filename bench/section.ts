/**
 * What a benchmark section is: bench/bench.ts runs a list of them and prints their rows in one
 * table. Apart from bench.ts so that a section's file can import these without importing the runner
 * that imports it.
 */
import type { BenchImages } from './images';

export interface Row {
  section: string;
  /** What was measured, e.g. "info  100G prealloc". */
  name: string;
  /** Wall time of our command-line run, seconds (Node start-up included). */
  oursSeconds: number;
  /** The same work inside an already running Node (the editor's case), when measured. */
  oursInProcessSeconds?: number;
  qemuSeconds: number;
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
