/**
 * The algorithm names QEMU 7.2 knows for block encryption (its QCryptoCipherAlgorithm,
 * QCryptoCipherMode, QCryptoIVGenAlgorithm and QCryptoHashAlgorithm enums as spelled in
 * `qemu-img create -o cipher-alg=…`), and which of them Node's crypto can run. One table each, so
 * the header codec, the key slot code and the sector ciphers agree on names and sizes.
 */

/** Every cipher QEMU's LUKS driver maps a header to (crypto/block-luks.c's name/size map). */
export type CipherAlgorithm =
  | 'aes-128' | 'aes-192' | 'aes-256'
  | 'cast5-128'
  | 'serpent-128' | 'serpent-192' | 'serpent-256'
  | 'twofish-128' | 'twofish-192' | 'twofish-256';

/** The ones Node's crypto (OpenSSL's default provider) has: AES only. */
export type AesAlgorithm = 'aes-128' | 'aes-192' | 'aes-256';

export type CipherMode = 'ecb' | 'cbc' | 'xts' | 'ctr';
export type IvGenAlgorithm = 'plain' | 'plain64' | 'essiv';
export type HashAlgorithm = 'md5' | 'sha1' | 'sha224' | 'sha256' | 'sha384' | 'sha512' | 'ripemd160';

export const CIPHER_MODES: readonly CipherMode[] = ['ecb', 'cbc', 'xts', 'ctr'];
export const IVGEN_ALGORITHMS: readonly IvGenAlgorithm[] = ['plain', 'plain64', 'essiv'];
export const HASH_ALGORITHMS: readonly HashAlgorithm[] = ['md5', 'sha1', 'sha224', 'sha256', 'sha384', 'sha512', 'ripemd160'];

/** A LUKS cipher name with the key sizes it comes in, and the algorithm each size means. */
const LUKS_CIPHER_NAMES: Record<string, Record<number, CipherAlgorithm>> = {
  aes: { 16: 'aes-128', 24: 'aes-192', 32: 'aes-256' },
  cast5: { 16: 'cast5-128' },
  serpent: { 16: 'serpent-128', 24: 'serpent-192', 32: 'serpent-256' },
  twofish: { 16: 'twofish-128', 24: 'twofish-192', 32: 'twofish-256' },
};

const HASH_DIGEST_BYTES: Record<HashAlgorithm, number> = {
  md5: 16, sha1: 20, sha224: 28, sha256: 32, sha384: 48, sha512: 64, ripemd160: 20,
};

export function isCipherMode(s: string): s is CipherMode {
  return (CIPHER_MODES as readonly string[]).includes(s);
}

export function isIvGenAlgorithm(s: string): s is IvGenAlgorithm {
  return (IVGEN_ALGORITHMS as readonly string[]).includes(s);
}

export function isHashAlgorithm(s: string): s is HashAlgorithm {
  return (HASH_ALGORITHMS as readonly string[]).includes(s);
}

export function isCipherAlgorithm(s: string): s is CipherAlgorithm {
  return Object.values(LUKS_CIPHER_NAMES).some(sizes => Object.values(sizes).includes(s as CipherAlgorithm));
}

export function isAes(alg: CipherAlgorithm): alg is AesAlgorithm {
  return alg === 'aes-128' || alg === 'aes-192' || alg === 'aes-256';
}

export function digestBytes(hash: HashAlgorithm): number {
  return HASH_DIGEST_BYTES[hash];
}

/** Bytes of one key of `alg` (XTS uses two of them). */
export function cipherKeyBytes(alg: CipherAlgorithm): number {
  return Number(alg.slice(alg.lastIndexOf('-') + 1)) / 8;
}

/** The master key length a header records for `alg` in `mode` (doubled for XTS, as QEMU does). */
export function masterKeyBytes(alg: CipherAlgorithm, mode: CipherMode): number {
  return cipherKeyBytes(alg) * (mode === 'xts' ? 2 : 1);
}

/** The LUKS header's cipher name for `alg` ("aes", "serpent", …). */
export function luksCipherName(alg: CipherAlgorithm): string {
  return alg.slice(0, alg.lastIndexOf('-'));
}

/**
 * The algorithm a header's cipher name and key length mean, as QEMU looks it up (XTS headers
 * record both keys, so the length is halved first); undefined when QEMU has no such cipher.
 */
export function lookupLuksCipher(name: string, mode: CipherMode, keyBytes: number): CipherAlgorithm | undefined {
  const sizes = Object.prototype.hasOwnProperty.call(LUKS_CIPHER_NAMES, name) ? LUKS_CIPHER_NAMES[name] : undefined;
  if (!sizes) return undefined;
  if (mode === 'xts' && keyBytes % 2 !== 0) return undefined;
  const one = mode === 'xts' ? keyBytes / 2 : keyBytes;
  return Object.prototype.hasOwnProperty.call(sizes, one) ? sizes[one] : undefined;
}

/**
 * The cipher ESSIV encrypts sector numbers with: dm-crypt (and so QEMU) keys it with the whole
 * digest of the master key, so the cipher's key size follows the hash — AES-128 with md5, AES-256
 * with sha256 — and hashes whose digest is no AES key size cannot be used at all.
 */
export function essivCipher(alg: CipherAlgorithm, hash: HashAlgorithm): CipherAlgorithm | undefined {
  const digest = digestBytes(hash);
  if (digest === cipherKeyBytes(alg)) return alg;
  return lookupLuksCipher(luksCipherName(alg), 'ecb', digest);
}

/** Node's name for the raw block cipher (ECB, no padding) of an AES key size. */
export function nodeEcbName(alg: AesAlgorithm): string {
  return `${alg}-ecb`;
}
