/**
 * `space` on qemu-img-made images of one guest disk (ext4 + FAT16 + swap, freed-but-allocated
 * clusters in both file systems): plain, compressed, with snapshots, as an overlay. The parts add
 * up to the file size, "active" is the clusters qemu-img counts as allocated, and the reclaim
 * figures equal what `compact -o` and `sparsify -o` then really save; what deleting a snapshot
 * frees is what `qemu-img snapshot -d` then frees.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, pokeBytes, qemuImg, qemuImgStatus, qemuIo, readBE64, tmpDir } from '../helpers/qemu';
import type { SpacePart, SpaceReport } from '../../src/guest/space/report';
import { asImage, cliJsonOk, cliOk, run } from './common';
import { buildSpaceDisk, MiB, overlayImage } from './spaceDisk';

const dir = tmpDir('qcow2-lens-space-');
const disk = buildSpaceDisk(dir);
const CLUSTER = 65536;

function space(image: string, ...flags: string[]): SpaceReport {
  return cliJsonOk<SpaceReport>('space', '--json', ...flags, image);
}
const part = (r: SpaceReport | SpacePart, name: string): SpacePart => {
  const p = r.parts!.find(x => x.name === name);
  assert.ok(p, `part ${name}`);
  return p;
};
const sum = (ps: SpacePart[], k: 'bytes' | 'compact' | 'sparsify') => ps.reduce((s, p) => s + (p[k] ?? 0), 0);

function assertAddsUp(r: SpaceReport, what: string): void {
  assert.deepEqual(r.parts.map(p => p.name), ['metadata', 'active', 'snapshots', 'leaked', 'holes'], what);
  assert.equal(sum(r.parts, 'bytes'), r.fileSize, `${what}: parts add up to the file size`);
  assert.equal(r.fileSize, fs.statSync(r.image).size, what);
  assert.equal(sum(r.parts, 'compact'), r.reclaim.compact, `${what}: compact figures add up`);
  assert.equal(sum(r.parts, 'sparsify'), r.reclaim.sparsify, `${what}: sparsify figures add up`);
  for (const p of r.parts) {
    if (p.parts?.length) assert.equal(sum(p.parts, 'bytes'), p.bytes, `${what}: ${p.name}'s sub-parts add up`);
    if (p.name !== 'metadata' && p.parts?.length) {
      assert.equal(sum(p.parts, 'compact'), p.compact, `${what}: ${p.name}'s compact figures`);
      assert.equal(sum(p.parts, 'sparsify'), p.sparsify, `${what}: ${p.name}'s sparsify figures`);
    }
  }
}

/** The savings of a real run, compared with the forecast (within two clusters, as the issue allows). */
function assertReclaims(image: string, r: SpaceReport, what: string): void {
  for (const cmd of ['compact', 'sparsify'] as const) {
    const out = path.join(dir, `${path.basename(image)}.${cmd}.qcow2`);
    fs.rmSync(out, { force: true });
    cliOk(cmd, '-q', '-o', out, image);
    const saved = r.fileSize - fs.statSync(out).size;
    assert.ok(Math.abs(saved - r.reclaim[cmd]) <= 2 * CLUSTER, `${what}: ${cmd} saved ${saved}, space said ${r.reclaim[cmd]}`);
    fs.rmSync(out);
  }
}

