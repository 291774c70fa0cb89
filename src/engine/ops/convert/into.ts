/**
 * `convert -n`: the target exists and is written into instead of created, as qemu-img 7.2 does:
 * opened in the -O format (default raw), refused when missing ("Could not open …") or when its
 * virtual size is smaller than the sources' ("output file is smaller than input file"); every guest
 * range of the sources is written — data, and zeros where the source reads zero (the target's old
 * bytes there are cleared), unless --target-is-zero says the target reads zeros already. What lies
 * past the sources' end in a larger target is kept.
 * -B (the target has a backing file; qemu-img 7.2 neither opens nor records the name with -n): only
 * what the sources' top layers allocate is written — their data and their zeros; the ranges they
 * leave to their backing files keep the target's content (a target cluster covered in part is
 * written whole, its other bytes read from the target first). --target-is-zero is refused with it.
 * -c (qcow2): clusters compressed into entries without a host offset (unallocated or zero), a
 * cluster that does not shrink written as it is, zeros as zeros; a compressed write over an
 * allocated cluster fails as QEMU's does ("error while writing at byte N: Input/output error"),
 * after what came before it is written. With -B, a cluster the top covers in part is copied whole
 * from the sources, as qemu-img does. vmdk takes -c (the rewrite keeps the target's subformat).
 *
 * Write order and crash safety, per target format:
 *  qcow2: in place, through commit's cluster writer (commit/clusterWrite.ts), batch by batch:
 *    1. data into clusters only the active L1 reaches (written over, as QEMU does) or into new
 *       clusters (free when the run started), synced
 *    2. refcounts of the new clusters (blocks before the table entries pointing at them)
 *    3. L2 tables (a table shared with a snapshot copied first), synced
 *    4. L1 entries of new or copied tables, synced
 *    5. the references the old entries held (compressed data, clusters shared with a snapshot)
 *       dropped and flushed
 *    The header does not change (the size is never touched). Guarantee after a SIGKILL at any
 *    write: `qemu-img check` finds at most leaked clusters, and every guest cluster reads its old
 *    content or the source's — qemu-img's convert -n gives the same per-cluster guarantee (its
 *    writes are not atomic across clusters either), with leaks possible after a crash there too.
 *    Zeros are the zero flag (version 3; a data cluster of zeros in version 2), as QEMU's
 *    write-zeroes with unmap makes them.
 *  raw: in place, front to back, the data and the zeros the target does not already hold, then one
 *    sync (a raw file has no metadata to order): each sector is old or new after a crash.
 *  vpc fixed (its data wholly before its footer): in place as raw, over the sources' sectors; the
 *    footer is never written, so after a crash the file is the same VHD with each sector old or new.
 *  vpc dynamic, vmdk: (a streamOptimized target is refused where it holds grains in the range written, as
 *    QEMU refuses to write over them) the target is read (its subformat, size, UUID / CID and the guest bytes past the
 *    sources' end) and written again whole into a temporary file beside it, with the sources' bytes
 *    over [0, source size): synced, renamed over the target, folder synced. A crash leaves the old
 *    target untouched. The guest content is qemu-img's (`qemu-img compare` equal); the file's
 *    layout is a fresh image's rather than qemu-img's in-place allocation.
 * A target a running QEMU holds is refused before it is opened for writing (writable.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { throwIfCancelled } from '../../cancel';
import { Qcow2Error } from '../../errors';
import { VmdkImage, VpcImage, writeVmdk, writeVpc } from '../../formats';
import { isZero } from '../../formats/copy';
import { type ImageSource, type SourceRun, layerSource } from '../../formats/layer';
import { Qcow2Image } from '../../image/image';
import { FOOTER_SIZE, usesCurrentSize } from '../../formats/vpc/layout';
import * as L from '../../qcow2/layout';
import { Qcow2ClusterWriter } from '../commit/clusterWrite';
import { CompressPool } from '../compact/pool';
import { assertNotLocked, beforeWrite } from '../writable';
import type { ConvertSource } from './source';

export interface IntoControl {
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
  name: string;
}

export interface IntoResult {
  virtualSize: number;
  dataBytes: number;
}

/** Status asked this much at a time; data read this much at a time. */
const SPAN = 32 * 1024 * 1024;
const WINDOW = 8 * 1024 * 1024;

