/**
 * `qcow2-lens rebase` against `qemu-img rebase` on copies of the same QEMU-made chains: safe
 * rebases (onto another image, onto an image further down the chain, onto raw, onto shorter
 * images, flattening with -b "") must keep the guest content (qemu-img compare with the original
 * and with qemu-img's result), name the backing file qemu-img info shows for qemu-img's result,
 * and check clean; unsafe ones (-u) rewrite the header as qemu-img does, byte for byte. Then crash
 * tests: a SIGKILL after every write leaves at most leaks, the guest content and the old or the
 * new backing file.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, CLI, qemuGuestHash, qemuImg, qemuImgStatus, qemuIo, sha256, tmpDir } from '../helpers/qemu';
import { assertClean, check } from '../write/util';
import { assertSameBytes } from './util';
import { buildChain, copyDir, type Layer } from './chain';

const BASE_IO = ['write -P 1 0 1M', 'write -P 2 2M 192k', 'write -c -P 3 4M 64k', 'write -P 4 6M 64k'];
const TOP_IO = ['write -P 5 512k 64k', 'write -z 2M 4k', 'write -P 6 4M 4k', 'write -P 8 7M 1536'];

interface Case {
  name: string;
  layers: Layer[];
  /** Extra images in the folder (not in the chain): name, size, qemu-io commands, raw. */
  others?: { name: string; size: string; io: string[]; raw?: boolean; opts?: string[] }[];
  args: string[];
  /** The backing file qemu-img info must show afterwards (undefined: none). */
  backing?: string;
}

const NEW = { name: 'new.qcow2', size: '8M', io: ['write -P 1 0 512k', 'write -P 0x22 1M 1M', 'write -P 4 6M 64k'] };

const CASES: Case[] = [
  { name: 'onto another image', layers: [{ name: 'base.qcow2', size: '8M', io: BASE_IO }, { name: 'top.qcow2', size: '8M', io: TOP_IO }], others: [NEW], args: ['-b', 'new.qcow2', '-F', 'qcow2'], backing: 'new.qcow2' },
  { name: 'onto another image, 512 B overlay clusters', layers: [{ name: 'base.qcow2', size: '8M', io: BASE_IO }, { name: 'top.qcow2', size: '8M', opts: ['-o', 'cluster_size=512'], io: TOP_IO }], others: [NEW], args: ['-b', 'new.qcow2', '-F', 'qcow2'], backing: 'new.qcow2' },
  { name: 'v2 overlay', layers: [{ name: 'base.qcow2', size: '8M', io: BASE_IO }, { name: 'top.qcow2', size: '8M', opts: ['-o', 'compat=0.10'], io: TOP_IO }], others: [NEW], args: ['-b', 'new.qcow2', '-F', 'qcow2'], backing: 'new.qcow2' },
  { name: 'extended L2 overlay with a snapshot', layers: [{ name: 'base.qcow2', size: '8M', io: BASE_IO }, { name: 'top.qcow2', size: '8M', opts: ['-o', 'extended_l2=on'], io: TOP_IO, snapshot: true }], others: [NEW], args: ['-b', 'new.qcow2', '-F', 'qcow2'], backing: 'new.qcow2' },
  { name: 'onto a raw image', layers: [{ name: 'base.qcow2', size: '8M', io: BASE_IO }, { name: 'top.qcow2', size: '8M', io: TOP_IO }], others: [{ ...NEW, name: 'new.raw', raw: true }], args: ['-b', 'new.raw', '-F', 'raw'], backing: 'new.raw' },
  { name: 'old and new backing files shorter than the overlay', layers: [{ name: 'base.qcow2', size: '4M', io: BASE_IO.slice(0, 2) }, { name: 'top.qcow2', size: '8M', io: TOP_IO }], others: [{ ...NEW, size: '6M', io: NEW.io.slice(0, 2) }], args: ['-b', 'new.qcow2', '-F', 'qcow2'], backing: 'new.qcow2' },
  {
    name: 'onto the bottom of its own chain',
    layers: [{ name: 'base.qcow2', size: '8M', io: BASE_IO }, { name: 'mid.qcow2', size: '8M', io: ['write -P 0x11 1M 1M', 'write -z 6M 4k'] }, { name: 'top.qcow2', size: '8M', io: TOP_IO }],
    args: ['-b', 'base.qcow2', '-F', 'qcow2'], backing: 'base.qcow2',
  },
  { name: 'flatten (-b "")', layers: [{ name: 'base.qcow2', size: '8M', io: BASE_IO }, { name: 'mid.qcow2', size: '8M', io: ['write -P 0x11 1M 1M'] }, { name: 'top.qcow2', size: '8M', io: TOP_IO }], args: ['-b', ''] },
  { name: 'flatten a 2 MiB-cluster overlay', layers: [{ name: 'base.qcow2', size: '8M', io: BASE_IO }, { name: 'top.qcow2', size: '8M', opts: ['-o', 'cluster_size=2M'], io: TOP_IO }], args: ['-b', ''] },
];

