/**
 * Crash tests for convert: the process is SIGKILLed before its k-th write (QCOW2_LENS_CRASH_AFTER_WRITES=k),
 * for every k until a run completes. A new output is written to a temporary file and renamed, so
 * after any crash the destination is exactly what was there before (here: an older image), and
 * once a run completes it is the converted image (`qemu-img check` clean, `qemu-img compare`
 * equal). With -n the raw target is written in place: every sector is then the old one or the new one.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, qemuImg, qemuImgStatus, qemuIo, sha256, tmpDir } from '../helpers/qemu';
import { assertClean } from '../write/util';

const dir = tmpDir('qcow2-lens-convert-crash-');

function source(): string {
  const base = path.join(dir, 'base.qcow2'), top = path.join(dir, 'top.qcow2');
  if (fs.existsSync(top)) return top;
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', base, '4M');
  qemuIo(base, ['write -P 0x11 0 256k', 'write -c -P 0x12 1M 64k', 'write -P 0x13 3M 512k']);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
  qemuIo(top, ['write -P 0x21 128k 64k', 'write -z 3M 64k', 'write -P 0x22 2M 8k']);
  return top;
}

/** Runs the CLI, killed before write k; true when it completed. */
function run(k: number, args: string[]): boolean {
  const r = spawnSync(process.execPath, [CLI, 'convert', '-q', ...args], { env: { ...process.env, QCOW2_LENS_CRASH_AFTER_WRITES: String(k) }, encoding: 'utf8' });
  if (r.status === 0) return true;
  assert.equal(r.signal, 'SIGKILL', `k=${k}: expected a crash, got status ${r.status}: ${r.stderr}`);
  return false;
}

/** The temporary files a killed run leaves beside DST (dot-files); removed between runs. */
function removeTemps(dest: string): number {
  const names = fs.readdirSync(path.dirname(dest)).filter(n => n.startsWith(`.${path.basename(dest)}.`) && n.endsWith('.tmp'));
  for (const n of names) fs.rmSync(path.join(path.dirname(dest), n));
  return names.length;
}

function crashNewOutput(label: string, args: string[], ext: string, check: (out: string) => void): number {
  const t0 = Date.now();
  const top = source();
  const dest = path.join(dir, `out-${label}.${ext}`);
  // an older image sits at DST: a crash must leave it as it was
  qemuImg('create', '-q', '-f', 'qcow2', dest, '1M');
  const old = sha256(fs.readFileSync(dest));
  let k = 0;
  for (; k < 400; k++) {
    const completed = run(k, [...args, top, dest]);
    if (completed) break;
    assert.equal(sha256(fs.readFileSync(dest)), old, `${label} k=${k}: DST changed before the rename`);
    assert.equal(removeTemps(dest), 1, `${label} k=${k}: the killed run's temporary file`);
  }
  assert.ok(k > 3, `${label}: only ${k} writes`);
  assert.ok(k < 400, `${label}: never completed`);
  assert.equal(removeTemps(dest), 0, 'a completed run leaves no temporary file');
  check(dest);
  if (process.env.CRASH_DEBUG) console.error(`${label}: ${k} writes, ${Date.now() - t0} ms`);
  return k;
}

test('convert -O qcow2: SIGKILL before any write leaves DST as it was; the completed run is clean and equal', () => {
  const top = source();
  const n = crashNewOutput('qcow2', ['-O', 'qcow2'], 'qcow2', out => {
    assertClean(out);
    assert.equal(qemuImgStatus('compare', top, out).status, 0);
  });
  assert.ok(n > 3);
});

test('convert -c -O qcow2 (compressed, worker pool): the same under SIGKILL', () => {
  const top = source();
  crashNewOutput('compressed', ['-c', '-O', 'qcow2'], 'qcow2', out => {
    assertClean(out);
    assert.equal(qemuImgStatus('compare', top, out).status, 0);
  });
});

test('convert -O raw / vpc / vmdk streamOptimized: the same under SIGKILL', () => {
  const top = source();
  for (const [label, args, ext, fmt] of [
    ['raw', ['-O', 'raw'], 'raw', 'raw'],
    ['vpc', ['-O', 'vpc'], 'vhd', 'vpc'],
    ['vmdk', ['-O', 'vmdk', '-o', 'subformat=streamOptimized'], 'vmdk', 'vmdk'],
  ] as const) {
    crashNewOutput(label, [...args], ext, out => assert.equal(qemuImgStatus('compare', '-F', fmt, top, out).status, 0, label));
  }
});

test('convert -n into a raw target in place: after SIGKILL every sector is the old one or the new one', () => {
  const top = source();
  const target = path.join(dir, 'target.raw'), oldCopy = path.join(dir, 'old.raw'), want = path.join(dir, 'want.raw');
  qemuImg('create', '-q', '-f', 'raw', oldCopy, '4M');
  qemuIo(oldCopy, ['write -P 0x5a 0 4M'], ['-f', 'raw']);
  qemuImg('convert', '-O', 'raw', top, want);
  const oldBytes = fs.readFileSync(oldCopy), newBytes = fs.readFileSync(want);
  let k = 0;
  for (; k < 400; k++) {
    fs.copyFileSync(oldCopy, target);
    const completed = run(k, ['-n', '-O', 'raw', top, target]);
    const now = fs.readFileSync(target);
    for (let s = 0; s < now.length; s += 512) {
      const sec = now.subarray(s, s + 512);
      assert.ok(sec.equals(oldBytes.subarray(s, s + 512)) || sec.equals(newBytes.subarray(s, s + 512)), `k=${k}: sector at ${s} is neither the old nor the new`);
    }
    if (completed) break;
  }
  assert.ok(k > 2 && k < 400, `${k} writes`);
  assert.equal(qemuImgStatus('compare', '-F', 'raw', top, target).status, 0);
});
