/**
 * Compaction of a LUKS-encrypted image: it stays encrypted with the same LUKS area (header and key
 * slots copied byte for byte, so the same master key and passphrases open it), or, when a new
 * passphrase is given, with a new LUKS area of the same algorithms: a new random master key in one
 * key slot under that passphrase (the old passphrases and key no longer open the copy). LUKS IVs
 * follow the HOST offset, so each data cluster is decrypted for the host offset it had in the
 * source and encrypted again for the one it gets in the output; zero detection looks at the
 * plaintext.
 * Compressed clusters (QEMU stores them unencrypted) are copied as they are.
 *
 * Refused: legacy AES (its IVs follow the guest offset, but a cluster whose stored bytes are zero is
 * not a zero cluster there; convert it to LUKS instead), compressing (our compressed clusters would
 * hold plaintext), re-clustering, and a missing passphrase.
 *
 * The hooks the compaction calls: prepare (after its refusals), placeArea (right after the header
 * cluster, before any data), decrypt (each batch as read), seal (each cluster just before it is
 * appended), patchHeader (the crypto extension's offset and length in the new header), release
 * (at the end, either way).
 */
import { luksDataCipher, type DataCipher } from '../../crypto/dataCipher';
import { createLuks } from '../../crypto/luksCreate';
import type { Secret } from '../../crypto/secret';
import { Qcow2Error } from '../../errors';
import type { Qcow2Image } from '../../image/image';
import { putOffset } from '../../qcow2/cluster';
import * as L from '../../qcow2/layout';
import type { OutFile } from './output';

export interface CompactCrypto {
  /** The source's data cipher (decrypt). */
  cipher: DataCipher;
  /** The output's (seal): the source's, or the new master key's. */
  outCipher: DataCipher;
  /** The output's LUKS area: the source's as stored, or the new one. */
  area: Buffer;
  /** Where the area goes in the output (placeArea). */
  at: number;
}

/** With `CompactOptions.newKey`: the new LUKS area's passphrase and PBKDF2 time (default QEMU's 2000 ms). */
export interface NewKey {
  passphrase: Secret;
  iterTimeMs?: number;
  signal?: AbortSignal;
}

/** Unlocks an encrypted source for compaction (null when it is not encrypted). */
export async function prepare(img: Qcow2Image, key: Secret | undefined, s: { recluster: boolean; compress: boolean }, newKey?: NewKey): Promise<CompactCrypto | null> {
  if (!img.encrypted) {
    if (newKey) throw new Qcow2Error(img.path, 'header.crypt_method', L.HEADER_FIELD.crypt_method.offset, 'the image is not encrypted: a new passphrase applies to encrypted images only (convert -o encrypt.format=luks,… encrypts a copy)', 'unsupported');
    return null;
  }
  const h = img.header, at = L.HEADER_FIELD.crypt_method.offset;
  if (h.cryptMethod !== L.CRYPT_LUKS) throw new Qcow2Error(img.path, 'header.crypt_method', at, 'legacy AES images are not compacted; convert it to a LUKS image (convert -o encrypt.format=luks,…)', 'unsupported');
  if (s.compress) throw new Qcow2Error(img.path, 'header.crypt_method', at, 'an encrypted image is not compressed: QEMU stores compressed clusters unencrypted', 'unsupported');
  if (s.recluster) throw new Qcow2Error(img.path, 'header.crypt_method', at, 'an encrypted image cannot be re-clustered yet', 'unsupported');
  if (!key) throw new Qcow2Error(img.path, 'header.crypt_method', at, 'the image is encrypted (LUKS); compacting it needs the passphrase (--object secret,id=ID,file=PATH --image-opts driver=qcow2,file.filename=PATH,encrypt.key-secret=ID)', 'encrypted');
  if (!img.cipher) await img.unlock(key);
  if (!newKey) {
    const area = await img.file.read(h.crypto!.offset, h.crypto!.length, 'encryption header');
    return { cipher: img.cipher!, outCipher: img.cipher!, area, at: 0 };
  }
  const l = img.luks!;
  const created = await createLuks(img.path, newKey.passphrase, {
    cipherAlg: l.cipherAlg, cipherMode: l.cipherMode, ivgenAlg: l.ivgenAlg, ivgenHashAlg: l.ivgenHashAlg, hashAlg: l.hashAlg,
    iterTimeMs: newKey.iterTimeMs, signal: newKey.signal,
  });
  try {
    // IVs follow the host offset in qcow2, so the cipher does not depend on where the area goes
    return { cipher: img.cipher!, outCipher: luksDataCipher({ file: img.path, offset: 0 }, created.header, created.masterKey, 'qcow2'), area: created.area, at: 0 };
  } finally {
    created.masterKey.wipe();
  }
}

/** Disposes of the new master key's cipher (the source's goes with the image). */
export function release(cc: CompactCrypto | null): void {
  if (cc && cc.outCipher !== cc.cipher) cc.outCipher.dispose();
}

/** Appends the LUKS area (padded to whole clusters) at the output's current end. */
export function placeArea(cc: CompactCrypto, o: OutFile, cs: number): void {
  cc.at = o.push(Buffer.from(cc.area));
  const r = cc.area.length % cs;
  if (r) o.push(Buffer.alloc(cs - r));
}

/** Decrypts source clusters in place (keys: their source host offsets). */
export function decrypt(cc: CompactCrypto, list: readonly number[], bufs: ReadonlyMap<number, Buffer>): void {
  for (const s of list) cc.cipher.decryptRun(bufs.get(s)!, s);
}

/** Encrypts `buf` in place for the host offset the next append gives it; returns it. */
export function seal(cc: CompactCrypto | null | undefined, o: OutFile, buf: Buffer): Buffer {
  if (cc) cc.outCipher.encryptRun(buf, o.pos);
  return buf;
}

/** The crypto extension in the new header points at the area's new place (and gives its length: a new area's may differ). */
export function patchHeader(cc: CompactCrypto, img: Qcow2Image, hdr: Buffer): void {
  const ext = img.header.extensions.find(e => e.type === L.EXT_CRYPTO);
  if (!ext) throw new Qcow2Error(img.path, 'header extension full disk encryption', undefined, 'missing', 'corrupt');
  putOffset(hdr, ext.hostOffset + L.EXT_HEADER_SIZE + L.CRYPTO_EXT.offset, cc.at);
  putOffset(hdr, ext.hostOffset + L.EXT_HEADER_SIZE + L.CRYPTO_EXT.length, cc.area.length);
}
