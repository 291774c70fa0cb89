/**
 * A new LUKS area laid out exactly as QEMU 7.2's qcrypto_block_luks_create lays it out (inside
 * qcow2 and in a raw LUKS file alike):
 *
 *   sector 0        the 592-byte header (rest of the first 4096 bytes zero)
 *   sector 8 + i·n  key slot i's material, n = key bytes × 4000 rounded up to sectors, then to
 *                   8 sectors (aes-256-xts: 504 sectors per slot)
 *   sector 8 + 8·n  the payload (inside qcow2: the end of the area, which is this long)
 *
 * All eight slots get their place; slot 0 holds the passphrase, the others are inactive and zero.
 * Iteration counts follow QEMU: PBKDF2 speed measured on this machine, scaled to `iter-time`
 * (slot: iter-time's worth; master key digest: an eighth of it), never below 1000.
 *
 * These are pure functions over bytes: the caller places the area (qcow2: in newly allocated
 * clusters, then the header extension pointing at it) in its own crash-safe order.
 */
import { nodeCrypto } from '../builtins';
import { Qcow2Error } from '../errors';
import {
  CipherAlgorithm, CipherMode, HashAlgorithm, IvGenAlgorithm, essivCipher, isAes, isCipherAlgorithm, isCipherMode,
  isHashAlgorithm, isIvGenAlgorithm, luksCipherName, masterKeyBytes,
} from './algorithms';
import { afSplit } from './afsplit';
import { aesSpec } from './dataCipher';
import { LuksLocation } from './luksArea';
import { LuksHeader, LuksKeySlot, encodeLuksHeader, keyMaterialRange } from './luksHeader';
import * as L from './luksLayout';
import { countIterationsPerSecond, pbkdf2 } from './pbkdf2';
import { Secret, isQemuPassphrase, wipeBuffers } from './secret';
import { SectorCipher } from './sectorCipher';

const UINT32_MAX = 0xffffffff;

export interface LuksCreateOptions {
  /** Defaults as QEMU's: aes-256, xts, plain64, essiv's hash sha256, PBKDF2 hash sha256, 2000 ms. */
  cipherAlg?: CipherAlgorithm;
  cipherMode?: CipherMode;
  ivgenAlg?: IvGenAlgorithm;
  ivgenHashAlg?: HashAlgorithm;
  hashAlg?: HashAlgorithm;
  iterTimeMs?: number;
  /** Keep an existing master key (re-encryption with the same key); a new random one otherwise. */
  masterKey?: Secret;
  /** Fixed iteration counts instead of measuring (reproducible tests; at least 1000 each). */
  slotIterations?: number;
  masterKeyIterations?: number;
  uuid?: string;
  signal?: AbortSignal;
}

export interface CreatedLuks {
  header: LuksHeader;
  /** The whole LUKS area: payloadOffsetSector × 512 bytes. */
  area: Buffer;
  /** The master key the payload is to be encrypted with (the caller wipes it). */
  masterKey: Secret;
}

/** Options a key slot is written with (encrypt.iter-time, or a fixed count). */
export interface SealOptions {
  iterTimeMs?: number;
  slotIterations?: number;
  signal?: AbortSignal;
  /** The option the passphrase came from, for messages ("encrypt.new-secret"). */
  secretOption?: string;
}

function optionError(file: string, option: string, detail: string): Qcow2Error {
  return new Qcow2Error(file, `encrypt.${option}`, undefined, detail, 'unsupported');
}

function checkIterTime(file: string, ms: number | undefined): number {
  const t = ms ?? L.LUKS_DEFAULT_ITER_TIME_MS;
  if (!Number.isSafeInteger(t) || t < 1) throw optionError(file, 'iter-time', `${t} is not a positive number of milliseconds`);
  return t;
}

function checkFixedIterations(file: string, option: string, n: number | undefined, min: number): number | undefined {
  if (n === undefined) return undefined;
  if (!Number.isSafeInteger(n) || n < min || n > 2 ** 31 - 1) throw optionError(file, option, `${n} iterations is outside ${min}…${2 ** 31 - 1}`);
  return n;
}

/** QEMU's scaling: iterations/s × iter-time, divided as asked, floored at `min`, refused above 2³²−1. */
function scaledIterations(file: string, perSecond: number, iterTimeMs: number, divisor: number, min: number): number {
  const n = Math.floor(Math.floor((perSecond * iterTimeMs) / 1000) / divisor);
  if (n > UINT32_MAX) throw optionError(file, 'iter-time', `PBKDF2 iterations ${n} larger than ${UINT32_MAX}`);
  return Math.min(Math.max(n, min), 2 ** 31 - 1);
}

