/**
 * IV generators (QEMU's crypto/ivgen-*.c, dm-crypt's names): the 16-byte IV of a 512-byte sector
 * from its number, for a whole batch of sectors at once.
 *   plain    the sector number's low 32 bits, little-endian, zero-padded
 *   plain64  the sector number, 64-bit little-endian, zero-padded
 *   essiv    plain64 encrypted (AES-ECB) under hash(key), so IVs cannot be predicted without the key
 */
import { nodeCrypto } from '../builtins';
import * as os from 'node:os';
import { AesAlgorithm, HashAlgorithm, IvGenAlgorithm, cipherKeyBytes } from './algorithms';
import { AES_BLOCK_BYTES, AesEcb } from './aesBlock';
import { wipeBuffers } from './secret';

const TWO_32 = 4294967296;

export class IvGenerator {
  private essiv: AesEcb | undefined;

  /**
   * `key` is the key the sectors are encrypted with (the master key, or a slot key for key
   * material); only essiv uses it, hashing all of it as dm-crypt does.
   */
  constructor(readonly alg: IvGenAlgorithm, key: Buffer, essivCipher?: AesAlgorithm, essivHash?: HashAlgorithm) {
    if (alg === 'essiv') {
      if (!essivCipher || !essivHash) throw new Error('essiv needs a cipher and a hash');
      const digest = nodeCrypto().createHash(essivHash).update(key).digest();
      const salt = digest.subarray(0, Math.min(digest.length, cipherKeyBytes(essivCipher)));
      try {
        this.essiv = new AesEcb(essivCipher, salt);
      } finally {
        wipeBuffers(digest);
      }
    }
  }

  /** IVs of sectors firstSector … firstSector + count − 1, 16 bytes each. */
  ivs(firstSector: number, count: number): Buffer {
    const out = Buffer.allocUnsafeSlow(count * AES_BLOCK_BYTES).fill(0);
    const wide = this.alg !== 'plain';
    if (os.endianness() === 'LE') {
      // word writes (a fresh, aligned buffer): 4 per IV instead of writeUInt32LE's byte stores
      const w = new Uint32Array(out.buffer, out.byteOffset, count * 4);
      for (let i = 0; i < count; i++) {
        const s = firstSector + i;
        w[i * 4] = s % TWO_32;
        if (wide) w[i * 4 + 1] = Math.floor(s / TWO_32);
      }
    } else {
      for (let i = 0; i < count; i++) {
        const s = firstSector + i;
        out.writeUInt32LE(s % TWO_32, i * AES_BLOCK_BYTES);
        if (wide) out.writeUInt32LE(Math.floor(s / TWO_32), i * AES_BLOCK_BYTES + 4);
      }
    }
    return this.essiv ? this.essiv.encrypt(out) : out;
  }

  dispose(): void {
    this.essiv?.dispose();
    this.essiv = undefined;
  }
}