function backingOf(img: string): { name?: string; format?: string } {
  const j = JSON.parse(qemuImg('info', '--output=json', '-U', img)) as { 'backing-filename'?: string; 'backing-filename-format'?: string };
  return { name: j['backing-filename'], format: j['backing-filename-format'] };
}

test('rebase (safe): the guest content kept, the backing file qemu-img names', () => {
  const dir = tmpDir('qcow2-lens-rebase-');
  for (const c of CASES) {
    const src = path.join(dir, 'src');
    fs.rmSync(src, { recursive: true, force: true });
    buildChain(src, c.layers);
    for (const o of c.others ?? []) {
      const p = path.join(src, o.name);
      qemuImg('create', '-q', '-f', o.raw ? 'raw' : 'qcow2', ...(o.opts ?? []), p, o.size);
      qemuIo(p, o.io, o.raw ? ['-f', 'raw'] : []);
    }
    const ours = path.join(dir, 'ours'), theirs = path.join(dir, 'theirs');
    copyDir(src, ours);
    copyDir(src, theirs);
    const top = 'top.qcow2';
    const before = qemuGuestHash(path.join(src, top), dir);
    qemuImg('rebase', '-q', ...c.args, path.join(theirs, top));
    const r = cli('rebase', ...c.args, path.join(ours, top));
    assert.equal(r.status, 0, `${c.name}: ${r.stderr}`);
    assertClean(path.join(ours, top));
    assert.equal(qemuGuestHash(path.join(ours, top), dir), before, `${c.name}: guest content changed`);
    assert.equal(qemuImgStatus('compare', path.join(ours, top), path.join(theirs, top)).status, 0, c.name);
    assert.deepEqual(backingOf(path.join(ours, top)), backingOf(path.join(theirs, top)), c.name);
    assert.equal(backingOf(path.join(ours, top)).name, c.backing, c.name);
    for (const f of fs.readdirSync(src)) {
      if (f !== top) assert.equal(sha256(fs.readFileSync(path.join(ours, f))), sha256(fs.readFileSync(path.join(src, f))), `${c.name}: ${f} must not change`);
    }
  }
});

test('rebase -u: the header qemu-img writes, nothing else', () => {
  const dir = tmpDir('qcow2-lens-rebase-');
  const cases: [string, string[], string[]][] = [
    ['rename, v3', [], ['-u', '-b', 'renamed.qcow2', '-F', 'qcow2']],
    ['rename, v2', ['-o', 'compat=0.10'], ['-u', '-b', '../elsewhere/base.raw', '-F', 'raw']],
    ['rename, 512 B clusters', ['-o', 'cluster_size=512'], ['-u', '-b', 'x'.repeat(300), '-F', 'qcow2']],
    ['drop the backing file', [], ['-u']],
  ];
  for (const [name, opts, args] of cases) {
    const src = path.join(dir, 'src');
    fs.rmSync(src, { recursive: true, force: true });
    buildChain(src, [{ name: 'base.qcow2', size: '4M', io: BASE_IO.slice(0, 2) }, { name: 'top.qcow2', size: '4M', opts, io: TOP_IO.slice(0, 2) }]);
    const ours = path.join(dir, 'ours'), theirs = path.join(dir, 'theirs');
    copyDir(src, ours);
    copyDir(src, theirs);
    qemuImg('rebase', '-q', ...args, path.join(theirs, 'top.qcow2'));
    const r = cli('rebase', ...args, path.join(ours, 'top.qcow2'));
    assert.equal(r.status, 0, `${name}: ${r.stderr}`);
    assertSameBytes(path.join(theirs, 'top.qcow2'), path.join(ours, 'top.qcow2'));
  }
});

