/**
 * The LUKS1 header codec: the 592 bytes at the start of the LUKS area decoded into fields,
 * validated the way QEMU 7.2 validates them when it opens an image (qcrypto_block_luks_check_header,
 * then _parse_header, in that order so the first error is the one QEMU reports), and encoded back.
 * Nothing here needs a key; `qemu-img info` judges the same things.
 */
import {
  CipherAlgorithm, CipherMode, HashAlgorithm, IvGenAlgorithm,
  essivCipher, isCipherMode, isHashAlgorithm, isIvGenAlgorithm, lookupLuksCipher,
} from './algorithms';
import { LuksArea, LuksLocation, luksError, readLuksArea } from './luksArea';
import * as L from './luksLayout';

export interface LuksKeySlot {
  index: number;
  active: boolean;
  /** PBKDF2 iterations over the passphrase (0 in an inactive slot QEMU erased). */
  iterations: number;
  /** PBKDF2 salt (not secret). */
  salt: Buffer;
  /** First sector of this slot's key material, from the start of the LUKS header. */
  keyMaterialSector: number;
  stripes: number;
}

/** The algorithms a header's strings name. */
export interface LuksCipherSpec {
  cipherAlg: CipherAlgorithm;
  cipherMode: CipherMode;
  ivgenAlg: IvGenAlgorithm;
  /** The hash named after ':' in the mode string (kept even for plain/plain64, which ignore it). */
  ivgenHashAlg?: HashAlgorithm;
  /** PBKDF2 and anti-forensic hash. */
  hashAlg: HashAlgorithm;
}

export interface LuksHeader extends LuksCipherSpec {
  cipherName: string;
  /** e.g. "xts-plain64", "cbc-essiv:sha256". */
  cipherModeSpec: string;
  hashSpec: string;
  /** Start of the payload in 512-byte sectors (inside qcow2: the size of the LUKS area). */
  payloadOffsetSector: number;
  /** Master key length (both XTS keys together). */
  keyBytes: number;
  masterKeyDigest: Buffer;
  masterKeySalt: Buffer;
  masterKeyIterations: number;
  uuid: string;
  slots: LuksKeySlot[];
  /** The cipher ESSIV uses (same as cipherAlg for plain/plain64). */
  ivgenCipherAlg: CipherAlgorithm;
}

/** A NUL-terminated string field; undefined when there is no NUL (QEMU refuses that). */
function cString(b: Buffer, start: number, len: number): string | undefined {
  const s = b.subarray(start, start + len);
  const nul = s.indexOf(0);
  return nul < 0 ? undefined : s.subarray(0, nul).toString('latin1');
}

