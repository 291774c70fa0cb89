/**
 * Key slot management, as `qemu-img amend -o encrypt.state=active|inactive,…` does it in QEMU 7.2
 * (qcrypto_block_luks_amend_add_keyslot / _erase_keyslots): the same options, the same refusals
 * in the same order with qemu-img's messages, the same result on disk.
 *
 * Pure functions over the header: they return the new header and the writes to make, in order,
 * as offsets into the LUKS area. The order is QEMU's and is what makes a crash harmless:
 *   adding    key material first, header second — until the header lands the slot is still
 *             inactive, so a crash leaves only unused bytes behind;
 *   erasing   header first, key material second — the slot is inactive before its material is
 *             overwritten (40 passes of new random bytes, as QEMU), so no crash leaves an active
 *             slot pointing at garbage.
 * The caller writes them in this order with an fsync between the two.
 */
import { Qcow2Error } from '../errors';
import { LuksArea, luksError } from './luksArea';
import { sealKeySlot } from './luksCreate';
import { LuksHeader, cloneLuksHeader, encodeLuksHeader, keyMaterialRange } from './luksHeader';
import { LUKS_NUM_KEY_SLOTS, LUKS_SALT_BYTES } from './luksLayout';
import { checkIterations, tryKeySlot, unlockLuks } from './luksUnlock';
import { Secret } from './secret';

export interface LuksAreaWrite {
  /** Offset from the start of the LUKS area. */
  offsetInArea: number;
  bytes: Buffer;
  /** What the bytes are ("header", "key_slot[1] key material"). */
  what: string;
  /**
   * Erasing: write `bytes` this many times, refilled with fresh random data before every pass
   * (randomFillSync), each pass synced before the next. Absent: once, as given.
   */
  randomPasses?: number;
}

/**
 * How many times QEMU overwrites an erased slot's key material, with new random bytes each time
 * (QCRYPTO_BLOCK_LUKS_ERASE_ITERATIONS in crypto/block-luks.c).
 */
export const LUKS_ERASE_PASSES = 40;

export interface LuksEdit {
  header: LuksHeader;
  /** To be written in this order (an fsync between them). */
  writes: LuksAreaWrite[];
  /** The key slots that changed. */
  slots: number[];
}

/** `qemu-img amend -o encrypt.*` for LUKS, option by option. */
export interface LuksAmendOptions {
  /** encrypt.state */
  state: 'active' | 'inactive';
  /** encrypt.new-secret: the passphrase to add. */
  newSecret?: Secret;
  /** encrypt.old-secret: erase the slots holding this passphrase. */
  oldSecret?: Secret;
  /** encrypt.keyslot */
  keyslot?: number;
  /** encrypt.iter-time */
  iterTimeMs?: number;
  /**
   * encrypt.secret: the passphrase that unlocks the master key when adding; QEMU defaults it to
   * the key-secret the image was opened with, so the caller passes that when none is given.
   */
  secret?: Secret;
  /** qemu-img amend --force: allows overwriting an active slot and erasing the last one. */
  force?: boolean;
  /** A fixed iteration count for the new slot instead of measuring (tests). */
  slotIterations?: number;
  signal?: AbortSignal;
  maxIterations?: number;
}

function refuse(area: LuksArea, option: string, detail: string, code: Qcow2Error['code'] = 'unsupported'): Qcow2Error {
  return new Qcow2Error(area.file, option, undefined, detail, code);
}

/**
 * QEMU's range check; adding prints the index unsigned (-1 as 4294967295), erasing signed, as
 * qemu-img 7.2 does.
 */
function checkKeyslotIndex(area: LuksArea, keyslot: number, unsigned: boolean): void {
  if (!Number.isInteger(keyslot) || keyslot < 0 || keyslot >= LUKS_NUM_KEY_SLOTS) {
    const shown = unsigned && Number.isInteger(keyslot) && keyslot < 0 && keyslot >= -(2 ** 31) ? keyslot + 2 ** 32 : keyslot;
    throw refuse(area, 'encrypt.keyslot', `Invalid keyslot ${shown} specified, must be between 0 and ${LUKS_NUM_KEY_SLOTS - 1}`);
  }
}

/** Dispatches on encrypt.state, as qcrypto_block_luks_amend_options does. */
export function amendLuks(area: LuksArea, h: LuksHeader, o: LuksAmendOptions): Promise<LuksEdit> {
  return o.state === 'active' ? addKeySlot(area, h, o) : eraseKeySlots(area, h, o);
}

