/**
 * Compression worker for compaction: compresses clusters with zlib (raw deflate, 4 KiB window, as
 * QEMU writes them) or zstd (level 3 as QEMU's default; Node's own where it has it, else
 * WebAssembly: qcow2/compress.ts loadZstd). One message is a batch of clusters; the reply holds
 * each cluster's compressed bytes, or length -1 when the result would not be smaller than the
 * cluster (it is then stored uncompressed, as QEMU does).
 */
import { parentPort } from 'node:worker_threads';
import { compressClusterZlib, loadZstd } from '../../qcow2/compress';

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

async function compressBatch(m: CompressRequest): Promise<void> {
  try {
    const zstd = m.type === 'zstd' ? await (zstdLoad ??= loadZstd()) : null;
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
