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
import { SectorCipher } from './sectorCipher';

export type IvOffset = 'host' | 'guest';

export class DataCipher {
  readonly sectorBytes = LUKS_SECTOR_BYTES;

  constructor(
    private readonly sectors: SectorCipher,
    /** Which offset decryptRun/encryptRun take: the data's offset in the file or in the guest disk. */
    readonly ivOffset: IvOffset,
    /** Subtracted from the offset before it becomes a sector number (a raw LUKS file's payload offset). */
    readonly sectorBase = 0,
  ) {}

  /** Decrypts `buf` (whole sectors) in place; `offset` is where its first byte lives (see ivOffset). */
  decryptRun(buf: Buffer, offset: number): void {
    this.sectors.decrypt(buf, this.firstSector(buf, offset));
  }

  /** Encrypts `buf` (whole sectors) in place, for writing at `offset` (see ivOffset). */
  encryptRun(buf: Buffer, offset: number): void {
    this.sectors.encrypt(buf, this.firstSector(buf, offset));
  }

  /** Forgets the key (OpenSSL cleanses its contexts). */
  dispose(): void {
    this.sectors.dispose();
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
  const sc = new SectorCipher(spec, masterKey.bytes());
  return container === 'qcow2'
    ? new DataCipher(sc, 'host')
    : new DataCipher(sc, 'host', header.payloadOffsetSector * LUKS_SECTOR_BYTES);
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
