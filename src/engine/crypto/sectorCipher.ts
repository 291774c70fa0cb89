/**
 * Sector encryption as QEMU's crypto/block.c does it: data is cut into 512-byte sectors, each
 * sector gets the IV of its number (ivgen.ts) and is encrypted on its own in one of four modes.
 * Everything runs in place on whole batches of sectors, with Node's AES as the block cipher
 * (aesBlock.ts) called once per 64 KiB chunk rather than once per sector:
 *
 *   xts  C = E_K1(P ⊕ T) ⊕ T, with T = E_K2(IV) for the sector's first block, doubled in GF(2¹²⁸)
 *        for each next block (IEEE 1619; the key is K1‖K2). The tweaks of a chunk are computed
 *        here, then one ECB call does all the AES work.
 *   cbc  decrypting is parallel (P_j = D(C_j) ⊕ C_{j−1}, C_{−1} = IV): one ECB call per chunk.
 *        Encrypting chains within a sector, but sectors are independent, so block j of every
 *        sector in the chunk is encrypted by one ECB call (32 calls per chunk instead of one
 *        cipher object per sector).
 *   ctr  keystream E(IV + j) for block j (128-bit big-endian counter, as OpenSSL, nettle and
 *        gcrypt count), XORed in; the same for both directions.
 *   ecb  no IV at all.
 *
 * The last sector of a buffer may be shorter than 512 bytes (key material of some key sizes is
 * not a whole number of sectors); every mode here handles that as a prefix of a full sector.
 */
import * as os from 'node:os';
import { AesAlgorithm, CipherMode, HashAlgorithm, IvGenAlgorithm, cipherKeyBytes } from './algorithms';
import { AES_BLOCK_BYTES, AesEcb } from './aesBlock';
import { IvGenerator } from './ivgen';

export const SECTOR_BYTES = 512;
const BLOCKS_PER_SECTOR = SECTOR_BYTES / AES_BLOCK_BYTES;
/** Sectors per AES call: 64 KiB keeps the scratch buffers in L2 cache. */
const CHUNK_SECTORS = 128;
/** CBC encryption makes 32 AES calls per chunk, so it takes larger chunks to keep calls few. */
const CBC_ENCRYPT_CHUNK_SECTORS = 2048;

export interface SectorCipherSpec {
  cipherAlg: AesAlgorithm;
  cipherMode: CipherMode;
  ivgenAlg: IvGenAlgorithm;
  ivgenHashAlg?: HashAlgorithm;
  ivgenCipherAlg: AesAlgorithm;
}

/** A 32-bit word view of a buffer (which must start 4-byte aligned). */
function words(b: Uint8Array): Int32Array {
  return new Int32Array(b.buffer, b.byteOffset, b.length >> 2);
}

function isAligned(b: Uint8Array): boolean {
  return b.byteOffset % 4 === 0;
}

export class SectorCipher {
  private data: AesEcb | undefined;
  private tweak: AesEcb | undefined;
  private ivgen: IvGenerator | undefined;
  private readonly tweaks = new Int32Array((CHUNK_SECTORS * SECTOR_BYTES) >> 2);
  private readonly scratch = Buffer.allocUnsafeSlow(CHUNK_SECTORS * SECTOR_BYTES);

  /**
   * `key` is the whole key (both halves for XTS); it is copied into OpenSSL's contexts and may be
   * wiped by the caller afterwards.
   */
  constructor(readonly spec: SectorCipherSpec, key: Buffer) {
    const one = cipherKeyBytes(spec.cipherAlg);
    const expected = spec.cipherMode === 'xts' ? 2 * one : one;
    if (key.length !== expected) throw new Error(`${spec.cipherAlg}-${spec.cipherMode} needs a ${expected}-byte key, got ${key.length}`);
    if ((spec.cipherMode === 'xts' || spec.cipherMode === 'ctr') && os.endianness() !== 'LE') {
      // The tweak and counter arithmetic below reads 32-bit words in little-endian order.
      throw new Error(`${spec.cipherMode} is only implemented on little-endian machines`);
    }
    this.data = new AesEcb(spec.cipherAlg, key.subarray(0, one));
    if (spec.cipherMode === 'xts') this.tweak = new AesEcb(spec.cipherAlg, key.subarray(one));
    if (spec.cipherMode !== 'ecb') this.ivgen = new IvGenerator(spec.ivgenAlg, key, spec.ivgenCipherAlg, spec.ivgenHashAlg);
  }