/** encrypt.state=active: seals the master key under newSecret in a free (or the given) slot. */
export async function addKeySlot(area: LuksArea, h: LuksHeader, o: Omit<LuksAmendOptions, 'state'>): Promise<LuksEdit> {
  if (!o.newSecret) throw refuse(area, 'encrypt.new-secret', "'new-secret' is required to activate a keyslot");
  if (o.oldSecret) throw refuse(area, 'encrypt.old-secret', "'old-secret' must not be given when activating keyslots");
  let keyslot: number;
  if (o.keyslot !== undefined) {
    checkKeyslotIndex(area, o.keyslot, true);
    keyslot = o.keyslot;
  } else {
    keyslot = h.slots.findIndex(s => !s.active);
    if (keyslot < 0) throw luksError(area, { field: 'key_slots' }, "Can't add a keyslot - all keyslots are in use", 'unsupported');
  }
  if (!o.force && h.slots[keyslot].active) {
    throw luksError(area, { slot: keyslot }, `Refusing to overwrite active keyslot ${keyslot} - please erase it first`, 'unsupported');
  }
  if (!o.secret) throw refuse(area, 'encrypt.secret', 'the passphrase of an existing key slot is needed to add one', 'bad-passphrase');
  const { masterKey } = await unlockLuks(area, h, o.secret, { signal: o.signal, maxIterations: o.maxIterations });
  try {
    const sealed = await sealKeySlot(area, h, keyslot, o.newSecret, masterKey,
      { iterTimeMs: o.iterTimeMs, slotIterations: o.slotIterations, signal: o.signal, secretOption: 'encrypt.new-secret' });
    const header = cloneLuksHeader(h);
    header.slots[keyslot] = sealed.slot;
    return {
      header,
      writes: [
        { offsetInArea: keyMaterialRange(h, sealed.slot).offset, bytes: sealed.material, what: `key_slot[${keyslot}] key material` },
        { offsetInArea: 0, bytes: encodeLuksHeader(header), what: 'header' },
      ],
      slots: [keyslot],
    };
  } finally {
    masterKey.wipe();
  }
}

/** encrypt.state=inactive: erases the given slot, or every slot holding oldSecret. */
export async function eraseKeySlots(area: LuksArea, h: LuksHeader, o: Omit<LuksAmendOptions, 'state'>): Promise<LuksEdit> {
  if (o.newSecret) throw refuse(area, 'encrypt.new-secret', "'new-secret' must not be given when erasing keyslots");
  if (o.iterTimeMs !== undefined) throw refuse(area, 'encrypt.iter-time', "'iter-time' must not be given when erasing keyslots");
  if (o.secret) throw refuse(area, 'encrypt.secret', "'secret' must not be given when erasing keyslots");
  const activeCount = h.slots.filter(s => s.active).length;
  let toErase: number[];
  if (o.keyslot !== undefined) {
    const k = o.keyslot;
    checkKeyslotIndex(area, k, false);
    if (o.oldSecret) {
      checkIterations(area, h, [h.slots[k]], o.maxIterations);
      const key = await tryKeySlot(area, h, k, o.oldSecret, o.signal);
      if (!key) throw luksError(area, { slot: k }, `Given keyslot ${k} doesn't contain the given old password for erase operation`, 'bad-passphrase');
      key.wipe();
    }
    if (!o.force && !h.slots[k].active) throw luksError(area, { slot: k }, `Given keyslot ${k} is already erased (inactive)`, 'unsupported');
    if (!o.force && activeCount === 1) {
      throw luksError(area, { slot: k }, `Attempt to erase the only active keyslot ${k} which will erase all the data in the image irreversibly - refusing operation`, 'unsupported');
    }
    toErase = [k];
  } else if (o.oldSecret) {
    checkIterations(area, h, h.slots, o.maxIterations);
    toErase = [];
    for (const s of h.slots) {
      if (!s.active) continue;
      const key = await tryKeySlot(area, h, s.index, o.oldSecret, o.signal);
      if (key) {
        key.wipe();
        toErase.push(s.index);
      }
    }
    if (toErase.length === 0) throw luksError(area, { field: 'key_slots' }, 'No keyslots match given (old) password for erase operation', 'bad-passphrase');
    if (!o.force && toErase.length === activeCount) {
      throw luksError(area, { field: 'key_slots' }, 'All the active keyslots match the (old) password that was given and erasing them will erase all the data in the image irreversibly - refusing operation', 'unsupported');
    }
  } else {
    throw refuse(area, 'encrypt.keyslot', 'To erase keyslot(s), either explicit keyslot index or the password currently contained in them must be given');
  }

  const header = cloneLuksHeader(h);
  const writes: LuksAreaWrite[] = [];
  for (const k of toErase) header.slots[k] = { ...header.slots[k], active: false, iterations: 0, salt: Buffer.alloc(LUKS_SALT_BYTES) };
  writes.push({ offsetInArea: 0, bytes: encodeLuksHeader(header), what: 'header' });
  for (const k of toErase) {
    // As QEMU (qcrypto_block_luks_erase_key): after the header, the whole key material area
    // (key bytes × stripes) overwritten LUKS_ERASE_PASSES times, new random bytes every pass (the
    // writer fills the buffer before each pass, so it starts empty).
    const r = keyMaterialRange(h, h.slots[k]);
    writes.push({ offsetInArea: r.offset, bytes: Buffer.alloc(r.length), what: `key_slot[${k}] key material`, randomPasses: LUKS_ERASE_PASSES });
  }
  return { header, writes, slots: toErase };
}
