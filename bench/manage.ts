/**
 * Benchmark section: the chain-management commands against qemu-img doing the same on a twin copy
 * of the same QEMU-made chain — a 4 GiB overlay with 512 MiB written over a 4 GiB base holding
 * 1 GiB (random data, 16 MiB pieces, the overlay's half overlapping the base's):
 *
 *   commit            `commit top` (into the base, then the top emptied)  vs `qemu-img commit -t writeback`
 *   rebase (safe)     `rebase -b base2 -F qcow2 top`, base2 = the base with half its data changed
 *                     vs `qemu-img rebase -t writeback -T writeback`
 *   rebase -b ""      flatten: everything the chain holds copied into the top  vs the same
 *   convert chain     `convert -O qcow2 top out`  vs `qemu-img convert -t writeback -O qcow2`
 *
 * Durability, like for like: qemu-img with -t writeback writes through the page cache and flushes
 * (fdatasync) when it closes the image (commit: also after emptying the top); ours syncs between
 * the phases of each in-place batch (data, refcounts, L2, L1: clusterWrite.ts, a batch = 4096
 * clusters or 256 MiB of data written, the data writes overlapping the reads of the source) — more
 * fsyncs, each one the crash-order guarantee qemu-img does not give —
 * and convert syncs its temporary output once before the rename. Every run starts from fresh
 * copies of the chain (the copy is not timed). One run each (the images are large); wall time is
 * noisy on a shared machine, CPU time and peak memory are the steadier columns.
 *
 * With BENCH_MANAGE_SMALL=1 the chain is 8 times smaller (a quick look, not the reported figure).
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { benchCacheDir } from './images';
import { type Measured, runMeasured } from './measure';
import { CLI } from './section';

const MiB = 1024 ** 2;

export interface ManageBenchRow { name: string; oursSeconds: number; qemuSeconds: number; oursCpuSeconds?: number; qemuCpuSeconds?: number; oursPeakMiB?: number; qemuPeakMiB?: number; mode: string; note?: string }

interface Chain { dir: string; base: string; base2: string; top: string; label: string }

/** base (1 GiB of data), base2 (the base with every other piece changed), top (512 MiB over it), cached. */
function prepareChain(small: boolean): Chain {
  const scale = small ? 8 : 1;
  const label = small ? '512 MiB overlay (64 MiB written) over a base with 128 MiB' : '4 GiB overlay (512 MiB written) over a base with 1 GiB';
  const dir = path.join(benchCacheDir(), small ? 'manage-small' : 'manage');
  const base = path.join(dir, 'base.qcow2'), base2 = path.join(dir, 'base2.qcow2'), top = path.join(dir, 'top.qcow2');
  const done = path.join(dir, '.done');
  if (fs.existsSync(done)) return { dir, base, base2, top, label };
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const piece = 16 * MiB / scale;
  const size = `${4096 / scale}M`;
  const rnd = (n: number) => { const f = path.join(dir, `random-${n}.bin`); fs.writeFileSync(f, crypto.randomBytes(piece)); return f; };
  const io = (img: string, cmds: string[]) => {
    for (let i = 0; i < cmds.length; i += 16) execFileSync('qemu-io', [...cmds.slice(i, i + 16).flatMap(c => ['-c', c]), img], { stdio: 'ignore' });
  };
  const a = rnd(1), b = rnd(2), c = rnd(3);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, size]);
  const baseCmds: string[] = [];
  for (let i = 0; i < 64; i++) baseCmds.push(`write -s ${a} ${i * 4 * piece} ${piece}`);
  io(base, baseCmds);
  fs.copyFileSync(base, base2);
  const changed: string[] = [];
  for (let i = 0; i < 64; i += 2) changed.push(`write -s ${b} ${i * 4 * piece} ${piece}`);
  io(base2, changed);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', top]);
  const topCmds: string[] = [];
  for (let i = 0; i < 32; i++) topCmds.push(`write -s ${c} ${i * 8 * piece + piece / 2} ${piece}`);
  io(top, topCmds);
  for (const f of [a, b, c]) fs.rmSync(f);
  fs.writeFileSync(done, '');
  return { dir, base, base2, top, label };
}

