/**
 * Compaction of a LUKS-encrypted image: it stays encrypted with the same LUKS area (header and key
 * slots copied byte for byte, so the same master key and passphrases open it). LUKS IVs follow the
 * HOST offset, so each data cluster is decrypted for the host offset it had in the source and
 * encrypted again for the one it gets in the output; zero detection looks at the plaintext.
 * Compressed clusters (QEMU stores them unencrypted) are copied as they are.
 *
 * Refused: legacy AES (its IVs follow the guest offset, but a cluster whose stored bytes are zero is
 * not a zero cluster there; convert it to LUKS instead), compressing (our compressed clusters would
 * hold plaintext), re-clustering, and a missing passphrase.
 *
 * The hooks the compaction calls: prepare (after its refusals), placeArea (right after the header
 * cluster, before any data), decrypt (each batch as read), seal (each cluster just before it is
 * appended), patchHeader (the crypto extension's offset in the new header).
 */
import type { DataCipher } from '../../crypto/dataCipher';
import type { Secret } from '../../crypto/secret';
import { Qcow2Error } from '../../errors';
import type { Qcow2Image } from '../../image/image';
import { putOffset } from '../../qcow2/cluster';
import * as L from '../../qcow2/layout';
import type { OutFile } from './output';

export interface CompactCrypto {
  cipher: DataCipher;
  /** The source's LUKS area, as stored. */
  area: Buffer;
  /** Where the area goes in the output (placeArea). */
  at: number;
}

/** Unlocks an encrypted source for compaction (null when it is not encrypted). */
export async function prepare(img: Qcow2Image, key: Secret | undefined, s: { recluster: boolean; compress: boolean }): Promise<CompactCrypto | null> {
  if (!img.encrypted) return null;
  const h = img.header, at = L.HEADER_FIELD.crypt_method.offset;
  if (h.cryptMethod !== L.CRYPT_LUKS) throw new Qcow2Error(img.path, 'header.crypt_method', at, 'legacy AES images are not compacted; convert it to a LUKS image (convert -o encrypt.format=luks,…)', 'unsupported');
  if (s.compress) throw new Qcow2Error(img.path, 'header.crypt_method', at, 'an encrypted image is not compressed: QEMU stores compressed clusters unencrypted', 'unsupported');
  if (s.recluster) throw new Qcow2Error(img.path, 'header.crypt_method', at, 'an encrypted image cannot be re-clustered yet', 'unsupported');
  if (!key) throw new Qcow2Error(img.path, 'header.crypt_method', at, 'the image is encrypted (LUKS); compacting it needs the passphrase (--object secret,id=ID,file=PATH --image-opts driver=qcow2,file.filename=PATH,encrypt.key-secret=ID)', 'encrypted');
  if (!img.cipher) await img.unlock(key);
  const area = await img.file.read(h.crypto!.offset, h.crypto!.length, 'encryption header');
  return { cipher: img.cipher!, area, at: 0 };
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
  if (cc) cc.cipher.encryptRun(buf, o.pos);
  return buf;
}

/** The crypto extension in the new header points at the area's new place. */
export function patchHeader(cc: CompactCrypto, img: Qcow2Image, hdr: Buffer): void {
  const ext = img.header.extensions.find(e => e.type === L.EXT_CRYPTO);
  if (!ext) throw new Qcow2Error(img.path, 'header extension full disk encryption', undefined, 'missing', 'corrupt');
  putOffset(hdr, ext.hostOffset + L.EXT_HEADER_SIZE + L.CRYPTO_EXT.offset, cc.at);
}