function couldNotOpen(dest: string, why: string, code: Qcow2Error['code']): Qcow2Error {
  return new Qcow2Error(dest, 'file', undefined, `Could not open '${dest}': ${why}`, code);
}

function tooSmall(dest: string): Qcow2Error {
  return new Qcow2Error(dest, 'file', undefined, 'output file is smaller than input file', 'unsupported');
}

/** The sources' length as qemu-img counts it: whole sectors (a partial last sector reads as zeros past the end). */
function sectorsBytes(n: number): number {
  return Math.ceil(n / 512) * 512;
}

function assertExists(dest: string): void {
  if (!fs.existsSync(dest)) throw couldNotOpen(dest, `Could not open '${dest}': No such file or directory`, 'not-found');
}

/** The sources read with their length rounded to whole sectors (zeros after the last byte). */
function padded(src: ImageSource): ImageSource {
  const size = sectorsBytes(src.virtualSize);
  if (size === src.virtualSize) return src;
  return {
    virtualSize: size,
    async readGuest(off, len) {
      const out = Buffer.alloc(len);
      const avail = Math.min(len, src.virtualSize - off);
      if (avail > 0) (await src.readGuest(off, avail)).copy(out);
      return out;
    },
    async status(start, end) {
      const runs = start < src.virtualSize ? await src.status(start, Math.min(end, src.virtualSize)) : [];
      const tail = Math.max(start, src.virtualSize);
      if (end > tail) runs.push({ start: tail, length: end - tail, zero: true });
      return runs;
    },
  };
}

export interface IntoQcow2Job {
  /** --target-is-zero: zero ranges need not be written. */
  targetIsZero: boolean;
  /** -c: clusters compressed (only into unallocated entries, as QEMU). */
  compress: boolean;
  /** -B: only what the sources' top layers allocate is written; the rest keeps the target's content. */
  withBacking: boolean;
}

/** What the sources give a guest byte range: data to copy, zeros, or nothing (the target's own bytes stay). */
type Cover = 'data' | 'zero' | 'keep';
interface CoverRun { start: number; length: number; cover: Cover }

/**
 * -B: [start, end) of the sources' padded view by their top layers alone — their data and zeros,
 * 'keep' where they leave the range to their backing files (the target's own bytes stay there);
 * the padded last sector past the sources' end reads zero (qemu-img reads whole sectors).
 */
async function topRuns(src: ConvertSource, start: number, end: number): Promise<CoverRun[]> {
  const out: CoverRun[] = [];
  const top = Math.min(end, src.virtualSize);
  if (top > start) for (const r of await src.topStatus(start, top)) out.push({ start: r.start, length: r.length, cover: r.kind === 'backing' ? 'keep' : r.kind });
  const tail = Math.max(start, top);
  if (end > tail) out.push({ start: tail, length: end - tail, cover: 'zero' });
  return out;
}

async function coverRuns(src: ConvertSource, source: ImageSource, start: number, end: number, withBacking: boolean): Promise<CoverRun[]> {
  const e = Math.min(end, source.virtualSize);
  const out: CoverRun[] = e <= start ? []
    : withBacking ? await topRuns(src, start, e)
      : (await source.status(start, e)).map(r => ({ start: r.start, length: r.length, cover: r.zero ? 'zero' : 'data' }));
  if (end > e) out.push({ start: e, length: end - e, cover: 'keep' }); // past the sources: the target's tail
  return out;
}

const enum Has { Data = 1, Zero = 2, Keep = 4 }