/** A fresh copy of the chain in `work` (the top names its backing file relatively). */
function freshCopy(ch: Chain, work: string): { base: string; base2: string; top: string } {
  fs.mkdirSync(work, { recursive: true });
  const out = { base: path.join(work, 'base.qcow2'), base2: path.join(work, 'base2.qcow2'), top: path.join(work, 'top.qcow2') };
  for (const f of fs.readdirSync(work)) fs.rmSync(path.join(work, f), { force: true });
  execFileSync('cp', ['--sparse=always', ch.base, ch.base2, ch.top, work]);
  return out;
}

function check(img: string): string {
  try {
    execFileSync('qemu-img', ['check', '-q', img], { stdio: 'pipe' });
    return 'clean';
  } catch {
    return 'CHECK FAILED';
  }
}

export function benchManage(log: (line: string) => void = l => console.log(l)): ManageBenchRow[] {
  const small = process.env.BENCH_MANAGE_SMALL === '1';
  log('  preparing the chain (cached)…');
  const ch = prepareChain(small);
  const work = fs.mkdtempSync(path.join(benchCacheDir(), 'manage-run-'));
  const rows: ManageBenchRow[] = [];
  const wOurs = path.join(work, 'ours'), wQemu = path.join(work, 'qemu');
  try {
    const cases: Array<{ name: string; ours: (c: ReturnType<typeof freshCopy>) => string[]; qemu: (c: ReturnType<typeof freshCopy>) => string[]; mode: string; verify: (c: ReturnType<typeof freshCopy>) => string }> = [
      {
        name: 'commit top into its base',
        ours: c => ['commit', c.top], qemu: c => ['commit', '-t', 'writeback', c.top],
        mode: 'durable: ours fsync per batch phase; qemu-img -t writeback flush at close',
        verify: c => check(c.base),
      },
      {
        name: 'rebase -b base2 (safe)',
        ours: c => ['rebase', '-b', 'base2.qcow2', '-F', 'qcow2', c.top], qemu: c => ['rebase', '-t', 'writeback', '-T', 'writeback', '-b', 'base2.qcow2', '-F', 'qcow2', c.top],
        mode: 'durable: ours fsync per batch phase; qemu-img -t writeback flush at close',
        verify: c => check(c.top),
      },
      {
        name: 'rebase -b "" (flatten)',
        ours: c => ['rebase', '-b', '', c.top], qemu: c => ['rebase', '-t', 'writeback', '-T', 'writeback', '-b', '', c.top],
        mode: 'durable: ours fsync per batch phase; qemu-img -t writeback flush at close',
        verify: c => check(c.top),
      },
      {
        name: 'convert -O qcow2 of the chain',
        ours: c => ['convert', '-O', 'qcow2', c.top, c.top + '.out'], qemu: c => ['convert', '-t', 'writeback', '-O', 'qcow2', c.top, c.top + '.out'],
        mode: 'durable: ours fsync+rename, qemu-img -t writeback flush; qemu-img -m 8, no -W',
        verify: c => check(c.top + '.out'),
      },
    ];
    for (const k of cases) {
      const cq = freshCopy(ch, wQemu);
      const q: Measured = runMeasured('qemu-img', k.qemu(cq));
      const co = freshCopy(ch, wOurs);
      const o: Measured = runMeasured(process.execPath, [CLI, ...k.ours(co)]);
      // the two results hold the same guest content
      const [a, b] = k.name.startsWith('commit') ? [cq.base, co.base] : k.name.startsWith('convert') ? [cq.top + '.out', co.top + '.out'] : [cq.top, co.top];
      let same = 'same content';
      try { execFileSync('qemu-img', ['compare', '-q', a, b], { stdio: 'pipe' }); } catch { same = 'CONTENT DIFFERS'; }
      const name = `${k.name}, ${ch.label}`;
      rows.push({
        name, oursSeconds: o.seconds, qemuSeconds: q.seconds, oursCpuSeconds: o.cpuSeconds, qemuCpuSeconds: q.cpuSeconds, oursPeakMiB: o.peakMiB, qemuPeakMiB: q.peakMiB,
        mode: k.mode, note: `${same}, ours ${k.verify(co)}`,
      });
      log(`${name}: ours ${o.seconds.toFixed(2)} s (${o.peakMiB?.toFixed(0)} MiB), qemu-img ${q.seconds.toFixed(2)} s, ratio ${(o.seconds / q.seconds).toFixed(2)}; ${same}`);
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  return rows;
}

if (require.main === module) benchManage();
