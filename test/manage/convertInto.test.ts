/**
 * `qcow2-lens convert -n` against `qemu-img convert -n` doing the same into a twin copy of the
 * same QEMU-made target: sources of several cluster sizes with compressed clusters, zero clusters,
 * a snapshot and a 2-deep chain; targets of every -n format (qcow2 — with a snapshot sharing its
 * clusters, compressed clusters, a backing file, version 2, another cluster size —, raw, vpc
 * dynamic and fixed, vmdk monolithicSparse and streamOptimized), pre-filled with data so that the
 * source's zero ranges must clear it and a larger target keeps its tail. Ours and qemu-img's twin
 * compare equal, qcow2 results check clean. Then qemu-img's errors (missing target, too small,
 * not of the -O format) with its exit code, a target QEMU holds, and SIGKILL at every write of
 * -n into qcow2 and into a fixed VHD (written in place, its footer untouched).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isLockedByQemu } from '../../src/engine/io/lock';
import { CLI, cli, qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../helpers/qemu';
import { assertClean } from '../write/util';

const dir = tmpDir('qcow2-lens-convert-into-');

/** base (4k clusters) ← top (64k clusters), 6 MiB: data, compressed and zero clusters, a snapshot in the top. */
function chainSource(): string {
  const base = path.join(dir, 'src-base.qcow2'), top = path.join(dir, 'src-top.qcow2');
  if (fs.existsSync(top)) return top;
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', base, '6M');
  qemuIo(base, ['write -P 0x11 0 1M', 'write -c -P 0x12 2M 256k', 'write -P 0x13 4M 1M']);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=64k', '-b', base, '-F', 'qcow2', top);
  qemuIo(top, ['write -P 0x21 512k 128k', 'write -z 4M 256k', 'write -c -P 0x22 5M 128k', 'write -P 0 3M 64k']);
  qemuImg('snapshot', '-c', 'old', top);
  qemuIo(top, ['write -P 0x23 1536k 64k']);
  return top;
}

/** A standalone source of 2 MiB clusters whose size is not a multiple of its cluster size. */
function bigClusterSource(): string {
  const p = path.join(dir, 'src-2m.qcow2');
  if (fs.existsSync(p)) return p;
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2M', p, '5000k');
  qemuIo(p, ['write -P 0x41 0 100k', 'write -c -P 0x42 2M 2M', 'write -P 0x43 4900k 100k']);
  return p;
}

interface Target { name: string; fmt: 'qcow2' | 'raw' | 'vpc' | 'vmdk'; make: (p: string) => void }

function filled(fmt: string, p: string, size: string, create: string[] = []): void {
  qemuImg('create', '-q', '-f', fmt, ...create, p, size);
  qemuIo(p, [`write -P 0x5a 0 ${size}`], ['-f', fmt]);
}