function checkPassphrase(file: string, s: Secret, option: string): Buffer {
  const p = s.bytes();
  if (!isQemuPassphrase(p)) throw new Qcow2Error(file, option, undefined, 'the passphrase is not valid UTF-8 text without NUL bytes, which QEMU requires', 'bad-passphrase');
  return p;
}

/**
 * Seals `masterKey` into key slot `index` under `passphrase` (QEMU's store_key): a new salt, the
 * iteration count, the split key encrypted with the slot key. Returns the new slot descriptor and
 * its key material; the header itself is not changed.
 */
export async function sealKeySlot(at: LuksLocation, h: LuksHeader, index: number, passphrase: Secret, masterKey: Secret, opts: SealOptions = {}): Promise<{ slot: LuksKeySlot; material: Buffer }> {
  const spec = aesSpec(at, h);
  const old = h.slots[index];
  const pass = checkPassphrase(at.file, passphrase, opts.secretOption ?? 'encrypt.key-secret');
  if (masterKey.length !== h.keyBytes) throw new Error(`the master key has ${masterKey.length} bytes, the header ${h.keyBytes}`);
  if ((h.keyBytes * old.stripes) % L.LUKS_SECTOR_BYTES !== 0) {
    // QEMU 7.2 asserts sector alignment when it encrypts key material (and aborts).
    throw optionError(at.file, 'cipher-alg', `${h.cipherAlg} in ${h.cipherMode} mode makes ${h.keyBytes * old.stripes} bytes of key material, not a whole number of sectors; QEMU 7.2 aborts creating and opening such images`);
  }
  const salt = nodeCrypto().randomBytes(L.LUKS_SALT_BYTES);
  const iterTimeMs = checkIterTime(at.file, opts.iterTimeMs);
  const iterations = checkFixedIterations(at.file, 'slot-iterations', opts.slotIterations, L.LUKS_MIN_SLOT_KEY_ITERATIONS)
    ?? scaledIterations(at.file, await countIterationsPerSecond(h.hashAlg, pass, salt, h.keyBytes, opts.signal), iterTimeMs, 1, L.LUKS_MIN_SLOT_KEY_ITERATIONS);
  let slotKey: Buffer | undefined, sc: SectorCipher | undefined;
  try {
    slotKey = await pbkdf2(h.hashAlg, pass, salt, iterations, h.keyBytes);
    const material = await afSplit(h.hashAlg, masterKey.bytes(), old.stripes);
    sc = new SectorCipher(spec, slotKey);
    sc.encrypt(material, 0);
    return { slot: { ...old, active: true, iterations, salt }, material };
  } finally {
    sc?.dispose();
    wipeBuffers(slotKey);
  }
}

/** Resolves and checks the create options as qcrypto_block_luks_create does. */
function resolveOptions(file: string, o: LuksCreateOptions) {
  const cipherAlg = o.cipherAlg ?? 'aes-256';
  const cipherMode = o.cipherMode ?? 'xts';
  const ivgenAlg = o.ivgenAlg ?? 'plain64';
  const hashAlg = o.hashAlg ?? 'sha256';
  const ivgenHashAlg = o.ivgenHashAlg ?? (ivgenAlg === 'essiv' ? 'sha256' : undefined);
  if (!isCipherAlgorithm(cipherAlg)) throw optionError(file, 'cipher-alg', `"${cipherAlg}" is not a LUKS cipher`);
  if (!isAes(cipherAlg)) throw optionError(file, 'cipher-alg', `${cipherAlg} is valid LUKS, but only AES is supported (Node's crypto has no ${luksCipherName(cipherAlg)})`);
  if (!isCipherMode(cipherMode)) throw optionError(file, 'cipher-mode', `"${cipherMode}" is not a cipher mode QEMU knows`);
  if (!isIvGenAlgorithm(ivgenAlg)) throw optionError(file, 'ivgen-alg', `"${ivgenAlg}" is not an IV generator QEMU knows`);
  if (!isHashAlgorithm(hashAlg)) throw optionError(file, 'hash-alg', `"${hashAlg}" is not a hash QEMU knows`);
  if (ivgenHashAlg !== undefined && !isHashAlgorithm(ivgenHashAlg)) throw optionError(file, 'ivgen-hash-alg', `"${ivgenHashAlg}" is not a hash QEMU knows`);
  let ivgenCipherAlg: CipherAlgorithm = cipherAlg;
  if (ivgenAlg === 'essiv') {
    const e = essivCipher(cipherAlg, ivgenHashAlg!);
    if (!e) throw optionError(file, 'ivgen-hash-alg', `essiv:${String(ivgenHashAlg)} needs an AES key of its digest size, which does not exist (use sha256 or md5)`);
    ivgenCipherAlg = e;
  }
  // Non-essiv IV generators ignore a hash, but QEMU still records it (dm-crypt compatibility).
  const cipherModeSpec = ivgenHashAlg ? `${cipherMode}-${ivgenAlg}:${ivgenHashAlg}` : `${cipherMode}-${ivgenAlg}`;
  return { cipherAlg, cipherMode, ivgenAlg, ivgenHashAlg, hashAlg, ivgenCipherAlg, cipherModeSpec };
}

