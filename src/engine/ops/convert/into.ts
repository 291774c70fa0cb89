/**
 * `convert -n`: the target exists and is written into instead of created, as qemu-img 7.2 does:
 * opened in the -O format (default raw), refused when missing ("Could not open …") or when its
 * virtual size is smaller than the sources' ("output file is smaller than input file"); every guest
 * range of the sources is written — data, and zeros where the source reads zero (the target's old
 * bytes there are cleared), unless --target-is-zero says the target reads zeros already. What lies
 * past the sources' end in a larger target is kept.
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
 *  vpc, vmdk: (a streamOptimized target is refused where it holds grains in the range written, as
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
import { usesCurrentSize } from '../../formats/vpc/layout';
import { Qcow2ClusterWriter } from '../commit/clusterWrite';
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

export async function intoQcow2(src: ConvertSource, dest: string, targetIsZero: boolean, ctl: IntoControl): Promise<IntoResult> {
  assertExists(dest);
  assertNotLocked(dest);
  let w: Qcow2ClusterWriter;
  try {
    w = await Qcow2ClusterWriter.open(dest, ctl.signal);
  } catch (e) {
    if (e instanceof Qcow2Error && e.code === 'not-qcow2') throw couldNotOpen(dest, 'Image is not in qcow2 format', 'not-qcow2');
    throw e;
  }
  let dataBytes = 0;
  try {
    const source = padded(src);
    const size = source.virtualSize;
    if (sectorsBytes(w.virtualSize) < size) throw tooSmall(dest);
    const cs = w.cs;
    // the last cluster, when the sources end inside it: its bytes past their end are the target's own
    let tail: { at: number; old: Buffer } | null = null;
    if (size % cs !== 0 && size < w.virtualSize) {
      const at = size - (size % cs);
      const reader = await Qcow2Image.open(dest, { writable: false });
      try {
        tail = { at, old: await reader.readGuest(at, Math.min(cs, reader.virtualSize - at)) };
      } finally {
        await reader.close();
      }
    }
    const end = Math.ceil(size / cs) * cs;
    /** The cluster at `g` as it will read: `bytes` (the sources' part) completed by the target's old tail. */
    const cluster = (g: number, bytes: Buffer | null): Buffer | null => {
      if (tail && g === tail.at) {
        const out = Buffer.alloc(cs);
        tail.old.copy(out);
        if (bytes) bytes.copy(out, 0, 0, size - g);
        else out.fill(0, 0, size - g);
        return isZero(out) ? null : out;
      }
      return bytes === null || isZero(bytes) ? null : bytes;
    };
    for (let spanStart = 0; spanStart < end; spanStart += SPAN) {
      throwIfCancelled(ctl.signal, dest, 'convert');
      const spanEnd = Math.min(end, spanStart + SPAN);
      const runs: SourceRun[] = await source.status(spanStart, Math.min(spanEnd, size));
      // per cluster of the span: data if any byte of it may hold data
      const n = (spanEnd - spanStart) / cs;
      const data = new Uint8Array(n);
      for (const r of runs) {
        if (r.zero) continue;
        for (let c = Math.floor((r.start - spanStart) / cs); c * cs < r.start + r.length - spanStart; c++) data[c] = 1;
      }
      let c = 0;
      while (c < n) {
        const g = spanStart + c * cs;
        if (!data[c]) {
          const z = cluster(g, null);
          if (z !== null) await w.writeCluster(g, z);
          else if (!targetIsZero) await w.writeCluster(g, null);
          c++;
          continue;
        }
        let e = c + 1;
        while (e < n && data[e] && (e - c) * cs < WINDOW) e++;
        const len = Math.min((e - c) * cs, size - g);
        const buf = Buffer.alloc((e - c) * cs);
        (await source.readGuest(g, len)).copy(buf);
        dataBytes += len;
        for (let i = c; i < e; i++) {
          const piece = cluster(spanStart + i * cs, buf.subarray((i - c) * cs, (i - c + 1) * cs));
          if (piece === null && targetIsZero) continue;
          await w.writeCluster(spanStart + i * cs, piece);
        }
        c = e;
        ctl.onProgress?.(Math.min(size, spanStart + c * cs), size);
      }
    }
    await w.flush();
    return { virtualSize: src.virtualSize, dataBytes };
  } finally {
    await w.close();
  }
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
  src: ConvertSource, dest: string, format: 'vpc' | 'vmdk', ctl: IntoControl,
  viaTemp: (write: (sink: RewriteSink) => Promise<void>) => Promise<void>,
): Promise<IntoResult> {
  assertExists(dest);
  assertNotLocked(dest);
  const count = { n: 0 };
  const counted: ImageSource = {
    virtualSize: sectorsBytes(src.virtualSize),
    status: (a, b) => padded(src).status(a, b),
    async readGuest(off, len) { count.n += len; return padded(src).readGuest(off, len); },
  };
  if (format === 'vpc') {
    let t: VpcImage;
    try { t = await VpcImage.open(dest); } catch (e) { throw couldNotOpen(dest, e instanceof Qcow2Error ? e.detail : String(e), 'not-qcow2'); }
    try {
      if (sectorsBytes(t.virtualSize) < counted.virtualSize) throw tooSmall(dest);
      const forceSize = usesCurrentSize(t.footer.creatorApp);
      await viaTemp(async sink => {
        const r = await writeVpc(over(counted, layerSource(t)), sink, { ...ctl, subformat: t.subformat, forceSize, uuid: Buffer.from(t.footer.uuid), name: dest });
        if (r.size !== t.virtualSize) throw new Qcow2Error(dest, 'VHD footer', undefined, `the rewritten image would be ${r.size} bytes, not the target's ${t.virtualSize}`, 'unsupported');
      });
      return { virtualSize: src.virtualSize, dataBytes: count.n };
    } finally {
      await t.close();
    }
  }
  let t: VmdkImage;
  try { t = await VmdkImage.open(dest); } catch (e) { throw couldNotOpen(dest, e instanceof Qcow2Error ? e.detail : String(e), 'not-qcow2'); }
  try {
    if (sectorsBytes(t.virtualSize) < counted.virtualSize) throw tooSmall(dest);
    if (t.createType !== 'monolithicSparse' && t.createType !== 'streamOptimized') {
      throw new Qcow2Error(dest, 'VMDK descriptor', undefined, `writing into an existing vmdk of subformat ${t.createType} is not supported (monolithicSparse and streamOptimized are)`, 'unsupported');
    }
    const subformat = t.createType;
    if (subformat === 'streamOptimized') {
      // QEMU appends to a streamOptimized file and refuses a write over a grain it holds already
      let allocated = false;
      await t.layerStatus(0, Math.min(t.virtualSize, counted.virtualSize), e => { if (e.present && !e.zero) allocated = true; });
      if (allocated) throw new Qcow2Error(dest, 'VMDK grain table', undefined, 'Could not write to allocated cluster for streamOptimized', 'unsupported');
    }
    await viaTemp(async sink => {
      await writeVmdk(over(counted, layerSource(t)), sink, { ...ctl, subformat, fileName: path.basename(dest), cid: t.cid, name: dest });
    });
    return { virtualSize: src.virtualSize, dataBytes: count.n };
  } finally {
    await t.close();
  }
}

