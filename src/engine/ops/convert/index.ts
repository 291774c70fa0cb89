/**
 * `qemu-img convert`: a deep copy of one or more source images (concatenated) into a new image of
 * any of qcow2, raw, vpc (VHD) and vmdk. The whole backing chain is read through; the output is
 * standalone unless a backing file is given (-B), and then only what the sources' top layers
 * allocate is copied (qemu-img's BLK_BACKING_FILE ranges stay unallocated). Internal snapshots,
 * bitmaps and the rest of the source's metadata are not copied, as qemu-img convert does not.
 *
 *   source.ts   the sources, their chain read through, the -B top-layer view
 *   options.ts  the output format's -o options and qemu-img's refusals
 *   qcow2.ts    guest data into a new qcow2 image through create's allocator model
 *   (formats/)  raw, VHD and VMDK writers
 *
 * Durability and write order:
 *  new output (the default): everything is written to a temporary file beside the destination,
 *    which no reader sees; it is synced once, renamed over the destination, and the folder synced.
 *    A crash or a cancellation leaves the destination as it was (the temporary file is removed on
 *    failure; a killed run's stays behind as a dot-file). The sources are only read.
 *  -n (write into an existing target): into.ts — qcow2 in place in commit's phase order (data,
 *    refcounts, L2, L1; synced between), raw in place front to back, vpc and vmdk rewritten whole
 *    through a temporary file; the order and the crash guarantee of each are at the top of into.ts.
 *  -l SNAPSHOT: the first source read through its snapshot's L1 table (snapshotSource.ts).
 * Every write passes the crash hook (QCOW2_LENS_CRASH_AFTER_WRITES, writable.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { throwIfCancelled } from '../../cancel';
import { Qcow2Error } from '../../errors';
import { FileSink, writeRaw, writeVmdk, writeVpc } from '../../formats';
import type { BlockLayer, ImageSink, ImageSource } from '../../formats/layer';
import { isZero, writtenRanges } from '../../formats/copy';
import { backingSize, formatQcow2 } from '../create/create';
import { FileDisk, TempOutput } from '../create/disk';
import { OptionError, type OptionEntry, type Qcow2CreateOptions } from '../options';
import { assertNotLocked, beforeWrite } from '../writable';
import { CompressPool, type Slot } from '../compact/pool';
import { checkMinSparse, type OutputPlan, planOutput } from './options';
import { MAX_INFLIGHT, PipelinedDisk } from './pipelinedDisk';
import { BufferRing } from '../../io/bufferRing';
import { Qcow2Writer } from './qcow2';
import type { DataCipher } from '../../crypto/dataCipher';
import type { Secret } from '../../crypto/secret';
import type { KeyLookup } from '../../image/encryption';
import { intoForeign, intoQcow2, type IntoQcow2Job, intoRaw } from './into';
import { loadSnapshot, parseSnapshotArg, SnapshotArgError, type SnapshotSelector } from './snapshotSource';
import { type ConvertSource, openSources, type SourceFormat, type TopKind } from './source';

export type { OutputFormat, OutputPlan } from './options';
export type { SourceFormat } from './source';
export { planOutput } from './options';

export interface ConvertOptions {
  /** SRC...: concatenated in order. */
  sources: readonly string[];
  /** -f (default: probed). */
  sourceFormat?: SourceFormat;
  /** DST. */
  output: string;
  /** -O (default raw, as qemu-img). */
  outputFormat?: string;
  /** -o, as key=value entries in order. */
  options?: readonly OptionEntry[];
  /** -c. */
  compress?: boolean;
  /** -B and -F. */
  backing?: string;
  backingFormat?: string;
  /** -n: the target exists; write into it instead of creating it (qcow2, raw, vpc, vmdk). */
  noCreate?: boolean;
  /** -l: read the first source as of this internal snapshot (qemu-img's `snapshot.id=`/`snapshot.name=` forms or a bare NAME). */
  snapshot?: string;
  /** --target-is-zero (with -n): the target reads as zeros, zero ranges need not be written. */
  targetIsZero?: boolean;
  /** -S in bytes (default 4096; 0 = fully allocated output). */
  minSparse?: number;
  /** -U: read sources a running QEMU holds. */
  forceShare?: boolean;
  /** Passphrases of each source's encrypted layers, by source index (--image-opts encrypt.key-secret). */
  sourceKeys?: readonly (KeyLookup | undefined)[];
  /** The passphrase -o encrypt.key-secret names, for an encrypted qcow2 output (resolved by the caller). */
  encryptSecret?: Secret;
}

