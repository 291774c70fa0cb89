/**
 * The AES block cipher from Node's crypto (OpenSSL), as ECB without padding: a whole buffer of
 * independent 16-byte blocks per call. The sector modes (sectorCipher.ts) are built on it because
 * Node's cipher objects cannot change their IV: a new createDecipheriv per 512-byte sector costs
 * ~25 µs in OpenSSL 3 (provider fetch and key schedule), which caps XTS at ~40 MiB/s, and OpenSSL
 * has no AES-192-XTS at all. One ECB context per key, created once and reused for every call,
 * keeps the key schedule and runs at OpenSSL's AES-NI speed.
 */
import type * as Crypto from 'node:crypto';
import { nodeCrypto } from '../builtins';
import { AesAlgorithm, cipherKeyBytes, nodeEcbName } from './algorithms';

export const AES_BLOCK_BYTES = 16;

export class AesEcb {
  private enc: Crypto.Cipher | undefined;
  private dec: Crypto.Decipher | undefined;

  /** `key` is copied into OpenSSL's context; the caller may wipe it afterwards. */
  constructor(readonly alg: AesAlgorithm, key: Buffer) {
    if (key.length !== cipherKeyBytes(alg)) throw new Error(`${alg} needs a ${cipherKeyBytes(alg)}-byte key, got ${key.length}`);
    this.enc = nodeCrypto().createCipheriv(nodeEcbName(alg), key, null);
    this.enc.setAutoPadding(false);
    this.dec = nodeCrypto().createDecipheriv(nodeEcbName(alg), key, null);
    this.dec.setAutoPadding(false);
  }

  /** E(block) for every 16-byte block of `data` (a new buffer). */
  encrypt(data: Uint8Array): Buffer {
    if (!this.enc) throw new Error('the AES context was disposed');
    return this.enc.update(data);
  }

  /** D(block) for every 16-byte block of `data` (a new buffer). */
  decrypt(data: Uint8Array): Buffer {
    if (!this.dec) throw new Error('the AES context was disposed');
    return this.dec.update(data);
  }

  /** Ends both contexts: OpenSSL frees them and cleanses the key schedules. */
  dispose(): void {
    this.enc?.final();
    this.dec?.final();
    this.enc = this.dec = undefined;
  }
}
