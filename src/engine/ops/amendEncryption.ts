/**
 * `qemu-img amend -o encrypt.state=active|inactive,…` on a LUKS-encrypted qcow2 image, in place,
 * as QEMU 7.2 does it (block/qcow2.c qcow2_amend_options → crypto/block-luks.c
 * qcrypto_block_luks_amend_options): add a passphrase to a key slot, or erase the key slots a
 * passphrase opens (or one slot by index). The rules and refusals are crypto/luksKeySlots.ts's.
 *
 * Write order (what makes a crash at any point harmless; QCOW2_LENS_CRASH_AFTER_WRITES counts
 * every write below):
 *   adding   1. the new slot's key material (in a slot the header still calls inactive), fsync;
 *            2. the LUKS header with the slot record active, fsync.
 *            A crash before 2 leaves the old header: every old passphrase opens, the new one not.
 *   erasing  1. the LUKS header with the slots' records inactive, fsync;
 *            2. each erased slot's key material overwritten 40 times with new random bytes (as
 *               QEMU's qcrypto_block_luks_erase_key), fsync after every pass, so each pass
 *               reaches the disk instead of being merged in the page cache.
 *            A crash after 1 leaves the slot unusable but every other passphrase opening.
 * Every write lies inside the LUKS area the full disk encryption header extension names; nothing
 * else in the image (qcow2 header, tables, data) changes.
 *
 * As qemu-img opens the image before amending it, the image's own key (encrypt.key-secret) is
 * needed for both: a wrong one fails first, with the unlock error. Adding uses it to recover the
 * master key the new slot seals. An image a running QEMU holds is refused before anything is read.
 */
import * as crypto from 'node:crypto';
import type { LuksEdit } from '../crypto/luksKeySlots';
import { amendLuks } from '../crypto/luksKeySlots';
import { readLuksHeader } from '../crypto/luksHeader';
import { unlockLuks } from '../crypto/luksUnlock';
import type { Secret } from '../crypto/secret';
import { Qcow2Error } from '../errors';
import { luksAreaOf } from '../image/encryption';
import { Qcow2Image } from '../image/image';
import * as L from '../qcow2/layout';
import { FileDisk } from './create/disk';
import { assertNotLocked, assertWritable } from './writable';

export interface EncryptionAmendOptions {
  /** encrypt.state */
  state: 'active' | 'inactive';
  /** encrypt.new-secret: the passphrase to add. */
  newSecret?: Secret;
  /** encrypt.old-secret: erase every slot this passphrase opens. */
  oldSecret?: Secret;
  /** encrypt.keyslot */
  keyslot?: number;
  /** encrypt.iter-time (ms of PBKDF2 for the new slot; QEMU's default 2000). */
  iterTimeMs?: number;
  /** qemu-img amend --force: overwrite an active slot, erase the last one. */
  force?: boolean;
  /** A fixed PBKDF2 iteration count for the new slot instead of measuring (tests). */
  slotIterations?: number;
  signal?: AbortSignal;
  maxIterations?: number;
  /** Told before each phase ("unlocking", "sealing", "writing"). */
  onPhase?: (phase: 'unlocking' | 'editing' | 'writing') => void;
}

export interface EncryptionAmendResult {
  /** The key slots that changed. */
  slots: number[];
  /** Which slots are active afterwards, 0–7. */
  active: boolean[];
}

/**
 * Amends the key slots of `path`. `key` is the image's passphrase (encrypt.key-secret), the one
 * qemu-img opens the image with; the caller owns every Secret and wipes it.
 */
export async function amendEncryption(path: string, key: Secret | undefined, o: EncryptionAmendOptions): Promise<EncryptionAmendResult> {
  assertNotLocked(path);
  const img = await Qcow2Image.open(path, { writable: false, openBacking: false, openDataFile: false });
  let edit: LuksEdit;
  let area: { offset: number; length: number };
  try {
    assertWritable(img);
    const h = img.header;
    if (h.cryptMethod !== L.CRYPT_LUKS) {
      throw new Qcow2Error(path, 'header.crypt_method', L.HEADER_FIELD.crypt_method.offset,
        h.cryptMethod === L.CRYPT_AES ? "Can't amend encryption options - the legacy AES method has no key slots (convert to LUKS first)" : "Can't amend encryption options - encryption not present", 'unsupported');
    }
    const luksArea = luksAreaOf(img.file, path, h);
    area = luksArea;
    const luks = await readLuksHeader(luksArea);
    if (!key) throw new Qcow2Error(path, 'encrypt.key-secret', undefined, "Parameter 'encrypt.key-secret' is required for cipher", 'encrypted');
    o.onPhase?.('unlocking');
    // qemu-img opens the image first: a wrong key fails here, before any option is judged.
    const opened = await unlockLuks(luksArea, luks, key, { signal: o.signal, maxIterations: o.maxIterations });
    opened.masterKey.wipe();
    o.onPhase?.('editing');
    edit = await amendLuks(luksArea, luks, {
      state: o.state, newSecret: o.newSecret, oldSecret: o.oldSecret, keyslot: o.keyslot, iterTimeMs: o.iterTimeMs,
      secret: o.state === 'active' ? key : undefined, force: o.force, slotIterations: o.slotIterations, signal: o.signal, maxIterations: o.maxIterations,
    });
  } finally {
    await img.close();
  }
  for (const w of edit.writes) {
    if (w.offsetInArea < 0 || w.offsetInArea + w.bytes.length > area.length) {
      throw new Qcow2Error(path, `encryption header ${w.what}`, area.offset + w.offsetInArea, `the write of ${w.bytes.length} bytes would leave the ${area.length}-byte LUKS area`);
    }
  }
  if (o.signal?.aborted) throw new Qcow2Error(path, 'encryption header', area.offset, 'cancelled before anything was written', 'cancelled');
  o.onPhase?.('writing');
  const disk = FileDisk.open(path, 'r+');
  try {
    // No signal from here on: a started edit is finished, each write synced before the next.
    for (const w of edit.writes) {
      const passes = w.randomPasses ?? 1;
      for (let pass = 0; pass < passes; pass++) {
        if (w.randomPasses !== undefined) crypto.randomFillSync(w.bytes);
        await disk.write(area.offset + w.offsetInArea, w.bytes, `encryption header ${w.what}${passes > 1 ? ` (pass ${pass + 1} of ${passes})` : ''}`);
        await disk.sync();
      }
    }
  } finally {
    disk.close();
    for (const w of edit.writes) w.bytes.fill(0);
  }
  return { slots: edit.slots, active: edit.header.slots.map(s => s.active) };
}
