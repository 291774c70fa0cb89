/**
 * measure: our JSON and human output equal `qemu-img measure`'s, for --size over cluster sizes
 * 512 B–2 MiB, refcount widths 1–64, extended L2, preallocation modes, compat 0.10/1.1, backing
 * files, LUKS headers and sizes past 2^53; and for raw and qcow2 sources (data, zero and
 * compressed clusters, subclusters, chains, preallocated metadata, persistent bitmaps), whose data
 * runs and bitmaps are taken from `qemu-img map` / `qemu-img info` here until the engine feeds them.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { formatMeasureHuman, formatMeasureJson, luksHeaderSize, measure, type MeasureSource, type Qcow2MeasureOptions } from '../../src/engine/ops/measure';
import { qemuImg, qemuImgAsync, qemuImgStatus, qemuIo, tmpDir } from '../helpers/qemu';
import { MiB, makeRaw, qemuMap } from './helpers';

const dir = tmpDir('qcow2-lens-measure-');
const SECRET = ['--object', 'secret,id=sec0,data=lens'];

/** The -o string qemu-img gets for our options. */
function optString(o: Qcow2MeasureOptions & { luks?: { cipherAlg?: string; cipherMode?: string } }): string {
  const parts: string[] = [];
  if (o.clusterSize !== undefined) parts.push(`cluster_size=${o.clusterSize}`);
  if (o.refcountBits !== undefined) parts.push(`refcount_bits=${o.refcountBits}`);
  if (o.compat !== undefined) parts.push(`compat=${o.compat}`);
  if (o.extendedL2) parts.push('extended_l2=on');
  if (o.preallocation !== undefined) parts.push(`preallocation=${o.preallocation}`);
  if (o.backingFile) parts.push('backing_file=base.qcow2');
  if (o.luks) {
    parts.push('encrypt.format=luks', 'encrypt.key-secret=sec0');
    if (o.luks.cipherAlg) parts.push(`encrypt.cipher-alg=${o.luks.cipherAlg}`);
    if (o.luks.cipherMode) parts.push(`encrypt.cipher-mode=${o.luks.cipherMode}`);
  }
  return parts.join(',');
}

function qemuMeasure(format: string, o: Parameters<typeof optString>[0], target: { size?: string | number; file?: string; fmt?: string }, json = true): string {
  const opts = optString(o);
  return qemuImg('measure', ...SECRET, ...(json ? ['--output=json'] : []), '-O', format, ...(opts ? ['-o', opts] : []),
    ...(target.file ? [...(target.fmt ? ['-f', target.fmt] : []), target.file] : ['--size', String(target.size)]));
}

function ours(format: 'qcow2' | 'raw', o: Parameters<typeof optString>[0], source?: MeasureSource, size?: number | bigint): ReturnType<typeof measure> {
  const { luks, ...rest } = o;
  return measure(format, { ...rest, ...(size !== undefined ? { size } : {}), ...(luks ? { luksHeaderSize: luksHeaderSize(luks) } : {}) }, source);
}

/** A source as the engine will describe it: its length, its data runs and (qcow2 v3) its bitmaps. */
function sourceOf(file: string, fmt: string): MeasureSource {
  const info = JSON.parse(qemuImg('info', '-f', fmt, '--output=json', file));
  const runs = qemuMap(file, fmt).filter(e => e.data && !e.zero).map(e => ({ start: e.start, length: e.length }));
  const spec = info['format-specific'];
  const v3 = fmt === 'qcow2' && spec.data.compat === '1.1';
  const bitmaps = v3 ? (spec.data.bitmaps ?? []).map((b: { name: string; granularity: number }) => ({ name: b.name, granularity: b.granularity })) : undefined;
  return { virtualSize: info['virtual-size'], dataRuns: runs, ...(bitmaps ? { bitmaps } : {}) };
}

const CLUSTERS = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576, 2097152];

test('measure --size: cluster sizes 512 B–2 MiB × refcount widths × sizes equal qemu-img', () => {
  for (const clusterSize of CLUSTERS) {
    for (const refcountBits of [1, 16, 64]) {
      for (const size of clusterSize === 512 || clusterSize === 2097152 ? [0, 1000, 1024 * MiB + 1536] : [1000, 1024 * MiB + 1536]) {
        const o = { clusterSize, refcountBits };
        assert.equal(formatMeasureJson(ours('qcow2', o, undefined, size)), qemuMeasure('qcow2', o, { size }), `${clusterSize} ${refcountBits} ${size}`);
      }
    }
  }
  for (const refcountBits of [1, 2, 4, 8, 16, 32, 64]) {
    for (const clusterSize of [4096, 65536]) {
      const o = { clusterSize, refcountBits };
      assert.equal(formatMeasureJson(ours('qcow2', o, undefined, 1024 ** 4)), qemuMeasure('qcow2', o, { size: '1T' }), `1T ${clusterSize} ${refcountBits}`);
    }
  }
});

