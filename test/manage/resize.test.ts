/**
 * `qcow2-lens resize` against `qemu-img resize` on copies of the same QEMU-made images: the
 * resized files must hold the same bytes (grow) or the same metadata and guest content (shrink:
 * QEMU also punches holes where clusters were freed, which Node cannot), `qemu-img check` clean,
 * `qemu-img compare` equal, and the info and map equal. Then crash tests: SIGKILL after every write.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, CLI, pokeBytes, qemuGuestHash, qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../helpers/qemu';
import { assertClean, check } from '../write/util';
import { Qcow2Image } from '../../src/engine/image/image';
import { readBitmapBits, readBitmapEntries } from '../../src/engine/ops/bitmaps';
import { assertSameBytes, infoOf, mapOf } from './util';

function base(dir: string, name: string, opts: string[], size = '16M'): string {
  const img = path.join(dir, `${name}.qcow2`);
  qemuImg('create', '-q', '-f', 'qcow2', ...opts, img, size);
  qemuIo(img, ['write -P 1 0 1M', 'write -P 2 5M 64k', 'write -c -P 3 9M 64k', 'write -z 11M 64k', 'write -P 4 15M 1M']);
  return img;
}

/**
 * `img` resized by qemu-img and by us, each on its own copy: ours succeeds, checks clean and
 * reads as qemu-img's.
 */
function resizeBoth(dir: string, img: string, args: string[], size: string, label: string): { ours: string; theirs: string } {
  const ours = path.join(dir, 'ours.qcow2'), theirs = path.join(dir, 'theirs.qcow2');
  fs.copyFileSync(img, ours);
  fs.copyFileSync(img, theirs);
  qemuImg('resize', '-q', ...args, theirs, size);
  const r = cli('resize', '-q', ...args, ours, size);
  assert.equal(r.status, 0, `${label}: ${r.stderr}`);
  assertClean(ours);
  assert.equal(qemuImgStatus('compare', ours, theirs).status, 0, label);
  return { ours, theirs };
}

interface Case { name: string; opts: string[]; args: string[]; size: string; snapshot?: boolean; sameBytes: boolean }

const CASES: Case[] = [
  { name: 'grow 64 KiB', opts: [], args: [], size: '1G', sameBytes: true },
  { name: 'grow relative', opts: [], args: [], size: '+100M', sameBytes: true },
  { name: 'grow 512 B clusters (L1 grows)', opts: ['-o', 'cluster_size=512'], args: [], size: '200M', sameBytes: true },
  { name: 'grow refcount_bits=1', opts: ['-o', 'refcount_bits=1,cluster_size=4k'], args: [], size: '100M', sameBytes: true },
  { name: 'grow extended L2', opts: ['-o', 'extended_l2=on'], args: [], size: '2G', sameBytes: true },
  { name: 'grow v2', opts: ['-o', 'compat=0.10'], args: [], size: '1G', sameBytes: true },
  { name: 'grow metadata', opts: [], args: ['--preallocation=metadata'], size: '200M', sameBytes: true },
  { name: 'grow metadata 512 B', opts: ['-o', 'cluster_size=512'], args: ['--preallocation=metadata'], size: '24M', sameBytes: true },
  { name: 'grow falloc', opts: [], args: ['--preallocation=falloc'], size: '40M', sameBytes: true },
  { name: 'grow full 512 B', opts: ['-o', 'cluster_size=512'], args: ['--preallocation=full'], size: '24M', sameBytes: true },
  { name: 'grow metadata extended L2', opts: ['-o', 'extended_l2=on'], args: ['--preallocation=metadata'], size: '64M', sameBytes: true },
  { name: 'grow with a snapshot', opts: [], args: [], size: '1G', snapshot: true, sameBytes: true },
  { name: 'shrink', opts: [], args: ['--shrink'], size: '8M', sameBytes: true },
  { name: 'shrink 512 B clusters', opts: ['-o', 'cluster_size=512'], args: ['--shrink'], size: '2M', sameBytes: false },
  { name: 'shrink relative, refcount_bits=1', opts: ['-o', 'refcount_bits=1,cluster_size=4k'], args: ['--shrink'], size: '-10M', sameBytes: true },
  { name: 'shrink extended L2', opts: ['-o', 'extended_l2=on'], args: ['--shrink'], size: '1M', sameBytes: true },
  { name: 'shrink v2', opts: ['-o', 'compat=0.10'], args: ['--shrink'], size: '4M', sameBytes: true },
  { name: 'shrink with a snapshot (shared L2 copied)', opts: [], args: ['--shrink'], size: '6M', snapshot: true, sameBytes: true },
];