/**
 * -n into an existing raw file: in place, front to back. Data is written; where the source reads
 * zero the target is read and only its non-zero pieces overwritten with zeros (QEMU punches holes
 * there, which Node cannot), unless --target-is-zero says there is nothing to clear. One sync.
 */
export async function intoRaw(src: ConvertSource, dest: string, minSparse: number, targetIsZero: boolean, ctl: IntoControl): Promise<IntoResult> {
  assertExists(dest);
  assertNotLocked(dest);
  const fh = await fs.promises.open(dest, 'r+').catch((e: NodeJS.ErrnoException) => {
    throw couldNotOpen(dest, `Could not open '${dest}': ${e.code === 'ENOENT' ? 'No such file or directory' : e.code ?? e.message}`, e.code === 'ENOENT' ? 'not-found' : 'io');
  });
  let dataBytes = 0;
  try {
    const size = src.virtualSize;
    const have = (await fh.stat()).size;
    if (sectorsBytes(have) < sectorsBytes(size)) throw tooSmall(dest);
    const put = async (off: number, b: Buffer) => {
      throwIfCancelled(ctl.signal, dest, 'convert');
      beforeWrite();
      let done = 0;
      while (done < b.length) done += (await fh.write(b, done, b.length - done, off + done)).bytesWritten;
    };
    const granule = minSparse || 512;
    for (let spanStart = 0; spanStart < size; spanStart += SPAN) {
      const spanEnd = Math.min(size, spanStart + SPAN);
      for (const r of await src.status(spanStart, spanEnd)) {
        for (let at = r.start; at < r.start + r.length; at += WINDOW) {
          const len = Math.min(WINDOW, r.start + r.length - at);
          const data = r.zero ? Buffer.alloc(len) : await src.readGuest(at, len);
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
          ctl.onProgress?.(at + len, size);
        }
      }
    }
    await fh.sync();
    return { virtualSize: size, dataBytes };
  } finally {
    await fh.close();
  }
}
