/**
 * The unlocked cipher of an image's guest data: decrypts and encrypts runs of whole 512-byte
 * sectors in place, numbering sectors the way the image's format does.
 *
 *   qcow2 + LUKS        IVs follow the HOST offset: sector = hostOffset / 512. A cluster that moves
 *                       in the file (compaction, convert) must be decrypted and re-encrypted.
 *   raw LUKS file       (QEMU's `luks` driver) sectors count from the payload:
 *                       sector = (fileOffset − payload offset) / 512.
 *   qcow2 legacy AES    IVs follow the GUEST offset: sector = guestOffset / 512 (QEMU sets
 *                       crypt_physical_offset only for LUKS; see legacyAes.ts).
 *
 * `ivOffset` tells the caller which offset to pass.
 */
import { AesAlgorithm, isAes } from './algorithms';
import { LuksLocation, luksError } from './luksArea';
import { LuksHeader } from './luksHeader';
import { LUKS_SECTOR_BYTES } from './luksLayout';
import { Secret } from './secret';
import { CipherPool, defaultCipherWorkers, isShared } from './cipherPool';
import { SectorCipher } from './sectorCipher';

export type IvOffset = 'host' | 'guest';

export class DataCipher {
  readonly sectorBytes = LUKS_SECTOR_BYTES;
  /** Runs from this size up, in shared memory, go to the worker pool (the Async methods); smaller ones are done here. */
  parallelMin = 256 * 1024;
  /** How many workers the pool starts (0: none, every run is done on the caller's thread). */
  workers = defaultCipherWorkers();
  /** The key for the pool's workers, until it starts (then wiped). */
  #poolKey: Buffer | undefined;
  /** undefined: not started yet; null: none (not wanted, not built, or failed). */
  #pool: CipherPool | null | undefined;

  constructor(
    private readonly sectors: SectorCipher,
    /** Which offset decryptRun/encryptRun take: the data's offset in the file or in the guest disk. */
    readonly ivOffset: IvOffset,
    /** Subtracted from the offset before it becomes a sector number (a raw LUKS file's payload offset). */
    readonly sectorBase = 0,
    /** The whole key again (copied), for worker threads to do large runs; without it every run is done here. */
    key?: Uint8Array,
  ) {
    if (key) {
      this.#poolKey = Buffer.allocUnsafeSlow(key.length);
      this.#poolKey.set(key);
    } else {
      this.#pool = null;
    }
  }

  /** Decrypts `buf` (whole sectors) in place; `offset` is where its first byte lives (see ivOffset). */
  decryptRun(buf: Buffer, offset: number): void {
    this.sectors.decrypt(buf, this.firstSector(buf, offset));
  }

  /** Encrypts `buf` (whole sectors) in place, for writing at `offset` (see ivOffset). */
  encryptRun(buf: Buffer, offset: number): void {
    this.sectors.encrypt(buf, this.firstSector(buf, offset));
  }

  /**
   * decryptRun, on the worker pool when `buf` is shared memory of at least parallelMin bytes (the
   * copy loops' windows): the caller's thread stays free for I/O while the workers decrypt.
   */
  decryptRunAsync(buf: Buffer, offset: number): Promise<void> {
    return this.runAsync(buf, offset, false);
  }

  /** encryptRun, on the worker pool as decryptRunAsync. */
  encryptRunAsync(buf: Buffer, offset: number): Promise<void> {
    return this.runAsync(buf, offset, true);
  }

  /** Forgets the key (OpenSSL cleanses its contexts; the workers end). */
  dispose(): void {
    this.sectors.dispose();
    this.#poolKey?.fill(0);
    this.#poolKey = undefined;
    this.#pool?.dispose();
    this.#pool = null;
  }

  private async runAsync(buf: Buffer, offset: number, encrypt: boolean): Promise<void> {
    const first = this.firstSector(buf, offset);
    const pool = this.poolFor(buf);
    if (pool) await pool.run(buf, first, encrypt);
    else if (encrypt) this.sectors.encrypt(buf, first);
    else this.sectors.decrypt(buf, first);
  }

  private poolFor(buf: Buffer): CipherPool | null {
    if (buf.length < this.parallelMin || this.workers <= 0 || !isShared(buf)) return null;
    if (this.#pool === undefined) {
      try {
        this.#pool = new CipherPool(this.sectors.spec, this.#poolKey!, this.workers);
      } catch {
        this.#pool = null; // the worker is not built here: every run on this thread
      } finally {
        this.#poolKey!.fill(0);
        this.#poolKey = undefined;
      }
    }
    return this.#pool?.usable ? this.#pool : null;
  }

  private firstSector(buf: Buffer, offset: number): number {
    const rel = offset - this.sectorBase;
    if (!Number.isSafeInteger(rel) || rel < 0 || rel % this.sectorBytes !== 0 || buf.length % this.sectorBytes !== 0) {
      throw new RangeError(`encrypted data is handled in whole ${this.sectorBytes}-byte sectors: ${buf.length} bytes at ${offset}${this.sectorBase ? ` (payload at ${this.sectorBase})` : ''}`);
    }
    return rel / this.sectorBytes;
  }
}

/** Where the LUKS header lives decides how sectors are numbered. */
export type LuksContainer = 'qcow2' | 'raw';

/**
 * The data cipher of a LUKS image once its master key is known (luksUnlock.ts). The caller keeps
 * and wipes `masterKey`; the cipher holds its own copy inside OpenSSL until disposed.
 */
export function luksDataCipher(at: LuksLocation, header: LuksHeader, masterKey: Secret, container: LuksContainer): DataCipher {
  const spec = aesSpec(at, header);
  const key = masterKey.bytes();
  const sc = new SectorCipher(spec, key);
  return new DataCipher(sc, 'host', container === 'qcow2' ? 0 : header.payloadOffsetSector * LUKS_SECTOR_BYTES, key);
}

/** The header's algorithms as Node can run them, or a clear "unsupported" for the others. */
export function aesSpec(at: LuksLocation, h: Pick<LuksHeader, 'cipherAlg' | 'cipherMode' | 'ivgenAlg' | 'ivgenHashAlg' | 'ivgenCipherAlg'>): {
  cipherAlg: AesAlgorithm; cipherMode: LuksHeader['cipherMode']; ivgenAlg: LuksHeader['ivgenAlg']; ivgenHashAlg?: LuksHeader['ivgenHashAlg']; ivgenCipherAlg: AesAlgorithm;
} {
  if (!isAes(h.cipherAlg) || !isAes(h.ivgenCipherAlg)) {
    throw luksError(at, { field: 'cipher_name' },
      `${h.cipherAlg} is valid LUKS, but only AES is supported (Node's crypto has no ${h.cipherAlg.replace(/-\d+$/, '')})`, 'unsupported');
  }
  return { cipherAlg: h.cipherAlg, cipherMode: h.cipherMode, ivgenAlg: h.ivgenAlg, ivgenHashAlg: h.ivgenHashAlg, ivgenCipherAlg: h.ivgenCipherAlg };
}
