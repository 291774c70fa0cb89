/**
 * `qcow2-lens convert` against `qemu-img convert` on the same QEMU-made sources (a 3-deep chain
 * with data, zero clusters, compressed clusters and a zero-data cluster; raw, VHD and VMDK files):
 * every output compares equal to its source (`qemu-img compare`), every qcow2 output is clean
 * (`qemu-img check`), `qemu-img info` of each output shows the format, subformat and virtual size
 * of qemu-img's twin, and where qemu-img's in-order writes are reproduced the qcow2 file holds
 * qemu-img's bytes. Then -B, -c, -S, -n, several sources, the refusals and the exit codes.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isLockedByQemu } from '../../src/engine/io/lock';
import { cli, qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../helpers/qemu';
import { assertClean } from '../write/util';
import { assertSameBytes, mapOf } from './util';

const dir = tmpDir('qcow2-lens-convert-');

/** base ← mid ← top, 24 MiB: the top's guest view mixes all three layers. */
function chain(): { base: string; mid: string; top: string } {
  const base = path.join(dir, 'base.qcow2'), mid = path.join(dir, 'mid.qcow2'), top = path.join(dir, 'top.qcow2');
  if (fs.existsSync(top)) return { base, mid, top };
  qemuImg('create', '-q', '-f', 'qcow2', base, '24M');
  qemuIo(base, ['write -P 0x11 0 2M', 'write -P 0x12 5M 300k', 'write -c -P 0x13 9M 128k', 'write -P 0x14 20M 1M']);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', mid);
  qemuIo(mid, ['write -P 0x21 1M 64k', 'write -z 5M 64k', 'write -P 0x22 12M 100k']);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', top);
  qemuIo(top, ['write -P 0x31 64k 64k', 'write -P 0 20M 64k', 'write -z 12M 64k', 'write -c -P 0x32 16M 64k', 'write -P 0x33 23M 4k']);
  return { base, mid, top };
}

interface Info { format: string; 'virtual-size': number; 'backing-filename'?: string; 'format-specific'?: { type: string; data: Record<string, unknown> } }
function info(file: string, fmt?: string): Info {
  return JSON.parse(qemuImg('info', '--output=json', ...(fmt ? ['-f', fmt] : []), file)) as Info;
}

/** What qemu-img info shows that must match: format, virtual size, the format's own fields minus random ones. */
function shape(file: string, fmt?: string): unknown {
  const i = info(file, fmt);
  const data = { ...(i['format-specific']?.data ?? {}) };
  delete data.cid; delete data['parent-cid'];
  for (const e of (data.extents as Array<Record<string, unknown>> | undefined) ?? []) delete e.filename;
  return { format: i.format, size: i['virtual-size'], backing: i['backing-filename'], specific: data };
}

function ours(...args: string[]): void {
  const r = cli('convert', ...args);
  assert.equal(r.status, 0, `qcow2-lens convert ${args.join(' ')}: ${r.stderr}`);
}

function assertEqualContent(src: string, out: string, outFmt?: string): void {
  const r = qemuImgStatus('compare', ...(outFmt ? ['-F', outFmt] : []), src, out);
  assert.equal(r.status, 0, `qemu-img compare ${src} ${out}: ${r.stdout}${r.stderr}`);
}

interface Case { name: string; args: string[]; ext: string; sameBytes?: boolean; readFmt?: string }

