/**
 * Encryption structure (no key handling): the legacy AES method and the LUKS header that the full
 * disk encryption header extension points at, decoded to the fields `qemu-img info` shows.
 */
import { ImageFile } from '../io/reader';
import { Qcow2Header } from './header';
import * as L from './layout';

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

const LUKS_MAGIC = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]);

function cstr(b: Buffer, start: number, len: number): string {
  const s = b.subarray(start, start + len);
  const nul = s.indexOf(0);
  return s.subarray(0, nul < 0 ? s.length : nul).toString('latin1');
}

export async function readEncryptInfo(file: ImageFile, h: Qcow2Header): Promise<EncryptInfo | undefined> {
  if (h.cryptMethod === L.CRYPT_AES) return { format: 'aes' };
  if (h.cryptMethod !== L.CRYPT_LUKS || !h.crypto) return undefined;
  if (h.crypto.length < 592) return { format: 'luks' };
  const b = await file.read(h.crypto.offset, 592, 'LUKS header');
  if (!b.subarray(0, 6).equals(LUKS_MAGIC)) return { format: 'luks' };
  const cipherName = cstr(b, 8, 32);
  const cipherModeFull = cstr(b, 40, 32); // e.g. "xts-plain64" or "cbc-essiv:sha256"
  const hashSpec = cstr(b, 72, 32);
  const payloadSectors = b.readUInt32BE(104);
  const keyBytes = b.readUInt32BE(108);
  const mkIters = b.readUInt32BE(164);
  const uuid = cstr(b, 168, 40);
  const [mode, ivgenFull] = cipherModeFull.split('-', 2);
  const [ivgen, ivgenHash] = (ivgenFull ?? '').split(':');
  const keyBits = (mode === 'xts' ? keyBytes / 2 : keyBytes) * 8;
  const slots: LuksSlot[] = [];
  for (let i = 0; i < 8; i++) {
    const p = 208 + i * 48;
    const active = b.readUInt32BE(p) === 0x00ac71f3;
    const keyOffset = b.readUInt32BE(p + 40) * 512;
    slots.push(active ? { active, iters: b.readUInt32BE(p + 4), 'key-offset': keyOffset, stripes: b.readUInt32BE(p + 44) } : { active, 'key-offset': keyOffset });
  }
  const info: EncryptInfo = {
    format: 'luks',
    'cipher-alg': `${cipherName}-${keyBits}`,
    'cipher-mode': mode,
    'ivgen-alg': ivgen,
    'hash-alg': hashSpec,
    uuid,
    'payload-offset': payloadSectors * 512,
    'master-key-iters': mkIters,
    slots,
  };
  if (ivgenHash) info['ivgen-hash-alg'] = ivgenHash;
  return info;
}
