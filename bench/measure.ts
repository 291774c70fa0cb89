/**
 * One measured run of a command: wall time, and where /usr/bin/time exists (GNU time) the child's
 * CPU time (user + system) and peak resident memory (maximum resident set size), which are what
 * the benchmark compares on a shared machine: CPU time and memory do not depend on what the other
 * processes are doing, wall time does.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface Measured {
  seconds: number;
  /** User + system CPU seconds of the process (and its threads). */
  cpuSeconds?: number;
  /** Peak resident set size, MiB. */
  peakMiB?: number;
  stdout: Buffer;
}

const GNU_TIME = '/usr/bin/time';
const hasTime = fs.existsSync(GNU_TIME);

/** Runs `cmd args` once (with `env` added to ours); throws with its stderr when it fails. */
export function runMeasured(cmd: string, args: string[], env?: Record<string, string>): Measured {
  const out = hasTime ? path.join(os.tmpdir(), `qcow2-lens-bench-time-${process.pid}.txt`) : '';
  const argv = hasTime ? ['-f', '%U %S %M', '-o', out, cmd, ...args] : args;
  const t0 = process.hrtime.bigint();
  const r = spawnSync(hasTime ? GNU_TIME : cmd, argv, { maxBuffer: 1024 * 1024 * 1024, env: env ? { ...process.env, ...env } : process.env });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  const m: Measured = { seconds, stdout: r.stdout };
  if (hasTime) {
    const [u, s, kb] = fs.readFileSync(out, 'utf8').trim().split(/\s+/).slice(-3).map(Number);
    fs.rmSync(out, { force: true });
    if ([u, s, kb].every(Number.isFinite)) { m.cpuSeconds = u + s; m.peakMiB = kb / 1024; }
  }
  return m;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** `runs` runs: median wall and CPU time, the largest peak memory, the last run's stdout. */
export function measureRuns(cmd: string, args: string[], runs: number, before?: () => void): Measured {
  const all: Measured[] = [];
  for (let i = 0; i < runs; i++) { before?.(); all.push(runMeasured(cmd, args)); }
  const cpu = all.map(m => m.cpuSeconds).filter((x): x is number => x !== undefined);
  const peak = all.map(m => m.peakMiB).filter((x): x is number => x !== undefined);
  return {
    seconds: median(all.map(m => m.seconds)),
    cpuSeconds: cpu.length ? median(cpu) : undefined,
    peakMiB: peak.length ? Math.max(...peak) : undefined,
    stdout: all[all.length - 1].stdout,
  };
}

/**
 * The fastest of `runs` runs (its wall and CPU time, its stdout) with the largest peak memory of all
 * of them; `before` runs ahead of each (e.g. to remove the previous run's output).
 */
export function bestOf(runs: number, cmd: string, args: string[], before?: () => void, env?: Record<string, string>): Measured {
  const all: Measured[] = [];
  for (let i = 0; i < runs; i++) { before?.(); all.push(runMeasured(cmd, args, env)); }
  const best = all.reduce((a, b) => (b.seconds < a.seconds ? b : a));
  const peaks = all.map(r => r.peakMiB).filter((x): x is number => x !== undefined);
  return { ...best, peakMiB: peaks.length ? Math.max(...peaks) : undefined };
}