/** A header string as it may appear in a message: printable ASCII only, everything else escaped. */
export function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, ch => `\\x${ch.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

/** A well-formed algorithm name that QEMU 7.2 does not know is "unsupported"; garbage is damage. */
function unknownNameCode(s: string): 'unsupported' | 'corrupt' {
  return /^[a-z0-9][a-z0-9_:.-]*$/i.test(s) ? 'unsupported' : 'corrupt';
}

/** Splits "<mode>-<ivgen>[:<hash>]" as QEMU does (first '-', then first ':'). */
export function splitCipherModeSpec(spec: string): { mode: string; ivgen: string; ivgenHash?: string } | undefined {
  const dash = spec.indexOf('-');
  if (dash < 0) return undefined;
  const mode = spec.slice(0, dash);
  const rest = spec.slice(dash + 1);
  const colon = rest.indexOf(':');
  return colon < 0 ? { mode, ivgen: rest } : { mode, ivgen: rest.slice(0, colon), ivgenHash: rest.slice(colon + 1) };
}

/** Decodes and validates a LUKS header; `at` names the file and the header's host offset in errors. */
export function decodeLuksHeader(b: Buffer, at: LuksLocation): LuksHeader {
  if (b.length < L.LUKS_HEADER_BYTES) {
    throw luksError(at, { field: 'magic' }, `the LUKS header needs ${L.LUKS_HEADER_BYTES} bytes, the area has ${b.length}`);
  }
  if (!b.subarray(0, L.LUKS_MAGIC.length).equals(L.LUKS_MAGIC)) {
    throw luksError(at, { field: 'magic' }, 'not a LUKS header (no "LUKS\\xba\\xbe" magic)');
  }
  const version = b.readUInt16BE(L.LUKS_FIELD.version);
  if (version !== L.LUKS_VERSION) {
    throw luksError(at, { field: 'version' }, `LUKS version ${version} is not supported (only LUKS1)`, version === 2 ? 'unsupported' : 'corrupt');
  }
  const cipherName = cString(b, L.LUKS_FIELD.cipher_name, L.LUKS_NAME_BYTES);
  if (cipherName === undefined) throw luksError(at, { field: 'cipher_name' }, 'the cipher name is not NUL-terminated');
  const cipherModeSpec = cString(b, L.LUKS_FIELD.cipher_mode, L.LUKS_NAME_BYTES);
  if (cipherModeSpec === undefined) throw luksError(at, { field: 'cipher_mode' }, 'the cipher mode is not NUL-terminated');
  const hashSpec = cString(b, L.LUKS_FIELD.hash_spec, L.LUKS_NAME_BYTES);
  if (hashSpec === undefined) throw luksError(at, { field: 'hash_spec' }, 'the hash spec is not NUL-terminated');

  const payloadOffsetSector = b.readUInt32BE(L.LUKS_FIELD.payload_offset);
  if (payloadOffsetSector < L.LUKS_HEADER_SECTORS) {
    throw luksError(at, { field: 'payload_offset' }, `the payload (sector ${payloadOffsetSector}) overlaps the ${L.LUKS_KEY_SLOT_OFFSET_BYTES}-byte header`);
  }
  const keyBytes = b.readUInt32BE(L.LUKS_FIELD.key_bytes);
  const masterKeyIterations = b.readUInt32BE(L.LUKS_FIELD.mk_digest_iter);
  if (masterKeyIterations === 0) throw luksError(at, { field: 'mk_digest_iter' }, 'the master key digest iteration count is zero');

  const decoded = decodeKeySlots(b);
  checkKeySlots(decoded, keyBytes, payloadOffsetSector, at);
  const slots = decoded.map(d => d.slot);

  const spec = parseSpec(cipherName, cipherModeSpec, hashSpec, keyBytes, at);
  return {
    ...spec,
    cipherName,
    cipherModeSpec,
    hashSpec,
    payloadOffsetSector,
    keyBytes,
    masterKeyDigest: Buffer.from(b.subarray(L.LUKS_FIELD.mk_digest, L.LUKS_FIELD.mk_digest + L.LUKS_DIGEST_BYTES)),
    masterKeySalt: Buffer.from(b.subarray(L.LUKS_FIELD.mk_digest_salt, L.LUKS_FIELD.mk_digest_salt + L.LUKS_SALT_BYTES)),
    masterKeyIterations,
    uuid: printable(cString(b, L.LUKS_FIELD.uuid, L.LUKS_UUID_BYTES) ?? b.subarray(L.LUKS_FIELD.uuid, L.LUKS_FIELD.uuid + L.LUKS_UUID_BYTES).toString('latin1')),
    slots,
  };
}

/** A key slot descriptor and its raw state word (neither magic value means damage). */
interface DecodedSlot {
  slot: LuksKeySlot;
  state: number;
}

function decodeKeySlots(b: Buffer): DecodedSlot[] {
  const out: DecodedSlot[] = [];
  for (let i = 0; i < L.LUKS_NUM_KEY_SLOTS; i++) {
    const p = L.slotDescriptorOffset(i);
    const state = b.readUInt32BE(p + L.LUKS_SLOT_FIELD.active);
    out.push({
      state,
      slot: {
        index: i,
        active: state === L.LUKS_KEY_SLOT_ENABLED,
        iterations: b.readUInt32BE(p + L.LUKS_SLOT_FIELD.iterations),
        salt: Buffer.from(b.subarray(p + L.LUKS_SLOT_FIELD.salt, p + L.LUKS_SLOT_FIELD.salt + L.LUKS_SALT_BYTES)),
        keyMaterialSector: b.readUInt32BE(p + L.LUKS_SLOT_FIELD.key_material_offset),
        stripes: b.readUInt32BE(p + L.LUKS_SLOT_FIELD.stripes),
      },
    });
  }
  return out;
}

/** QEMU's key slot checks, for every slot (active or not), in its order. */
function checkKeySlots(decoded: DecodedSlot[], keyBytes: number, payloadOffsetSector: number, at: LuksLocation): void {
  const len = (s: LuksKeySlot) => L.keyMaterialSectors(keyBytes, s.stripes);
  for (const { slot: s, state } of decoded) {
    if (s.stripes !== L.LUKS_STRIPES) {
      throw luksError(at, { slot: s.index, field: 'stripes' }, `${s.stripes} stripes, LUKS1 requires ${L.LUKS_STRIPES} (the key slot is damaged)`);
    }
    if (state !== L.LUKS_KEY_SLOT_ENABLED && state !== L.LUKS_KEY_SLOT_DISABLED) {
      throw luksError(at, { slot: s.index, field: 'active' }, `state 0x${state.toString(16).padStart(8, '0')} is neither active (0x00ac71f3) nor inactive (0x0000dead)`);
    }
    if (s.active && s.iterations === 0) {
      throw luksError(at, { slot: s.index, field: 'iterations' }, 'an active key slot with an iteration count of zero');
    }
    if (s.keyMaterialSector < L.LUKS_HEADER_SECTORS) {
      throw luksError(at, { slot: s.index, field: 'key_material_offset' }, `key material at sector ${s.keyMaterialSector} overlaps the LUKS header`);
    }
    if (s.keyMaterialSector + len(s) > payloadOffsetSector) {
      throw luksError(at, { slot: s.index, field: 'key_material_offset' },
        `key material (sectors ${s.keyMaterialSector}–${s.keyMaterialSector + len(s) - 1}) overlaps the payload at sector ${payloadOffsetSector}`);
    }
    for (const { slot: o } of decoded) {
      if (o.index <= s.index) continue;
      if (s.keyMaterialSector < o.keyMaterialSector + len(o) && o.keyMaterialSector < s.keyMaterialSector + len(s)) {
        throw luksError(at, { slot: o.index, field: 'key_material_offset' }, `key material overlaps key slot ${s.index}'s`);
      }
    }
  }
}

