/**
 * Encryption structure (no key handling): the legacy AES method and the LUKS header that the full
 * disk encryption header extension points at, decoded to the fields `qemu-img info` shows.
 */
import {
  LUKS_FIELD as F, LUKS_HEADER_BYTES, LUKS_KEY_SLOT_ENABLED, LUKS_MAGIC, LUKS_NAME_BYTES, LUKS_NUM_KEY_SLOTS, LUKS_SECTOR_BYTES, LUKS_SLOT_FIELD as S,
  LUKS_UUID_BYTES, slotDescriptorOffset,
} from '../crypto/luksLayout';
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
