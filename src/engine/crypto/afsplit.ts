/**
 * The LUKS anti-forensic splitter (the LUKS1 specification's AF-split; QEMU's crypto/afsplit.c):
 * a key of n bytes is stored as `stripes` blocks of n bytes, all random but the last, which is the
 * key XORed with the diffusion of the others. Losing any one stripe's bytes loses the key, so
 * wiping a little of a key slot destroys it. The diffuser hashes each digest-sized piece of a block
 * with its big-endian 32-bit index in front.
 *
 * 4000 stripes of a 64-byte key are 8000–16000 small hashes: 30–200 ms of JavaScript thread time
 * depending on the machine and the hash. Both directions therefore hand the event loop back every
 * few milliseconds, so VS Code's extension host stays responsive while a key slot is opened.
 */
import { nodeCrypto } from '../builtins';
import { HashAlgorithm, digestBytes } from './algorithms';
import { wipeBuffers } from './secret';

/** Longest stretch of hashing between two turns of the event loop. */
const SLICE_MS = 4;

type OneShotHash = (algorithm: string, data: Uint8Array, outputEncoding: 'buffer') => Buffer;
/** crypto.hash (Node ≥ 20.12) is about twice as fast as createHash for tiny inputs. */
function digest(hash: HashAlgorithm, data: Buffer): Buffer {
  const oneShot = (nodeCrypto() as unknown as { hash?: OneShotHash }).hash;
  return oneShot ? oneShot(hash, data, 'buffer') : nodeCrypto().createHash(hash).update(data).digest();
}

class Diffuser {
  private readonly h: number;
  /** [index ‖ piece], hashed in one call. */
  private readonly input: Buffer;

  constructor(private readonly hash: HashAlgorithm) {
    this.h = digestBytes(hash);
    this.input = Buffer.alloc(4 + this.h);
  }

  /** d := H(0‖d[0..h)) ‖ H(1‖d[h..2h)) ‖ …, the last piece truncated to what is left. */
  diffuse(d: Buffer): void {
    for (let i = 0, at = 0; at < d.length; i++, at += this.h) {
      const len = Math.min(this.h, d.length - at);
      this.input.writeUInt32BE(i, 0);
      d.copy(this.input, 4, at, at + len);
      const out = digest(this.hash, this.input.subarray(0, 4 + len));
      out.copy(d, at, 0, len);
      wipeBuffers(out);
    }
  }

  wipe(): void {
    this.input.fill(0);
  }
}

function xorInto(dst: Buffer, a: Buffer, b: Buffer): void {
  for (let i = 0; i < dst.length; i++) dst[i] = a[i] ^ b[i];
}

const yieldToEventLoop = () => new Promise<void>(resolve => setImmediate(resolve));

/** d := diffuse(d ⊕ stripe) for stripes 0 … stripes−2 of `split`, yielding now and then. */
async function diffuseStripes(hash: HashAlgorithm, n: number, stripes: number, split: Buffer, d: Buffer): Promise<void> {
  const diffuser = new Diffuser(hash);
  let slice = performance.now();
  try {
    for (let i = 0; i < stripes - 1; i++) {
      xorInto(d, d, split.subarray(i * n, (i + 1) * n));
      diffuser.diffuse(d);
      if (performance.now() - slice > SLICE_MS) {
        await yieldToEventLoop();
        slice = performance.now();
      }
    }
  } finally {
    diffuser.wipe();
  }
}

/** Joins `stripes` blocks of `keyBytes` bytes back into the key (a new buffer the caller wipes). */
export async function afMerge(hash: HashAlgorithm, keyBytes: number, stripes: number, split: Buffer): Promise<Buffer> {
  if (split.length < keyBytes * stripes) throw new RangeError(`AF-merge needs ${keyBytes * stripes} bytes, got ${split.length}`);
  const d = Buffer.alloc(keyBytes);
  try {
    await diffuseStripes(hash, keyBytes, stripes, split, d);
    const key = Buffer.alloc(keyBytes);
    xorInto(key, d, split.subarray((stripes - 1) * keyBytes, stripes * keyBytes));
    return key;
  } finally {
    wipeBuffers(d);
  }
}

/** Splits `key` into `stripes` blocks (random except the last), the inverse of afMerge. */
export async function afSplit(hash: HashAlgorithm, key: Buffer, stripes: number): Promise<Buffer> {
  const n = key.length;
  const out = nodeCrypto().randomBytes(n * stripes);
  const d = Buffer.alloc(n);
  try {
    await diffuseStripes(hash, n, stripes, out, d);
    xorInto(out.subarray((stripes - 1) * n), d, key);
    return out;
  } finally {
    wipeBuffers(d);
  }
}