test('resize: the image qemu-img resize makes', () => {
  const dir = tmpDir('qcow2-lens-resize-');
  for (const c of CASES) {
    const b = base(dir, 'base', c.opts);
    if (c.snapshot) {
      qemuImg('snapshot', '-c', 's1', b);
      qemuIo(b, ['write -P 7 5M 64k', 'write -P 8 12M 1M']);
    }
    const { ours, theirs } = resizeBoth(dir, b, c.args, c.size, c.name);
    if (c.sameBytes) assertSameBytes(theirs, ours);
    assert.deepEqual(infoOf(ours, false), infoOf(theirs, false), c.name);
    assert.deepEqual(mapOf(ours), mapOf(theirs), c.name);
  }
});

test('resize: refusals as qemu-img refuses, and raw files', () => {
  const dir = tmpDir('qcow2-lens-resize-');
  const b = base(dir, 'b', []);
  const before = fs.readFileSync(b);
  let r = cli('resize', b, '8M');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /Use the --shrink option to perform a shrink operation/);
  r = cli('resize', '--shrink', '--preallocation=metadata', b, '8M');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /Preallocation can't be used for shrinking an image/);
  const v2 = base(dir, 'v2', ['-o', 'compat=0.10']);
  qemuImg('snapshot', '-c', 's', v2);
  r = cli('resize', v2, '1G');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /Can't resize a v2 image which has snapshots/);
  assert.ok(before.equals(fs.readFileSync(b)), 'a refused resize writes nothing');
  r = cli('resize', b, '-- -1G');
  assert.notEqual(r.status, 0);
  // raw: as qemu-img
  for (const [args, size] of [[[], '+1M'], [['--shrink'], '100k'], [['--preallocation=full'], '3M']] as [string[], string][]) {
    const ours = path.join(dir, 'o.raw'), theirs = path.join(dir, 't.raw');
    fs.writeFileSync(ours, Buffer.alloc(1024 * 1024, 5));
    fs.copyFileSync(ours, theirs);
    qemuImg('resize', '-q', '-f', 'raw', ...args, theirs, size);
    const rr = cli('resize', '-q', '-f', 'raw', ...args, ours, size);
    assert.equal(rr.status, 0, rr.stderr);
    assertSameBytes(theirs, ours);
  }
  r = cli('resize', b, '32M');
  assert.equal(r.status, 0);
  assert.equal(r.stdout.toString(), 'Image resized.\n');
});

/** Each bitmap's bits as far as the disk reaches (and whether any bit past that is set), read by the engine. */
async function bitmapBits(img: string): Promise<Record<string, { bits: string; granularity: number; flags: number; strayBits: boolean }>> {
  const im = await Qcow2Image.open(img, { openBacking: false });
  try {
    const out: Record<string, { bits: string; granularity: number; flags: number; strayBits: boolean }> = {};
    for (const e of await readBitmapEntries(im)) {
      const raw = await readBitmapBits(im.file, e, im.clusterSize);
      const n = Math.ceil(im.header.size / 2 ** e.granularityBits);
      // the set bits as runs ("0-15,128,144"): short, and readable when the assertion fails
      const runs: string[] = [];
      let stray = false;
      for (let i = 0, start = -1; i <= n; i++) {
        const set = i < n && (raw[i >> 3] >> (i & 7)) & 1;
        if (set && start < 0) start = i;
        if (!set && start >= 0) { runs.push(start === i - 1 ? `${start}` : `${start}-${i - 1}`); start = -1; }
      }
      for (let i = n; i < raw.length * 8; i++) if ((raw[i >> 3] >> (i & 7)) & 1) stray = true;
      const bits = runs.join(',');
      assert.equal(e.tableSize, Math.ceil(Math.ceil(n / 8) / im.clusterSize), `${img}: bitmap '${e.name}' table sized for the disk`);
      out[e.name] = { bits, granularity: e.granularityBits, flags: e.flags, strayBits: stray };
    }
    return out;
  } finally {
    await im.close();
  }
}