export interface ConvertResult {
  output: string;
  format: OutputPlan['format'];
  /** The sources' total virtual size. */
  virtualSize: number;
  /** Guest bytes written as data (zeros skipped). */
  dataBytes: number;
}

export type ConvertProgress = (done: number, total: number) => void;

/** Status asked (and classified) this much at a time; a multiple of every cluster size. */
const SPAN = 32 * 1024 * 1024;
/** Data read and written (and compressed) this much at a time. */
const WINDOW = 8 * 1024 * 1024;
/** qemu-img convert's request size (IO_BUF_SIZE): zero detection restarts at each. */
const REQUEST = 2 * 1024 * 1024;

function optionError(file: string, e: unknown): unknown {
  return e instanceof OptionError ? new Qcow2Error(file, 'options', undefined, e.message, 'unsupported') : e;
}

/**
 * Converts `options.sources` into `options.output`. `progress` gets guest bytes done and the
 * total after each window; `cancel` stops between writes (nothing is left at the destination).
 */
export async function convert(options: ConvertOptions, progress?: ConvertProgress, cancel?: AbortSignal): Promise<ConvertResult> {
  const dest = options.output;
  const minSparse = options.minSparse ?? 4096;
  let plan: OutputPlan;
  try {
    // -n: nothing is created, so -B names no file to write (qemu-img 7.2 neither opens nor records
    // it); it only says the target has a backing file: the sources' top layers alone are copied
    const into = options.noCreate ?? false;
    plan = planOutput({
      format: options.outputFormat ?? 'raw', entries: options.options ?? [],
      compress: (options.compress ?? false) && !(into && (options.outputFormat === 'qcow2' || options.outputFormat === 'vmdk')),
      backing: into ? undefined : options.backing, backingFormat: into ? undefined : options.backingFormat, minSparse,
    });
    if (options.targetIsZero && !into) throw new OptionError('--target-is-zero requires use of -n flag');
    if (into && options.targetIsZero && options.backing !== undefined) throw new OptionError('Cannot use --target-is-zero when the destination image has a backing file');
    if (minSparse === 0 && (plan.format === 'vpc' || plan.format === 'vmdk')) {
      throw new OptionError('-S 0 (a fully allocated output) is supported for raw and qcow2 outputs, not vpc or vmdk');
    }
  } catch (e) {
    throw optionError(dest, e);
  }
  if (!options.sources.length) throw new Qcow2Error(dest, 'options', undefined, 'no source image given', 'unsupported');
  let snapshot: SnapshotSelector | undefined;
  try {
    snapshot = options.snapshot === undefined ? undefined : parseSnapshotArg(options.snapshot);
  } catch (e) {
    if (e instanceof SnapshotArgError) throw new Qcow2Error(options.sources[0] ?? dest, 'options', undefined, e.message, 'unsupported');
    throw e;
  }
  if (fs.existsSync(dest)) assertNotLocked(dest);
  const src = await openSources(options.sources, { format: options.sourceFormat, forceShare: options.forceShare, keys: options.sourceKeys });
  try {
    if (snapshot) await loadSnapshot(src.layers[0], snapshot, options.sources.length);
    if (options.noCreate && src.layers.some(l => chainHas(l, dest))) {
      throw new Qcow2Error(dest, 'file', undefined, 'the target is also a source (or one of its backing files)', 'unsupported');
    }
    const ctl = { signal: cancel, onProgress: progress, name: dest };
    if (options.noCreate) {
      return await intoExisting(src, dest, plan.format, minSparse, {
        targetIsZero: options.targetIsZero ?? false, compress: options.compress ?? false, withBacking: options.backing !== undefined,
      }, ctl);
    }
    if (plan.format === 'qcow2') {
      const q = plan.qcow2;
      if (q.backingFile !== undefined) {
        try { await backingSize(dest, q.backingFile, q.backingFmt); } catch (e) { throw optionError(dest, e); }
      }
      if (q.encrypt && options.compress) throw optionError(dest, new OptionError('-c with encrypt.format is not supported: QEMU stores compressed clusters unencrypted'));
      return await toQcow2(src, dest, { ...plan.qcow2, encryptSecret: options.encryptSecret }, { compress: options.compress ?? false, minSparse, withBacking: q.backingFile !== undefined }, ctl);
    }
    return await toForeign(src, dest, plan, minSparse, ctl);
  } finally {
    await src.close();
  }
}

