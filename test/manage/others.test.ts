/**
 * measure, amend and bitmap against qemu-img on copies of the same images: measure's output
 * equal; amend's image equal byte for byte; bitmap's `qemu-img info` bitmaps and the bits
 * themselves equal, `qemu-img check` clean; crash tests for bitmap edits and amend.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, cli, qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../helpers/qemu';
import { ImageFile } from '../../src/engine/io/reader';
import { readHeader } from '../../src/engine/qcow2/header';
import { readBitmapDirectory, readBitmapTable } from '../../src/engine/qcow2/bitmap';
import { assertClean, check } from '../write/util';
import { assertSameBytes, infoOf } from './util';

test('measure: the output qemu-img measure prints', () => {
  const dir = tmpDir('qcow2-lens-measure-');
  const a = path.join(dir, 'a.qcow2'), o = path.join(dir, 'o.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', a, '100M');
  qemuIo(a, ['write -P 1 0 3M', 'write -z 10M 1M', 'write -P 2 50M 100k']);
  qemuImg('bitmap', '--add', a, 'b1');
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', o);
  qemuIo(o, ['write -P 3 20M 64k']);
  const cases = [['--size', '1G'], ['-O', 'qcow2', '--size', '1G'], ['-O', 'qcow2', '-o', 'cluster_size=512,preallocation=full', '--size', '10G'],
    ['-O', 'qcow2', a], ['-O', 'qcow2', o], ['-O', 'qcow2', '-o', 'compat=0.10', a], ['-O', 'raw', o], ['--output=json', '-O', 'qcow2', a],
    ['-O', 'qcow2', '-o', 'extended_l2=on', '--output=json', o]];
  for (const c of cases) assert.equal(cli('measure', ...c).stdout.toString(), qemuImg('measure', ...c), c.join(' '));
});

test('amend: compat up and down, lazy refcounts — the image qemu-img amend makes', () => {
  const dir = tmpDir('qcow2-lens-amend-');
  const cases: [string[], string][] = [
    [['-o', 'compat=0.10'], 'compat=1.1'], [[], 'compat=0.10'], [[], 'lazy_refcounts=on'], [['-o', 'lazy_refcounts=on'], 'lazy_refcounts=off'],
    [['-o', 'compat=0.10,cluster_size=512'], 'compat=v3'], [['-o', 'compat=0.10,cluster_size=4k'], 'compat=1.1,lazy_refcounts=on'], [['-o', 'refcount_bits=16'], 'refcount_bits=16'],
  ];
  const b = path.join(dir, 'b.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', path.join(dir, 'base.qcow2'), '16M');
  for (const [create, opts] of [...cases, [['-b', 'base.qcow2', '-F', 'qcow2'], 'compat=0.10'] as [string[], string]]) {
    qemuImg('create', '-q', '-f', 'qcow2', ...create, b, '16M');
    qemuIo(b, ['write -P 1 0 1M', 'write -c -P 2 2M 64k']);
    const q = path.join(dir, 'q.qcow2'), o = path.join(dir, 'o.qcow2');
    fs.copyFileSync(b, q);
    fs.copyFileSync(b, o);
    qemuImg('amend', '-o', opts, q);
    const r = cli('amend', '-o', opts, o);
    assert.equal(r.status, 0, r.stderr);
    assertSameBytes(q, o);
    assertClean(o);
  }
  // refusals
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=8', b, '16M');
  const q = qemuImgStatus('amend', '-o', 'compat=0.10', b);
  const r = cli('amend', '-o', 'compat=0.10', b);
  assert.equal(r.status, 1);
  assert.ok(r.stderr.includes(q.stderr.replace(/^qemu-img: /, '').trim()), r.stderr);
});

test('amend compat=0.10 of an image with zero clusters: expanded as qemu-img amend expands them', () => {
  const dir = tmpDir('qcow2-lens-amend-zero-');
  const b = path.join(dir, 'b.qcow2'), q = path.join(dir, 'q.qcow2'), o = path.join(dir, 'o.qcow2');
  const cases: [string[], string[]][] = [
    // plain zero entries (unallocated before) and preallocated ones (data, then zeroed in place)
    [['-o', 'cluster_size=4k'], ['write -P 1 0 1M', 'write -z 4M 1M', 'write -z 256k 128k', 'write -c -P 2 2M 64k', 'write -z 8M 4k']],
    [[], ['write -P 3 0 3M', 'write -z 64k 2M', 'write -z -u 5M 1M', 'write -z 12M 64k']],
    [['-o', 'preallocation=metadata'], ['write -z 1M 1M', 'write -P 4 3M 64k']],
    // an overlay: every zero entry becomes a data cluster of zeros over the base's bytes
    [['-b', 'base.qcow2', '-F', 'qcow2'], ['write -P 5 0 1M', 'write -z 512k 128k', 'write -z 4M 1M', 'write -z 15M 64k']],
    [['-b', 'base.qcow2', '-F', 'qcow2', '-o', 'cluster_size=4k'], ['write -z 0 3M', 'write -P 6 6M 8k', 'write -z 6M 4k']],
  ];
  qemuImg('create', '-q', '-f', 'qcow2', path.join(dir, 'base.qcow2'), '16M');
  qemuIo(path.join(dir, 'base.qcow2'), ['write -P 9 0 16M']);
  for (const [create, io] of cases) {
    qemuImg('create', '-q', '-f', 'qcow2', ...create, b, '16M');
    qemuIo(b, io);
    fs.copyFileSync(b, q);
    fs.copyFileSync(b, o);
    qemuImg('amend', '-o', 'compat=0.10', q);
    const r = cli('amend', '-o', 'compat=0.10', o);
    assert.equal(r.status, 0, r.stderr);
    assertSameBytes(q, o);
    assertClean(o);
    assert.equal(qemuImgStatus('compare', b, o).status, 0, `${create.join(' ')}: guest content changed`);
  }
  // internal snapshots: their tables expanded too, and what they read kept
  for (const io of [['write -P 1 0 1M', 'write -z 256k 128k', 'write -z 4M 1M'], ['write -z 0 2M', 'write -P 2 8M 64k']]) {
    qemuImg('create', '-q', '-f', 'qcow2', b, '16M');
    qemuIo(b, io);
    qemuImg('snapshot', '-c', 's1', b);
    qemuIo(b, ['write -z 512k 64k', 'write -P 3 6M 64k', 'write -z 12M 1M']);
    qemuImg('snapshot', '-c', 's2', b);
    qemuIo(b, ['write -z 8M 64k']);
    fs.copyFileSync(b, o);
    const r = cli('amend', '-o', 'compat=0.10', o);
    assert.equal(r.status, 0, r.stderr);
    assert.equal((infoOf(o)['format-specific'] as { data: { compat: string } }).data.compat, '0.10');
    // not qemu-img's bytes: qemu-img 7.2 zeroes a preallocated zero cluster a snapshot still
    // reads as data (s1's bytes at 512k become zeros) and leaves OFLAG_COPIED errors; ours makes
    // such entries unallocated and drops their references
    assert.equal(qemuImgStatus('compare', b, o).status, 0, 'guest content changed');
    assertClean(o);
    for (const sn of ['s1', 's2']) {
      const raw = (f: string) => { const out = path.join(dir, `${path.basename(f)}.${sn}.raw`); qemuImg('convert', '-O', 'raw', '-l', `snapshot.name=${sn}`, f, out); return fs.readFileSync(out); };
      assert.ok(raw(b).equals(raw(o)), `snapshot ${sn} changed`);
    }
  }
  // with a refcount width change too: the new refcounts count what the expansion dropped
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k,refcount_bits=8', b, '16M');
  qemuIo(b, ['write -P 1 0 1M', 'write -z 64k 64k']);
  qemuImg('snapshot', '-c', 's1', b);
  qemuIo(b, ['write -z 512k 8k']);
  fs.copyFileSync(b, o);
  const rw = cli('amend', '-o', 'compat=0.10,refcount_bits=16', o);
  assert.equal(rw.status, 0, rw.stderr);
  assertClean(o);
  assert.equal(qemuImgStatus('compare', b, o).status, 0, 'refcount width change: guest content changed');
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', b, '16M');
  qemuIo(b, ['write -z 0 1M']);
  qemuImg('snapshot', '-c', 's1', b);
  assert.match(cli('amend', '-o', 'compat=0.10', b).stderr, /overlay with internal snapshots and zero clusters is not supported yet/);
});

/** Every persistent bitmap: name, granularity, flags and its bits (from the data clusters). */
async function bitmapsOf(img: string): Promise<{ name: string; granularity: number; flags: number; bits: string }[]> {
  const f = await ImageFile.open(img);
  try {
    const h = await readHeader(f);
    if (!h.bitmaps || !(h.autoclearFeatures & 1n)) return [];
    const list = await readBitmapDirectory(f, h.bitmaps.nbBitmaps, h.bitmaps.bitmapDirectoryOffset, h.bitmaps.bitmapDirectorySize, h.clusterSize);
    const out = [];
    for (const b of list) {
      const parts: string[] = [];
      for (const e of await readBitmapTable(f, b)) {
        const data = e.hostOffset ? await f.read(e.hostOffset, h.clusterSize, 'bitmap data') : Buffer.alloc(h.clusterSize, e.allOnes ? 0xff : 0);
        parts.push(data.toString('hex'));
      }
      out.push({ name: b.name, granularity: 2 ** b.granularityBits, flags: b.flags, bits: parts.join('') });
    }
    return out;
  } finally {
    await f.close();
  }
}