/** An image with three persistent bitmaps (two enabled and dirtied by qemu-io's writes, one disabled). */
function withBitmaps(dir: string, name: string, size = '16M', cs = '64k',
  writes = ['write -P 1 0 1M', 'write -P 2 5M 4k', 'write -P 3 9M 64k', 'write -P 4 15M 1M']): string {
  const img = path.join(dir, `${name}.qcow2`);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cs}`, img, size);
  qemuImg('bitmap', '--add', img, 'b0');
  qemuImg('bitmap', '--add', '-g', '4096', img, 'fine');
  qemuImg('bitmap', '--add', '--disable', img, 'off');
  qemuIo(img, writes);
  return img;
}

test('resize with persistent bitmaps: the bitmaps qemu-img resize leaves (bits kept, tables sized for the new disk)', async () => {
  const dir = tmpDir('qcow2-lens-resize-bitmaps-');
  const cases: [string, string[], string, string][] = [
    ['grow', [], '1G', '64k'], ['grow by 1.5 KiB (a partial granule)', [], '+1536', '64k'], ['grow 512 B clusters (tables grow)', [], '40M', '512'],
    ['shrink', ['--shrink'], '8M', '64k'], ['shrink into a granule', ['--shrink'], '9220k', '64k'], ['shrink 512 B clusters', ['--shrink'], '3M', '512'],
  ];
  for (const [label, args, size, cs] of cases) {
    const b = withBitmaps(dir, 'base', '16M', cs);
    const { ours, theirs } = resizeBoth(dir, b, args, size, label);
    // qemu-img info loads every bitmap (refusing a table of the wrong size), so equal info says QEMU takes them
    assert.deepEqual(infoOf(ours, false), infoOf(theirs, false), label);
    const o = await bitmapBits(ours), t = await bitmapBits(theirs);
    assert.deepEqual(Object.keys(o).sort(), ['b0', 'fine', 'off'], label);
    assert.deepEqual(o, t, `${label}: the bitmaps' bits`);
    assert.ok(o.b0.bits !== '' && o.off.bits === '', `${label}: the enabled bitmap is dirty, the disabled one clean`);
    // QEMU loads and stores them again on a read-write open and a write
    qemuIo(ours, ['write -P 9 0 64k']);
    assertClean(ours);
  }
  // an inconsistent (in-use) bitmap: qemu-img refuses the resize, and so do we, writing nothing
  const b = withBitmaps(dir, 'inuse');
  const im = await Qcow2Image.open(b, { openBacking: false });
  const flagsAt = im.header.bitmaps!.bitmapDirectoryOffset + 12;
  await im.close();
  pokeBytes(b, flagsAt, Buffer.from([0, 0, 0, 3]));
  const copy = path.join(dir, 'inuse-theirs.qcow2');
  fs.copyFileSync(b, copy);
  assert.match(qemuImgStatus('resize', copy, '32M').stderr, /Bitmap 'b0' is inconsistent/);
  const before = fs.readFileSync(b);
  const r = cli('resize', b, '32M');
  assert.equal(r.status, 1);
  assert.match(r.stderr, /bitmap 'b0' is inconsistent/);
  assert.ok(before.equals(fs.readFileSync(b)), 'a refused resize writes nothing');
});

const SMALL_WRITES = ['write -P 1 0 256k', 'write -P 2 1M 4k', 'write -P 3 1984k 64k'];

function runCrashing(k: number, args: string[]): boolean {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, QCOW2_LENS_CRASH_AFTER_WRITES: String(k) }, encoding: 'utf8' });
  if (r.status === 0) return true;
  assert.equal(r.signal, 'SIGKILL', `k=${k}: expected a crash, got status ${r.status}: ${r.stderr}`);
  return false;
}

/** SIGKILL after every write k = 0, 1, …: check at most leaks, guest content the old or the new. */
function crashEvery(dir: string, img: string, opts: string[], size: string, label: string): number {
  const sizeOf = (p: string) => (JSON.parse(qemuImg('info', '--output=json', p)) as { 'virtual-size': number })['virtual-size'];
  const oldSize = sizeOf(img), oldHash = qemuGuestHash(img, dir);
  const done = path.join(dir, 'done.qcow2');
  fs.copyFileSync(img, done);
  assert.ok(runCrashing(1e9, ['resize', '-q', ...opts, done, size]));
  const newSize = sizeOf(done), newHash = qemuGuestHash(done, dir);
  let k = 0;
  for (; k < 500; k++) {
    const work = path.join(dir, 'work.qcow2');
    fs.copyFileSync(img, work);
    const completed = runCrashing(k, ['resize', '-q', ...opts, work, size]);
    const c = check(work);
    assert.equal(c.errors.length, 0, `${label} k=${k}: ${c.out}`);
    assert.ok(c.status === 0 || c.status === 3, `${label} k=${k}: qemu-img check status ${c.status}`);
    const now = sizeOf(work);
    assert.ok(now === oldSize || now === newSize, `${label} k=${k}: size ${now}`);
    assert.equal(qemuGuestHash(work, dir), now === oldSize ? oldHash : newHash, `${label} k=${k}: guest content is neither the old nor the new`);
    if (completed) break;
  }
  assert.ok(k > 2, `${label}: only ${k} writes`);
  return k;
}