const CASES: Case[] = [
  { name: 'qcow2', args: ['-O', 'qcow2'], ext: 'qcow2', sameBytes: true },
  { name: 'qcow2 512 B clusters', args: ['-O', 'qcow2', '-o', 'cluster_size=512'], ext: 'qcow2' },
  { name: 'qcow2 2 MiB clusters', args: ['-O', 'qcow2', '-o', 'cluster_size=2M'], ext: 'qcow2', sameBytes: true },
  { name: 'qcow2 compat 0.10', args: ['-O', 'qcow2', '-o', 'compat=0.10'], ext: 'qcow2', sameBytes: true },
  { name: 'qcow2 refcount_bits=1, 4 KiB clusters', args: ['-O', 'qcow2', '-o', 'refcount_bits=1,cluster_size=4k'], ext: 'qcow2', sameBytes: true },
  { name: 'qcow2 refcount_bits=64', args: ['-O', 'qcow2', '-o', 'refcount_bits=64'], ext: 'qcow2', sameBytes: true },
  { name: 'qcow2 extended L2', args: ['-O', 'qcow2', '-o', 'extended_l2=on'], ext: 'qcow2', sameBytes: true },
  { name: 'qcow2 lazy refcounts', args: ['-O', 'qcow2', '-o', 'lazy_refcounts=on'], ext: 'qcow2', sameBytes: true },
  { name: 'qcow2 preallocation=metadata', args: ['-O', 'qcow2', '-o', 'preallocation=metadata'], ext: 'qcow2', sameBytes: true },
  { name: 'qcow2 -S 0 (fully allocated)', args: ['-O', 'qcow2', '-S', '0'], ext: 'qcow2', sameBytes: true },
  { name: 'qcow2 -S 64k', args: ['-O', 'qcow2', '-S', '64k'], ext: 'qcow2', sameBytes: true },
  { name: 'qcow2 -c (zlib)', args: ['-O', 'qcow2', '-c'], ext: 'qcow2', sameBytes: true },
  { name: 'qcow2 -c zstd', args: ['-O', 'qcow2', '-c', '-o', 'compression_type=zstd'], ext: 'qcow2', sameBytes: true },
  { name: 'qcow2 -c 512 B clusters', args: ['-O', 'qcow2', '-c', '-o', 'cluster_size=512'], ext: 'qcow2' },
  { name: 'qcow2 -c 2 MiB clusters (larger than a compression slot)', args: ['-O', 'qcow2', '-c', '-o', 'cluster_size=2M'], ext: 'qcow2' },
  { name: 'raw (default -O)', args: [], ext: 'raw', sameBytes: true },
  { name: 'raw -S 0', args: ['-O', 'raw', '-S', '0'], ext: 'raw', sameBytes: true },
  { name: 'vpc dynamic', args: ['-O', 'vpc'], ext: 'vhd' },
  { name: 'vpc fixed', args: ['-O', 'vpc', '-o', 'subformat=fixed'], ext: 'vhd', readFmt: 'vpc' },
  { name: 'vpc force_size', args: ['-O', 'vpc', '-o', 'force_size=on'], ext: 'vhd' },
  { name: 'vmdk monolithicSparse', args: ['-O', 'vmdk'], ext: 'vmdk' },
  { name: 'vmdk streamOptimized', args: ['-O', 'vmdk', '-o', 'subformat=streamOptimized'], ext: 'vmdk' },
];

for (const c of CASES) {
  test(`convert ${c.name}: equal to the chain it flattens, info as qemu-img's twin${c.sameBytes ? ', the same bytes' : ''}`, () => {
    const { top } = chain();
    const slug = c.name.replace(/\W+/g, '-');
    const mine = path.join(dir, `ours-${slug}.${c.ext}`), theirs = path.join(dir, `qemu-${slug}.${c.ext}`);
    ours(...c.args, top, mine);
    qemuImg('convert', ...c.args, top, theirs);
    assertEqualContent(top, mine, c.readFmt);
    assert.deepEqual(shape(mine, c.readFmt), shape(theirs, c.readFmt));
    const i = info(mine, c.readFmt);
    assert.equal(i['backing-filename'], undefined, 'the output is standalone');
    if (c.ext === 'qcow2') assertClean(mine);
    if (c.sameBytes) assertSameBytes(theirs, mine);
    if (c.ext === 'qcow2') assert.deepEqual(mapOf(mine), mapOf(theirs));
  });
}

test('-c: the output has compressed clusters (qemu-img check counts them) and compares equal', () => {
  const { top } = chain();
  const out = path.join(dir, 'compressed.qcow2');
  ours('-c', '-O', 'qcow2', top, out);
  const r = qemuImgStatus('check', out);
  const m = /([\d.]+)% compressed clusters/.exec(r.stdout);
  assert.ok(m && Number(m[1]) > 90, `qemu-img check: ${r.stdout}`);
  assertEqualContent(top, out);
  const entries = JSON.parse(qemuImg('map', '--output=json', out)) as Array<{ data: boolean; offset?: number }>;
  assert.ok(entries.some(e => e.data && e.offset === undefined), 'qemu-img map shows data without an offset (compressed)');
});