test('measure --size: extended L2, preallocation, compat, backing file, huge sizes, raw', () => {
  const cases: Array<[Qcow2MeasureOptions, number | bigint]> = [];
  for (const clusterSize of CLUSTERS.filter(c => c >= 16384)) cases.push([{ clusterSize, extendedL2: true }, 3 * 1024 ** 3 + 512], [{ clusterSize, extendedL2: true, refcountBits: 2 }, 5 * MiB]);
  for (const preallocation of ['off', 'metadata', 'falloc', 'full'] as const) cases.push([{ preallocation }, 1024 ** 3], [{ preallocation, clusterSize: 512 }, 7 * MiB + 512]);
  cases.push([{ compat: '0.10' }, 1024 ** 3], [{ compat: '0.10', clusterSize: 2097152 }, 10 * MiB], [{ compat: '1.1' }, 1000]);
  cases.push([{ backingFile: true }, 1024 ** 3]);
  // Past 2^53 bytes (exact in BigInt): 1 PiB at 64 KiB clusters, 1 EiB at 2 MiB.
  cases.push([{}, 2n ** 50n], [{ clusterSize: 2097152 }, 2n ** 60n], [{ clusterSize: 2097152, refcountBits: 1 }, 2n ** 60n + 512n]);
  for (const [o, size] of cases) {
    assert.equal(formatMeasureJson(ours('qcow2', o, undefined, size)), qemuMeasure('qcow2', o, { size: size.toString() }), `${JSON.stringify(o)} ${size}`);
  }
  for (const size of [0, 1, 512, 1000, 1024 ** 3]) {
    assert.equal(formatMeasureJson(ours('raw', {}, undefined, size)), qemuMeasure('raw', {}, { size }), `raw ${size}`);
  }
  assert.equal(formatMeasureHuman(ours('qcow2', {}, undefined, 1024 ** 3)), qemuMeasure('qcow2', {}, { size: '1G' }, false));
});

test('measure with a LUKS header (cipher and mode decide its size)', async () => {
  // qemu-img calibrates PBKDF for each of these (seconds each), so they run side by side.
  const cases = [
    { luks: {}, clusterSize: 65536 }, { luks: { cipherAlg: 'aes-128' }, clusterSize: 2097152 },
    { luks: { cipherAlg: 'aes-256', cipherMode: 'cbc' }, clusterSize: 512 },
  ];
  const outputs = await Promise.all(cases.map(o =>
    qemuImgAsync('measure', ...SECRET, '--output=json', '-O', 'qcow2', '-o', `${optString(o)},encrypt.iter-time=10`, '--size', '1G')));
  cases.forEach((o, i) => assert.equal(formatMeasureJson(ours('qcow2', o, undefined, 1024 ** 3)), outputs[i], JSON.stringify(o)));
});

