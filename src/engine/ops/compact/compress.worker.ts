/**
 * Compression worker for compaction and convert -c: compresses clusters with zlib (raw deflate,
 * 4 KiB window, as QEMU writes them) or zstd (level 3 as QEMU's default; Node's own where it has
 * it, else WebAssembly: qcow2/compress.ts loadZstd).
 *
 * Memory: the pool's slots (pool.ts) are shared memory handed over once, at start; a request
 * names a slot and the clusters of its input half to compress, and the worker writes the
 * compressed bytes back to back into the slot's output half. Nothing is allocated per batch or per
 * cluster: one compression context is reused for every cluster (reset between them), and where
 * Node lets it, it writes straight into the slot. The reply holds each cluster's compressed
 * length, or -1 when the result would not be smaller than the cluster (it is then stored
 * uncompressed, as QEMU does).
 */
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import * as zlib from 'node:zlib';
import { compressClusterZlib, loadZstd, nativeZstd, zstdFrameLength } from '../../qcow2/compress';

export interface CompressInit {
  type: 'zlib' | 'zstd';
  /** One shared buffer per slot: input half, then output half, `slotBytes` each. */
  slots: SharedArrayBuffer[];
  slotBytes: number;
}
export interface CompressRequest {
  id: number;
  slot: number;
  clusterSize: number;
  /** The clusters to compress: indices (in clusters) into the slot's input half. */
  clusters: number[];
}
export interface SlotReply {
  id: number;
  lengths: number[]; // -1: incompressible
  error?: string;
}

/**
 * Compresses `input` into `out` (out.length >= input.length); returns the compressed length, or
 * -1 when it would not be smaller than the input.
 */
type Encoder = (input: Uint8Array, out: Uint8Array) => number;

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
async function wasmZstd(): Promise<Encoder> {
  const req = createRequire(__filename);
  const main = req.resolve('@bokuweb/zstd-wasm');
  const z = req(main) as { init(): Promise<void> };
  await z.init();
  // the package's own Module (its exports map hides the file; required by path, the same instance)
  const M = (req(path.join(path.dirname(main), 'module.js')) as { Module: ZstdModule }).Module;
  const cctx = M._ZSTD_createCCtx();
  let cap = 0, bound = 0, src = 0, dst = 0;
  return (input, out) => {
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
    if (n >= input.length) return -1;
    out.set(M.HEAPU8.subarray(dst, dst + n));
    return n;
  };
}

/** A one-shot encoder (a context per call, the result copied): where the reused context is not available. */
function oneShot(f: (b: Uint8Array) => Uint8Array): Encoder {
  return (input, out) => {
    const o = f(input);
    if (o.length >= input.length) return -1;
    out.set(o);
    return o.length;
  };
}

/** The stream handle under a node:zlib object: Node's own interface for its sync calls (not public). */
interface ZHandle { writeSync(flush: number, i: Uint8Array, io: number, il: number, o: Uint8Array, oo: number, ol: number): void; reset(): void }

/**
 * One node:zlib compression context reused for every cluster, writing into the slot: each cluster
 * is one whole stream (finished, then the context reset), as the one-shot call makes it. This
 * reaches under the public interface (the handle that zlib's own deflateRawSync drives, with the
 * same arguments), so it is used only when it is there and, checked on sample clusters at start,
 * gives byte for byte what the one-shot call gives; else the one-shot call it is.
 */