function parseSpec(cipherName: string, modeSpec: string, hashSpec: string, keyBytes: number, at: LuksLocation): LuksCipherSpec & { ivgenCipherAlg: CipherAlgorithm } {
  const parts = splitCipherModeSpec(modeSpec);
  if (!parts) throw luksError(at, { field: 'cipher_mode' }, `"${printable(modeSpec)}" is not "<mode>-<ivgen>[:<hash>]"`);
  let ivgenHashAlg: HashAlgorithm | undefined;
  if (parts.ivgenHash !== undefined) {
    if (!isHashAlgorithm(parts.ivgenHash)) {
      throw luksError(at, { field: 'cipher_mode' }, `IV generator hash "${printable(parts.ivgenHash)}" is not one QEMU 7.2 knows`, unknownNameCode(parts.ivgenHash));
    }
    ivgenHashAlg = parts.ivgenHash;
  }
  if (!isCipherMode(parts.mode)) {
    throw luksError(at, { field: 'cipher_mode' }, `cipher mode "${printable(parts.mode)}" is not one QEMU 7.2 knows`, unknownNameCode(parts.mode));
  }
  const cipherMode = parts.mode;
  const cipherAlg = lookupLuksCipher(cipherName, cipherMode, keyBytes);
  if (!cipherAlg) {
    const known = lookupLuksCipher(cipherName, cipherMode, cipherMode === 'xts' ? 64 : 32) || lookupLuksCipher(cipherName, cipherMode, cipherMode === 'xts' ? 32 : 16);
    throw luksError(at, known ? { field: 'key_bytes' } : { field: 'cipher_name' },
      known ? `${keyBytes}-byte keys are not a size of "${printable(cipherName)}" in ${cipherMode} mode`
        : `cipher "${printable(cipherName)}" is not one QEMU 7.2 knows`,
      known ? 'corrupt' : unknownNameCode(cipherName));
  }
  if (!isHashAlgorithm(hashSpec)) {
    throw luksError(at, { field: 'hash_spec' }, `hash "${printable(hashSpec)}" is not one QEMU 7.2 knows`, unknownNameCode(hashSpec));
  }
  if (!isIvGenAlgorithm(parts.ivgen)) {
    throw luksError(at, { field: 'cipher_mode' }, `IV generator "${printable(parts.ivgen)}" is not one QEMU 7.2 knows`, unknownNameCode(parts.ivgen));
  }
  let ivgenCipherAlg = cipherAlg;
  if (parts.ivgen === 'essiv') {
    if (!ivgenHashAlg) throw luksError(at, { field: 'cipher_mode' }, 'the essiv IV generator needs a hash ("essiv:sha256")');
    const e = essivCipher(cipherAlg, ivgenHashAlg);
    if (!e) throw luksError(at, { field: 'cipher_mode' }, `essiv:${ivgenHashAlg} needs a ${cipherName} key of ${ivgenHashAlg}'s digest size, which does not exist`, 'unsupported');
    ivgenCipherAlg = e;
  }
  return { cipherAlg, cipherMode, ivgenAlg: parts.ivgen, ivgenHashAlg, hashAlg: hashSpec, ivgenCipherAlg };
}