test('bitmap: the bitmaps qemu-img bitmap leaves (info, flags, bits), check clean', async () => {
  const dir = tmpDir('qcow2-lens-bitmap-');
  const q = path.join(dir, 'q.qcow2'), o = path.join(dir, 'o.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', q, '64M');
  qemuImg('bitmap', '--add', '-g', '64k', q, 'dirty');
  qemuIo(q, ['write -P 1 0 1M', 'write -P 2 40M 200k']); // QEMU marks the enabled bitmap
  fs.copyFileSync(q, o);
  const steps: string[][] = [['--add', 'b1'], ['--add', '-g', '512k', '--disable', 'b2'], ['--enable', 'b2'], ['--disable', 'b1'], ['--add', '-g', '4k', 'b3'],
    ['--merge', 'dirty', 'b3'], ['--merge', 'dirty', 'b2'], ['--merge', 'b3', 'b1'], ['--clear', 'b3'], ['--remove', 'b2'], ['--remove', 'dirty']];
  for (const s of steps) {
    const name = s[s.length - 1], args = s.slice(0, -1);
    qemuImg('bitmap', ...args, q, name);
    const r = cli('bitmap', ...args, o, name);
    assert.equal(r.status, 0, `${s.join(' ')}: ${r.stderr}`);
    const bi = (p: string) => (infoOf(p)['format-specific'] as { data: { bitmaps?: unknown } }).data.bitmaps;
    assert.deepEqual(bi(o), bi(q), s.join(' '));
    assert.deepEqual(await bitmapsOf(o), await bitmapsOf(q), s.join(' '));
    assertClean(o);
  }
  for (const [args, msg] of [[['--remove'], /Dirty bitmap 'nope' not found/], [['--merge', 'nope'], /not found/]] as [string[], RegExp][]) {
    const r = cli('bitmap', ...args, o, args[0] === '--merge' ? 'b1' : 'nope');
    assert.equal(r.status, 1);
    assert.match(r.stderr, msg);
  }
  assert.match(cli('bitmap', '--add', o, 'b1').stderr, /Bitmap already exists: b1/);
  const v2 = path.join(dir, 'v2.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', v2, '1M');
  assert.equal(cli('bitmap', '--add', v2, 'x').status, 1);
});