function reusedContext(make: () => zlib.Zlib, finish: number, ref: (b: Uint8Array) => Uint8Array, whole: (b: Uint8Array) => boolean): Encoder {
  const fallback = oneShot(ref);
  const failed: { e: Error | null } = { e: null }; // set by the stream's 'error' event, inside writeSync
  let h: ZHandle | undefined, state: Uint32Array | undefined;
  try {
    const s = make() as unknown as { _handle?: ZHandle; _writeState?: unknown; on(e: 'error', f: (e: Error) => void): void };
    s.on('error', e => { failed.e = e; });
    h = s._handle;
    state = s._writeState instanceof Uint32Array ? s._writeState : undefined;
  } catch { return fallback; }
  if (!h || typeof h.writeSync !== 'function' || typeof h.reset !== 'function' || !state || state.length < 2) return fallback;
  const handle = h, st = state;
  const enc: Encoder = (input, out) => {
    failed.e = null;
    handle.writeSync(finish, input, 0, input.length, out, 0, input.length);
    const availOut = st[0];
    handle.reset();
    const e = failed.e as Error | null; // (assigned inside writeSync, which the checker cannot see)
    if (e) throw e;
    // with room left the stream is finished; a full output is a result not smaller than the input
    if (availOut === 0) return -1;
    const n = input.length - availOut;
    // a stream that is not whole would be a corrupt cluster: never written, recompressed one-shot
    return whole(out.subarray(0, n)) ? n : fallback(input, out);
  };
  // the check at start: text-like, constant and random clusters, each twice (the reset in between)
  const cs = 65536;
  const samples = [Buffer.alloc(cs, 'qcow2 cluster refcount 0123456789 '), Buffer.alloc(cs, 7), Buffer.from(Array.from({ length: cs }, (_, i) => (i * 2654435761) >>> 24))];
  const out = Buffer.alloc(cs), want = Buffer.alloc(cs);
  try {
    for (const s of [...samples, ...samples]) {
      const n = enc(s, out), m = fallback(s, want);
      if (n !== m || (n > 0 && !out.subarray(0, n).equals(want.subarray(0, m)))) return fallback;
    }
  } catch { return fallback; }
  return enc;
}

async function makeEncoder(type: 'zlib' | 'zstd'): Promise<Encoder> {
  if (type === 'zlib') {
    return reusedContext(() => zlib.createDeflateRaw({ level: 6, windowBits: 12, memLevel: 9 }), zlib.constants.Z_FINISH, compressClusterZlib, () => true);
  }
  const native = nativeZstd();
  if (!native) return wasmZstd();
  const one = await loadZstd();
  const z = zlib as unknown as { createZstdCompress?(o: object): zlib.Zlib; constants: Record<string, number> };
  if (typeof z.createZstdCompress !== 'function' || typeof z.constants.ZSTD_e_end !== 'number') return oneShot(one);
  const whole = (b: Uint8Array) => { try { return zstdFrameLength(b) === b.length; } catch { return false; } };
  return reusedContext(() => z.createZstdCompress!({ params: { [native.constants.ZSTD_c_compressionLevel]: 3 } }), z.constants.ZSTD_e_end, one, whole);
}

const init = workerData as CompressInit;
const inputs = init.slots.map(s => new Uint8Array(s, 0, init.slotBytes));
const outputs = init.slots.map(s => new Uint8Array(s, init.slotBytes, init.slotBytes));
// one encoder for every message: requests arrive while it is still loading
const encoder = makeEncoder(init.type);
encoder.catch(() => undefined); // each request reports it

async function compressSlot(m: CompressRequest): Promise<void> {
  try {
    const enc = await encoder;
    const input = inputs[m.slot], output = outputs[m.slot], cs = m.clusterSize;
    const lengths: number[] = [];
    let at = 0;
    for (const i of m.clusters) {
      const n = enc(input.subarray(i * cs, (i + 1) * cs), output.subarray(at, at + cs));
      lengths.push(n);
      if (n > 0) at += n;
    }
    parentPort!.postMessage({ id: m.id, lengths } satisfies SlotReply);
  } catch (e) {
    parentPort!.postMessage({ id: m.id, lengths: [], error: (e as Error).message } satisfies SlotReply);
  }
}

// compressSlot answers every message itself, failures included
parentPort!.on('message', (m: CompressRequest) => { void compressSlot(m); });