  /** Decrypts `buf` in place; its first byte starts sector `firstSector`. */
  decrypt(buf: Buffer, firstSector: number): void {
    this.run(buf, firstSector, false);
  }

  /** Encrypts `buf` in place; its first byte starts sector `firstSector`. */
  encrypt(buf: Buffer, firstSector: number): void {
    this.run(buf, firstSector, true);
  }

  dispose(): void {
    this.data?.dispose();
    this.tweak?.dispose();
    this.ivgen?.dispose();
    this.data = this.tweak = this.ivgen = undefined;
    this.tweaks.fill(0);
    this.scratch.fill(0);
  }

  private run(buf: Buffer, firstSector: number, encrypt: boolean): void {
    if (!this.data) throw new Error('the sector cipher was disposed');
    if (buf.length % AES_BLOCK_BYTES !== 0) throw new RangeError(`${buf.length} bytes is not a whole number of ${AES_BLOCK_BYTES}-byte blocks`);
    if (!Number.isSafeInteger(firstSector) || firstSector < 0) throw new RangeError(`sector ${firstSector} is not a valid sector number`);
    if (!isAligned(buf)) {
      // Word views need 4-byte alignment; a misaligned slice is worked on in a copy.
      const copy = Buffer.from(buf);
      this.run(copy, firstSector, encrypt);
      copy.copy(buf);
      copy.fill(0);
      return;
    }
    const chunk = (this.spec.cipherMode === 'cbc' && encrypt ? CBC_ENCRYPT_CHUNK_SECTORS : CHUNK_SECTORS) * SECTOR_BYTES;
    for (let at = 0; at < buf.length; at += chunk) {
      const part = buf.subarray(at, Math.min(buf.length, at + chunk));
      const sector = firstSector + at / SECTOR_BYTES;
      switch (this.spec.cipherMode) {
        case 'xts': this.xts(part, sector, encrypt); break;
        case 'cbc': if (encrypt) this.cbcEncrypt(part, sector); else this.cbcDecrypt(part, sector); break;
        case 'ctr': this.ctr(part, sector); break;
        case 'ecb': part.set(encrypt ? this.data.encrypt(part) : this.data.decrypt(part)); break;
      }
    }
  }

  private sectorIvs(sector: number, bytes: number): Buffer {
    return this.ivgen!.ivs(sector, Math.ceil(bytes / SECTOR_BYTES));
  }

  /** An ECB result as words (OpenSSL output buffers are aligned; copied if one ever is not). */
  private static resultWords(b: Buffer): Int32Array {
    return words(isAligned(b) ? b : Buffer.from(b));
  }

  private xts(part: Buffer, sector: number, encrypt: boolean): void {
    const t0 = SectorCipher.resultWords(this.tweak!.encrypt(this.sectorIvs(sector, part.length)));
    const x = words(this.scratch), p = words(part);
    const n = p.length;
    // Pass 1: P ⊕ T into the scratch buffer, each block's tweak T derived from its sector's first.
    for (let w = 0, s = 0; w < n; s++) {
      let a = t0[s * 4], b = t0[s * 4 + 1], c = t0[s * 4 + 2], d = t0[s * 4 + 3];
      const end = Math.min(n, w + (SECTOR_BYTES >> 2));
      for (; w < end; w += 4) {
        x[w] = p[w] ^ a; x[w + 1] = p[w + 1] ^ b; x[w + 2] = p[w + 2] ^ c; x[w + 3] = p[w + 3] ^ d;
        // T·α in GF(2¹²⁸), little-endian: shift left one bit, fold the carry back in as 0x87.
        const carry = d >> 31;
        d = (d << 1) | (c >>> 31);
        c = (c << 1) | (b >>> 31);
        b = (b << 1) | (a >>> 31);
        a = (a << 1) ^ (carry & 0x87);
      }
    }
    const masked = this.scratch.subarray(0, part.length);
    const y = SectorCipher.resultWords(encrypt ? this.data!.encrypt(masked) : this.data!.decrypt(masked));
    // Pass 2: undo the mask with the same tweaks, derived again (cheaper than storing them).
    for (let w = 0, s = 0; w < n; s++) {
      let a = t0[s * 4], b = t0[s * 4 + 1], c = t0[s * 4 + 2], d = t0[s * 4 + 3];
      const end = Math.min(n, w + (SECTOR_BYTES >> 2));
      for (; w < end; w += 4) {
        p[w] = y[w] ^ a; p[w + 1] = y[w + 1] ^ b; p[w + 2] = y[w + 2] ^ c; p[w + 3] = y[w + 3] ^ d;
        const carry = d >> 31;
        d = (d << 1) | (c >>> 31);
        c = (c << 1) | (b >>> 31);
        b = (b << 1) | (a >>> 31);
        a = (a << 1) ^ (carry & 0x87);
      }
    }
  }