test('rebase: refusals as qemu-img refuses, before any write', () => {
  const dir = tmpDir('qcow2-lens-rebase-');
  const top = buildChain(dir, [{ name: 'base.qcow2', size: '4M', io: BASE_IO.slice(0, 2) }, { name: 'top.qcow2', size: '4M', io: TOP_IO.slice(0, 2) }]);
  qemuImg('create', '-q', '-f', 'qcow2', path.join(dir, 'new.qcow2'), '4M');
  const bytes = sha256(fs.readFileSync(top));
  let r = cli('rebase', '-b', 'new.qcow2', top);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /Could not change the backing file to 'new.qcow2': backing format must be specified/);
  assert.match(qemuImgStatus('rebase', '-b', 'new.qcow2', path.join(dir, 'copy-never-made.qcow2')).stderr, /Could not open|backing format/);
  r = cli('rebase', top);
  assert.equal(r.status, 64);
  assert.match(r.stderr, /Must specify backing file \(-b\) or use unsafe mode \(-u\)/);
  r = cli('rebase', '-b', 'missing.qcow2', '-F', 'qcow2', top);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /Could not open new backing file 'missing.qcow2'/);
  assert.equal(qemuImgStatus('rebase', '-b', 'missing.qcow2', '-F', 'qcow2', path.join(dir, 'base.qcow2')).status, 1);
  assert.equal(sha256(fs.readFileSync(top)), bytes, 'a refused rebase writes nothing');
});

function runCrashing(k: number, args: string[]): boolean {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, QCOW2_LENS_CRASH_AFTER_WRITES: String(k) }, encoding: 'utf8' });
  if (r.status === 0) return true;
  assert.equal(r.signal, 'SIGKILL', `k=${k}: expected a crash, got status ${r.status}: ${r.stderr}`);
  return false;
}

test('rebase: a SIGKILL after any write leaves at most leaks, the guest content and the old or the new backing file', () => {
  const dir = tmpDir('qcow2-lens-rebase-crash-');
  const runs: [string, Layer[], string[], string | undefined][] = [
    ['4 KiB clusters, onto another image', [
      { name: 'base.qcow2', size: '4M', opts: ['-o', 'cluster_size=4k'], io: ['write -P 1 0 256k', 'write -c -P 2 512k 4k', 'write -c -P 2 768k 4k', 'write -P 3 3M 8k'] },
      { name: 'top.qcow2', size: '4M', opts: ['-o', 'cluster_size=4k'], io: ['write -P 3 32k 8k', 'write -z 512k 4k'], snapshot: true },
    ], ['-b', 'new.qcow2', '-F', 'qcow2'], 'new.qcow2'],
    ['512 B clusters, flatten', [
      { name: 'base.qcow2', size: '1M', io: ['write -P 1 0 128k'] },
      { name: 'top.qcow2', size: '1M', opts: ['-o', 'cluster_size=512'], io: ['write -P 3 1k 3k'] },
    ], ['-b', ''], undefined],
  ];
  const counts: number[] = [];
  for (const [label, layers, args, newName] of runs) {
    const src = path.join(dir, 'src');
    fs.rmSync(src, { recursive: true, force: true });
    buildChain(src, layers);
    const fresh = path.join(src, 'new.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', fresh, '4M');
    qemuIo(fresh, ['write -P 9 200k 16k', 'write -P 1 64k 64k', 'write -P 7 900k 4k']);
    const hash = qemuGuestHash(path.join(src, 'top.qcow2'), dir);
    const work = path.join(dir, 'work');
    let k = 0;
    for (; k < 400; k++) {
      copyDir(src, work);
      const top = path.join(work, 'top.qcow2');
      const done = runCrashing(k, ['rebase', '-q', ...args, top]);
      const c = check(top);
      assert.equal(c.errors.length, 0, `${label} k=${k}: ${c.out}`);
      assert.ok(c.status === 0 || c.status === 3, `${label} k=${k}: qemu-img check status ${c.status}`);
      assert.equal(qemuGuestHash(top, dir), hash, `${label} k=${k}: guest content changed`);
      const b = backingOf(top).name;
      assert.ok(b === 'base.qcow2' || b === newName, `${label} k=${k}: backing file ${b}`);
      if (done) { assert.equal(b, newName); break; }
    }
    assert.ok(k >= 4, `${label}: only ${k} writes`);
    counts.push(k);
  }
  console.log(`rebase crash points: ${counts.join(', ')}`);
});