const variants = ['plain', 'compressed', 'snapshot', 'overlay'] as const;
const imageOf = (v: (typeof variants)[number]) => (v === 'overlay' ? overlayImage(disk.raw) : asImage(disk.raw, v));
for (const v of variants) {
  test(`space (${v}): parts add up to the file size, active is what qemu-img counts, reclaim figures are what compact and sparsify save`, t => {
    const image = imageOf(v);
    const r = space(image, '--zero-scan');
    assertAddsUp(r, v);
    const active = part(r, 'active');
    const check = JSON.parse(qemuImg('check', '--output=json', image)) as { 'allocated-clusters': number; 'compressed-clusters'?: number };
    if (v === 'compressed') assert.ok((check['compressed-clusters'] ?? 0) > 0 && active.bytes > 0);
    else assert.equal(active.bytes, check['allocated-clusters'] * CLUSTER, `${v}: active = the clusters the active L2 tables map`);
    // the deleted files' clusters: in guest free space, dropped by sparsify only
    const free = part(active, 'guest free space');
    assert.ok(free.bytes >= 3 * MiB, `${v}: freed ext4 and FAT files are in guest free space (${free.bytes})`);
    if (v === 'snapshot') {
      // the active disk is the snapshot "before" again: every cluster it maps is the snapshot's too, and stays
      assert.equal(free.sparsify, 0, 'snapshot data is never dropped');
      assert.equal(r.reclaim.sparsify, r.reclaim.compact);
    } else {
      assert.ok(free.sparsify! >= 3 * MiB, `${v}: sparsify reclaims them (${free.sparsify})`);
      assert.ok(r.reclaim.sparsify > r.reclaim.compact, v);
    }
    // (a compressed host cluster holds several guest clusters, in use and free ones side by side)
    if (v !== 'compressed') assert.equal(part(active, 'in use by files').sparsify, 0, `${v}: files are never dropped`);
    assert.deepEqual(r.guest.fileSystems.map(f => [f.partition, f.fs]), [[1, 'ext4'], [2, 'vfat']]);
    assertReclaims(image, r, v);
    // without the zero scan no data cluster is read and the figures are lower bounds; they agree on what
    // qemu-img convert writes (it leaves no all-zero data clusters), not on the overlay qemu-io wrote in 1 MiB pieces
    const quick = space(image);
    assert.equal(quick.dataBytesRead, 0);
    assertAddsUp(quick, `${v} (no zero scan)`);
    if (v === 'plain' || v === 'snapshot') assert.deepEqual(quick.reclaim, r.reclaim, `${v}: no zero scan`);
    else if (v === 'compressed') assert.ok(Math.abs(quick.reclaim.compact - r.reclaim.compact) <= 2 * CLUSTER, 'compressed lengths inferred from their neighbours');
    else assert.ok(quick.reclaim.compact < r.reclaim.compact && quick.reclaim.sparsify <= r.reclaim.sparsify, `${v}: lower bounds without the scan`);
    t.diagnostic(`${v}: ${r.fileSize} bytes; compact −${r.reclaim.compact}, sparsify −${r.reclaim.sparsify}`);
  });
}

test('space --swap: the swap partition after its header counts as free, and sparsify --swap drops it', () => {
  const image = asImage(disk.raw, 'plain');
  const r = space(image, '--swap');
  assertAddsUp(r, 'swap');
  const without = space(image);
  assert.deepEqual(r.guest.fileSystems.map(f => f.fs), ['ext4', 'vfat', 'swap']);
  assert.ok(r.reclaim.sparsify - without.reclaim.sparsify >= 7 * MiB, `${r.reclaim.sparsify} vs ${without.reclaim.sparsify}`);
  const out = path.join(dir, 'swap.sparse.qcow2');
  cliOk('sparsify', '-q', '--swap', '-o', out, image);
  assert.ok(Math.abs(r.fileSize - fs.statSync(out).size - r.reclaim.sparsify) <= 2 * CLUSTER);
  const parts = cliJsonOk<{ partitions: Array<{ number: number; fs: string | null }> }>('partitions', '--json', out).partitions;
  assert.equal(parts.find(p => p.number === 3)?.fs, 'swap', 'the swap header is kept');
});

