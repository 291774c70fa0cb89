/**
 * `convert -n` with `-c` and with `-B`, against `qemu-img convert -n` doing the same into a twin
 * copy of the same QEMU-made target:
 *  -c: compressed clusters written where the target's entries have no host offset (unallocated,
 *      or zero without a preallocated cluster), qemu-img's "error while writing at byte N:
 *      Input/output error" where one has (what came before written, as qemu-img leaves it);
 *      zero ranges cleared; raw and vpc refuse -c as qemu-img does.
 *  -B: only what the source's top layer allocates is written (its data and its zeros); the rest
 *      keeps the target's own content, into qcow2 (an overlay, another cluster size so that
 *      clusters are partly covered), raw, vpc and vmdk targets; --target-is-zero refused.
 * Results compare equal with qemu-img's, qcow2 ones check clean with the same allocation map;
 * SIGKILL at every write of -n -c into qcow2 leaves at most leaks and each cluster old or new.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, cli, type MapEntry, qemuImg, qemuImgStatus, qemuIo, qemuMap, tmpDir } from '../helpers/qemu';
import { assertClean } from '../write/util';

const dir = tmpDir('qcow2-lens-convert-into-opts-');

function ours(...args: string[]): void {
  const r = cli('convert', ...args);
  assert.equal(r.status, 0, `qcow2-lens convert ${args.join(' ')}: ${r.stderr}`);
}

function compare(a: string, b: string, fmt: string, what: string): void {
  const r = qemuImgStatus('compare', '-f', fmt, '-F', fmt, a, b);
  assert.equal(r.status, 0, `${what}: qemu-img compare ${a} ${b}: ${r.stdout}${r.stderr}`);
}

/** The map without host offsets (our cluster placement is our own). */
function layout(img: string, fmt = 'qcow2'): Array<Omit<MapEntry, 'offset'>> {
  return qemuMap(img, fmt).map(({ offset: _o, ...e }) => e);
}

/** qemu-img check's "N/M = …% allocated, …, …% compressed clusters" counts (fragmentation is placement). */
function counts(img: string): string {
  const out = qemuImgStatus('check', img).stdout;
  const m = /(\d+\/\d+) = [\d.]+% allocated, [\d.]+% fragmented, ([\d.]+)% compressed clusters/.exec(out);
  assert.ok(m, `qemu-img check of ${img}: ${out}`);
  return `${m[1]} allocated, ${m[2]}% compressed`;
}

/** 8 MiB, 64 KiB clusters: data (compressible), random data (not), zeros written, a compressed piece. */
function source(): string {
  const p = path.join(dir, 'src.qcow2');
  if (fs.existsSync(p)) return p;
  const rnd = path.join(dir, 'random.bin');
  fs.writeFileSync(rnd, Buffer.from(Array.from({ length: 256 * 1024 }, (_, i) => (i * 2654435761) >>> 24 ^ (i >>> 7) & 0xff)));
  qemuImg('create', '-q', '-f', 'qcow2', p, '8M');
  qemuIo(p, ['write -P 0x11 0 1M', `write -s ${rnd} 2M 256k`, 'write -z 3M 128k', 'write -c -P 0x12 5M 192k', 'write -P 0x13 7M 100k']);
  return p;
}

function twins(name: string, make: (p: string) => void, ext = 'qcow2'): [string, string] {
  const mine = path.join(dir, `${name}.${ext}`), theirs = path.join(dir, `${name}-qemu.${ext}`);
  for (const p of [mine, theirs]) { fs.rmSync(p, { force: true }); make(p); }
  return [mine, theirs];
}