const TARGETS: Target[] = [
  { name: 'qcow2', fmt: 'qcow2', make: p => filled('qcow2', p, '8M') },
  {
    name: 'qcow2-snapshot-compressed', fmt: 'qcow2', make: p => {
      // compressed writes go to unallocated clusters only: those first, the rest filled around them
      qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', p, '8M');
      qemuIo(p, ['write -c -P 0x5b 1M 512k', 'write -c -P 0x5c 4M 64k', 'write -P 0x5a 0 1M', 'write -P 0x5a 1536k 2560k', 'write -P 0x5a 4160k 4032k']);
      qemuImg('snapshot', '-c', 'before', p);
    },
  },
  {
    name: 'qcow2-overlay', fmt: 'qcow2', make: p => {
      const b = p + '.base';
      filled('qcow2', b, '8M');
      qemuImg('create', '-q', '-f', 'qcow2', '-b', b, '-F', 'qcow2', p);
      qemuIo(p, ['write -P 0x5d 3M 1M']);
    },
  },
  { name: 'qcow2-v2', fmt: 'qcow2', make: p => filled('qcow2', p, '8M', ['-o', 'compat=0.10,cluster_size=16k']) },
  { name: 'qcow2-extended-l2', fmt: 'qcow2', make: p => filled('qcow2', p, '8M', ['-o', 'extended_l2=on,cluster_size=128k']) },
  { name: 'raw', fmt: 'raw', make: p => filled('raw', p, '8M') },
  { name: 'vpc', fmt: 'vpc', make: p => filled('vpc', p, '8M') },
  { name: 'vpc-fixed', fmt: 'vpc', make: p => filled('vpc', p, '8M', ['-o', 'subformat=fixed']) },
  { name: 'vmdk', fmt: 'vmdk', make: p => filled('vmdk', p, '8M') },
  // QEMU writes a streamOptimized target only where its grains are unallocated (a filled one: next test)
  { name: 'vmdk-stream', fmt: 'vmdk', make: p => qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=streamOptimized', p, '8M') },
];

function ours(...args: string[]): void {
  const r = cli('convert', ...args);
  assert.equal(r.status, 0, `qcow2-lens convert ${args.join(' ')}: ${r.stderr}`);
}

function compare(a: string, aFmt: string, b: string, bFmt: string, what: string): void {
  const r = qemuImgStatus('compare', '-f', aFmt, '-F', bFmt, a, b);
  assert.equal(r.status, 0, `${what}: qemu-img compare ${a} ${b}: ${r.stdout}${r.stderr}`);
}

/** Guest bytes of [0, n) of an image, as qemu-img reads them. */
function guest(img: string, fmt: string): Buffer {
  const raw = path.join(dir, `guest-${path.basename(img)}.raw`);
  qemuImg('convert', '-f', fmt, '-O', 'raw', img, raw);
  const b = fs.readFileSync(raw);
  fs.rmSync(raw);
  return b;
}

for (const [srcName, source] of [['a 2-deep chain with a snapshot', chainSource], ['2 MiB clusters, an odd size', bigClusterSource]] as const) {
  test(`-n into every target format (${srcName}): ours equals qemu-img's twin, qcow2 checks clean`, () => {
    const src = source();
    const srcGuest = guest(src, 'qcow2');
    for (const t of TARGETS) {
      // qemu-img fails a partial last grain into streamOptimized (EINVAL): no twin to compare with
      if (t.name === 'vmdk-stream' && srcGuest.length % 65536 !== 0) continue;
      const mine = path.join(dir, `into-${t.name}.img`), theirs = path.join(dir, `into-${t.name}-qemu.img`);
      for (const p of [mine, theirs]) { fs.rmSync(p, { force: true }); t.make(p); }
      const before = guest(mine, t.fmt);
      ours('-n', '-O', t.fmt, src, mine);
      qemuImg('convert', '-n', '-O', t.fmt, src, theirs);
      compare(theirs, t.fmt, mine, t.fmt, t.name);
      const after = guest(mine, t.fmt);
      assert.equal(after.length, before.length, `${t.name}: the target keeps its size`);
      assert.ok(after.subarray(0, srcGuest.length).equals(srcGuest), `${t.name}: the source's bytes`);
      assert.ok(after.subarray(srcGuest.length).equals(before.subarray(srcGuest.length)), `${t.name}: the tail past the source kept`);
      if (t.fmt === 'qcow2') assertClean(mine);
      if (t.name === 'qcow2-snapshot-compressed') {
        // the snapshot still reads what it read before
        const snap = path.join(dir, 'snap.raw');
        qemuImg('convert', '-l', 'before', '-O', 'raw', mine, snap);
        assert.ok(fs.readFileSync(snap).equals(before), 'the target\'s snapshot is untouched');
        fs.rmSync(snap);
      }
    }
  });
}

test('--target-is-zero with -n into a fresh qcow2: equal to the source, zero ranges left unallocated', () => {
  const src = chainSource();
  const mine = path.join(dir, 'tiz.qcow2'), theirs = path.join(dir, 'tiz-qemu.qcow2');
  for (const p of [mine, theirs]) { fs.rmSync(p, { force: true }); qemuImg('create', '-q', '-f', 'qcow2', p, '6M'); }
  ours('-n', '--target-is-zero', '-O', 'qcow2', src, mine);
  qemuImg('convert', '-n', '--target-is-zero', '-O', 'qcow2', src, theirs);
  compare(theirs, 'qcow2', mine, 'qcow2', 'target-is-zero');
  compare(src, 'qcow2', mine, 'qcow2', 'target-is-zero source');
  assertClean(mine);
  const map = JSON.parse(qemuImg('map', '--output=json', mine)) as Array<{ data: boolean; length: number }>;
  const dataBytes = map.filter(e => e.data).reduce((a, e) => a + e.length, 0);
  assert.ok(dataBytes < 6 * 1024 * 1024, `zero ranges stay unallocated (${dataBytes} data bytes)`);
});

test('-n errors are qemu-img\'s: missing target, a target smaller than the source, a target not of the -O format', () => {
  const src = chainSource();
  const small = path.join(dir, 'small');
  const cases: Array<[string, () => string, RegExp]> = [];
  for (const fmt of ['qcow2', 'raw', 'vpc', 'vmdk']) {
    cases.push([`missing ${fmt}`, () => path.join(dir, `missing.${fmt}`), /Could not open '.*missing\.[a-z0-9]+': Could not open '.*': No such file or directory/]);
    cases.push([`small ${fmt}`, () => { const p = `${small}.${fmt}`; fs.rmSync(p, { force: true }); qemuImg('create', '-q', '-f', fmt, p, '2M'); return p; }, /output file is smaller than input file/]);
  }
  for (const [label, make, re] of cases) {
    const fmt = label.split(' ')[1];
    const target = make();
    const q = qemuImgStatus('convert', '-n', '-O', fmt, src, target);
    const r = cli('convert', '-n', '-O', fmt, src, target);
    assert.equal(q.status, 1, `qemu-img ${label}`);
    assert.equal(r.status, q.status, `${label}: ours ${r.status}: ${r.stderr}`);
    assert.match(q.stderr, re, `qemu-img ${label}`);
    assert.match(r.stderr, re, label);
    if (label.startsWith('missing')) assert.ok(!fs.existsSync(target), `${label}: nothing created`);
  }
  // a streamOptimized target with grains allocated where the source goes: QEMU cannot write there
  const stream = path.join(dir, 'stream.vmdk');
  filled('vmdk', stream, '8M', ['-o', 'subformat=streamOptimized']);
  const sq = qemuImgStatus('convert', '-n', '-O', 'vmdk', src, stream);
  const sr = cli('convert', '-n', '-O', 'vmdk', src, stream);
  assert.equal(sq.status, 1);
  assert.equal(sr.status, sq.status, sr.stderr);
  assert.match(sq.stderr, /Could not write to allocated cluster for streamOptimized/);
  assert.match(sr.stderr, /Could not write to allocated cluster for streamOptimized/);
  // a raw file is not a qcow2 target
  const raw = path.join(dir, 'notq.raw');
  qemuImg('create', '-q', '-f', 'raw', raw, '8M');
  const q = qemuImgStatus('convert', '-n', '-O', 'qcow2', src, raw);
  const r = cli('convert', '-n', '-O', 'qcow2', src, raw);
  assert.equal(r.status, q.status);
  assert.match(q.stderr, /Image is not in qcow2 format/);
  assert.match(r.stderr, /Could not open '.*notq\.raw': Image is not in qcow2 format/);
  // the unchanged target: still all zeros
  assert.ok(fs.readFileSync(raw).every(b => b === 0));
});

test('-n into a qcow2 target a running QEMU holds is refused, the target unchanged; a source\'s own backing file is refused as a target', async () => {
  const src = chainSource();
  const target = path.join(dir, 'held.qcow2');
  fs.rmSync(target, { force: true });
  filled('qcow2', target, '8M');
  const before = fs.readFileSync(target);
  const holder = spawn('qemu-io', ['-c', 'sleep 20000', target], { stdio: 'ignore' });
  try {
    const end = Date.now() + 10000;
    while (!isLockedByQemu(target)) {
      if (Date.now() > end) throw new Error('qemu-io did not take its locks');
      await new Promise(res => setTimeout(res, 50));
    }
    const r = cli('convert', '-n', '-O', 'qcow2', src, target);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /in use by a running QEMU/);
  } finally {
    holder.kill('SIGKILL');
    await new Promise(res => holder.once('exit', res));
  }
  assert.ok(fs.readFileSync(target).equals(before));
  const base = path.join(dir, 'src-base.qcow2');
  const r = cli('convert', '-n', '-O', 'qcow2', src, base);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /the target is also a source/);
});