  private cbcDecrypt(part: Buffer, sector: number): void {
    const iv = SectorCipher.resultWords(this.sectorIvs(sector, part.length));
    const y = SectorCipher.resultWords(this.data!.decrypt(part));
    const p = words(part);
    const n = p.length;
    for (let w = 0, s = 0; w < n; s++) {
      let a = iv[s * 4], b = iv[s * 4 + 1], c = iv[s * 4 + 2], d = iv[s * 4 + 3];
      const end = Math.min(n, w + (SECTOR_BYTES >> 2));
      for (; w < end; w += 4) {
        // The ciphertext block is the next block's chaining value; keep it before overwriting.
        const ca = p[w], cb = p[w + 1], cc = p[w + 2], cd = p[w + 3];
        p[w] = y[w] ^ a; p[w + 1] = y[w + 1] ^ b; p[w + 2] = y[w + 2] ^ c; p[w + 3] = y[w + 3] ^ d;
        a = ca; b = cb; c = cc; d = cd;
      }
    }
  }

  private cbcEncrypt(part: Buffer, sector: number): void {
    const sectors = Math.ceil(part.length / SECTOR_BYTES);
    const chainBuf = Buffer.allocUnsafeSlow(sectors * AES_BLOCK_BYTES);
    this.sectorIvs(sector, part.length).copy(chainBuf);
    const chain = words(chainBuf);
    const gBuf = Buffer.allocUnsafeSlow(sectors * AES_BLOCK_BYTES);
    const g = words(gBuf);
    const p = words(part);
    const blocks = part.length / AES_BLOCK_BYTES;
    for (let j = 0; j < BLOCKS_PER_SECTOR; j++) {
      // Sectors that have a block j (all but a short last sector, for large j).
      let live = 0;
      for (let s = 0; s < sectors; s++) {
        const blk = s * BLOCKS_PER_SECTOR + j;
        if (blk >= blocks) break;
        const w = blk * 4, q = live * 4;
        g[q] = p[w] ^ chain[s * 4]; g[q + 1] = p[w + 1] ^ chain[s * 4 + 1];
        g[q + 2] = p[w + 2] ^ chain[s * 4 + 2]; g[q + 3] = p[w + 3] ^ chain[s * 4 + 3];
        live++;
      }
      if (live === 0) break;
      const y = SectorCipher.resultWords(this.data!.encrypt(gBuf.subarray(0, live * AES_BLOCK_BYTES)));
      for (let s = 0; s < live; s++) {
        const w = (s * BLOCKS_PER_SECTOR + j) * 4, q = s * 4;
        p[w] = chain[q] = y[q]; p[w + 1] = chain[q + 1] = y[q + 1];
        p[w + 2] = chain[q + 2] = y[q + 2]; p[w + 3] = chain[q + 3] = y[q + 3];
      }
    }
    g.fill(0);
    chain.fill(0);
  }

  private ctr(part: Buffer, sector: number): void {
    const iv = SectorCipher.resultWords(this.sectorIvs(sector, part.length));
    const counters = this.scratch.subarray(0, part.length);
    const cw = words(counters);
    const n = cw.length;
    for (let w = 0, s = 0; w < n; s++) {
      const a = iv[s * 4], b = iv[s * 4 + 1], c = iv[s * 4 + 2], d = iv[s * 4 + 3];
      // IV + j as a 128-bit big-endian number. Its lowest byte is byte 15, the top byte of the
      // last little-endian word; while adding j does not carry out of it, only that byte changes.
      const low = d >>> 24;
      const end = Math.min(n, w + (SECTOR_BYTES >> 2));
      for (let j = 0; w < end; w += 4, j++) {
        cw[w] = a; cw[w + 1] = b; cw[w + 2] = c;
        if (low + j <= 0xff) {
          cw[w + 3] = (d + (j << 24)) | 0;
        } else {
          cw[w + 3] = d;
          const o = w * 4;
          for (let k = AES_BLOCK_BYTES - 1, carry = j; carry && k >= 0; k--) {
            const v = counters[o + k] + carry;
            counters[o + k] = v & 0xff;
            carry = v >> 8;
          }
        }
      }
    }
    const ks = SectorCipher.resultWords(this.data!.encrypt(counters));
    const p = words(part);
    for (let w = 0; w < p.length; w++) p[w] ^= ks[w];
  }
}
