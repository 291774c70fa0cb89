/**
 * `qcow2-lens commit` against `qemu-img commit` on copies of the same QEMU-made chains: the bases
 * must compare equal (qemu-img compare) and check clean, the overlays must read the same and be
 * left as qemu-img leaves them (emptied: nothing of their own in qemu-img map; -d/-b: untouched),
 * the base grown to the overlay's size where qemu-img grows it. Then crash tests: a SIGKILL after
 * every write leaves base and overlay at most leaking and the overlay's content unchanged.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, CLI, qemuGuestHash, qemuImg, qemuImgStatus, sha256, tmpDir } from '../helpers/qemu';
import { assertClean, check } from '../write/util';
import { buildChain, copyDir, type Layer } from './chain';
import { isLockedByQemu } from '../../src/engine/io/lock';

const BASE_IO = ['write -P 1 0 1M', 'write -P 2 2M 192k', 'write -c -P 3 4M 64k', 'write -P 4 6M 64k'];
const TOP_IO = ['write -P 5 512k 1M', 'write -z 2M 64k', 'write -P 6 4M 4k', 'write -c -P 7 5M 64k', 'write -P 8 7M 1536'];

interface Case { name: string; layers: Layer[]; args: string[]; emptied: boolean; raw?: boolean }

const CASES: Case[] = [
  { name: '64 KiB clusters', layers: [{ name: 'base.qcow2', size: '8M', io: BASE_IO }, { name: 'top.qcow2', size: '8M', io: TOP_IO }], args: [], emptied: true },
  { name: 'overlay 512 B clusters into 64 KiB', layers: [{ name: 'base.qcow2', size: '8M', io: BASE_IO }, { name: 'top.qcow2', size: '8M', opts: ['-o', 'cluster_size=512'], io: TOP_IO }], args: [], emptied: true },
  { name: 'v2 base, 4 KiB clusters, refcount_bits=1', layers: [{ name: 'base.qcow2', size: '8M', opts: ['-o', 'compat=0.10,cluster_size=4k'], io: BASE_IO }, { name: 'top.qcow2', size: '8M', io: TOP_IO }], args: [], emptied: true },
  { name: 'refcount_bits=1 base', layers: [{ name: 'base.qcow2', size: '8M', opts: ['-o', 'refcount_bits=1,cluster_size=4k'], io: BASE_IO.filter(c => !c.includes('-c')) }, { name: 'top.qcow2', size: '8M', io: TOP_IO }], args: [], emptied: true },
  { name: 'extended L2 base, 2 MiB clusters overlay', layers: [{ name: 'base.qcow2', size: '8M', opts: ['-o', 'extended_l2=on'], io: BASE_IO }, { name: 'top.qcow2', size: '8M', opts: ['-o', 'cluster_size=2M'], io: ['write -c -P 7 6M 2M', ...TOP_IO.filter(c => !c.includes('-c'))] }], args: [], emptied: true },
  { name: 'snapshots in base and overlay', layers: [{ name: 'base.qcow2', size: '8M', io: BASE_IO, snapshot: true }, { name: 'top.qcow2', size: '8M', io: TOP_IO, snapshot: true }], args: [], emptied: true },
  { name: 'overlay larger than its base (the base grows)', layers: [{ name: 'base.qcow2', size: '4M', io: BASE_IO.slice(0, 2) }, { name: 'top.qcow2', size: '12M', io: [...TOP_IO, 'write -P 9 10M 64k'] }], args: [], emptied: true },
  { name: 'raw base', layers: [{ name: 'base.raw', size: '8M', raw: true, io: ['write -P 1 0 1M', 'write -P 2 6M 64k'] }, { name: 'top.qcow2', size: '8M', io: TOP_IO }], args: [], emptied: true, raw: true },
  { name: '-d keeps the overlay', layers: [{ name: 'base.qcow2', size: '8M', io: BASE_IO }, { name: 'top.qcow2', size: '8M', io: TOP_IO }], args: ['-d'], emptied: false },
  {
    name: '3-deep, -b the bottom (middle and top committed, nothing emptied)',
    layers: [{ name: 'base.qcow2', size: '8M', io: BASE_IO }, { name: 'mid.qcow2', size: '8M', io: ['write -P 0x11 1M 1M', 'write -z 6M 64k'] }, { name: 'top.qcow2', size: '8M', io: TOP_IO }],
    args: ['-b', 'base.qcow2'], emptied: false,
  },
  {
    name: '3-deep, into the middle',
    layers: [{ name: 'base.qcow2', size: '8M', io: BASE_IO }, { name: 'mid.qcow2', size: '8M', io: ['write -P 0x11 1M 1M'] }, { name: 'top.qcow2', size: '8M', io: TOP_IO }],
    args: [], emptied: true,
  },
];

function depth0(top: string): unknown[] {
  return (JSON.parse(qemuImg('map', '--output=json', top)) as { depth: number; data: boolean }[]).filter(e => e.depth === 0);
}

test('commit: the result qemu-img commit leaves', () => {
  const dir = tmpDir('qcow2-lens-commit-');
  for (const c of CASES) {
    const src = path.join(dir, 'src');
    fs.rmSync(src, { recursive: true, force: true });
    buildChain(src, c.layers);
    const ours = path.join(dir, 'ours'), theirs = path.join(dir, 'theirs');
    copyDir(src, ours);
    copyDir(src, theirs);
    const top = c.layers[c.layers.length - 1].name;
    const target = c.args[0] === '-b' ? c.layers[0].name : c.layers[c.layers.length - 2].name;
    const topHash = qemuGuestHash(path.join(src, top), dir);
    const topBytes = sha256(fs.readFileSync(path.join(src, top)));
    qemuImg('commit', '-q', ...c.args, path.join(theirs, top));
    const r = cli('commit', ...c.args, path.join(ours, top));
    assert.equal(r.status, 0, `${c.name}: ${r.stderr}`);
    assert.equal(r.stdout.toString(), 'Image committed.\n');
    const fa = c.raw ? ['-f', 'raw', '-F', 'raw'] : [];
    const cmp = qemuImgStatus('compare', ...fa, path.join(ours, target), path.join(theirs, target));
    assert.equal(cmp.status, 0, `${c.name}: bases differ: ${cmp.stdout}${cmp.stderr}`);
    if (!c.raw) assertClean(path.join(ours, target));
    const size = (p: string) => (JSON.parse(qemuImg('info', '--output=json', ...(c.raw ? ['-f', 'raw'] : []), p)) as { 'virtual-size': number })['virtual-size'];
    assert.equal(size(path.join(ours, target)), size(path.join(theirs, target)), `${c.name}: base size`);
    // the overlay: same guest content as before, and emptied or kept as qemu-img does
    assertClean(path.join(ours, top));
    assert.equal(qemuGuestHash(path.join(ours, top), dir), topHash, `${c.name}: overlay content changed`);
    assert.equal(qemuImgStatus('compare', path.join(ours, top), path.join(theirs, top)).status, 0, c.name);
    if (c.emptied) {
      assert.deepEqual(depth0(path.join(theirs, top)), [], `${c.name}: qemu-img leaves the overlay empty`);
      assert.deepEqual(depth0(path.join(ours, top)), [], `${c.name}: the overlay is emptied`);
    } else {
      assert.equal(sha256(fs.readFileSync(path.join(ours, top))), topBytes, `${c.name}: the overlay must not change`);
    }
    for (const l of c.layers.slice(1, -1)) {
      if (l.name !== target) assert.equal(sha256(fs.readFileSync(path.join(ours, l.name))), sha256(fs.readFileSync(path.join(src, l.name))), `${c.name}: ${l.name} must not change`);
    }
  }
});

test('commit: refusals as qemu-img refuses', () => {
  const dir = tmpDir('qcow2-lens-commit-');
  const top = buildChain(dir, [{ name: 'base.qcow2', size: '1M' }, { name: 'top.qcow2', size: '1M', io: ['write -P 1 0 4k'] }]);
  const lone = path.join(dir, 'lone.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', lone, '1M');
  let r = cli('commit', lone);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /Image does not have a backing file/);
  assert.match(qemuImgStatus('commit', lone).stderr, /Image does not have a backing file/);
  r = cli('commit', '-b', 'elsewhere.qcow2', top);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /Did not find 'elsewhere.qcow2' in the backing chain of/);
  assert.match(qemuImgStatus('commit', '-b', 'elsewhere.qcow2', top).stderr, /Did not find 'elsewhere.qcow2' in the backing chain of/);
  assert.equal(cli('commit', top, top).status, 64);
});

function runCrashing(k: number, args: string[]): boolean {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, QCOW2_LENS_CRASH_AFTER_WRITES: String(k) }, encoding: 'utf8' });
  if (r.status === 0) return true;
  assert.equal(r.signal, 'SIGKILL', `k=${k}: expected a crash, got status ${r.status}: ${r.stderr}`);
  return false;
}

function atMostLeaks(img: string, label: string): void {
  const c = check(img);
  assert.equal(c.errors.length, 0, `${label}: ${c.out}`);
  assert.ok(c.status === 0 || c.status === 3, `${label}: qemu-img check status ${c.status}\n${c.out}`);
}

test('commit: a SIGKILL after any write leaves at most leaks and the overlay\'s content', () => {
  const dir = tmpDir('qcow2-lens-commit-crash-');
  const chains: [string, Layer[]][] = [
    ['4 KiB clusters, snapshot in the base, base grows', [
      { name: 'base.qcow2', size: '1M', opts: ['-o', 'cluster_size=4k'], io: ['write -P 1 0 64k', 'write -c -P 2 512k 4k'], snapshot: true },
      { name: 'top.qcow2', size: '2M', opts: ['-o', 'cluster_size=4k'], io: ['write -P 3 32k 64k', 'write -z 512k 4k', 'write -P 4 1536k 8k'] },
    ]],
    ['512 B overlay into 64 KiB base', [
      { name: 'base.qcow2', size: '2M', io: ['write -P 1 0 128k'] },
      { name: 'top.qcow2', size: '2M', opts: ['-o', 'cluster_size=512'], io: ['write -P 3 1k 3k', 'write -P 4 1M 1k'] },
    ]],
  ];
  const counts: number[] = [];
  for (const [label, layers] of chains) {
    const src = path.join(dir, 'src');
    fs.rmSync(src, { recursive: true, force: true });
    buildChain(src, layers);
    const topHash = qemuGuestHash(path.join(src, 'top.qcow2'), dir);
    const work = path.join(dir, 'work');
    let k = 0;
    for (; k < 400; k++) {
      copyDir(src, work);
      const done = runCrashing(k, ['commit', '-q', path.join(work, 'top.qcow2')]);
      atMostLeaks(path.join(work, 'base.qcow2'), `${label} k=${k} base`);
      atMostLeaks(path.join(work, 'top.qcow2'), `${label} k=${k} top`);
      assert.equal(qemuGuestHash(path.join(work, 'top.qcow2'), dir), topHash, `${label} k=${k}: the overlay's content changed`);
      if (done) break;
    }
    assert.ok(k >= 5, `${label}: only ${k} writes`);
    counts.push(k);
  }
  console.log(`commit crash points: ${counts.join(', ')}`);
});

test('commit and rebase refuse images a running QEMU holds (the overlay or the base), writing nothing', async () => {
  const dir = tmpDir('qcow2-lens-commit-lock-');
  const top = buildChain(dir, [{ name: 'base.qcow2', size: '1M', io: ['write -P 1 0 64k'] }, { name: 'top.qcow2', size: '1M', io: ['write -P 2 0 4k'] }]);
  const base = path.join(dir, 'base.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', path.join(dir, 'new.qcow2'), '1M');
  const hashes = () => [sha256(fs.readFileSync(top)), sha256(fs.readFileSync(base))];
  const before = hashes();
  for (const held of [base, top]) {
    const q = spawn('qemu-io', ['-c', 'sleep 20000', held], { stdio: 'ignore' });
    try {
      for (let i = 0; i < 100 && !isLockedByQemu(held); i++) await new Promise(r => setTimeout(r, 50));
      assert.ok(isLockedByQemu(held), 'qemu-io took its lock');
      for (const args of [['commit', top], ['commit', '-d', top], ...(held === top ? [['rebase', '-b', 'new.qcow2', '-F', 'qcow2', top], ['rebase', '-u', '-b', 'x.qcow2', '-F', 'qcow2', top], ['rebase', '-b', '', top]] : [])]) {
        const r = cli(...args);
        assert.equal(r.status, 1, `${args.join(' ')} with ${path.basename(held)} held`);
        assert.match(r.stderr, /in use by a running QEMU/, args.join(' '));
      }
    } finally {
      q.kill('SIGKILL');
      await new Promise(r => q.once('exit', r));
    }
  }
  assert.deepEqual(hashes(), before);
});