test('bitmap --merge SOURCE -b FILE: a bitmap of another image (other cluster size and granularity) merged as qemu-img merges it; a size mismatch refused in its words', async () => {
  const dir = tmpDir('qcow2-lens-bitmap-merge-b-');
  const src = path.join(dir, 'src.qcow2'), q = path.join(dir, 'q.qcow2'), o = path.join(dir, 'o.qcow2'), big = path.join(dir, 'big.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', src, '64M');
  qemuImg('bitmap', '--add', '-g', '8k', src, 'changes');
  qemuIo(src, ['write -P 1 100k 64k', 'write -P 2 33M 4k', 'write -P 3 63M 1M']);
  qemuImg('create', '-q', '-f', 'qcow2', q, '64M');
  qemuImg('bitmap', '--add', '-g', '128k', q, 'backup');
  qemuIo(q, ['write -P 4 10M 64k']);
  fs.copyFileSync(q, o);
  qemuImg('bitmap', '--merge', 'changes', '-b', src, '-F', 'qcow2', q, 'backup');
  const r = cli('bitmap', '--merge', 'changes', '-b', src, '-F', 'qcow2', o, 'backup');
  assert.equal(r.status, 0, r.stderr);
  const bi = (p: string) => (infoOf(p)['format-specific'] as { data: { bitmaps?: unknown } }).data.bitmaps;
  assert.deepEqual(bi(o), bi(q));
  const bits = await bitmapsOf(o);
  assert.deepEqual(bits, await bitmapsOf(q));
  assert.ok(/[^0]/.test(bits[0].bits), 'bits were set');
  assertClean(o);
  qemuImg('create', '-q', '-f', 'qcow2', big, '128M');
  qemuImg('bitmap', '--add', big, 'changes');
  const refused = cli('bitmap', '--merge', 'changes', '-b', big, o, 'backup');
  assert.equal(refused.status, 1);
  assert.match(refused.stderr, /Bitmaps are of different sizes \(destination size is 67108864, source size is 134217728\) and can't be merged/);
  assert.match(cli('bitmap', '--merge', 'nope', '-b', src, o, 'backup').stderr, /Dirty bitmap 'nope' not found/);
  assert.equal(cli('bitmap', '--clear', '-b', src, o, 'backup').status, 64, '-b goes with --merge');
});

function runCrashing(k: number, args: string[]): boolean {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, QCOW2_LENS_CRASH_AFTER_WRITES: String(k) }, encoding: 'utf8' });
  if (r.status === 0) return true;
  assert.equal(r.signal, 'SIGKILL', `k=${k}: expected a crash, got status ${r.status}: ${r.stderr}`);
  return false;
}

