/**
 * The entry codec on 32-bit halves (cluster.ts) against the spec's 64-bit masks (layout.ts), the
 * header field table against the parser, and the open error codes: the hot paths decode without
 * BigInt, so these pin them to the bigint definitions over many random words.
 */
import { test } from 'node:test';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as assert from 'node:assert/strict';
import {
  compressedLength, compressedOffset, entryOffset, hasEntryOffset, hasZeroFlag, isCompressed, isCopied, l1EntryOffset, l1ReservedBits,
  l2EntryPath, l2Geometry, l2ReservedBits, reftableEntryOffset, withCopied,
} from '../../src/engine/qcow2/cluster';
import * as L from '../../src/engine/qcow2/layout';
import { encodeHeaderFields, headerPath, readHeader } from '../../src/engine/qcow2/header';
import { ImageFile, openErrorCode } from '../../src/engine/io/reader';
import { Qcow2Error } from '../../src/engine/errors';
import { qemuImg, tmpDir } from '../helpers/qemu';

/** A small deterministic generator, so a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

function words(n: number, seed: number): [number, number][] {
  const r = rng(seed);
  const out: [number, number][] = [[0, 0], [0xffffffff, 0xffffffff], [0x80000000, 0], [0x40000000, 1], [0x00ffffff, 0xfffffe00]];
  while (out.length < n) out.push([r(), r()]);
  return out;
}

test('entry bits on 32-bit halves equal the spec masks on 64-bit words', () => {
  for (const [hi, lo] of words(20000, 1)) {
    const raw = (BigInt(hi) << 32n) | BigInt(lo);
    assert.equal(isCompressed(hi), (raw & L.QCOW_OFLAG_COMPRESSED) !== 0n);
    assert.equal(isCopied(hi), (raw & L.QCOW_OFLAG_COPIED) !== 0n);
    assert.equal(hasZeroFlag(lo), (raw & L.QCOW_OFLAG_ZERO) !== 0n);
    assert.equal(entryOffset(hi, lo), Number(raw & L.L2E_OFFSET_MASK));
    assert.equal(hasEntryOffset(hi, lo), (raw & L.L2E_OFFSET_MASK) !== 0n);
    assert.equal(reftableEntryOffset(hi, lo), Number(raw & L.REFT_OFFSET_MASK));
    assert.equal(l1ReservedBits(hi, lo), (raw & L.L1E_RESERVED_MASK) !== 0n);
    assert.equal(l2ReservedBits(hi, lo), (raw & L.L2E_STD_RESERVED_MASK) !== 0n);
    for (const on of [true, false]) {
      const want = on ? raw | L.QCOW_OFLAG_COPIED : raw & ~L.QCOW_OFLAG_COPIED;
      assert.equal(withCopied(hi, on), Number(want >> 32n));
    }
  }
});

test('compressed descriptors: offset and length as the spec defines them, for every cluster size', () => {
  for (let clusterBits = L.MIN_CLUSTER_BITS; clusterBits <= L.MAX_CLUSTER_BITS; clusterBits++) {
    const g = l2Geometry(clusterBits, false);
    const x = BigInt(62 - (clusterBits - 8));
    for (const [hi, lo] of words(3000, clusterBits)) {
      const desc = ((BigInt(hi) << 32n) | BigInt(lo)) & ((1n << 62n) - 1n);
      const offset = Number(desc & ((1n << x) - 1n));
      const sectors = Number(desc >> x);
      assert.equal(compressedOffset(g, hi, lo), offset);
      assert.equal(compressedLength(g, hi, lo), (sectors + 1) * 512 - (offset & 511));
    }
  }
});

test('l1EntryOffset reads entry i of a raw table; l2EntryPath prints L2 indexes in hex', () => {
  const t = Buffer.alloc(24);
  t.writeBigUInt64BE(0x8000000000050000n | 0x1n, 8);
  assert.equal(l1EntryOffset(t, 0), 0);
  assert.equal(l1EntryOffset(t, 1), 0x50000);
  assert.equal(l2EntryPath('L1', 3, 31), 'L1[3] → L2[0x1f]');
  assert.equal(l2EntryPath('snapshot "s1" L1', 0, 0), 'snapshot "s1" L1[0] → L2[0x0]');
});

test('header fields: the table, the run encoder and the writer agree with the parser', async () => {
  const dir = tmpDir('qcow2-lens-codec-');
  try {
    const p = path.join(dir, 'a.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', p, '64M');
    const f = await ImageFile.open(p);
    const h = await readHeader(f);
    const raw = await f.read(0, h.headerLength, 'header');
    await f.close();
    assert.deepEqual(encodeHeaderFields(h), raw.subarray(0, h.headerLength));
    assert.equal(L.readHeaderField(raw, 'l1_table_offset'), BigInt(h.l1TableOffset));
    assert.equal(L.readHeaderField(raw, 'cluster_bits'), 16);
    const run = L.encodeHeaderRun([['size', h.size], ['crypt_method', h.cryptMethod], ['l1_size', h.l1Size], ['l1_table_offset', h.l1TableOffset]]);
    assert.equal(run.offset, L.HEADER_FIELD.size.offset);
    assert.deepEqual(run.bytes, raw.subarray(24, 48));
    assert.throws(() => L.encodeHeaderRun([['size', 0], ['l1_size', 0]]), /does not follow/);
    assert.equal(headerPath('nb_snapshots'), 'header.nb_snapshots');
    assert.equal(headerPath(), 'header');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('opening a file that is not there says not-found; other failures keep their errno in the text', async () => {
  assert.equal(openErrorCode('ENOENT'), 'not-found');
  assert.equal(openErrorCode('EACCES'), 'permission-denied');
  assert.equal(openErrorCode('EPERM'), 'permission-denied');
  assert.equal(openErrorCode('EISDIR'), 'io');
  await assert.rejects(ImageFile.open('/nonexistent/qcow2-lens/x.qcow2'),
    (e: unknown) => e instanceof Qcow2Error && e.code === 'not-found' && /cannot open \(ENOENT\)/.test(e.message));
});