function chainHas(layer: BlockLayer, file: string): boolean {
  for (let l: BlockLayer | null = layer; l; l = l.backing) if (path.resolve(l.path) === path.resolve(file)) return true;
  return false;
}

/** -n: into.ts per target format (the vpc and vmdk rewrite through this file's temporary output). */
async function intoExisting(src: ConvertSource, dest: string, format: OutputPlan['format'], minSparse: number, job: IntoQcow2Job, ctl: Control): Promise<ConvertResult> {
  let r: { virtualSize: number; dataBytes: number };
  switch (format) {
    case 'raw': r = await intoRaw(src, dest, minSparse, job.targetIsZero, job.withBacking, ctl); break;
    case 'qcow2': r = await intoQcow2(src, dest, job, ctl); break;
    default: r = await intoForeign(src, dest, format, job.withBacking, ctl, write => viaTemp(dest, ctl, write)); break;
  }
  return { output: dest, format, ...r };
}

interface Control {
  signal?: AbortSignal;
  onProgress?: ConvertProgress;
  name: string;
}

/** A sink into the temporary file: every write and truncation through the crash hook and the cancel check. */
class TempSink implements ImageSink {
  private constructor(private readonly file: FileSink, private readonly ctl: Control) {}
  static async create(p: string, ctl: Control): Promise<TempSink> {
    return new TempSink(await FileSink.create(p), ctl);
  }
  async write(offset: number, data: Uint8Array): Promise<void> {
    throwIfCancelled(this.ctl.signal, this.ctl.name, 'convert');
    beforeWrite();
    await this.file.write(offset, data);
  }
  async truncate(size: number): Promise<void> {
    throwIfCancelled(this.ctl.signal, this.ctl.name, 'convert');
    beforeWrite();
    await this.file.truncate(size);
  }
  sync(): Promise<void> {
    return this.file.sync();
  }
  close(): Promise<void> {
    return this.file.close();
  }
}

/** Counts the guest bytes a writer reads as data (for the result). */
function counting(src: ImageSource, count: { n: number }): ImageSource {
  return {
    virtualSize: src.virtualSize,
    status: (s, e) => src.status(s, e),
    async readGuest(off, len) { count.n += len; return src.readGuest(off, len); },
    readGuestInto: src.readGuestInto && (async (off, len, dest, at) => { count.n += len; return src.readGuestInto!(off, len, dest, at); }),
  };
}

/** Runs `write` into a temporary file beside `dest`, then sync (by the writer), rename, folder sync. */
async function viaTemp(dest: string, ctl: Control, write: (sink: TempSink) => Promise<void>): Promise<void> {
  const out = new TempOutput(path.resolve(dest));
  const sink = await TempSink.create(out.tmp, ctl);
  try {
    await write(sink);
    await sink.close();
    throwIfCancelled(ctl.signal, dest, 'convert');
    out.commit();
  } catch (e) {
    await sink.close().catch(() => undefined);
    out.discard();
    throw e;
  }
}

async function toForeign(src: ConvertSource, dest: string, plan: Exclude<OutputPlan, { format: 'qcow2' }>, minSparse: number, ctl: Control): Promise<ConvertResult> {
  const count = { n: 0 };
  const source = counting(src, count);
  await viaTemp(dest, ctl, async sink => {
    switch (plan.format) {
      case 'raw':
        // preallocation=falloc|full: every block allocated, as a fully allocated (-S 0) copy
        await writeRaw(source, sink, ctl, dest, { minSparse: plan.preallocation === 'falloc' || plan.preallocation === 'full' ? 0 : minSparse });
        break;
      case 'vpc':
        await writeVpc(source, sink, { ...ctl, subformat: plan.subformat, forceSize: plan.forceSize, name: dest });
        break;
      case 'vmdk':
        await writeVmdk(source, sink, {
          ...ctl, subformat: plan.subformat, fileName: path.basename(dest), adapterType: plan.adapterType, hwVersion: plan.hwVersion,
          compat6: plan.compat6, toolsVersion: plan.toolsVersion, zeroedGrain: plan.zeroedGrain, name: dest,
        });
        break;
    }
  });
  return { output: dest, format: plan.format, virtualSize: src.virtualSize, dataBytes: count.n };
}

