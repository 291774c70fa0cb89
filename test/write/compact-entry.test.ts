/**
 * The compaction's entry encoders against the spec's 64-bit formulas (computed with BigInt here)
 * and against cluster.ts's decoders, for every cluster size.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { compressedEntryHi, offsetHi, putEntry, putOffset } from '../../src/engine/qcow2/cluster';
import { decodeCompressed, entryOffset, l2Geometry, wordHi, wordLo } from '../../src/engine/qcow2/cluster';
import * as L from '../../src/engine/qcow2/layout';

// offsets stay below 2^53, where a file offset is an exact number
test('a compressed entry is the spec\'s flag | sectors << x | offset, and decodes back', () => {
  for (let bits = L.MIN_CLUSTER_BITS; bits <= L.MAX_CLUSTER_BITS; bits++) {
    const g = l2Geometry(bits, false);
    const x = g.compressedOffsetBits;
    for (const host of [512, 0x12345, 2 ** 33 + 7, Math.min(2 ** x, 2 ** 52) - 4096]) {
      for (const len of [1, 511, 512, 513, 2 ** bits - 1]) {
        const nb = Math.floor((host + len - 1) / 512) - Math.floor(host / 512);
        const want = L.QCOW_OFLAG_COMPRESSED | (BigInt(nb) << BigInt(x)) | BigInt(host);
        const hi = compressedEntryHi(g, host, len), lo = host >>> 0;
        assert.equal((BigInt(hi) << 32n) | BigInt(lo), want, `cluster_bits ${bits}, host ${host}, len ${len}`);
        const d = decodeCompressed(g, hi, lo);
        assert.equal(d.hostOffset, host);
        assert.ok(d.compressedSize >= len && d.compressedSize - len < 512, `${d.compressedSize} bytes hold ${len}`);
      }
    }
  }
});

test('putOffset writes a big-endian entry with its flags in the high word', () => {
  const b = Buffer.alloc(16);
  for (const off of [0, 0x200, 0xfffffe00, 2 ** 32, 2 ** 47 + 2 ** 32 + 0x1200, 2 ** 55 - 512]) {
    putOffset(b, 8, off, L.OFLAG_COPIED_HI);
    assert.equal(b.readBigUInt64BE(8), BigInt(off) | L.QCOW_OFLAG_COPIED);
    assert.equal(entryOffset(wordHi(b, 8), wordLo(b, 8)), off);
    assert.equal(offsetHi(off), Number(BigInt(off) >> 32n));
  }
  putEntry(b, 0, 0xdeadbeef, 0x01020304);
  assert.equal(b.readBigUInt64BE(0), 0xdeadbeef01020304n);
});
