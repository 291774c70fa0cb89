/**
 * Compression worker for compaction: compresses clusters with zlib (raw deflate, 4 KiB window, as
 * QEMU writes them) or zstd (level 3 as QEMU's default; Node's own where it has it, else
 * WebAssembly: qcow2/compress.ts loadZstd). One message is a batch of clusters; the reply holds
 * each cluster's compressed bytes, or length -1 when the result would not be smaller than the
 * cluster (it is then stored uncompressed, as QEMU does).
 */
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { parentPort } from 'node:worker_threads';
import { compressClusterZlib, loadZstd, nativeZstd } from '../../qcow2/compress';

export interface CompressRequest {
  id: number;
  type: 'zlib' | 'zstd';
  clusterSize: number;
  data: ArrayBuffer; // n clusters back to back
}
export interface CompressReply {
  id: number;
  lengths: number[]; // -1: incompressible
  data: ArrayBuffer;
  error?: string;
}

// one load shared by every message: batches arrive while the first is still loading the encoder
let zstdLoad: Promise<(b: Uint8Array) => Uint8Array> | null = null;

/** The parts of the zstd-wasm module (libzstd built by Emscripten) the encoder below calls. */
interface ZstdModule {
  HEAPU8: Uint8Array;
  _malloc(n: number): number;
  _free(p: number): void;
  _ZSTD_createCCtx(): number;
  _ZSTD_compressBound(n: number): number;
  _ZSTD_compress_usingDict(cctx: number, dst: number, cap: number, src: number, n: number, dict: number, dictSize: number, level: number): number;
  _ZSTD_isError(code: number): number;
}

/**
 * The WebAssembly fallback with one compression context and one pair of buffers reused for every
 * cluster: the package's compress() creates and frees a context (its tables cleared) and two
 * buffers per call, a third of its time on 64 KiB clusters. ZSTD_compress_usingDict with no
 * dictionary is what ZSTD_compress does with its own context, so the frames are byte-identical.
 */
async function wasmZstd(): Promise<(b: Uint8Array) => Uint8Array> {
  const req = createRequire(__filename);
  const main = req.resolve('@bokuweb/zstd-wasm');
  const z = req(main) as { init(): Promise<void> };
  await z.init();
  // the package's own Module (its exports map hides the file; required by path, the same instance)
  const M = (req(path.join(path.dirname(main), 'module.js')) as { Module: ZstdModule }).Module;
  const cctx = M._ZSTD_createCCtx();
  let cap = 0, bound = 0, src = 0, dst = 0;
  return (input: Uint8Array) => {
    if (input.length > cap) {
      if (cap) { M._free(src); M._free(dst); }
      cap = input.length;
      bound = M._ZSTD_compressBound(cap);
      src = M._malloc(cap);
      dst = M._malloc(bound);
    }
    M.HEAPU8.set(input, src); // HEAPU8 is re-read each time: a grown memory replaces it
    const n = M._ZSTD_compress_usingDict(cctx, dst, bound, src, input.length, 0, 0, 3);
    if (M._ZSTD_isError(n)) throw new Error(`zstd compression failed (code ${n})`);
    return M.HEAPU8.slice(dst, dst + n);
  };
}

async function compressBatch(m: CompressRequest): Promise<void> {
  try {
    const zstd = m.type === 'zstd' ? await (zstdLoad ??= nativeZstd() ? loadZstd() : wasmZstd()) : null;
    const input = Buffer.from(m.data);
    const n = input.length / m.clusterSize;
    const outs: Uint8Array[] = [];
    const lengths: number[] = [];
    for (let i = 0; i < n; i++) {
      const c = input.subarray(i * m.clusterSize, (i + 1) * m.clusterSize);
      const o = m.type === 'zstd' ? zstd!(c) : compressClusterZlib(c);
      if (o.length >= m.clusterSize) lengths.push(-1);
      else { lengths.push(o.length); outs.push(o); }
    }
    // gathered straight into the buffer that is moved to the parent (one copy)
    const ab = new ArrayBuffer(outs.reduce((a, o) => a + o.length, 0));
    const u8 = new Uint8Array(ab);
    let at = 0;
    for (const o of outs) { u8.set(o, at); at += o.length; }
    parentPort!.postMessage({ id: m.id, lengths, data: ab } satisfies CompressReply, [ab]);
  } catch (e) {
    parentPort!.postMessage({ id: m.id, lengths: [], data: new ArrayBuffer(0), error: (e as Error).message } satisfies CompressReply);
  }
}

// compressBatch answers every message itself, failures included
parentPort!.on('message', (m: CompressRequest) => { void compressBatch(m); });