export async function intoQcow2(src: ConvertSource, dest: string, job: IntoQcow2Job, ctl: IntoControl): Promise<IntoResult> {
  assertExists(dest);
  assertNotLocked(dest);
  let w: Qcow2ClusterWriter;
  try {
    w = await Qcow2ClusterWriter.open(dest, ctl.signal);
  } catch (e) {
    if (e instanceof Qcow2Error && e.code === 'not-qcow2') throw couldNotOpen(dest, 'Image is not in qcow2 format', 'not-qcow2');
    // the target's passphrase would come from --target-image-opts, which is not taken yet
    if (e instanceof Qcow2Error && e.code === 'encrypted') throw new Qcow2Error(dest, e.structure, e.hostOffset, 'converting into an existing encrypted image (-n) is not supported yet', 'unsupported');
    throw e;
  }
  let dataBytes = 0;
  let reader: Qcow2Image | null = null;
  const pool = job.compress ? new CompressPool(w.img.header.compressionType === L.COMPRESSION_ZSTD ? 'zstd' : 'zlib') : null;
  try {
    const source = padded(src);
    const size = source.virtualSize;
    if (sectorsBytes(w.virtualSize) < size) throw tooSmall(dest);
    const cs = w.cs;
    const end = Math.ceil(size / cs) * cs;
    /**
     * The target's own bytes of a cluster the sources cover only in part (its backing file's, with
     * -B): read before the cluster is written (each cluster is written once, front to back, so the
     * reader sees its old content).
     */
    const old = async (g: number): Promise<Buffer> => {
      reader ??= await Qcow2Image.open(dest, { writable: false });
      const out = Buffer.alloc(cs);
      const n = Math.min(cs, reader.virtualSize - g);
      if (n > 0) (await reader.readGuest(g, n)).copy(out);
      return out;
    };
    /** Writes the clusters of one group: compressed with -c (a cluster that does not shrink as it is, as QEMU). */
    const put = async (clusters: Array<[number, Buffer | null]>) => {
      if (!pool) {
        for (const [g, b] of clusters) await w.writeCluster(g, b);
        return;
      }
      const full = clusters.filter(c => c[1] !== null) as Array<[number, Buffer]>;
      const reply = full.length ? await pool.compressClusters(full.map(c => c[1]), cs) : { lengths: [] as number[], data: new ArrayBuffer(0) };
      const packed = Buffer.from(reply.data);
      let k = 0, at = 0;
      for (const [g, b] of clusters) {
        if (b === null) { await w.writeCluster(g, null); continue; }
        const l = reply.lengths[k++];
        if (l < 0) await w.writeCluster(g, b);
        else { await w.writeCompressed(g, packed.subarray(at, at + l)); at += l; }
      }
    };
    for (let spanStart = 0; spanStart < end; spanStart += SPAN) {
      throwIfCancelled(ctl.signal, dest, 'convert');
      const spanEnd = Math.min(end, spanStart + SPAN);
      const runs = await coverRuns(src, source, spanStart, spanEnd, job.withBacking);
      // per cluster of the span: which covers its bytes have
      const n = (spanEnd - spanStart) / cs;
      const has = new Uint8Array(n);
      for (const r of runs) {
        const bit = r.cover === 'data' ? Has.Data : r.cover === 'zero' ? Has.Zero : Has.Keep;
        for (let c = Math.floor((r.start - spanStart) / cs); c * cs < r.start + r.length - spanStart; c++) has[c] |= bit;
      }
      // -c writes whole clusters: one the top layer covers in part is copied whole from the sources
      // (qemu-img's convert_iteration_sectors takes such a cluster as data)
      if (pool && job.withBacking) {
        for (let c = 0; c < n && spanStart + (c + 1) * cs <= size; c++) if (has[c] & (has[c] - 1)) has[c] = Has.Data;
      }
      /** Is cluster c written from a read (data, or zeros beside bytes the target keeps)? */
      const fromRead = (c: number) => (has[c] & Has.Data) !== 0 || has[c] === (Has.Zero | Has.Keep);
      let c = 0;
      while (c < n) {
        const g = spanStart + c * cs;
        if (has[c] === Has.Keep) { c++; continue; }
        if (!fromRead(c)) {
          // zeros only
          if (!job.targetIsZero) await w.writeCluster(g, null);
          c++;
          continue;
        }
        let e = c + 1;
        while (e < n && fromRead(e) && (e - c) * cs < WINDOW) e++;
        const len = Math.min((e - c) * cs, size - g);
        const buf = Buffer.alloc((e - c) * cs);
        if (len > 0) (await source.readGuest(g, len)).copy(buf);
        dataBytes += len;
        const group: Array<[number, Buffer | null]> = [];
        for (let i = c; i < e; i++) {
          const at = spanStart + i * cs;
          const piece = buf.subarray((i - c) * cs, (i - c + 1) * cs);
          if (has[i] & Has.Keep) {
            // the target's bytes where the sources leave it (their backing file's part with -B, past their end)
            const mine = await old(at);
            for (const r of runs) {
              if (r.cover !== 'keep') continue;
              const s = Math.max(r.start, at), t = Math.min(r.start + r.length, at + cs);
              if (t > s) mine.copy(piece, s - at, s - at, t - at);
            }
          }
          if (isZero(piece)) {
            if (job.targetIsZero && !(has[i] & Has.Keep)) continue;
            group.push([at, null]);
          } else group.push([at, piece]);
        }
        await put(group);
        c = e;
        ctl.onProgress?.(Math.min(size, spanStart + c * cs), size);
      }
    }
    await w.flush();
    return { virtualSize: src.virtualSize, dataBytes };
  } finally {
    await pool?.close();
    if (reader) await (reader as Qcow2Image).close();
    await w.close();
  }
}