interface Qcow2Job { compress: boolean; minSparse: number; withBacking: boolean }

/** Per cluster of a span: what the output gets there. */
const enum Kind { Skip = 0, Zero = 1, Data = 2 }

/** Each cluster of [start, end) classified: data if anything in it may hold data, zero/skip otherwise. */
async function classify(src: ConvertSource, start: number, end: number, cs: number, job: Qcow2Job): Promise<Uint8Array> {
  const kinds = new Uint8Array(Math.ceil((end - start) / cs));
  const mark = (s: number, len: number, k: Kind) => {
    for (let c = Math.floor((s - start) / cs); c * cs < s - start + len; c++) if (kinds[c] < k) kinds[c] = k;
  };
  if (job.withBacking) {
    const rank: Record<TopKind, Kind> = { data: Kind.Data, zero: Kind.Zero, backing: Kind.Skip };
    for (const r of await src.topStatus(start, end)) mark(r.start, r.length, job.minSparse === 0 && r.kind !== 'backing' ? Kind.Data : rank[r.kind]);
  } else {
    for (const r of await src.status(start, end)) mark(r.start, r.length, r.zero && job.minSparse !== 0 ? Kind.Skip : Kind.Data);
  }
  return kinds;
}

interface OutputRun { kind: Kind; guest: number; len: number; span: number }

/** The runs of clusters of one kind (zero or data, at most one window each) of the output, span by span. */
async function* outputRuns(src: ConvertSource, size: number, cs: number, job: Qcow2Job, ctl: Control, dest: string): AsyncGenerator<OutputRun> {
  for (let spanStart = 0, span = 0; spanStart < size; spanStart += SPAN, span++) {
    throwIfCancelled(ctl.signal, dest, 'convert');
    const spanEnd = Math.min(size, spanStart + SPAN);
    const k = await classify(src, spanStart, spanEnd, cs, job);
    let c = 0;
    while (c < k.length) {
      if (k[c] === Kind.Skip) { c++; continue; }
      const kind = k[c];
      let e = c + 1;
      while (e < k.length && k[e] === kind && (e - c) * cs < WINDOW) e++;
      yield { kind, guest: spanStart + c * cs, len: (e - c) * cs, span };
      c = e;
    }
  }
}

/** No 512-byte sector of `buf` is all zeros (each has a non-zero byte among its first 16): qemu-img writes it whole. */
function noZeroSector(buf: Buffer): boolean {
  if (buf.length % 512) return false;
  for (let at = 0; at < buf.length; at += 512) {
    if (buf.readUInt32LE(at) === 0 && buf.readUInt32LE(at + 4) === 0 && buf.readUInt32LE(at + 8) === 0 && buf.readUInt32LE(at + 12) === 0) return false;
  }
  return true;
}