test('space: what deleting a snapshot frees is what qemu-img snapshot -d frees', () => {
  const image = asImage(disk.raw, 'snapshot');
  const r = space(image);
  const snaps = part(r, 'snapshots').parts!.filter(p => p.snapshot);
  assert.deepEqual(snaps.map(p => p.snapshot), ['before', 'after']);
  const after = snaps.find(p => p.snapshot === 'after')!;
  assert.ok(after.bytes >= 64 * 1024, 'the 64 KiB written after "before" belongs to "after" alone');
  const copy = path.join(dir, 'deleted-snapshot.qcow2');
  fs.copyFileSync(image, copy);
  qemuImg('snapshot', '-d', 'after', copy);
  const r2 = space(copy);
  assertAddsUp(r2, 'after snapshot -d');
  const freed = part(r2, 'holes').bytes + part(r2, 'leaked').bytes - part(r, 'holes').bytes - part(r, 'leaked').bytes;
  assert.ok(Math.abs(freed - after.deleteFrees!) <= CLUSTER, `snapshot -d freed ${freed}, space said ${after.deleteFrees}`);
});

test('space: text form, a raw file and a missing file', () => {
  const image = asImage(disk.raw, 'plain');
  const text = cliOk('space', image).toString();
  for (const name of ['metadata', 'active', '  guest free space', 'snapshots', 'leaked', 'holes', 'reclaimable']) assert.match(text, new RegExp(`^${name}`, 'm'));
  const raw = cli('space', disk.raw);
  assert.equal(raw.status, 1);
  assert.match(raw.stderr, /not a qcow2 image/);
  assert.equal(raw.stderr.trim().split('\n').length, 1);
  const missing = cli('space', path.join(dir, 'nope.qcow2'));
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /nope\.qcow2/);
});

test('space: leaked clusters, a persistent bitmap, an unused cluster, and a 4 GiB guest read by its metadata only', () => {
  const image = path.join(dir, 'big.qcow2');
  const fsDir = path.join(dir, 'big-src');
  fs.mkdirSync(fsDir, { recursive: true });
  fs.writeFileSync(path.join(fsDir, 'data.bin'), Buffer.alloc(8 * MiB, 0x42));
  const raw = path.join(dir, 'big.raw');
  fs.writeFileSync(raw, '');
  fs.truncateSync(raw, 4 * 1024 * MiB);
  run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-E', 'lazy_itable_init=1,lazy_journal_init=1', '-d', fsDir, raw]);
  qemuImg('convert', '-q', '-O', 'qcow2', raw, image);
  fs.rmSync(raw);
  qemuImg('bitmap', '--add', image, 'b0');
  qemuIo(image, ['write -P 0x99 3G 128k']); // into ext4 free space, tracked by the bitmap
  // two leaked clusters: the file grows by three clusters, two of them counted in the refcount block
  const end = Math.ceil(fs.statSync(image).size / CLUSTER); // (QEMU leaves the bitmap directory's cluster unpadded)
  fs.truncateSync(image, (end + 3) * CLUSTER);
  const reftable = Number(readBE64(image, 48)), block = Number(readBE64(image, reftable));
  for (const k of [end, end + 1]) pokeBytes(image, block + 2 * k, [0, 1]);
  const leaks = /(\d+) leaked clusters/.exec(qemuImgStatus('check', image).stdout);
  assert.equal(leaks?.[1], '2');
  const r = space(image);
  assertAddsUp(r, 'leaks');
  assert.equal(part(r, 'leaked').bytes, 2 * CLUSTER);
  assert.equal(part(part(r, 'holes'), 'tail').bytes, CLUSTER);
  assert.ok(part(r, 'metadata').parts!.some(p => p.name === 'bitmap data' || p.name === 'bitmap table'), 'the bitmap is metadata');
  assert.equal(part(part(r, 'active'), 'guest free space').bytes, 128 * 1024);
  assert.equal(r.dataBytesRead, 0);
  assert.ok(r.guestBytesRead < 4 * MiB, `the free-space map read ${r.guestBytesRead} guest bytes`);
  assertReclaims(image, r, 'leaks');
});