/**
 * -B: the sources where their top layers allocate (data or zeros), the target's own bytes where
 * they leave the range to their backing files (qemu-img writes nothing there).
 */
function topOver(src: ConvertSource, target: ImageSource): ImageSource {
  const source = padded(src);
  /** The target's bytes of [start, start + length), zeros past its end. */
  const mine = async (start: number, length: number): Promise<Buffer> => {
    const n = Math.min(length, target.virtualSize - start);
    if (n === length) return target.readGuest(start, length);
    const out = Buffer.alloc(length);
    if (n > 0) (await target.readGuest(start, n)).copy(out);
    return out;
  };
  return {
    virtualSize: source.virtualSize,
    async readGuest(off, len) {
      const ps = await topRuns(src, off, off + len);
      if (ps.length === 1 && ps[0].cover !== 'keep') return source.readGuest(off, len);
      const out = Buffer.alloc(len);
      for (const p of ps) (p.cover === 'keep' ? await mine(p.start, p.length) : await source.readGuest(p.start, p.length)).copy(out, p.start - off);
      return out;
    },
    async status(start, end) {
      const runs: SourceRun[] = [];
      for (const p of await topRuns(src, start, end)) {
        if (p.cover !== 'keep') { runs.push(...await source.status(p.start, p.start + p.length)); continue; }
        const e = Math.min(p.start + p.length, target.virtualSize);
        if (e > p.start) runs.push(...await target.status(p.start, e));
        if (p.start + p.length > Math.max(e, p.start)) runs.push({ start: Math.max(e, p.start), length: p.start + p.length - Math.max(e, p.start), zero: true });
      }
      return runs;
    },
  };
}

/** The target's guest view after the write: the sources over [0, their size), the target's own bytes after. */
function over(src: ImageSource, target: ImageSource): ImageSource {
  const s = src.virtualSize;
  return {
    virtualSize: target.virtualSize,
    async readGuest(off, len) {
      if (off + len <= s) return src.readGuest(off, len);
      if (off >= s) return target.readGuest(off, len);
      return Buffer.concat([await src.readGuest(off, s - off), await target.readGuest(s, off + len - s)]);
    },
    async status(start, end) {
      const runs = start < s ? await src.status(start, Math.min(end, s)) : [];
      if (end > s) runs.push(...await target.status(Math.max(start, s), end));
      return runs;
    },
  };
}

export interface RewriteSink {
  write(offset: number, data: Uint8Array): Promise<void>;
  truncate(size: number): Promise<void>;
  sync(): Promise<void>;
}

/**
 * -n into a VHD or VMDK: the target rewritten whole (see the top of this file). `viaTemp` runs the
 * writer into a temporary file beside `dest` and renames it over `dest` once synced.
 */