async function toQcow2(src: ConvertSource, dest: string, q: Qcow2CreateOptions & { encryptSecret?: Secret }, job: Qcow2Job, ctl: Control): Promise<ConvertResult> {
  const size = Math.ceil(src.virtualSize / 512) * 512;
  const out = new TempOutput(path.resolve(dest));
  const disk = new PipelinedDisk(FileDisk.open(out.tmp, 'w', ctl.signal), ctl.signal);
  let pool: CompressPool | null = null;
  let cipher: DataCipher | null = null;
  let dataBytes = 0;
  try {
    const m = await formatQcow2(disk, { name: dest, ...q, signal: ctl.signal }, size);
    const w = new Qcow2Writer(disk, m.rc, { size: m.size, l1Offset: m.l1Offset, l1Size: m.l1Size, l1: m.l1, extendedL2: q.extendedL2 }, q.preallocation !== 'off');
    w.cipher = m.cipher;
    cipher = m.cipher;
    const cs = w.cs;
    // a ring of window buffers, allocated once: the run being written, the one read ahead, and
    // those the disk may still be writing from (a buffer is filled again only once no write from it
    // is in flight)
    const windowRing = () => new BufferRing(MAX_INFLIGHT + 2, Math.max(WINDOW, cs), b => disk.settled(b));
    if (cipher) w.sealRing = windowRing();
    if (job.compress) pool = new CompressPool(q.compressionType, 2, cs);
    const zeroAsData = q.version < 3;
    // The runs to write, span by span; each data run's read is started one run ahead, so the
    // source is read (on libuv's threads) while the previous run is written (synchronously).
    const runs = outputRuns(src, size, cs, job, ctl, dest);
    // Data runs are read into a window ring: fresh buffers per run were freed only when the garbage
    // collector got to them, and the process grew to ~200 MiB on a 1 GiB copy.
    const ring = src.readGuestInto ? windowRing() : null;
    const readRun = (r: OutputRun | undefined): Promise<Buffer> | undefined => {
      if (!r || r.kind !== Kind.Data) return undefined;
      const avail = Math.max(0, Math.min(r.len, size - r.guest, src.virtualSize - r.guest));
      dataBytes += avail;
      if (ring && r.len <= ring.size) {
        return (async () => {
          const buf = await ring.next(r.len);
          if (avail > 0) await src.readGuestInto!(r.guest, avail, buf, 0);
          buf.fill(0, avail);
          return buf;
        })();
      }
      // the source's buffer as it is when it covers the whole run (no copy; only read from here on)
      if (avail === r.len) return src.readGuest(r.guest, r.len);
      return (async () => {
        const buf = Buffer.alloc(r.len);
        if (avail > 0) (await src.readGuest(r.guest, avail)).copy(buf);
        return buf;
      })();
    };
    let cur = (await runs.next()).value as OutputRun | undefined;
    let curData = readRun(cur);
    let span = 0;
    while (cur) {
      const next = (await runs.next()).value as OutputRun | undefined;
      const nextData = readRun(next);
      // a read started ahead must not be left unawaited when this run fails
      nextData?.catch(() => undefined);
      if (cur.span !== span) { await w.settle(); span = cur.span; }
      if (cur.kind === Kind.Zero) {
        if (zeroAsData) await w.writeData(cur.guest, Buffer.alloc(cur.len));
        else await w.writeZero(cur.guest, cur.len);
      } else {
        await writeClusters(w, pool, b => disk.settled(b), cur.guest, await curData!, job, zeroAsData);
      }
      ctl.onProgress?.(Math.min(size, cur.guest + cur.len), size);
      cur = next;
      curData = nextData;
    }
    await w.settle();
    // qemu-img's end-of-stream compressed write: the file's length rounded up to a whole sector
    if (job.compress && disk.length() % 512) await disk.truncate(Math.ceil(disk.length() / 512) * 512);
    await disk.finish();
    disk.close();
    throwIfCancelled(ctl.signal, dest, 'convert');
    out.commit();
    return { output: dest, format: 'qcow2', virtualSize: src.virtualSize, dataBytes };
  } catch (e) {
    await disk.drain().catch(() => undefined); // no write left in flight on a closed descriptor
    try { disk.close(); } catch { /* already closed */ }
    out.discard();
    throw e;
  } finally {
    cipher?.dispose();
    await pool?.close();
  }
}

/**
 * One window of data clusters: all-zero clusters skipped (-S > 0; with -B written as zero
 * clusters, as qemu-img's BLK_ZERO), the rest written — compressed one by one with -c (a
 * cluster that does not shrink is written as it is, as QEMU does).
 */