test('measure of raw and qcow2 sources equals qemu-img (data runs from qemu-img map)', () => {
  const raw = makeRaw(path.join(dir, 'src.raw'), 50 * MiB + 512 * 3, ['write -P 1 0 100k', 'write -P 2 3M 5M', 'write -P 3 20000k 1k', 'write -P 4 50M 1536']);
  const qcow2 = (name: string, opts: string, size: string, cmds: string[]) => {
    const f = path.join(dir, name);
    qemuImg('create', '-q', '-f', 'qcow2', ...(opts ? ['-o', opts] : []), f, size);
    if (cmds.length) qemuIo(f, cmds);
    return f;
  };
  const plain = qcow2('plain.qcow2', '', '64M', ['write -P 5 0 1M', 'write -z 2M 1M', 'write -P 6 5000k 3k', 'write -P 7 63M 1M', 'discard 0 64k']);
  const small = qcow2('small.qcow2', 'cluster_size=512', '8M', ['write -P 8 1000 5000', 'write -P 9 4M 1M']);
  const sub = qcow2('sub.qcow2', 'cluster_size=2M,extended_l2=on', '20M', ['write -P 10 0 64k', 'write -P 11 5M 4k', 'write -z 8M 2M']);
  const v2 = qcow2('v2.qcow2', 'compat=0.10', '16M', ['write -P 12 1M 1M']);
  const bitmaps = qcow2('bm.qcow2', '', '100M', ['write -P 13 10M 3M']);
  qemuImg('bitmap', '--add', bitmaps, 'a');
  qemuImg('bitmap', '--add', '-g', '1M', bitmaps, 'a-rather-longer-bitmap-name');
  qemuImg('bitmap', '--add', '-g', '512', '--disable', bitmaps, 'fine');
  const prealloc = qcow2('prealloc.qcow2', 'preallocation=metadata', '10M', ['write -P 14 1M 64k']);
  const compressed = path.join(dir, 'compressed.qcow2');
  qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', raw, compressed);
  const base = qcow2('base.qcow2', '', '32M', ['write -P 15 0 4M']);
  const mid = path.join(dir, 'mid.qcow2'), top = path.join(dir, 'top.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', mid, '32M');
  qemuIo(mid, ['write -P 16 8M 1M', 'write -z 0 64k']);
  qemuImg('create', '-q', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', top, '40M');
  qemuIo(top, ['write -P 17 30M 64k', 'write -P 18 39M 1M']);

  const sources: Array<[string, string]> = [[raw, 'raw'], [plain, 'qcow2'], [small, 'qcow2'], [sub, 'qcow2'], [v2, 'qcow2'], [bitmaps, 'qcow2'], [prealloc, 'qcow2'], [compressed, 'qcow2'], [top, 'qcow2']];
  const outputs: Array<Qcow2MeasureOptions> = [
    {}, { clusterSize: 512 }, { clusterSize: 2097152, extendedL2: true }, { refcountBits: 1 }, { refcountBits: 64, clusterSize: 4096 },
    { compat: '0.10' }, { preallocation: 'falloc' }, { preallocation: 'metadata' }, { backingFile: true },
  ];
  for (const [file, fmt] of sources) {
    const src = sourceOf(file, fmt);
    for (const o of outputs) {
      assert.equal(formatMeasureJson(ours('qcow2', o, src)), qemuMeasure('qcow2', o, { file, fmt }), `${path.basename(file)} ${JSON.stringify(o)}`);
    }
    assert.equal(formatMeasureJson(ours('raw', {}, src)), qemuMeasure('raw', {}, { file, fmt }), `${path.basename(file)} -O raw`);
    assert.equal(formatMeasureHuman(ours('qcow2', {}, src)), qemuMeasure('qcow2', {}, { file, fmt }, false), `${path.basename(file)} human`);
  }
  // The bitmaps key is there for a v3 source (and only with a v3 output), as qemu-img prints it.
  assert.match(qemuMeasure('qcow2', {}, { file: bitmaps, fmt: 'qcow2' }), /"bitmaps": [1-9]/);
  assert.doesNotMatch(qemuMeasure('qcow2', { compat: '0.10' }, { file: bitmaps, fmt: 'qcow2' }), /bitmaps/);
});

test('measure refuses what qemu-img measure refuses, with its messages', () => {
  const cases: Array<[Qcow2MeasureOptions, string, string]> = [
    [{ clusterSize: 1000 }, 'cluster_size=1000', '1G'],
    [{ clusterSize: 4194304 }, 'cluster_size=4194304', '1G'],
    [{ clusterSize: 4096, extendedL2: true }, 'cluster_size=4096,extended_l2=on', '1G'],
    [{ refcountBits: 3 }, 'refcount_bits=3', '1G'],
    [{ refcountBits: 128 }, 'refcount_bits=128', '1G'],
    [{ compat: '0.10', refcountBits: 8 }, 'compat=0.10,refcount_bits=8', '1G'],
    [{ compat: '2.0' }, 'compat=2.0', '1G'],
    [{ clusterSize: 512 }, 'cluster_size=512', '2P'],
  ];
  for (const [o, opts, size] of cases) {
    const q = qemuImgStatus('measure', '-O', 'qcow2', '-o', opts, '--size', size);
    assert.notEqual(q.status, 0);
    const sizeBytes = size === '1G' ? 1024 ** 3 : 2 * 1024 ** 5;
    assert.throws(() => measure('qcow2', { ...o, size: sizeBytes }), (e: Error & { detail?: string }) => {
      assert.equal(`qemu-img: ${e.detail}\n`, q.stderr);
      return true;
    });
  }
  for (const fmt of ['vpc', 'vmdk'] as const) {
    const q = qemuImgStatus('measure', '-O', fmt, '--size', '1G');
    assert.throws(() => measure(fmt, { size: 1024 ** 3 }), (e: Error & { detail?: string }) => `qemu-img: ${e.detail}\n` === q.stderr);
  }
});
