/**
 * Compressed clusters: zlib (raw deflate, window 4 KiB as QEMU writes it) and zstd.
 * zstd is Node's own (libzstd inside node:zlib, `zstdCompressSync`/`zstdDecompressSync`, Node ≥
 * 22.15 and so recent VS Code extension hosts) where the running Node has it, detected at run
 * time; otherwise decompression uses fzstd (a small, dependency-free, maintained pure-JS decoder)
 * and compression a WebAssembly build of libzstd. QCOW2_LENS_ZSTD=wasm forces the fallbacks (for
 * tests and comparisons). Each output is bounded to one cluster.
 */
import { nodeZlib } from '../builtins';
import { decompress as zstdDecompress } from 'fzstd';
import { COMPRESSION_ZSTD } from './layout';

export class DecompressError extends Error {}

/** The zstd half of node:zlib (Node ≥ 22.15); absent from older Nodes and from @types/node 20. */
interface NativeZstd {
  zstdCompressSync(input: Uint8Array, opts?: { params?: Record<number, number> }): Buffer;
  zstdDecompressSync(input: Uint8Array, opts?: { maxOutputLength?: number }): Buffer;
  constants: { ZSTD_c_compressionLevel: number };
}

/** Node's own zstd, when the running Node has it and QCOW2_LENS_ZSTD does not ask for the fallbacks. */
export function nativeZstd(): NativeZstd | null {
  if (process.env.QCOW2_LENS_ZSTD === 'wasm') return null;
  const z = nodeZlib() as unknown as Partial<NativeZstd>;
  return typeof z.zstdCompressSync === 'function' && typeof z.zstdDecompressSync === 'function' && typeof z.constants?.ZSTD_c_compressionLevel === 'number' ? z as NativeZstd : null;
}

/** Which zstd implementation this process uses: 'native' (node:zlib) or 'wasm' (fzstd / zstd-wasm). */
export function zstdImplementation(): 'native' | 'wasm' {
  return nativeZstd() ? 'native' : 'wasm';
}

export function decompressCluster(type: number, input: Uint8Array, clusterSize: number): Buffer {
  if (type === COMPRESSION_ZSTD) return decompressZstd(input, clusterSize);
  let out: Buffer;
  try {
    out = nodeZlib().inflateRawSync(input, { finishFlush: nodeZlib().constants.Z_SYNC_FLUSH, maxOutputLength: clusterSize });
  } catch (e) {
    throw new DecompressError(`zlib data is invalid (${(e as Error).message})`);
  }
  if (out.length !== clusterSize) throw new DecompressError(`zlib data inflates to ${out.length} bytes, expected ${clusterSize}`);
  return out;
}

/** The length of the first zstd frame in `buf` (compressed clusters are followed by unrelated bytes). */
export function zstdFrameLength(buf: Uint8Array): number {
  if (buf.length < 6 || buf[0] !== 0x28 || buf[1] !== 0xb5 || buf[2] !== 0x2f || buf[3] !== 0xfd) {
    throw new DecompressError('zstd frame magic missing');
  }
  const fhd = buf[4];
  const fcsFlag = fhd >> 6, singleSegment = (fhd >> 5) & 1, checksum = (fhd >> 2) & 1, dictIdFlag = fhd & 3;
  let pos = 5;
  if (!singleSegment) pos += 1;
  pos += [0, 1, 2, 4][dictIdFlag];
  pos += [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag];
  for (;;) {
    if (pos + 3 > buf.length) throw new DecompressError('zstd block header past the end of the compressed data');
    const bh = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16);
    const last = bh & 1, type = (bh >> 1) & 3, size = bh >>> 3;
    pos += 3 + (type === 1 ? 1 : size);
    if (type === 3) throw new DecompressError('zstd reserved block type');
    if (last) break;
  }
  if (checksum) pos += 4;
  if (pos > buf.length) throw new DecompressError('zstd frame runs past the end of the compressed data');
  return pos;
}

function decompressZstd(input: Uint8Array, clusterSize: number): Buffer {
  const frame = input.subarray(0, zstdFrameLength(input));
  const native = nativeZstd();
  if (native) {
    let r: Buffer;
    try {
      r = native.zstdDecompressSync(frame, { maxOutputLength: clusterSize });
    } catch (e) {
      throw new DecompressError(`zstd data is invalid (${(e as Error).message})`);
    }
    if (r.length !== clusterSize) throw new DecompressError(`zstd data decompresses to ${r.length} bytes, expected ${clusterSize}`);
    return r;
  }
  const out = Buffer.alloc(clusterSize);
  let res: Uint8Array;
  try {
    res = zstdDecompress(frame, out);
  } catch (e) {
    throw new DecompressError(`zstd data is invalid (${(e as Error).message})`);
  }
  if (res.length !== clusterSize) throw new DecompressError(`zstd data decompresses to ${res.length} bytes, expected ${clusterSize}`);
  return Buffer.from(res.buffer, res.byteOffset, res.length);
}

// ── compression (write paths: compaction) ──

/** zlib as QEMU writes it: raw deflate, default level, 4 KiB window (QEMU inflates with 12 window bits). */
export function compressClusterZlib(input: Uint8Array): Buffer {
  return nodeZlib().deflateRawSync(input, { level: 6, windowBits: 12, memLevel: 9 });
}

/**
 * A zstd encoder at level 3 (QEMU's default): Node's own where it has one; otherwise (Node 20)
 * @bokuweb/zstd-wasm, a WebAssembly build of libzstd with no native binary and no install script,
 * loaded on first use.
 */
export async function loadZstd(): Promise<(input: Uint8Array) => Uint8Array> {
  const native = nativeZstd();
  if (native) {
    const params = { [native.constants.ZSTD_c_compressionLevel]: 3 };
    return (input: Uint8Array) => native.zstdCompressSync(input, { params });
  }
  // Loaded from node_modules at run time, not bundled: the package reads its .wasm next to itself.
  const { createRequire } = await import('node:module');
  const req = createRequire(__filename);
  const z = req('@bokuweb/zstd-wasm') as { init(): Promise<void>; compress(b: Uint8Array, level?: number): Uint8Array };
  await z.init();
  return (input: Uint8Array) => z.compress(input, 3);
}
