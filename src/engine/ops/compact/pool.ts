/**
 * The compression workers (compress.worker.ts) and the memory they work in: a fixed ring of slots,
 * each a shared buffer of an input half and an output half, allocated once and handed to every
 * worker at start. A producer takes a free slot (acquire: it waits while every slot is busy, the
 * pipeline's backpressure), fills its input, has it compressed (the worker writes into the
 * output), writes from both halves and gives the slot back once those writes are done (release).
 * Nothing is allocated or copied per batch, so the memory of a compressed copy is the ring's, at
 * any size of disk.
 */
import { Worker } from 'node:worker_threads';
import { workerFile } from '../../io/workerFile';
import type { CompressInit, CompressRequest, SlotReply } from './compress.worker';

/** Bytes of a slot's input (and of its output): a batch of clusters (one cluster if larger). */
export const SLOT_BYTES = 1024 * 1024;
/** Slots per worker: one compressing, one filled and waiting for it; plus those being read and written. */
const SLOTS_PER_WORKER = 2;
const SLOTS_EXTRA = 2;

/** A worker's heap, MiB: what it holds at once is one request's few objects. */
const WORKER_YOUNG_MB = 1;
const WORKER_OLD_MB = 32;

/** The result of compress / compressClusters: each cluster's compressed length (-1: incompressible), the bytes back to back. */
export interface CompressReply {
  lengths: number[];
  data: ArrayBuffer;
}

export interface Slot {
  readonly index: number;
  /** The clusters to compress go here (SLOT_BYTES or one cluster, whichever is larger). */
  readonly input: Buffer;
  /** The compressed clusters, back to back, once compressSlot resolves. */
  readonly output: Buffer;
}

export class CompressPool {
  private workers: Worker[] = [];
  private waiting = new Map<number, { resolve(r: SlotReply): void; reject(e: Error): void }>();
  private next = 0;
  private rr = 0;
  private readonly slots: Slot[] = [];
  private free: Slot[] = [];
  private queue: ((s: Slot) => void)[] = [];
  private failed: Error | null = null;
  readonly slotBytes: number;
  constructor(readonly type: 'zlib' | 'zstd', n = 2, clusterSize = 0) {
    const file = workerFile('compress', 'compression');
    this.slotBytes = Math.max(SLOT_BYTES, clusterSize);
    const sabs: SharedArrayBuffer[] = [];
    for (let i = 0; i < n * SLOTS_PER_WORKER + SLOTS_EXTRA; i++) {
      const sab = new SharedArrayBuffer(2 * this.slotBytes);
      sabs.push(sab);
      this.slots.push({ index: i, input: Buffer.from(sab, 0, this.slotBytes), output: Buffer.from(sab, this.slotBytes, this.slotBytes) });
    }
    this.free = [...this.slots];
    const init: CompressInit = { type, slots: sabs, slotBytes: this.slotBytes };
    for (let i = 0; i < n; i++) {
      const w = new Worker(file, { workerData: init, resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_MB, maxOldGenerationSizeMb: WORKER_OLD_MB } });
      w.on('message', (r: SlotReply) => {
        const p = this.waiting.get(r.id);
        this.waiting.delete(r.id);
        if (r.error) p?.reject(new Error(r.error));
        else p?.resolve(r);
      });
      w.on('error', e => {
        this.failed = e;
        for (const p of this.waiting.values()) p.reject(e);
        this.waiting.clear();
      });
      this.workers.push(w);
    }
  }

  get slotCount(): number { return this.slots.length; }
  /** A free slot; waits (first come, first served) while all are in use. */
  acquire(): Promise<Slot> {
    const s = this.free.pop();
    if (s) return Promise.resolve(s);
    return new Promise(resolve => this.queue.push(resolve));
  }
  /** Gives a slot back: to the longest waiting acquire, else to the free list. */
  release(s: Slot): void {
    const q = this.queue.shift();
    if (q) q(s);
    else this.free.push(s);
  }

  /**
   * Compresses the clusters `clusters` (indices, in clusters) of the slot's input; their
   * compressed bytes land back to back in its output. Resolves to each one's length (-1: not smaller).
   */
  compressSlot(s: Slot, clusterSize: number, clusters: number[]): Promise<number[]> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.next++;
    return new Promise<SlotReply>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.workers[this.rr++ % this.workers.length].postMessage({ id, slot: s.index, clusterSize, clusters } satisfies CompressRequest);
    }).then(r => r.lengths);
  }

  /** Compresses the clusters of `data` (back to back). */
  compress(data: Buffer, clusterSize: number): Promise<CompressReply> {
    const list: Buffer[] = [];
    for (let at = 0; at < data.length; at += clusterSize) list.push(data.subarray(at, at + clusterSize));
    return this.compressClusters(list, clusterSize);
  }

  /**
   * Compresses `clusters` through the slots (as many at once as there are workers); the result is
   * gathered into one new buffer. For callers that keep the compressed bytes past the call.
   */
  async compressClusters(clusters: readonly Buffer[], clusterSize: number): Promise<CompressReply> {
    const per = Math.max(1, Math.floor(this.slotBytes / clusterSize));
    const parts: Promise<{ lengths: number[]; bytes: Buffer }>[] = [];
    for (let from = 0; from < clusters.length; from += per) {
      const group = clusters.slice(from, from + per);
      parts.push((async () => {
        const s = await this.acquire();
        try {
          group.forEach((b, i) => b.copy(s.input, i * clusterSize));
          const lengths = await this.compressSlot(s, clusterSize, group.map((_, i) => i));
          const n = lengths.reduce((a, l) => a + Math.max(0, l), 0);
          return { lengths, bytes: Buffer.from(s.output.subarray(0, n)) };
        } finally { this.release(s); }
      })());
    }
    const done = await Promise.all(parts);
    const data = new ArrayBuffer(done.reduce((a, d) => a + d.bytes.length, 0));
    const u8 = new Uint8Array(data);
    let at = 0;
    for (const d of done) { u8.set(d.bytes, at); at += d.bytes.length; }
    return { lengths: done.flatMap(d => d.lengths), data };
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map(w => w.terminate()));
  }
}
