/**
 * qcow2's original encryption (crypt_method 1, `encrypt.format=aes`; QEMU's crypto/block-qcow.c):
 * AES-128-CBC per 512-byte sector with a plain64 IV, keyed by the first 16 bytes of the passphrase
 * (zero-padded; the rest of a longer passphrase is ignored). There is no header, no salt and no key
 * check, so a wrong passphrase cannot be detected — it just decrypts to noise. QEMU keeps it to
 * let data out of old images; so do we: read and convert only, never written.
 *
 * The IV is the GUEST sector number: QEMU sets crypt_physical_offset only for LUKS ("the
 * alternative is insecure"), so legacy images count guest offsets (test/crypto proves it by
 * moving a cluster).
 */
import { Qcow2Error } from '../errors';
import { DataCipher } from './dataCipher';
import { Secret, isQemuPassphrase, wipeBuffers } from './secret';
import { SectorCipher } from './sectorCipher';

export const LEGACY_AES_KEY_BYTES = 16;

/** The data cipher of a legacy-AES image: decryptRun(buf, guestOffset). */
export function legacyAesDataCipher(file: string, passphrase: Secret): DataCipher {
  const p = passphrase.bytes();
  if (!isQemuPassphrase(p)) {
    throw new Qcow2Error(file, 'passphrase', undefined, 'the passphrase is not valid UTF-8 text without NUL bytes, which QEMU requires', 'bad-passphrase');
  }
  const key = Buffer.alloc(LEGACY_AES_KEY_BYTES);
  p.copy(key, 0, 0, Math.min(p.length, LEGACY_AES_KEY_BYTES));
  try {
    const sc = new SectorCipher({ cipherAlg: 'aes-128', cipherMode: 'cbc', ivgenAlg: 'plain64', ivgenCipherAlg: 'aes-128' }, key);
    return new DataCipher(sc, 'guest', 0, key);
  } finally {
    wipeBuffers(key);
  }
}