export async function intoForeign(
  src: ConvertSource, dest: string, format: 'vpc' | 'vmdk', withBacking: boolean, ctl: IntoControl,
  viaTemp: (write: (sink: RewriteSink) => Promise<void>) => Promise<void>,
): Promise<IntoResult> {
  assertExists(dest);
  assertNotLocked(dest);
  const count = { n: 0 };
  /** What the rewrite takes over [0, the sources' size): the sources (their top layers over the target's bytes with -B), counted. */
  const counted = (t: ImageSource): ImageSource => {
    const from = withBacking ? topOver(src, t) : padded(src);
    return {
      virtualSize: sectorsBytes(src.virtualSize),
      status: (a, b) => from.status(a, b),
      async readGuest(off, len) { count.n += len; return from.readGuest(off, len); },
    };
  };
  const sourcesSize = sectorsBytes(src.virtualSize);
  if (format === 'vpc') {
    let t: VpcImage;
    try { t = await VpcImage.open(dest); } catch (e) { throw couldNotOpen(dest, e instanceof Qcow2Error ? e.detail : String(e), 'not-qcow2'); }
    try {
      if (sectorsBytes(t.virtualSize) < sourcesSize) throw tooSmall(dest);
      // a fixed VHD whose data lies wholly before its footer: written in place as raw (below, once closed here)
      const inPlace = t.subformat === 'fixed' && t.virtualSize <= Math.ceil((await fs.promises.stat(dest)).size / 512) * 512 - FOOTER_SIZE;
      if (!inPlace) {
        const forceSize = usesCurrentSize(t.footer.creatorApp);
        await viaTemp(async sink => {
          const r = await writeVpc(over(counted(layerSource(t)), layerSource(t)), sink, { ...ctl, subformat: t.subformat, forceSize, uuid: Buffer.from(t.footer.uuid), name: dest });
          if (r.size !== t.virtualSize) throw new Qcow2Error(dest, 'VHD footer', undefined, `the rewritten image would be ${r.size} bytes, not the target's ${t.virtualSize}`, 'unsupported');
        });
        return { virtualSize: src.virtualSize, dataBytes: count.n };
      }
    } finally {
      await t.close();
    }
    return intoFixedVpc(src, dest, withBacking, ctl);
  }
  let t: VmdkImage;
  try { t = await VmdkImage.open(dest); } catch (e) { throw couldNotOpen(dest, e instanceof Qcow2Error ? e.detail : String(e), 'not-qcow2'); }
  try {
    if (sectorsBytes(t.virtualSize) < sourcesSize) throw tooSmall(dest);
    if (t.createType !== 'monolithicSparse' && t.createType !== 'streamOptimized') {
      throw new Qcow2Error(dest, 'VMDK descriptor', undefined, `writing into an existing vmdk of subformat ${t.createType} is not supported (monolithicSparse and streamOptimized are)`, 'unsupported');
    }
    const subformat = t.createType;
    if (subformat === 'streamOptimized') {
      // QEMU appends to a streamOptimized file and refuses a write over a grain it holds already
      let allocated = false;
      await t.layerStatus(0, Math.min(t.virtualSize, sourcesSize), e => { if (e.present && !e.zero) allocated = true; });
      if (allocated) throw new Qcow2Error(dest, 'VMDK grain table', undefined, 'Could not write to allocated cluster for streamOptimized', 'unsupported');
    }
    await viaTemp(async sink => {
      await writeVmdk(over(counted(layerSource(t)), layerSource(t)), sink, { ...ctl, subformat, fileName: path.basename(dest), cid: t.cid, name: dest });
    });
    return { virtualSize: src.virtualSize, dataBytes: count.n };
  } finally {
    await t.close();
  }
}

function openInPlace(dest: string): Promise<fs.promises.FileHandle> {
  return fs.promises.open(dest, 'r+').catch((e: NodeJS.ErrnoException) => {
    throw couldNotOpen(dest, `Could not open '${dest}': ${e.code === 'ENOENT' ? 'No such file or directory' : e.code ?? e.message}`, e.code === 'ENOENT' ? 'not-found' : 'io');
  });
}

