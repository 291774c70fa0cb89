/**
 * A passphrase or key held in one Buffer that never prints: `String(secret)`, `JSON.stringify`,
 * `util.inspect` and template strings all give `[secret]`, so a secret that slips into a log line
 * or an error message shows nothing. The bytes sit in a private field (`util.inspect` with
 * `showHidden` cannot see it) and are zeroed by `wipe()`.
 *
 * A secret that arrived as a JavaScript string (an input box, a command line) also lives on in
 * V8's heap until it is collected; strings cannot be wiped, so convert once and drop the string.
 */
import { nodeCrypto } from '../builtins';
import { inspect } from 'node:util';

const SHOWN = '[secret]';

export class Secret {
  #bytes: Buffer | undefined;

  private constructor(bytes: Buffer) {
    this.#bytes = bytes;
  }

  /** The UTF-8 bytes of `text` (how QEMU reads a `secret` object's data). */
  static fromString(text: string): Secret {
    const b = Buffer.alloc(Buffer.byteLength(text, 'utf8'));
    b.write(text, 'utf8');
    return new Secret(b);
  }

  /** A copy of `bytes`; the caller may wipe its own buffer afterwards. */
  static fromBytes(bytes: Uint8Array): Secret {
    const b = Buffer.alloc(bytes.length);
    b.set(bytes);
    return new Secret(b);
  }

  /** Takes `bytes` over without a copy (it is wiped with the secret). */
  static adopt(bytes: Buffer): Secret {
    return new Secret(bytes);
  }

  static random(length: number): Secret {
    return new Secret(nodeCrypto().randomBytes(length));
  }

  get length(): number {
    return this.bytes().length;
  }

  get wiped(): boolean {
    return this.#bytes === undefined;
  }

  /**
   * The bytes themselves, for the crypto calls that need them. Never keep, log or copy the result
   * beyond the call; it is zeroed by `wipe()`.
   */
  bytes(): Buffer {
    if (!this.#bytes) throw new Error('the secret was wiped and cannot be used any more');
    return this.#bytes;
  }

  /** A new secret holding a copy of bytes [start, end) of this one. */
  slice(start: number, end?: number): Secret {
    return Secret.fromBytes(this.bytes().subarray(start, end));
  }

  /** Constant-time comparison (the lengths are not secret). */
  equals(other: Secret): boolean {
    const a = this.bytes(), b = other.bytes();
    return a.length === b.length && nodeCrypto().timingSafeEqual(a, b);
  }

  /** Zeroes the bytes and forgets them; later use throws. Safe to call twice. */
  wipe(): void {
    this.#bytes?.fill(0);
    this.#bytes = undefined;
  }

  toString(): string {
    return SHOWN;
  }

  toJSON(): string {
    return SHOWN;
  }

  [inspect.custom](): string {
    return SHOWN;
  }

  [Symbol.toPrimitive](): string {
    return SHOWN;
  }
}

/** Runs `fn` with secrets made for it and wipes them afterwards, whatever happens. */
export async function withSecrets<T>(secrets: Secret[], fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } finally {
    for (const s of secrets) s.wipe();
  }
}

/** Wipes plain Buffers that held key material (derived keys, split keys). */
export function wipeBuffers(...buffers: (Buffer | undefined)[]): void {
  for (const b of buffers) b?.fill(0);
}

/**
 * Whether QEMU would take these bytes as a passphrase: it reads a secret as UTF-8 text
 * (qcrypto_secret_lookup_as_utf8, which refuses invalid UTF-8 and NUL bytes) and uses it up to
 * its end. Checked on the bytes, so the passphrase never becomes a JavaScript string.
 */
export function isQemuPassphrase(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; ) {
    const c = b[i];
    if (c === 0) return false;
    if (c < 0x80) { i++; continue; }
    let n: number, min: number;
    if (c >= 0xc2 && c <= 0xdf) { n = 1; min = 0x80; }
    else if (c >= 0xe0 && c <= 0xef) { n = 2; min = 0x800; }
    else if (c >= 0xf0 && c <= 0xf4) { n = 3; min = 0x10000; }
    else return false;
    if (i + n >= b.length) return false;
    let cp = c & (0x3f >> n);
    for (let k = 1; k <= n; k++) {
      const cc = b[i + k];
      if (cc === undefined || (cc & 0xc0) !== 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}