test('-n -c into qcow2 targets with unallocated and zero clusters: compressed as qemu-img, equal content, clean', () => {
  const src = source();
  const targets: Array<[string, (p: string) => void]> = [
    ['empty', p => qemuImg('create', '-q', '-f', 'qcow2', p, '8M')],
    ['empty-4k-zstd', p => qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k,compression_type=zstd', p, '8M')],
    ['extended-l2', p => qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=128k,extended_l2=on', p, '8M')],
    // zero clusters (no host offset): compressed over; data where the source reads zero: cleared
    ['zeroed', p => { qemuImg('create', '-q', '-f', 'qcow2', p, '12M'); qemuIo(p, ['write -z 0 8M', 'write -P 0x5a 4M 512k', 'write -P 0x5b 9M 1M']); }],
  ];
  for (const [name, make] of targets) {
    const [mine, theirs] = twins(`c-${name}`, make);
    ours('-n', '-c', '-O', 'qcow2', src, mine);
    qemuImg('convert', '-n', '-c', '-O', 'qcow2', src, theirs);
    compare(theirs, mine, 'qcow2', name);
    assertClean(mine);
    assert.deepEqual(layout(mine), layout(theirs), `${name}: the same allocation map`);
    assert.equal(counts(mine), counts(theirs), `${name}: as many clusters allocated and compressed`);
    assert.match(counts(mine), /[1-9][\d.]*% compressed/, `${name}: compressed clusters written`);
  }
});

test('-n -c over an allocated cluster fails as qemu-img does, the clusters before it written', () => {
  const src = source();
  // allocated from 2 MiB on: the source's data at 0–1 MiB goes in, the write at 2 MiB fails
  const [mine, theirs] = twins('c-allocated', p => { qemuImg('create', '-q', '-f', 'qcow2', p, '8M'); qemuIo(p, ['write -P 0x5a 2M 6M']); });
  const q = qemuImgStatus('convert', '-n', '-c', '-O', 'qcow2', src, theirs);
  const r = cli('convert', '-n', '-c', '-O', 'qcow2', src, mine);
  assert.equal(q.status, 1, q.stderr);
  assert.equal(r.status, q.status, r.stderr);
  const at = /error while writing at byte (\d+): Input\/output error/.exec(q.stderr);
  assert.ok(at, q.stderr);
  assert.match(r.stderr, new RegExp(`error while writing at byte ${at[1]}: Input/output error`));
  compare(theirs, mine, 'qcow2', 'after the failure');
  assertClean(mine);
  // raw and vpc have no compression
  for (const fmt of ['raw', 'vpc']) {
    const t = path.join(dir, `c-target.${fmt}`);
    fs.rmSync(t, { force: true });
    qemuImg('create', '-q', '-f', fmt, t, '8M');
    const qq = qemuImgStatus('convert', '-n', '-c', '-O', fmt, src, t);
    const rr = cli('convert', '-n', '-c', '-O', fmt, src, t);
    assert.equal(qq.status, 1);
    assert.equal(rr.status, 1, rr.stderr);
    assert.match(qq.stderr, /Compression not supported for this file format/);
    assert.match(rr.stderr, /Compression not supported for this file format/);
  }
});

/** base (4 KiB clusters, data) ← top: its own data, zeros over base data, the rest from the base. */
function overlaySource(): { base: string; top: string } {
  const base = path.join(dir, 'b-base.qcow2'), top = path.join(dir, 'b-top.qcow2');
  if (!fs.existsSync(top)) {
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', base, '8M');
    qemuIo(base, ['write -P 0x31 0 3M', 'write -P 0x32 5M 2M']);
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', base, '-F', 'qcow2', top);
    qemuIo(top, ['write -P 0x41 8k 12k', 'write -z 1M 40k', 'write -P 0x42 4M 100k', 'write -P 0x43 6M 4k']);
  }
  return { base, top };
}

test('-n -B into qcow2 targets (an overlay of the same base, a standalone one, a larger cluster size): only the top layer written', () => {
  const { base, top } = overlaySource();
  // with -c a compressed cluster goes only where the target has no host cluster: the targets filled with zeros there
  const targets: Array<[string, (p: string, c: boolean) => void]> = [
    ['overlay', p => qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', base, '-F', 'qcow2', p)],
    // 64 KiB clusters: the top's 4 KiB pieces cover them in part, the rest is the target's (its backing file's)
    ['overlay-64k', (p, c) => { qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', p); qemuIo(p, [c ? 'write -z 4M 64k' : 'write -P 0x5a 4M 64k']); }],
    ['standalone', (p, c) => { qemuImg('create', '-q', '-f', 'qcow2', p, '8M'); qemuIo(p, [c ? 'write -z 0 8M' : 'write -P 0x5a 0 8M']); }],
  ];
  for (const c of [false, true]) {
    for (const [name, make] of targets) {
      const label = `${name}${c ? ' -c' : ''}`;
      const [mine, theirs] = twins(`B-${name}${c ? '-c' : ''}`, p => make(p, c));
      const flags = ['-n', ...(c ? ['-c'] : []), '-B', base, '-F', 'qcow2', '-O', 'qcow2'];
      ours(...flags, top, mine);
      qemuImg('convert', ...flags, top, theirs);
      compare(theirs, mine, 'qcow2', label);
      assertClean(mine);
      assert.deepEqual(layout(mine), layout(theirs), `${label}: the same allocation map`);
      if (name.startsWith('overlay')) compare(top, mine, 'qcow2', `${label}: reads as the source`);
    }
  }
});

test('-n -B into raw, vpc and vmdk targets: the ranges the top leaves to its backing keep the target\'s bytes', () => {
  const { base, top } = overlaySource();
  for (const fmt of ['raw', 'vpc', 'vmdk']) {
    const [mine, theirs] = twins(`B-${fmt}`, p => { qemuImg('create', '-q', '-f', fmt, p, '8M'); qemuIo(p, ['write -P 0x5a 0 8M'], ['-f', fmt]); }, fmt);
    ours('-n', '-B', base, '-O', fmt, top, mine);
    qemuImg('convert', '-n', '-B', base, '-O', fmt, top, theirs);
    compare(theirs, mine, fmt, fmt);
  }
});

test('-n -B with --target-is-zero is refused with qemu-img\'s message, nothing written', () => {
  const { base, top } = overlaySource();
  const t = path.join(dir, 'B-tiz.qcow2');
  fs.rmSync(t, { force: true });
  qemuImg('create', '-q', '-f', 'qcow2', t, '8M');
  const before = fs.readFileSync(t);
  const q = qemuImgStatus('convert', '-n', '--target-is-zero', '-B', base, '-O', 'qcow2', top, t);
  const r = cli('convert', '-n', '--target-is-zero', '-B', base, '-O', 'qcow2', top, t);
  assert.match(q.stderr, /Cannot use --target-is-zero when the destination image has a backing file/);
  assert.match(r.stderr, /Cannot use --target-is-zero when the destination image has a backing file/);
  assert.notEqual(r.status, 0);
  assert.ok(fs.readFileSync(t).equals(before), 'the target unchanged');
});

function guest(img: string): Buffer {
  const raw = path.join(dir, `guest-${path.basename(img)}.raw`);
  qemuImg('convert', '-O', 'raw', img, raw);
  const b = fs.readFileSync(raw);
  fs.rmSync(raw);
  return b;
}

test('-n -c into qcow2 under SIGKILL at every write: check finds at most leaks, each cluster old or new', () => {
  const src = path.join(dir, 'crash-src.qcow2');
  // 5120 guest clusters of 4 KiB: two batches
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', src, '20M');
  qemuIo(src, ['write -P 0x71 0 8M', 'write -P 0x72 10M 8M', 'write -P 0x73 19M 1M']);
  const oldCopy = path.join(dir, 'crash-old.qcow2'), target = path.join(dir, 'crash-target.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', oldCopy, '20M');
  qemuIo(oldCopy, ['write -P 0x5a 8M 2M', 'write -z 10M 10M']);
  const oldGuest = guest(oldCopy), newGuest = guest(src);
  const cs = 4096;
  let k = 0;
  for (; k < 500; k++) {
    fs.copyFileSync(oldCopy, target);
    const r = spawnSync(process.execPath, [CLI, 'convert', '-q', '-n', '-c', '-O', 'qcow2', src, target], { env: { ...process.env, QCOW2_LENS_CRASH_AFTER_WRITES: String(k) }, encoding: 'utf8' });
    const completed = r.status === 0;
    if (!completed) assert.equal(r.signal, 'SIGKILL', `k=${k}: expected a crash, got status ${r.status}: ${r.stderr}`);
    const c = qemuImgStatus('check', target);
    assert.ok(c.status === 0 || c.status === 3, `k=${k}: qemu-img check exited ${c.status}: ${c.stdout}${c.stderr}`);
    if (c.status === 3) assert.doesNotMatch(c.stdout, /ERROR/, `k=${k}`);
    const now = guest(target);
    for (let at = 0; at < now.length; at += cs) {
      const piece = now.subarray(at, at + cs);
      assert.ok(piece.equals(oldGuest.subarray(at, at + cs)) || piece.equals(newGuest.subarray(at, at + cs)), `k=${k}: guest cluster at ${at} is neither the old nor the new`);
    }
    if (completed) {
      assert.equal(c.status, 0, 'the completed run is clean');
      assert.ok(now.equals(newGuest), 'the completed run holds the new content');
      break;
    }
  }
  assert.ok(k > 4 && k < 500, `${k} writes`);
});