/**
 * The guest bytes [0, end) of a file laid out flat (a raw file, a fixed VHD's data before its
 * footer), in place, front to back: data is written; where the source reads zero the target is
 * read and only its non-zero pieces overwritten with zeros (QEMU punches holes there, which Node
 * cannot), unless --target-is-zero says there is nothing to clear. `end` past the sources' size:
 * the padded last sector, zeros. The caller syncs. Returns the data bytes read from the sources.
 */
async function writeFlat(src: ConvertSource, fh: fs.promises.FileHandle, end: number, minSparse: number, targetIsZero: boolean, withBacking: boolean, ctl: IntoControl): Promise<number> {
  const dest = ctl.name;
  const source = end > src.virtualSize ? padded(src) : src;
  let dataBytes = 0;
  const put = async (off: number, b: Buffer) => {
    throwIfCancelled(ctl.signal, dest, 'convert');
    beforeWrite();
    let done = 0;
    while (done < b.length) done += (await fh.write(b, done, b.length - done, off + done)).bytesWritten;
  };
  const granule = minSparse || 512;
  for (let spanStart = 0; spanStart < end; spanStart += SPAN) {
    const spanEnd = Math.min(end, spanStart + SPAN);
    // -B: what the sources' top layers leave to their backing files is not written
    const runs: SourceRun[] = withBacking
      ? (await topRuns(src, spanStart, spanEnd)).filter(r => r.cover !== 'keep').map(r => ({ start: r.start, length: r.length, zero: r.cover === 'zero' }))
      : await source.status(spanStart, spanEnd);
    for (const r of runs) {
      for (let at = r.start; at < r.start + r.length; at += WINDOW) {
        const len = Math.min(WINDOW, r.start + r.length - at);
        const data = r.zero ? Buffer.alloc(len) : await source.readGuest(at, len);
        if (!r.zero) dataBytes += len;
        if (r.zero && targetIsZero) continue;
        // what is there already: equal pieces need no write (and the target stays sparse there)
        const old = Buffer.alloc(len);
        if (!targetIsZero) await fh.read(old, 0, len, at);
        const same = (p: number) => {
          const q = Math.min(len, p + granule);
          return targetIsZero ? minSparse !== 0 && isZero(data.subarray(p, q)) : data.subarray(p, q).equals(old.subarray(p, q));
        };
        for (let p = 0; p < len; p += granule) {
          if (same(p)) continue;
          let e = Math.min(len, p + granule);
          while (e < len && !same(e)) e = Math.min(len, e + granule);
          await put(at + p, data.subarray(p, e));
          p = e - granule;
        }
        ctl.onProgress?.(at + len, end);
      }
    }
  }
  return dataBytes;
}

/** -n into an existing raw file: in place (writeFlat over the sources' size), one sync. */
export async function intoRaw(src: ConvertSource, dest: string, minSparse: number, targetIsZero: boolean, withBacking: boolean, ctl: IntoControl): Promise<IntoResult> {
  assertExists(dest);
  assertNotLocked(dest);
  const fh = await openInPlace(dest);
  try {
    const size = src.virtualSize;
    const have = (await fh.stat()).size;
    if (sectorsBytes(have) < sectorsBytes(size)) throw tooSmall(dest);
    const dataBytes = await writeFlat(src, fh, size, minSparse, targetIsZero, withBacking, ctl);
    await fh.sync();
    return { virtualSize: size, dataBytes };
  } finally {
    await fh.close();
  }
}

/**
 * -n into a fixed VHD whose data lies wholly before its footer (the caller checked): in place as a
 * raw file (writeFlat over the sources' sectors), the footer never written, one sync.
 */
async function intoFixedVpc(src: ConvertSource, dest: string, withBacking: boolean, ctl: IntoControl): Promise<IntoResult> {
  const fh = await openInPlace(dest);
  try {
    const dataBytes = await writeFlat(src, fh, sectorsBytes(src.virtualSize), 0, false, withBacking, ctl);
    await fh.sync();
    return { virtualSize: src.virtualSize, dataBytes };
  } finally {
    await fh.close();
  }
}