/** Runs the CLI, killed before write k; true when it completed. */
function run(k: number, args: string[]): boolean {
  const r = spawnSync(process.execPath, [CLI, 'convert', '-q', ...args], { env: { ...process.env, QCOW2_LENS_CRASH_AFTER_WRITES: String(k) }, encoding: 'utf8' });
  if (r.status === 0) return true;
  assert.equal(r.signal, 'SIGKILL', `k=${k}: expected a crash, got status ${r.status}: ${r.stderr}`);
  return false;
}

test('-n into qcow2 in place under SIGKILL at every write: check finds at most leaks, each cluster old or new, the snapshot intact', () => {
  const src = path.join(dir, 'crash-src.qcow2');
  // 6144 guest clusters of 4 KiB: the writer's batches (4096 clusters) make two rounds of data, refcounts, L2, L1
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', src, '24M');
  qemuIo(src, ['write -P 0x71 0 64k', 'write -c -P 0x72 256k 32k', 'write -z 512k 64k', 'write -P 0x73 900k 8k', 'write -P 0x74 2100k 200k', 'write -P 0x75 10M 1M', 'write -P 0x76 20M 2M']);
  const oldCopy = path.join(dir, 'crash-old.qcow2'), target = path.join(dir, 'crash-target.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', oldCopy, '32M');
  qemuIo(oldCopy, ['write -c -P 0x5b 256k 64k', 'write -P 0x5a 0 256k', 'write -P 0x5a 320k 32448k']);
  qemuImg('snapshot', '-c', 'keep', oldCopy);
  qemuIo(oldCopy, ['write -P 0x5c 512k 128k']);
  const oldGuest = guest(oldCopy, 'qcow2');
  const snapRaw = path.join(dir, 'crash-snap.raw');
  qemuImg('convert', '-l', 'keep', '-O', 'raw', oldCopy, snapRaw);
  const snapGuest = fs.readFileSync(snapRaw);
  const newGuest = Buffer.concat([guest(src, 'qcow2'), oldGuest.subarray(24 * 1024 * 1024)]);
  const cs = 4096;
  let k = 0;
  for (; k < 2000; k++) {
    fs.copyFileSync(oldCopy, target);
    const completed = run(k, ['-n', '-O', 'qcow2', src, target]);
    const c = qemuImgStatus('check', target);
    // 0: clean; 3: leaked clusters only
    assert.ok(c.status === 0 || c.status === 3, `k=${k}: qemu-img check exited ${c.status}: ${c.stdout}${c.stderr}`);
    if (c.status === 3) assert.doesNotMatch(c.stdout, /ERROR/, `k=${k}`);
    const now = guest(target, 'qcow2');
    for (let at = 0; at < now.length; at += cs) {
      const piece = now.subarray(at, at + cs);
      assert.ok(piece.equals(oldGuest.subarray(at, at + cs)) || piece.equals(newGuest.subarray(at, at + cs)), `k=${k}: guest cluster at ${at} is neither the old nor the new`);
    }
    qemuImg('convert', '-l', 'keep', '-O', 'raw', target, snapRaw);
    assert.ok(fs.readFileSync(snapRaw).equals(snapGuest), `k=${k}: the snapshot changed`);
    if (completed) {
      assert.equal(c.status, 0, 'the completed run is clean');
      assert.ok(now.equals(newGuest), 'the completed run holds the new content');
      break;
    }
  }
  if (process.env.CRASH_DEBUG) console.error(`convert -n crash points: ${k}`);
  assert.ok(k > 8 && k < 2000, `${k} writes`);
});