/**
 * A new LUKS area with `passphrase` in key slot 0. `file` names the image in errors. The area's
 * header sits at offset 0 of the returned buffer; for errors about it the header is assumed there.
 */
export async function createLuks(file: string, passphrase: Secret, o: LuksCreateOptions = {}): Promise<CreatedLuks> {
  const r = resolveOptions(file, o);
  const iterTimeMs = checkIterTime(file, o.iterTimeMs);
  checkFixedIterations(file, 'master-key-iterations', o.masterKeyIterations, L.LUKS_MIN_MASTER_KEY_ITERATIONS);
  checkPassphrase(file, passphrase, 'encrypt.key-secret');
  const keyBytes = masterKeyBytes(r.cipherAlg, r.cipherMode);
  if (o.masterKey && o.masterKey.length !== keyBytes) {
    throw optionError(file, 'cipher-alg', `the given master key has ${o.masterKey.length} bytes; ${r.cipherAlg}-${r.cipherMode} needs ${keyBytes}`);
  }
  const masterKey = o.masterKey ? o.masterKey.slice(0) : Secret.random(keyBytes);
  try {
    const masterKeySalt = nodeCrypto().randomBytes(L.LUKS_SALT_BYTES);
    const masterKeyIterations = o.masterKeyIterations
      ?? scaledIterations(file, await countIterationsPerSecond(r.hashAlg, masterKey.bytes(), masterKeySalt, L.LUKS_DIGEST_BYTES, o.signal), iterTimeMs, 8, L.LUKS_MIN_MASTER_KEY_ITERATIONS);
    const masterKeyDigest = await pbkdf2(r.hashAlg, masterKey.bytes(), masterKeySalt, masterKeyIterations, L.LUKS_DIGEST_BYTES);

    const slotSectors = L.keyMaterialSectors(keyBytes, L.LUKS_STRIPES);
    const slots: LuksKeySlot[] = Array.from({ length: L.LUKS_NUM_KEY_SLOTS }, (_, i) => ({
      index: i,
      active: false,
      iterations: 0,
      salt: Buffer.alloc(L.LUKS_SALT_BYTES),
      keyMaterialSector: L.LUKS_HEADER_SECTORS + i * slotSectors,
      stripes: L.LUKS_STRIPES,
    }));
    const header: LuksHeader = {
      cipherAlg: r.cipherAlg,
      cipherMode: r.cipherMode,
      ivgenAlg: r.ivgenAlg,
      ivgenHashAlg: r.ivgenHashAlg,
      ivgenCipherAlg: r.ivgenCipherAlg,
      hashAlg: r.hashAlg,
      cipherName: luksCipherName(r.cipherAlg),
      cipherModeSpec: r.cipherModeSpec,
      hashSpec: r.hashAlg,
      payloadOffsetSector: L.LUKS_HEADER_SECTORS + L.LUKS_NUM_KEY_SLOTS * slotSectors,
      keyBytes,
      masterKeyDigest,
      masterKeySalt,
      masterKeyIterations,
      uuid: o.uuid ?? nodeCrypto().randomUUID(),
      slots,
    };
    const at = { file, offset: 0 };
    const sealed = await sealKeySlot(at, header, 0, passphrase, masterKey, { iterTimeMs, slotIterations: o.slotIterations, signal: o.signal });
    header.slots[0] = sealed.slot;
    const area = Buffer.alloc(header.payloadOffsetSector * L.LUKS_SECTOR_BYTES);
    encodeLuksHeader(header).copy(area, 0);
    sealed.material.copy(area, keyMaterialRange(header, sealed.slot).offset);
    return { header, area, masterKey };
  } catch (e) {
    masterKey.wipe();
    throw e;
  }
}