test('-B: the output keeps the backing reference, copies only the top layer, and equals qemu-img -B', () => {
  const { mid, top } = chain();
  const mine = path.join(dir, 'ours-B.qcow2'), theirs = path.join(dir, 'qemu-B.qcow2');
  ours('-O', 'qcow2', '-B', mid, '-F', 'qcow2', top, mine);
  qemuImg('convert', '-O', 'qcow2', '-B', mid, '-F', 'qcow2', top, theirs);
  assert.equal(info(mine)['backing-filename'], mid);
  assertClean(mine);
  assertEqualContent(top, mine);
  assert.deepEqual(mapOf(mine), mapOf(theirs));
  assertSameBytes(theirs, mine);
  // v2 has no zero flag: top-layer zeros are written as data
  const v2 = path.join(dir, 'ours-B-v2.qcow2');
  ours('-O', 'qcow2', '-o', 'compat=0.10', '-B', mid, '-F', 'qcow2', top, v2);
  assertClean(v2);
  assertEqualContent(top, v2);
  // extended L2 and compression with a backing file
  for (const extra of [['-o', 'extended_l2=on'], ['-c']]) {
    const out = path.join(dir, `ours-B${extra.join('')}.qcow2`);
    ours('-O', 'qcow2', ...extra, '-B', mid, '-F', 'qcow2', top, out);
    assertClean(out);
    assertEqualContent(top, out);
    assert.equal(info(out)['backing-filename'], mid);
  }
});

test('sources in raw, vpc (dynamic and fixed) and vmdk (sparse and stream) convert to the qcow2 qemu-img writes', () => {
  const { top } = chain();
  const sources: Array<[string, string[], string | undefined]> = [
    ['src.raw', ['-O', 'raw'], undefined],
    ['src-dyn.vhd', ['-O', 'vpc'], undefined],
    ['src-fixed.vhd', ['-O', 'vpc', '-o', 'subformat=fixed'], 'vpc'],
    ['src.vmdk', ['-O', 'vmdk'], undefined],
    ['src-stream.vmdk', ['-O', 'vmdk', '-o', 'subformat=streamOptimized'], undefined],
  ];
  for (const [name, make, fmt] of sources) {
    const src = path.join(dir, name);
    qemuImg('convert', ...make, top, src);
    const mine = path.join(dir, `ours-from-${name}.qcow2`), theirs = path.join(dir, `qemu-from-${name}.qcow2`);
    const f = fmt ? ['-f', fmt] : [];
    ours(...f, '-O', 'qcow2', src, mine);
    qemuImg('convert', ...f, '-O', 'qcow2', src, theirs);
    assertClean(mine);
    assert.equal(qemuImgStatus('compare', ...(fmt ? ['-f', fmt] : []), src, mine).status, 0, name);
    assertSameBytes(theirs, mine);
  }
});

test('several sources are concatenated as qemu-img concatenates them', () => {
  const { base, top } = chain();
  const raw = path.join(dir, 'cat.raw');
  qemuImg('create', '-q', '-f', 'raw', raw, '3M');
  qemuIo(raw, ['write -P 0x77 1M 512k'], ['-f', 'raw']);
  const mine = path.join(dir, 'ours-cat.qcow2'), theirs = path.join(dir, 'qemu-cat.qcow2');
  ours('-O', 'qcow2', top, raw, base, mine);
  qemuImg('convert', '-O', 'qcow2', top, raw, base, theirs);
  assert.equal(info(mine)['virtual-size'], 2 * 24 * 1024 * 1024 + 3 * 1024 * 1024);
  assertClean(mine);
  assertEqualContent(theirs, mine);
  assertSameBytes(theirs, mine);
});

test('-n writes into an existing raw target (stale bytes overwritten, zeros cleared)', () => {
  const { top } = chain();
  const target = path.join(dir, 'target.raw');
  qemuImg('create', '-q', '-f', 'raw', target, '24M');
  qemuIo(target, ['write -P 0x5a 0 24M'], ['-f', 'raw']);
  ours('-n', '-O', 'raw', top, target);
  assertEqualContent(top, target, 'raw');
  // --target-is-zero on a zeroed target leaves the zero ranges alone
  const zero = path.join(dir, 'zero.raw');
  qemuImg('create', '-q', '-f', 'raw', zero, '24M');
  ours('-n', '--target-is-zero', '-O', 'raw', top, zero);
  assertEqualContent(top, zero, 'raw');
  // a missing target is an error, as in qemu-img
  const missing = cli('convert', '-n', '-O', 'raw', top, path.join(dir, 'missing.raw'));
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /No such file or directory/);
});

