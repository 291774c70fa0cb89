/**
 * Benchmark section: decrypted reads. `qcow2-lens convert` of a 1 GiB LUKS-encrypted qcow2 image
 * (aes-256-xts-plain64, QEMU's default; every cluster written with random data by qemu-io, so the
 * whole GiB is decrypted) to raw, with its key, against `qemu-img convert --object … -O raw
 * -t writeback` of the same image (the same durability: ours syncs the output once before the
 * rename, qemu-img flushes at the end). Both outputs are compared byte for byte once. Best of two
 * runs each, page cache warm for both. The key is a secret file (file=, not in the process list).
 *
 * Run alone: `node build.mjs && node dist-test/bench/crypt.js`, or `node dist-test/bench/bench.js crypt`.
 */
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { calibrationFailed, timingPause } from '../test/helpers/qemuTiming';
import { benchCacheDir } from './images';
import { bestOf } from './measure';
import { CLI } from './section';

const MiB = 1024 ** 2;
const CHUNK = 16 * MiB;

export interface CryptBenchRow { name: string; oursSeconds: number; qemuSeconds: number; oursCpuSeconds?: number; qemuCpuSeconds?: number; oursPeakMiB?: number; qemuPeakMiB?: number; mode: string }

/** qemu-img / qemu-io, run again only when QEMU's PBKDF2 calibration fails (test/helpers/qemuTiming.ts's rule). */
function qemu(cmd: string, args: string[]): void {
  for (let attempt = 1; ; attempt++) {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    if (r.status === 0) return;
    if (!calibrationFailed(r.status, r.stderr, attempt)) throw new Error(`${cmd} ${args[0]} exited ${r.status}: ${r.stderr}`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, timingPause(attempt));
  }
}

/** The cached 1 GiB LUKS image and its secret file (made once; the passphrase is the bench's own, random). */
function luksSource(): { image: string; secretFile: string } {
  const dir = benchCacheDir();
  const image = path.join(dir, 'crypt-1g-luks.qcow2'), secretFile = path.join(dir, 'crypt-1g-luks.secret');
  if (fs.existsSync(image) && fs.existsSync(secretFile)) return { image, secretFile };
  const tmp = image + '.tmp', data = path.join(dir, 'crypt-random-16m.bin');
  fs.writeFileSync(secretFile, crypto.randomBytes(24).toString('hex'), { mode: 0o600 });
  const secret = ['--object', `secret,id=k,file=${secretFile}`];
  qemu('qemu-img', ['create', '-q', '-f', 'qcow2', ...secret, '-o', 'encrypt.format=luks,encrypt.key-secret=k,encrypt.iter-time=10', tmp, '1G']);
  fs.writeFileSync(data, crypto.randomBytes(CHUNK));
  const cmds: string[] = [];
  for (let off = 0; off < 1024 * MiB; off += CHUNK) cmds.push('-c', `write -s ${data} ${off} ${CHUNK}`);
  qemu('qemu-io', [...secret, '--image-opts', ...cmds, `driver=qcow2,file.filename=${tmp},encrypt.key-secret=k`]);
  fs.rmSync(data);
  fs.renameSync(tmp, image);
  return { image, secretFile };
}

function sameFiles(a: string, b: string): boolean {
  const fa = fs.openSync(a, 'r'), fb = fs.openSync(b, 'r');
  try {
    if (fs.fstatSync(fa).size !== fs.fstatSync(fb).size) return false;
    const ba = Buffer.alloc(CHUNK), bb = Buffer.alloc(CHUNK);
    for (let off = 0; ; off += CHUNK) {
      const n = fs.readSync(fa, ba, 0, CHUNK, off);
      if (fs.readSync(fb, bb, 0, CHUNK, off) !== n || !ba.subarray(0, n).equals(bb.subarray(0, n))) return false;
      if (n < CHUNK) return true;
    }
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
}

export function benchCrypt(log: (line: string) => void = l => console.log(l)): CryptBenchRow[] {
  const { image, secretFile } = luksSource();
  const dir = fs.mkdtempSync(path.join(benchCacheDir(), 'crypt-'));
  try {
    const secret = ['--object', `secret,id=k,file=${secretFile}`];
    const opts = `driver=qcow2,file.filename=${image},encrypt.key-secret=k`;
    const ours = path.join(dir, 'ours.raw'), theirs = path.join(dir, 'qemu.raw');
    const q = bestOf(2, 'qemu-img', ['convert', ...secret, '--image-opts', opts, '-O', 'raw', '-t', 'writeback', theirs], () => fs.rmSync(theirs, { force: true }));
    const o = bestOf(2, process.execPath, [CLI, 'convert', '-q', ...secret, '--image-opts', opts, '-O', 'raw', ours], () => fs.rmSync(ours, { force: true }));
    if (!sameFiles(ours, theirs)) throw new Error('crypt bench: our decrypted raw differs from qemu-img\'s');
    const name = '1 GiB LUKS (aes-256-xts), 1 GiB data → raw, decrypted, vs qemu-img convert -t writeback';
    log(`${name}: ours ${o.seconds.toFixed(2)} s, qemu-img ${q.seconds.toFixed(2)} s, ratio ${(o.seconds / q.seconds).toFixed(2)}`);
    return [{
      name, oursSeconds: o.seconds, qemuSeconds: q.seconds, oursCpuSeconds: o.cpuSeconds, qemuCpuSeconds: q.cpuSeconds, oursPeakMiB: o.peakMiB, qemuPeakMiB: q.peakMiB,
      mode: 'durable: ours fsync+rename, qemu-img -t writeback flush; outputs equal',
    }];
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) benchCrypt();
