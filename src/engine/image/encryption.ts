/**
 * Encryption of a qcow2 image: its structure without a key (the legacy AES method and the LUKS
 * header that the full disk encryption header extension points at, decoded to the fields
 * `qemu-img info` shows), and unlocking its guest data with a passphrase (unlockImage), which
 * Qcow2Image uses to decrypt reads.
 */
import {
  LUKS_FIELD as F, LUKS_HEADER_BYTES, LUKS_KEY_SLOT_ENABLED, LUKS_MAGIC, LUKS_NAME_BYTES, LUKS_NUM_KEY_SLOTS, LUKS_SECTOR_BYTES, LUKS_SLOT_FIELD as S,
  LUKS_UUID_BYTES, slotDescriptorOffset,
} from '../crypto/luksLayout';
import { DataCipher, luksDataCipher } from '../crypto/dataCipher';
import { legacyAesDataCipher } from '../crypto/legacyAes';
import { LuksArea } from '../crypto/luksArea';
import { LuksHeader, readLuksHeader } from '../crypto/luksHeader';
import { UnlockOptions, unlockLuks } from '../crypto/luksUnlock';
import { Secret } from '../crypto/secret';
import { Qcow2Error } from '../errors';
import { ImageFile } from '../io/reader';
import { Qcow2Header } from '../qcow2/header';
import * as L from '../qcow2/layout';

export interface LuksSlot {
  active: boolean;
  iters?: number;
  'key-offset': number;
  stripes?: number;
}

export interface EncryptInfo {
  format: 'aes' | 'luks';
  'cipher-alg'?: string;
  'cipher-mode'?: string;
  'ivgen-alg'?: string;
  'ivgen-hash-alg'?: string;
  'hash-alg'?: string;
  uuid?: string;
  'payload-offset'?: number;
  'master-key-iters'?: number;
  slots?: LuksSlot[];
}

function cstr(b: Buffer, start: number, len: number): string {
  const s = b.subarray(start, start + len);
  const nul = s.indexOf(0);
  return s.subarray(0, nul < 0 ? s.length : nul).toString('latin1');
}

export async function readEncryptInfo(file: ImageFile, h: Qcow2Header): Promise<EncryptInfo | undefined> {
  if (h.cryptMethod === L.CRYPT_AES) return { format: 'aes' };
  if (h.cryptMethod !== L.CRYPT_LUKS || !h.crypto) return undefined;
  if (h.crypto.length < LUKS_HEADER_BYTES) return { format: 'luks' };
  const b = await file.read(h.crypto.offset, LUKS_HEADER_BYTES, 'LUKS header');
  if (!b.subarray(F.magic, F.magic + LUKS_MAGIC.length).equals(LUKS_MAGIC)) return { format: 'luks' };
  const cipherName = cstr(b, F.cipher_name, LUKS_NAME_BYTES);
  const cipherModeFull = cstr(b, F.cipher_mode, LUKS_NAME_BYTES); // e.g. "xts-plain64" or "cbc-essiv:sha256"
  const hashSpec = cstr(b, F.hash_spec, LUKS_NAME_BYTES);
  const payloadSectors = b.readUInt32BE(F.payload_offset);
  const keyBytes = b.readUInt32BE(F.key_bytes);
  const mkIters = b.readUInt32BE(F.mk_digest_iter);
  const uuid = cstr(b, F.uuid, LUKS_UUID_BYTES);
  const [mode, ivgenFull] = cipherModeFull.split('-', 2);
  const [ivgen, ivgenHash] = (ivgenFull ?? '').split(':');
  const keyBits = (mode === 'xts' ? keyBytes / 2 : keyBytes) * 8;
  const slots: LuksSlot[] = [];
  for (let i = 0; i < LUKS_NUM_KEY_SLOTS; i++) {
    const p = slotDescriptorOffset(i);
    const active = b.readUInt32BE(p + S.active) === LUKS_KEY_SLOT_ENABLED;
    const keyOffset = b.readUInt32BE(p + S.key_material_offset) * LUKS_SECTOR_BYTES;
    slots.push(active ? { active, iters: b.readUInt32BE(p + S.iterations), 'key-offset': keyOffset, stripes: b.readUInt32BE(p + S.stripes) } : { active, 'key-offset': keyOffset });
  }
  const info: EncryptInfo = {
    format: 'luks',
    'cipher-alg': `${cipherName}-${keyBits}`,
    'cipher-mode': mode,
    'ivgen-alg': ivgen,
    'hash-alg': hashSpec,
    uuid,
    'payload-offset': payloadSectors * LUKS_SECTOR_BYTES,
    'master-key-iters': mkIters,
    slots,
  };
  if (ivgenHash) info['ivgen-hash-alg'] = ivgenHash;
  return info;
}