test('refusals: qemu-img\'s messages and exit code 1, and nothing is left at DST', () => {
  const { mid, top } = chain();
  const cases: Array<[string[], RegExp]> = [
    [['-c', '-O', 'raw'], /Compression not supported for this file format/],
    [['-c', '-O', 'vpc'], /Compression not supported for this file format/],
    [['-B', mid, '-O', 'raw'], /Backing file not supported for file format 'raw'/],
    [['-B', mid, '-O', 'qcow2'], /Use of backing file requires explicit backing format/],
    [['-S', '100', '-O', 'raw'], /Invalid buffer size for sparse output/],
    [['-O', 'foo'], /Unknown file format 'foo'/],
    [['-O', 'qcow2', '-c', '-o', 'preallocation=metadata'], /Compression and preallocation not supported at the same time/],
    [['-O', 'qcow2', '-o', 'bogus=1'], /Invalid parameter 'bogus'/],
    [['-O', 'vpc', '-o', 'subformat=bad'], /Parameter 'subformat' does not accept value/],
    [['-O', 'qcow2', '-F', 'qcow2'], /Backing format cannot be used without backing file/],
  ];
  for (const [args, re] of cases) {
    const out = path.join(dir, 'refused.img');
    const q = qemuImgStatus('convert', ...args, top, out);
    fs.rmSync(out, { force: true });
    const r = cli('convert', ...args, top, out);
    assert.equal(r.status, q.status, `${args.join(' ')}: ours ${r.status}, qemu-img ${q.status}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
    assert.match(q.stderr, re, `qemu-img ${args.join(' ')}`);
    assert.ok(!fs.existsSync(out), `${args.join(' ')}: nothing at DST`);
  }
  const none = cli('convert', path.join(dir, 'no-such.qcow2'), path.join(dir, 'x.raw'));
  assert.equal(none.status, 1);
  assert.match(none.stderr, /no-such\.qcow2/);
  // -l names a snapshot the source does not have: qemu-img's message and exit code (convertSnapshot.test.ts has the rest)
  const noSnap = cli('convert', '-l', 'snap', top, path.join(dir, 'x.raw'));
  assert.equal(noSnap.status, qemuImgStatus('convert', '-l', 'snap', top, path.join(dir, 'x.raw')).status);
  assert.match(noSnap.stderr, /Failed to load snapshot: Can't find snapshot/);
});

test('a source a running QEMU writes is refused as qemu-img refuses it; -U reads it', async () => {
  const { base, top } = chain();
  const holder = spawn('qemu-io', ['-c', 'sleep 20000', base], { stdio: 'ignore' });
  try {
    const end = Date.now() + 10000;
    while (!isLockedByQemu(base)) {
      if (Date.now() > end) throw new Error('qemu-io did not take its locks');
      await new Promise(r => setTimeout(r, 50));
    }
    const out = path.join(dir, 'locked.raw');
    const q = qemuImgStatus('convert', '-O', 'raw', top, out);
    const r = cli('convert', '-O', 'raw', top, out);
    assert.equal(r.status, q.status);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /in use by a running QEMU.*-U/);
    assert.ok(!fs.existsSync(out));
    assert.equal(cli('convert', '-U', '-O', 'raw', top, out).status, 0);
    assert.equal(qemuImgStatus('compare', '-U', top, out).status, 0);
  } finally {
    holder.kill('SIGKILL');
    await new Promise(r => holder.once('exit', r));
  }
});

test('-p prints qemu-img\'s percent lines on stderr when it is not a terminal; -q prints nothing', () => {
  const { top } = chain();
  const p = cli('convert', '-p', '-O', 'qcow2', top, path.join(dir, 'p.qcow2'));
  assert.equal(p.status, 0);
  assert.match(p.stderr, /\(100\.00\/100%\)/);
  const q = cli('convert', '-q', '-O', 'qcow2', top, path.join(dir, 'q.qcow2'));
  assert.equal(q.status, 0);
  assert.equal(q.stderr, '');
  assert.equal(q.stdout.length, 0);
});