test('-n into a fixed VHD in place under SIGKILL at every write: the footer never touched, each sector old or new', () => {
  const src = chainSource();
  const oldCopy = path.join(dir, 'crash-old.vhd'), target = path.join(dir, 'crash-target.vhd');
  filled('vpc', oldCopy, '8M', ['-o', 'subformat=fixed']);
  const oldGuest = guest(oldCopy, 'vpc');
  const oldFile = fs.readFileSync(oldCopy);
  const footer = oldFile.subarray(oldFile.length - 512);
  const newGuest = Buffer.concat([guest(src, 'qcow2'), oldGuest.subarray(6 * 1024 * 1024)]);
  let k = 0;
  for (; k < 500; k++) {
    fs.copyFileSync(oldCopy, target);
    const completed = run(k, ['-n', '-O', 'vpc', src, target]);
    const file = fs.readFileSync(target);
    assert.equal(file.length, oldFile.length, `k=${k}: the file keeps its length (written in place)`);
    assert.ok(file.subarray(file.length - 512).equals(footer), `k=${k}: the footer is unchanged`);
    // (a fixed VHD has no signature at offset 0: qemu-img opens it as vpc only when told)
    const info = JSON.parse(qemuImg('info', '-f', 'vpc', '--output=json', target)) as { 'virtual-size': number };
    assert.equal(info['virtual-size'], oldGuest.length, `k=${k}: the footer's size`);
    const now = guest(target, 'vpc');
    for (let at = 0; at < now.length; at += 512) {
      const s = now.subarray(at, at + 512);
      assert.ok(s.equals(oldGuest.subarray(at, at + 512)) || s.equals(newGuest.subarray(at, at + 512)), `k=${k}: sector at ${at} is neither the old nor the new`);
    }
    if (completed) {
      assert.ok(now.equals(newGuest), 'the completed run holds the new content');
      break;
    }
  }
  assert.ok(k >= 2 && k < 500, `${k} writes`);
});