/**
 * The passphrase for a layer of a chain, asked by the layer's path and its depth (0 = the image
 * opened, 1 = its backing file, …), or undefined when there is none — then the layer opens, but
 * reading its guest data is an 'encrypted' error. (qemu-img's `encrypt.key-secret`,
 * `backing.encrypt.key-secret`, ….)
 */
export type KeyLookup = (layer: { path: string; depth: number }) => Secret | undefined;

/** The LUKS area the full disk encryption header extension names. */
export function luksAreaOf(file: ImageFile, path: string, h: Qcow2Header): LuksArea {
  if (!h.crypto) throw new Qcow2Error(path, 'header extension full disk encryption', undefined, 'the image is LUKS-encrypted but has no full disk encryption header extension');
  return { file: path, reader: file, offset: h.crypto.offset, length: h.crypto.length };
}

export interface UnlockedImage {
  cipher: DataCipher;
  /** LUKS only: the master key (the caller owns it and wipes it) and the header it opens. */
  masterKey?: Secret;
  luks?: LuksHeader;
  slot?: number;
}

/**
 * The data cipher of a LUKS image whose master key is already known (another open image of the
 * same file unlocked it): no PBKDF2. The caller owns `masterKey` (wiped if this fails).
 */
export async function unlockedWithMasterKey(file: ImageFile, path: string, h: Qcow2Header, masterKey: Secret): Promise<UnlockedImage> {
  try {
    if (h.cryptMethod !== L.CRYPT_LUKS) throw new Qcow2Error(path, 'header.crypt_method', L.HEADER_FIELD.crypt_method.offset, 'the image is not LUKS-encrypted', 'unsupported');
    const area = luksAreaOf(file, path, h);
    const header = await readLuksHeader(area);
    return { cipher: luksDataCipher(area, header, masterKey, 'qcow2'), masterKey, luks: header };
  } catch (e) {
    masterKey.wipe();
    throw e;
  }
}

/**
 * Unlocks an encrypted image's guest data with a passphrase: LUKS tries every active key slot
 * (PBKDF2 runs on libuv's thread pool, off the JavaScript thread); legacy AES takes the first
 * 16 bytes and cannot tell a wrong passphrase. A wrong LUKS passphrase is one 'bad-passphrase'
 * Qcow2Error that names the file and never the passphrase.
 */
export async function unlockImage(file: ImageFile, path: string, h: Qcow2Header, passphrase: Secret, opts: UnlockOptions = {}): Promise<UnlockedImage> {
  if (h.cryptMethod === L.CRYPT_AES) return { cipher: legacyAesDataCipher(path, passphrase) };
  if (h.cryptMethod !== L.CRYPT_LUKS) throw new Qcow2Error(path, 'header.crypt_method', L.HEADER_FIELD.crypt_method.offset, 'the image is not encrypted', 'unsupported');
  const area = luksAreaOf(file, path, h);
  const header = await readLuksHeader(area);
  const { masterKey, slot } = await unlockLuks(area, header, passphrase, opts);
  try {
    return { cipher: luksDataCipher(area, header, masterKey, 'qcow2'), masterKey, luks: header, slot };
  } catch (e) {
    masterKey.wipe();
    throw e;
  }
}