test('bitmap and amend: a SIGKILL after any write leaves at most leaks and the old or the new bitmaps', async () => {
  const dir = tmpDir('qcow2-lens-bitmap-crash-');
  const b = path.join(dir, 'b.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', b, '64M');
  qemuImg('bitmap', '--add', '-g', '4k', b, 'dirty');
  qemuIo(b, ['write -P 1 0 1M', 'write -P 2 40M 200k']);
  qemuImg('bitmap', '--add', b, 'other');
  const ops: string[][] = [['--merge', 'dirty', 'other'], ['--add', 'new'], ['--clear', 'dirty'], ['--remove', 'dirty']];
  for (const op of ops) {
    const before = await bitmapsOf(b);
    const done = path.join(dir, 'done.qcow2');
    fs.copyFileSync(b, done);
    const line = (f: string) => ['bitmap', ...op.slice(0, -1), f, op[op.length - 1]];
    assert.ok(runCrashing(1e9, line(done)));
    const after = await bitmapsOf(done);
    for (let k = 0; k < 50; k++) {
      const w = path.join(dir, 'w.qcow2');
      fs.copyFileSync(b, w);
      const completed = runCrashing(k, line(w));
      const c = check(w);
      assert.equal(c.errors.length, 0, `${op.join(' ')} k=${k}: ${c.out}`);
      const now = await bitmapsOf(w);
      assert.ok(JSON.stringify(now) === JSON.stringify(before) || JSON.stringify(now) === JSON.stringify(after), `${op.join(' ')} k=${k}: bitmaps neither old nor new`);
      if (completed) break;
    }
    fs.copyFileSync(done, b);
  }
  for (const opts of ['lazy_refcounts=on', 'compat=0.10']) {
    const a = path.join(dir, 'a.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', a, '16M');
    assert.equal(runCrashing(0, ['amend', '-o', opts, a]), false);
    assertClean(a);
  }
  // a downgrade that expands zero clusters: zeros, L2 tables, header — each point old or new guest
  const z = path.join(dir, 'z.qcow2');
  const downgradeCrashes = (label: string, extra: (w: string) => boolean = () => true) => {
    for (let k = 0; k < 80; k++) {
      const w = path.join(dir, 'w.qcow2');
      fs.copyFileSync(z, w);
      const completed = runCrashing(k, ['amend', '-o', 'compat=0.10', w]);
      const c = check(w);
      assert.equal(c.errors.length, 0, `${label} k=${k}: ${c.out}`);
      assert.equal(qemuImgStatus('compare', z, w).status, 0, `${label} k=${k}: guest content changed`);
      assert.ok(extra(w), `${label} k=${k}: snapshot changed`);
      if (completed) return assert.ok(k > 2, `${label}: done after ${k} writes`);
    }
    assert.fail(`${label}: never completed`);
  };
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', z, '16M');
  qemuIo(z, ['write -P 1 0 2M', 'write -z 64k 64k', 'write -z 1M 4k', 'write -z 3M 1M', 'write -P 2 9M 4k', 'write -z 9M 4k']);
  downgradeCrashes('amend zero');
  // with a snapshot sharing preallocated zero clusters: their references dropped after the tables
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', z, '16M');
  qemuIo(z, ['write -P 1 0 1M', 'write -z 64k 64k']);
  qemuImg('snapshot', '-c', 's1', z);
  qemuIo(z, ['write -z 512k 8k', 'write -z 3M 1M']);
  const s1 = (f: string) => { const out = `${f}.s1.raw`; qemuImg('convert', '-O', 'raw', '-l', 'snapshot.name=s1', f, out); return fs.readFileSync(out); };
  const zs1 = s1(z);
  downgradeCrashes('amend snapshot zero', w => s1(w).equals(zs1));
  // an overlay: zero clusters become data clusters of zeros, by the cluster writer
  qemuImg('create', '-q', '-f', 'qcow2', path.join(dir, 'zb.qcow2'), '16M');
  qemuIo(path.join(dir, 'zb.qcow2'), ['write -P 9 0 16M']);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'zb.qcow2', '-F', 'qcow2', z, '16M');
  qemuIo(z, ['write -P 1 0 1M', 'write -z 64k 64k', 'write -z 3M 1M', 'write -z 12M 4k']);
  downgradeCrashes('amend overlay zero');
});