async function writeClusters(w: Qcow2Writer, pool: CompressPool | null, settled: (memory: ArrayBufferLike) => Promise<void>, guest: number, buf: Buffer, job: Qcow2Job, zeroAsData: boolean): Promise<void> {
  const cs = w.cs, n = buf.length / cs;
  const zeroCluster = async (i: number, j: number) => {
    if (!job.withBacking) return; // a new image without backing file reads as zero already
    if (zeroAsData) await w.writeData(guest + i * cs, buf.subarray(i * cs, j * cs));
    else await w.writeZero(guest + i * cs, (j - i) * cs);
  };
  if (pool) {
    // compressed clusters are written whole: skipped only when all zero
    const zero = new Uint8Array(n);
    if (job.minSparse !== 0) for (let i = 0; i < n; i++) zero[i] = isZero(buf.subarray(i * cs, (i + 1) * cs)) ? 1 : 0;
    const kept: number[] = [];
    for (let i = 0; i < n; i++) if (!zero[i]) kept.push(i);
    // Compressed in the pool's shared slots, a slot's worth of clusters each, every group started at
    // once (acquire waits while all slots are busy), then written in order straight from the slot's
    // output; a slot goes back once no write from it is in flight. Nothing is allocated per window:
    // a copy of the window and a gathered result per batch held ~100 MiB more, waiting for the GC.
    const per = Math.max(1, Math.floor(pool.slotBytes / cs));
    const groups: Promise<{ slot: Slot; lengths: number[] }>[] = [];
    for (let g = 0; g < kept.length; g += per) {
      const idx = kept.slice(g, g + per);
      const batch = (async () => {
        const slot = await pool.acquire();
        try {
          idx.forEach((c, k) => buf.copy(slot.input, k * cs, c * cs, (c + 1) * cs));
          return { slot, lengths: await pool.compressSlot(slot, cs, idx.map((_, k) => k)) };
        } catch (e) {
          pool.release(slot);
          throw e;
        }
      })();
      batch.catch(() => undefined); // awaited in order below
      groups.push(batch);
    }
    let g = -1, k = 0, at = 0;
    let cur: { slot: Slot; lengths: number[] } | null = null;
    const done = async (c: { slot: Slot }) => { try { await settled(c.slot.output.buffer); } finally { pool.release(c.slot); } };
    try {
      for (let i = 0; i < n; i++) {
        if (zero[i]) { await zeroCluster(i, i + 1); continue; }
        if (Math.floor(k / per) !== g) {
          if (cur) { const c = cur; cur = null; await done(c); }
          g = Math.floor(k / per);
          cur = await groups[g];
          at = 0;
        }
        const l = cur!.lengths[k++ % per];
        if (l < 0) await w.writeData(guest + i * cs, buf.subarray(i * cs, (i + 1) * cs));
        else { await w.writeCompressed(guest + i * cs, cur!.slot.output.subarray(at, at + l)); at += l; }
      }
      if (cur) { const c = cur; cur = null; await done(c); }
    } finally {
      // on a failure, the slots still held go back once their writes are over (the pool closes after)
      if (cur) await done(cur).catch(() => undefined);
      for (const p of groups.slice(g + 1)) await p.then(done, () => undefined).catch(() => undefined);
    }
    return;
  }
  // what qemu-img writes of each 2 MiB request (is_allocated_sectors_min); a cluster it touches is allocated
  const written = new Uint8Array(n);
  const sub = w.entrySize === 16 ? cs / 32 : cs;
  const masks = w.entrySize === 16 ? new Uint32Array(n) : undefined;
  const ranges: Array<[number, number]> = [];
  for (let c0 = 0; c0 < buf.length; c0 += REQUEST) {
    const chunk = buf.subarray(c0, Math.min(buf.length, c0 + REQUEST));
    for (const [s, e] of noZeroSector(chunk) ? [[0, chunk.length] as [number, number]] : writtenRanges(chunk, guest + c0, job.minSparse)) {
      ranges.push([c0 + s, c0 + e]);
      for (let b = c0 + s; b < c0 + e;) {
        const i = Math.floor(b / cs), end = Math.min(c0 + e, (i + 1) * cs);
        written[i] = 1;
        if (masks) for (let k = Math.floor((b - i * cs) / sub); k * sub < end - i * cs; k++) masks[i] = (masks[i] | (1 << k)) >>> 0;
        b = end;
      }
    }
  }
  let i = 0;
  while (i < n) {
    let j = i + 1;
    while (j < n && written[j] === written[i]) j++;
    if (!written[i]) await zeroCluster(i, j);
    else {
      const from = i * cs, to = j * cs;
      const within = ranges.filter(([s, e]) => e > from && s < to).map(([s, e]) => [Math.max(s, from) - from, Math.min(e, to) - from] as [number, number]);
      await w.writeData(guest + from, buf.subarray(from, to), masks?.subarray(i, j), job.withBacking, within);
    }
    i = j;
  }
}

export { checkMinSparse };
