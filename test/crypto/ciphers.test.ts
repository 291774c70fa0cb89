/**
 * The building blocks without QEMU: the batch sector ciphers against Node's own per-sector
 * AES-XTS/CBC/CTR/ECB (and, for AES-192-XTS, which OpenSSL lacks, against a block-by-block XTS
 * written here with BigInt tweaks), the IV generators, the AF splitter, the Secret holder and the
 * passphrase rules. QEMU agreement for every combination is in luks-qemu-*.test.ts.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as util from 'node:util';
import { AesAlgorithm, CipherMode, HASH_ALGORITHMS, IvGenAlgorithm, essivCipher } from '../../src/engine/crypto/algorithms';
import { afMerge, afSplit } from '../../src/engine/crypto/afsplit';
import { DataCipher } from '../../src/engine/crypto/dataCipher';
import { Secret, isQemuPassphrase } from '../../src/engine/crypto/secret';
import { SectorCipher, SectorCipherSpec } from '../../src/engine/crypto/sectorCipher';

const TWO_32 = 2 ** 32;

/** The IV of one sector, computed here independently of ivgen.ts. */
function refIv(alg: IvGenAlgorithm, key: Buffer, sector: number, cipher: AesAlgorithm, hash = 'sha256' as const): Buffer {
  const iv = Buffer.alloc(16);
  iv.writeUInt32LE(sector % TWO_32, 0);
  if (alg !== 'plain') iv.writeUInt32LE(Math.floor(sector / TWO_32), 4);
  if (alg !== 'essiv') return iv;
  const e = essivCipher(cipher, hash) as AesAlgorithm;
  const c = crypto.createCipheriv(`${e}-ecb`, crypto.createHash(hash).update(key).digest(), null);
  c.setAutoPadding(false);
  return c.update(iv);
}

/** Node's cipher, one object per sector: the slow, obviously right way. */
function nodeSectors(spec: SectorCipherSpec, key: Buffer, data: Buffer, first: number, encrypt: boolean): Buffer {
  const out = Buffer.alloc(data.length);
  for (let o = 0, s = first; o < data.length; o += 512, s++) {
    const name = `${spec.cipherAlg}-${spec.cipherMode}`;
    const iv = spec.cipherMode === 'ecb' ? null : refIv(spec.ivgenAlg, key, s, spec.cipherAlg);
    const c = encrypt ? crypto.createCipheriv(name, key, iv) : crypto.createDecipheriv(name, key, iv);
    c.setAutoPadding(false);
    Buffer.concat([c.update(data.subarray(o, o + 512)), c.final()]).copy(out, o);
  }
  return out;
}

/** XTS block by block (IEEE 1619): tweak as a BigInt, doubled per block. */
function refXts(alg: AesAlgorithm, ivgen: IvGenAlgorithm, key: Buffer, data: Buffer, first: number, encrypt: boolean): Buffer {
  const half = key.length / 2;
  const k1 = key.subarray(0, half), k2 = key.subarray(half);
  const ecb = (k: Buffer, enc: boolean, b: Buffer) => {
    const c = enc ? crypto.createCipheriv(`${alg}-ecb`, k, null) : crypto.createDecipheriv(`${alg}-ecb`, k, null);
    c.setAutoPadding(false);
    return c.update(b);
  };
  const out = Buffer.alloc(data.length);
  const toBig = (b: Buffer) => BigInt('0x' + Buffer.from(b).reverse().toString('hex'));
  const fromBig = (n: bigint) => Buffer.from(n.toString(16).padStart(32, '0'), 'hex').reverse();
  for (let o = 0, s = first; o < data.length; o += 512, s++) {
    let t = toBig(ecb(k2, true, refIv(ivgen, key, s, alg)));
    for (let j = o; j < Math.min(data.length, o + 512); j += 16) {
      const tb = fromBig(t);
      const x = Buffer.alloc(16);
      for (let i = 0; i < 16; i++) x[i] = data[j + i] ^ tb[i];
      const y = ecb(k1, encrypt, x);
      for (let i = 0; i < 16; i++) out[j + i] = y[i] ^ tb[i];
      t <<= 1n;
      if (t >> 128n) t = (t & ((1n << 128n) - 1n)) ^ 0x87n;
    }
  }
  return out;
}

