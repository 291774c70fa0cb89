/** The compression workers (compress.worker.ts), fed batches of clusters round-robin. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { Qcow2Error } from '../../errors';
import type { CompressReply, CompressRequest } from './compress.worker';

/**
 * A worker's heap, MiB: its garbage is per-cluster output buffers (their bytes outside the heap),
 * collected sooner in a small heap (peak RSS of a native-zstd compaction of 1 GiB: 388 -> ~290
 * MiB) at no cost in CPU time; what it holds at once is one batch's objects, far below either.
 */
const WORKER_YOUNG_MB = 1;
const WORKER_OLD_MB = 64;

export class CompressPool {
  private workers: Worker[] = [];
  private waiting = new Map<number, { resolve(r: CompressReply): void; reject(e: Error): void }>();
  private next = 0;
  private rr = 0;
  constructor(readonly type: 'zlib' | 'zstd', n = 2) {
    const file = workerPath();
    for (let i = 0; i < n; i++) {
      const w = new Worker(file, { resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_MB, maxOldGenerationSizeMb: WORKER_OLD_MB } });
      w.on('message', (r: CompressReply) => {
        const p = this.waiting.get(r.id);
        this.waiting.delete(r.id);
        if (r.error) p?.reject(new Error(r.error));
        else p?.resolve(r);
      });
      w.on('error', e => { for (const p of this.waiting.values()) p.reject(e); this.waiting.clear(); });
      this.workers.push(w);
    }
  }
  /** Compresses the clusters of `data` (back to back); the buffer's bytes are copied once and moved to the worker. */
  compress(data: Buffer, clusterSize: number): Promise<CompressReply> {
    return this.compressClusters([data], clusterSize);
  }
  /** Compresses `clusters`, gathered into one transferred buffer (one copy, none of them kept). */
  compressClusters(clusters: readonly Buffer[], clusterSize: number): Promise<CompressReply> {
    const id = this.next++;
    const ab = new ArrayBuffer(clusters.reduce((a, b) => a + b.length, 0));
    const u8 = new Uint8Array(ab);
    let at = 0;
    for (const b of clusters) { u8.set(b, at); at += b.length; }
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.workers[this.rr++ % this.workers.length].postMessage({ id, type: this.type, clusterSize, data: ab } satisfies CompressRequest, [ab]);
    });
  }
  async close(): Promise<void> {
    await Promise.all(this.workers.map(w => w.terminate()));
  }
}

/** The built worker: next to this bundle, or in the package's dist/ when running from dist-test/. */
function workerPath(): string {
  const candidates = [path.join(__dirname, 'compress.worker.js')];
  for (let d = __dirname; path.dirname(d) !== d; d = path.dirname(d)) {
    candidates.push(path.join(d, 'dist', 'compress.worker.js'));
    if (fs.existsSync(path.join(d, 'package.json'))) break;
  }
  const hit = candidates.find(p => fs.existsSync(p));
  if (!hit) throw new Qcow2Error('compress.worker.js', 'file', undefined, 'the compression worker is not built (run node build.mjs)', 'io');
  return hit;
}