/** Encodes a header into its 592 bytes (the inverse of decodeLuksHeader). */
export function encodeLuksHeader(h: LuksHeader): Buffer {
  const b = Buffer.alloc(L.LUKS_HEADER_BYTES);
  L.LUKS_MAGIC.copy(b, L.LUKS_FIELD.magic);
  b.writeUInt16BE(L.LUKS_VERSION, L.LUKS_FIELD.version);
  writeCString(b, L.LUKS_FIELD.cipher_name, L.LUKS_NAME_BYTES, h.cipherName, 'cipher name');
  writeCString(b, L.LUKS_FIELD.cipher_mode, L.LUKS_NAME_BYTES, h.cipherModeSpec, 'cipher mode');
  writeCString(b, L.LUKS_FIELD.hash_spec, L.LUKS_NAME_BYTES, h.hashSpec, 'hash spec');
  b.writeUInt32BE(h.payloadOffsetSector, L.LUKS_FIELD.payload_offset);
  b.writeUInt32BE(h.keyBytes, L.LUKS_FIELD.key_bytes);
  copyExact(h.masterKeyDigest, b, L.LUKS_FIELD.mk_digest, L.LUKS_DIGEST_BYTES);
  copyExact(h.masterKeySalt, b, L.LUKS_FIELD.mk_digest_salt, L.LUKS_SALT_BYTES);
  b.writeUInt32BE(h.masterKeyIterations, L.LUKS_FIELD.mk_digest_iter);
  writeCString(b, L.LUKS_FIELD.uuid, L.LUKS_UUID_BYTES, h.uuid, 'uuid');
  for (const s of h.slots) {
    const p = L.slotDescriptorOffset(s.index);
    b.writeUInt32BE(s.active ? L.LUKS_KEY_SLOT_ENABLED : L.LUKS_KEY_SLOT_DISABLED, p + L.LUKS_SLOT_FIELD.active);
    b.writeUInt32BE(s.iterations, p + L.LUKS_SLOT_FIELD.iterations);
    copyExact(s.salt, b, p + L.LUKS_SLOT_FIELD.salt, L.LUKS_SALT_BYTES);
    b.writeUInt32BE(s.keyMaterialSector, p + L.LUKS_SLOT_FIELD.key_material_offset);
    b.writeUInt32BE(s.stripes, p + L.LUKS_SLOT_FIELD.stripes);
  }
  return b;
}

function writeCString(b: Buffer, start: number, len: number, s: string, what: string): void {
  const bytes = Buffer.from(s, 'latin1');
  if (bytes.length >= len) throw new Error(`LUKS ${what} "${printable(s)}" does not fit in ${len - 1} bytes`);
  bytes.copy(b, start);
}

function copyExact(src: Buffer, dst: Buffer, at: number, len: number): void {
  if (src.length !== len) throw new Error(`LUKS field of ${len} bytes given ${src.length}`);
  src.copy(dst, at);
}

/** Reads and decodes the header at the start of a LUKS area. */
export async function readLuksHeader(area: LuksArea): Promise<LuksHeader> {
  if (area.length < L.LUKS_HEADER_BYTES) {
    throw luksError(area, { field: 'magic' }, `the LUKS area is ${area.length} bytes, too small for the ${L.LUKS_HEADER_BYTES}-byte header`);
  }
  const b = await readLuksArea(area, 0, L.LUKS_HEADER_BYTES, { field: 'magic' });
  return decodeLuksHeader(b, area);
}

/** A deep copy, so that key slot edits never change a header another caller holds. */
export function cloneLuksHeader(h: LuksHeader): LuksHeader {
  return {
    ...h,
    masterKeyDigest: Buffer.from(h.masterKeyDigest),
    masterKeySalt: Buffer.from(h.masterKeySalt),
    slots: h.slots.map(s => ({ ...s, salt: Buffer.from(s.salt) })),
  };
}

/** Byte offset (from the LUKS header) and length of a slot's key material. */
export function keyMaterialRange(h: Pick<LuksHeader, 'keyBytes'>, slot: LuksKeySlot): { offset: number; length: number } {
  return { offset: slot.keyMaterialSector * L.LUKS_SECTOR_BYTES, length: h.keyBytes * slot.stripes };
}
