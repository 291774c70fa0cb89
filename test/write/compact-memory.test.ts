/**
 * The memory of a compressed compaction does not grow with the data: 256 MiB of data clusters
 * (half random, half text-like, written with qemu-io over a 4 GiB disk) compacted with
 * --compress zstd by the CLI in a child process, whose peak resident memory (getrusage's maxrss,
 * read at exit through a --require hook) is compared with the same child's plain compaction of the
 * same image (the in-kernel copy: node, the loaded code and the per-cluster arrays, no buffers).
 * The compressed run may add the two workers and the pool's slot ring (pool.ts), not a copy of
 * the data: at most 64 MiB more. The output is checked against the source with qemu-img.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../helpers/qemu';

const MiB = 1024 * 1024;
/** What a compressed compaction may hold above a plain one: two worker isolates and the slot ring. */
const EXTRA_MIB = 64;

/** Runs the CLI with `args`; its peak resident memory, MiB. */
function peakOf(hook: string, args: string[]): number {
  const r = spawnSync(process.execPath, ['--require', hook, CLI, ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const m = /maxrss=(\d+)/.exec(r.stderr);
  assert.ok(m, `no maxrss in ${r.stderr}`);
  return Number(m[1]) / 1024;
}

test('a compressed compaction of 256 MiB of data holds at most 64 MiB more than a plain one', t => {
  const dir = tmpDir();
  const img = path.join(dir, 'src.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '4G');
  const rnd = path.join(dir, 'random.bin'), txt = path.join(dir, 'text.bin');
  fs.writeFileSync(rnd, crypto.randomBytes(32 * MiB));
  const words = ['qcow2', 'cluster', 'refcount', 'table', 'guest', 'host', 'offset'];
  const r = crypto.randomBytes(32 * MiB / 4);
  const parts: string[] = [];
  for (let i = 0, n = 0; n < 32 * MiB; i++) { const w = words[r[i % r.length] % words.length] + (r[(i + 1) % r.length] % 100) + ' '; parts.push(w); n += w.length; }
  fs.writeFileSync(txt, parts.join('').slice(0, 32 * MiB));
  // 8 extents of 32 MiB each, every 480 MiB of the disk
  const cmds: string[] = [];
  for (let i = 0; i < 8; i++) cmds.push(`write -s ${i % 2 ? txt : rnd} ${i * 480 * MiB} ${32 * MiB}`);
  qemuIo(img, cmds);
  fs.rmSync(rnd); fs.rmSync(txt);

  const hook = path.join(dir, 'maxrss.js');
  fs.writeFileSync(hook, "process.on('exit', () => process.stderr.write('maxrss=' + process.resourceUsage().maxRSS + '\\n'));\n");
  const plain = path.join(dir, 'plain.qcow2'), packed = path.join(dir, 'packed.qcow2');
  const base = peakOf(hook, ['compact', img, '-o', plain]);
  fs.rmSync(plain);
  const peak = peakOf(hook, ['compact', img, '-o', packed, '--compress', 'zstd']);
  t.diagnostic(`peak memory: plain ${base.toFixed(0)} MiB, compressed ${peak.toFixed(0)} MiB`);
  assert.equal(qemuImgStatus('check', packed).status, 0);
  assert.equal(qemuImgStatus('compare', img, packed).status, 0);
  // the text half is compressed, the random half stored as it is: both paths were taken
  assert.ok(fs.statSync(packed).size < 200 * MiB, `compressed output of ${fs.statSync(packed).size} bytes`);
  assert.ok(peak <= base + EXTRA_MIB, `compressed compaction peaked at ${peak.toFixed(0)} MiB, the plain one at ${base.toFixed(0)} MiB`);
});