test('resize: a SIGKILL after any write leaves at most leaks and the old or the new disk', () => {
  const dir = tmpDir('qcow2-lens-resize-crash-');
  const mk = (name: string, cs: string) => {
    const img = path.join(dir, name);
    qemuImg('create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cs}`, img, '2M');
    qemuIo(img, ['write -P 1 0 256k', 'write -P 2 1M 64k', 'write -c -P 3 1536k 64k', 'write -P 4 1984k 64k']);
    return img;
  };
  const a = mk('a.qcow2', '4k');
  const counts = [
    crashEvery(dir, a, ['--preallocation=metadata'], '6M', 'grow, metadata'),
    crashEvery(dir, a, ['--preallocation=falloc'], '3M', 'grow, falloc (new refcount table)'),
    crashEvery(dir, mk('b.qcow2', '512'), [], '12M', 'grow 512 B (L1 grows)'),
    crashEvery(dir, mk('c.qcow2', '512'), ['--shrink'], '1M', 'shrink 512 B'),
    // qemu-img info (sizeOf) loads the bitmaps after each crash: a table of the wrong size would fail it
    crashEvery(dir, withBitmaps(dir, 'bm-grow', '2M', '4k', SMALL_WRITES), [], '6M', 'grow with bitmaps'),
    crashEvery(dir, withBitmaps(dir, 'bm-shrink', '2M', '4k', SMALL_WRITES), ['--shrink'], '1M', 'shrink with bitmaps'),
  ];
  console.log(`resize crash points: ${counts.join(', ')}`);
});

test('resize --preallocation=falloc|full from a size inside a cluster: the image qemu-img resize makes (the partial cluster copied into a new one)', () => {
  const dir = tmpDir('qcow2-lens-resize-partial-');
  const mk = (name: string, opts: string[], io: string[]) => {
    const img = path.join(dir, name);
    qemuImg('create', '-q', '-f', 'qcow2', ...opts, img, '16450k');
    if (io.length) qemuIo(img, io);
    return img;
  };
  mk('backing.qcow2', [], ['write -P 6 0 16450k']);
  const cases: [string, string, string[], string][] = [
    ['allocated partial cluster, full', mk('a.qcow2', [], ['write -P 1 0 1M', 'write -P 5 16384k 66k']), ['--preallocation=full'], '20M'],
    ['unallocated partial cluster, falloc', mk('b.qcow2', [], ['write -P 1 0 1M']), ['--preallocation=falloc'], '18M'],
    ['zero partial cluster, falloc, 4 KiB clusters', mk('c.qcow2', ['-o', 'cluster_size=4k'], ['write -P 1 16000k 448k', 'write -z 16448k 2k']), ['--preallocation=falloc'], '+1M'],
    ['overlay: the head from the backing file, full', mk('d.qcow2', ['-b', 'backing.qcow2', '-F', 'qcow2'], ['write -P 2 0 64k']), ['--preallocation=full'], '17M'],
  ];
  for (const [name, img, args, size] of cases) {
    const { ours, theirs } = resizeBoth(dir, img, args, size, name);
    assertSameBytes(theirs, ours);
    assert.equal(qemuImgStatus('compare', img, ours).status, 0, `${name}: the old disk's bytes changed`);
    assert.deepEqual(mapOf(ours), mapOf(theirs), name);
  }
  crashEvery(dir, cases[0][1], ['--preallocation=full'], '20M', 'grow full from inside a cluster');
  const r = cli('resize', '--preallocation=metadata', cases[1][1], '18M');
  assert.match(r.stderr, /preallocation=metadata from a size that is not a multiple of the cluster size is not supported yet/);
});
