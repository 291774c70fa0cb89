/**
 * Unlocking a LUKS master key with a passphrase, as LUKS (and QEMU's qcrypto_block_luks_find_key)
 * does: every active key slot in order, each in four steps —
 *   1. slot key   = PBKDF2(hash, passphrase, slot salt, slot iterations, key bytes)
 *   2. split key  = the slot's key material (key bytes × 4000 stripes) decrypted with the slot key,
 *                   sector by sector from sector 0, in the header's cipher, mode and IV generator
 *   3. master key = AF-merge(split key)
 *   4. accept it only if PBKDF2(hash, master key, digest salt, digest iterations, 20) equals the
 *      header's master key digest.
 * A passphrase no slot accepts is one 'bad-passphrase' error, in qemu-img's words (INVALID_PASSWORD). Before any slot is tried, the header
 * is checked for what would make trying it unsafe or impossible (ciphers Node lacks, iteration
 * counts beyond the limit, key material outside the LUKS area), so a hostile image costs a bounded
 * amount of work and never a huge allocation.
 */
import { nodeCrypto } from '../builtins';
import { Qcow2Error } from '../errors';
import { afMerge } from './afsplit';
import { aesSpec } from './dataCipher';
import { LuksArea, LuksLocation, luksError, readLuksArea } from './luksArea';
import { LuksHeader, LuksKeySlot, keyMaterialRange } from './luksHeader';
import { LUKS_DIGEST_BYTES } from './luksLayout';
import { DEFAULT_MAX_PBKDF2_ITERATIONS, pbkdf2 } from './pbkdf2';
import { Secret, isQemuPassphrase, wipeBuffers } from './secret';
import { SectorCipher } from './sectorCipher';

/**
 * qemu-img 7.2's words for a passphrase no active slot accepts (qcrypto_block_luks_find_key), so a
 * script matching them on qemu-img's stderr matches ours; the message adds the file and the slots.
 */
export const INVALID_PASSWORD = 'Invalid password, cannot unlock any keyslot';

export interface UnlockOptions {
  /** Checked between slots and between the PBKDF2 runs of a slot. */
  signal?: AbortSignal;
  /** Iteration counts above this are refused (see DEFAULT_MAX_PBKDF2_ITERATIONS). */
  maxIterations?: number;
}

export interface UnlockedKey {
  masterKey: Secret;
  /** The key slot the passphrase opened. */
  slot: number;
}

function cancelled(at: LuksLocation): Qcow2Error {
  return new Qcow2Error(at.file, 'encryption header', at.offset, 'unlocking was cancelled', 'cancelled');
}

function checkPassphrase(at: LuksLocation, passphrase: Secret): Buffer {
  const p = passphrase.bytes();
  if (!isQemuPassphrase(p)) {
    throw new Qcow2Error(at.file, 'passphrase', undefined, 'the passphrase is not valid UTF-8 text without NUL bytes, which QEMU requires', 'bad-passphrase');
  }
  return p;
}

/** Refuses iteration counts beyond the limit before any PBKDF2 work starts. */
export function checkIterations(at: LuksLocation, h: LuksHeader, slots: LuksKeySlot[], maxIterations = DEFAULT_MAX_PBKDF2_ITERATIONS): void {
  const over = (n: number) => `${n.toLocaleString('en-US')} PBKDF2 iterations exceed the limit of ${maxIterations.toLocaleString('en-US')}`;
  if (h.masterKeyIterations > maxIterations) {
    throw luksError(at, { field: 'mk_digest_iter' }, `${over(h.masterKeyIterations)} (raise the limit to unlock this image)`, 'unsupported');
  }
  for (const s of slots) {
    if (s.active && s.iterations > maxIterations) {
      throw luksError(at, { slot: s.index, field: 'iterations' }, `${over(s.iterations)} (raise the limit to unlock this key slot)`, 'unsupported');
    }
  }
}

/** Reads a slot's key material, refusing a range outside the LUKS area. */
async function readKeyMaterial(area: LuksArea, h: LuksHeader, slot: LuksKeySlot): Promise<Buffer> {
  const r = keyMaterialRange(h, slot);
  return readLuksArea(area, r.offset, r.length, { slot: slot.index, field: 'key_material' });
}

/** The master key digest check (step 4), constant-time. */
export async function masterKeyMatches(h: LuksHeader, candidate: Buffer): Promise<boolean> {
  const digest = await pbkdf2(h.hashAlg, candidate, h.masterKeySalt, h.masterKeyIterations, LUKS_DIGEST_BYTES);
  return nodeCrypto().timingSafeEqual(digest, h.masterKeyDigest);
}

/**
 * Tries one key slot (steps 1–4). Returns the master key, or undefined when the slot is inactive or
 * the passphrase is not this slot's. The caller has validated the header (checkIterations).
 */
export async function tryKeySlot(area: LuksArea, h: LuksHeader, index: number, passphrase: Secret, signal?: AbortSignal): Promise<Secret | undefined> {
  const slot = h.slots[index];
  if (!slot?.active) return undefined;
  const spec = aesSpec(area, h);
  const material = await readKeyMaterial(area, h, slot);
  let slotKey: Buffer | undefined, merged: Buffer | undefined, sc: SectorCipher | undefined;
  try {
    slotKey = await pbkdf2(h.hashAlg, checkPassphrase(area, passphrase), slot.salt, slot.iterations, h.keyBytes);
    if (signal?.aborted) throw cancelled(area);
    sc = new SectorCipher(spec, slotKey);
    sc.decrypt(material, 0);
    merged = await afMerge(h.hashAlg, h.keyBytes, slot.stripes, material);
    if (await masterKeyMatches(h, merged)) {
      const key = Secret.adopt(merged);
      merged = undefined;
      return key;
    }
    return undefined;
  } finally {
    sc?.dispose();
    wipeBuffers(slotKey, merged, material);
  }
}

/**
 * Finds the master key: tries every active slot in order, as LUKS does, and fails with one
 * 'bad-passphrase' error when none accepts the passphrase.
 */
export async function unlockLuks(area: LuksArea, h: LuksHeader, passphrase: Secret, opts: UnlockOptions = {}): Promise<UnlockedKey> {
  aesSpec(area, h);
  checkPassphrase(area, passphrase);
  checkIterations(area, h, h.slots, opts.maxIterations);
  const active = h.slots.filter(s => s.active);
  if (active.length === 0) {
    throw luksError(area, { field: 'key_slots' }, `${INVALID_PASSWORD} (no key slot is active, so no passphrase can open this image)`, 'bad-passphrase');
  }
  for (const s of active) {
    if (opts.signal?.aborted) throw cancelled(area);
    const key = await tryKeySlot(area, h, s.index, passphrase, opts.signal);
    if (key) return { masterKey: key, slot: s.index };
  }
  throw luksError(area, { field: 'key_slots' },
    `${INVALID_PASSWORD} (tried the ${active.length} active key slot${active.length === 1 ? '' : 's'}: ${active.map(s => s.index).join(', ')})`, 'bad-passphrase');
}