const KEY_BYTES: Record<AesAlgorithm, number> = { 'aes-128': 16, 'aes-192': 24, 'aes-256': 32 };

const CASES: { alg: AesAlgorithm; mode: CipherMode; ivgen: IvGenAlgorithm }[] = [];
for (const alg of ['aes-128', 'aes-192', 'aes-256'] as const) {
  for (const mode of ['xts', 'cbc', 'ctr', 'ecb'] as const) {
    for (const ivgen of ['plain', 'plain64', 'essiv'] as const) CASES.push({ alg, mode, ivgen });
  }
}

for (const { alg, mode, ivgen } of CASES) {
  test(`${alg}-${mode}-${ivgen}: batch sectors equal ${mode === 'xts' && alg === 'aes-192' ? 'a block-by-block XTS' : "Node's cipher per sector"}, both ways`, () => {
    const key = crypto.randomBytes(KEY_BYTES[alg] * (mode === 'xts' ? 2 : 1));
    const spec: SectorCipherSpec = { cipherAlg: alg, cipherMode: mode, ivgenAlg: ivgen, ivgenHashAlg: ivgen === 'essiv' ? 'sha256' : undefined, ivgenCipherAlg: ivgen === 'essiv' ? 'aes-256' : alg };
    const sc = new SectorCipher(spec, key);
    const ref = (d: Buffer, first: number, enc: boolean) =>
      mode === 'xts' && alg === 'aes-192' ? refXts(alg, ivgen, key, d, first, enc) : nodeSectors(spec, key, d, first, enc);
    // 300 sectors span more than two 64 KiB chunks (the BigInt reference is slow: 40 there);
    // sector numbers straddle 2³², where plain truncates.
    const sectors = mode === 'xts' && alg === 'aes-192' ? 40 : 300;
    for (const first of [0, TWO_32 - sectors / 2, 2 ** 40 + 3]) {
      const plain = crypto.randomBytes(sectors * 512);
      const enc = Buffer.from(plain);
      sc.encrypt(enc, first);
      const expected = ref(plain, first, true);
      assert.ok(enc.equals(expected), `encrypt from sector ${first}`);
      const dec = Buffer.from(enc);
      sc.decrypt(dec, first);
      assert.ok(dec.equals(plain), `round trip from sector ${first}`);
      assert.ok(ref(enc, first, false).equals(plain));
    }
    // A short last sector (key material that is no whole number of sectors) is a prefix of a full one.
    const full = crypto.randomBytes(3 * 512);
    const short = Buffer.from(full.subarray(0, 2 * 512 + 256));
    const fullDec = Buffer.from(full);
    sc.decrypt(fullDec, 7);
    sc.decrypt(short, 7);
    assert.ok(short.equals(fullDec.subarray(0, short.length)));
    sc.dispose();
    assert.throws(() => sc.decrypt(Buffer.alloc(512), 0), /disposed/);
  });
}

test('a misaligned buffer slice is handled like an aligned copy', () => {
  const key = crypto.randomBytes(64);
  const spec: SectorCipherSpec = { cipherAlg: 'aes-256', cipherMode: 'xts', ivgenAlg: 'plain64', ivgenCipherAlg: 'aes-256' };
  const sc = new SectorCipher(spec, key);
  const backing = crypto.randomBytes(4 * 512 + 3);
  const slice = backing.subarray(3);
  const copy = Buffer.from(slice);
  sc.decrypt(slice, 9);
  sc.decrypt(copy, 9);
  assert.ok(slice.equals(copy));
  assert.throws(() => sc.decrypt(Buffer.alloc(100), 0), /whole number/);
});

