/**
 * LUKS1 on-disk constants (the cryptsetup "LUKS On-Disk Format Specification" 1.2, as QEMU's
 * crypto/block-luks.c writes it), the only place they are spelled out. All integers are
 * big-endian; offsets are from the start of the LUKS header.
 */

export const LUKS_MAGIC = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]); // "LUKS\xba\xbe"
export const LUKS_VERSION = 1;

/** The header proper: fixed fields followed by the eight key slot descriptors. */
export const LUKS_HEADER_BYTES = 592;
export const LUKS_NUM_KEY_SLOTS = 8;
export const LUKS_KEY_SLOT_BYTES = 48;

export const LUKS_SECTOR_BYTES = 512;
/** Key material starts at or after 4096 bytes (QEMU's QCRYPTO_BLOCK_LUKS_KEY_SLOT_OFFSET). */
export const LUKS_KEY_SLOT_OFFSET_BYTES = 4096;
/** 8: key material areas are rounded up to this many sectors, as cryptsetup does. */
export const LUKS_HEADER_SECTORS = LUKS_KEY_SLOT_OFFSET_BYTES / LUKS_SECTOR_BYTES;

/** LUKS1 fixes the anti-forensic stripe count; QEMU 7.2 refuses any other value. */
export const LUKS_STRIPES = 4000;
export const LUKS_DIGEST_BYTES = 20;
export const LUKS_SALT_BYTES = 32;
export const LUKS_UUID_BYTES = 40;
export const LUKS_NAME_BYTES = 32;

export const LUKS_KEY_SLOT_ENABLED = 0x00ac71f3;
export const LUKS_KEY_SLOT_DISABLED = 0x0000dead;

/** QEMU's floors for the iteration counts it writes. */
export const LUKS_MIN_SLOT_KEY_ITERATIONS = 1000;
export const LUKS_MIN_MASTER_KEY_ITERATIONS = 1000;
/** `iter-time` when none is given: two seconds of PBKDF2 per key slot. */
export const LUKS_DEFAULT_ITER_TIME_MS = 2000;

/** Field offsets in the header. */
export const LUKS_FIELD = {
  magic: 0,
  version: 6,
  cipher_name: 8,
  cipher_mode: 40,
  hash_spec: 72,
  payload_offset: 104,
  key_bytes: 108,
  mk_digest: 112,
  mk_digest_salt: 132,
  mk_digest_iter: 164,
  uuid: 168,
  key_slots: 208,
} as const;

/** Field offsets inside one key slot descriptor. */
export const LUKS_SLOT_FIELD = {
  active: 0,
  iterations: 4,
  salt: 8,
  key_material_offset: 40,
  stripes: 44,
} as const;

export type LuksHeaderField = keyof typeof LUKS_FIELD;
export type LuksSlotField = keyof typeof LUKS_SLOT_FIELD;

/** Byte offset of key slot `i`'s descriptor in the header. */
export function slotDescriptorOffset(i: number): number {
  return LUKS_FIELD.key_slots + i * LUKS_KEY_SLOT_BYTES;
}

/**
 * Sectors one key slot's material occupies: key bytes × stripes, rounded up to sectors and then to
 * the 8-sector header size (cryptsetup's rule, which QEMU follows when it lays slots out and when
 * it checks that they do not overlap).
 */
export function keyMaterialSectors(keyBytes: number, stripes: number): number {
  const sectors = Math.ceil((keyBytes * stripes) / LUKS_SECTOR_BYTES);
  return Math.ceil(sectors / LUKS_HEADER_SECTORS) * LUKS_HEADER_SECTORS;
}