test('DataCipher numbers sectors by host offset (qcow2), from the payload (raw LUKS) and refuses partial sectors', () => {
  const key = crypto.randomBytes(64);
  const spec: SectorCipherSpec = { cipherAlg: 'aes-256', cipherMode: 'xts', ivgenAlg: 'plain64', ivgenCipherAlg: 'aes-256' };
  const data = crypto.randomBytes(4096);
  const viaSector = Buffer.from(data);
  new SectorCipher(spec, key).encrypt(viaSector, 0x50000 / 512);
  const qcow2 = new DataCipher(new SectorCipher(spec, key), 'host');
  const a = Buffer.from(data);
  qcow2.encryptRun(a, 0x50000);
  assert.ok(a.equals(viaSector));
  const raw = new DataCipher(new SectorCipher(spec, key), 'host', 2068480);
  const b = Buffer.from(data);
  raw.encryptRun(b, 2068480 + 0x50000);
  assert.ok(b.equals(viaSector));
  assert.throws(() => raw.decryptRun(Buffer.alloc(512), 0), RangeError);
  assert.throws(() => qcow2.decryptRun(Buffer.alloc(512), 100), RangeError);
  assert.throws(() => qcow2.decryptRun(Buffer.alloc(100), 512), RangeError);
});

test('AF split and merge are inverse for every hash and key size', async () => {
  // Every hash with a 64-byte key (pieces of its digest size and a short last one), every key size
  // with sha256; the full 4000 stripes once, fewer elsewhere (the stripe count is a parameter).
  const cases = [...HASH_ALGORITHMS.map(h => [h, 64] as const), ...[16, 24, 32, 48].map(n => ['sha256', n] as const)];
  for (const [i, [hash, n]] of cases.entries()) {
    const stripes = i === 0 ? 4000 : 200;
    const key = crypto.randomBytes(n);
    const split = await afSplit(hash, key, stripes);
    assert.equal(split.length, n * stripes);
    assert.ok((await afMerge(hash, n, stripes, split)).equals(key), `${hash} ${n}`);
    split[crypto.randomInt(split.length)] ^= 1;
    assert.ok(!(await afMerge(hash, n, stripes, split)).equals(key), `${hash} ${n}: one flipped bit loses the key`);
  }
});

test('a Secret never prints its bytes, and is gone once wiped', () => {
  const pass = 'correct horse battery staple';
  const s = Secret.fromString(pass);
  const shown = [
    String(s), `${s}`, s + '', JSON.stringify({ s }), util.inspect(s), util.inspect({ s }, { showHidden: true, depth: 9 }),
    util.format('%s %o %O %j', s, s, s, s), new Error(`failed with ${s}`).message,
  ];
  for (const t of shown) {
    assert.ok(!t.includes(pass), t);
    assert.ok(!t.includes('horse'), t);
    assert.ok(t.includes('[secret]'), t);
  }
  const bytes = s.bytes();
  assert.equal(bytes.toString(), pass);
  assert.ok(s.equals(Secret.fromString(pass)));
  assert.ok(!s.equals(Secret.fromString(pass + '!')));
  s.wipe();
  assert.ok(bytes.every(b => b === 0), 'wiping zeroes the bytes');
  assert.throws(() => s.bytes(), /wiped/);
  s.wipe();
  const src = Buffer.from('abc');
  const copy = Secret.fromBytes(src);
  src.fill(0);
  assert.equal(copy.bytes().toString(), 'abc', 'fromBytes copies');
});

test('passphrases follow QEMU: UTF-8 text without NUL bytes', () => {
  for (const ok of ['', 'abc', 'ünïcødé', '密码', '🔑 key', 'x'.repeat(1000)]) assert.ok(isQemuPassphrase(Buffer.from(ok, 'utf8')), ok);
  for (const bad of [[0x61, 0x00, 0x62], [0xff], [0xc0, 0x80], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82], [0x80]]) {
    assert.ok(!isQemuPassphrase(Buffer.from(bad)), Buffer.from(bad).toString('hex'));
  }
});
