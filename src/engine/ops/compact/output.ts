/**
 * The compaction's output files: a buffered appender whose every write passes the crash hook, the
 * temporary files' names and clean-up, and the rename that makes a finished output the destination.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Qcow2Error } from '../../errors';
import { type CopyError, isCopyRefusal, type NativeCopy } from '../../io/copyRange';
import { ImageFile } from '../../io/reader';
import { beforeWrite } from '../writable';

/**
 * Buffered bytes are written once they reach this much: large pwritev calls, and what a file holds
 * at once (this and the writes in flight, their buffers kept until done) small: 2 + 4 × 2 MiB.
 */
const FLUSH_BYTES = 2 * 1024 * 1024;
/**
 * Writes in flight at once. Kernel copies (copy_file_range) into the file run one at a time, each
 * after the one before: parallel ones serialise on the file's inode lock anyway, and the waiters
 * spin (10 GiB / 1 GiB of data: system time 0.56 → 0.35 s, wall time the same).
 */
const MAX_INFLIGHT = 4;
/** The bounce buffer of a copy that falls back to reading and writing. */
const BOUNCE_BYTES = 4 * 1024 * 1024;

/** An append-only file: bytes are placed at the current end and written in large batches. */
export class OutFile {
  pos = 0;
  private pending: Buffer[] = [];
  private pendingStart = 0;
  private pendingBytes = 0;
  private inflight: Promise<void>[] = [];
  constructor(readonly f: ImageFile) {}
  /** Appends at the current end without writing yet; returns the host offset. */
  push(b: Buffer): number {
    const at = this.pos;
    if (this.pendingBytes === 0) this.pendingStart = at;
    this.pending.push(b);
    this.pendingBytes += b.length;
    this.pos += b.length;
    return at;
  }
  /** Appends at the current end (buffered into large writes). */
  async append(b: Buffer): Promise<number> {
    const at = this.push(b);
    if (this.pendingBytes >= FLUSH_BYTES) await this.flush();
    return at;
  }
  async flushIfLarge(): Promise<void> {
    if (this.pendingBytes >= FLUSH_BYTES) await this.flush();
  }
  async padTo(align: number): Promise<void> {
    const r = this.pos % align;
    if (r) await this.append(Buffer.alloc(align - r));
  }
  /** Starts writing what is buffered (pwritev, no copy); up to four writes run at once. */
  async flush(): Promise<void> {
    if (!this.pendingBytes) return;
    const bufs = this.pending, start = this.pendingStart, len = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    beforeWrite();
    const f = this.f;
    const p = (async () => {
      let done = 0, i = 0, skip = 0;
      while (done < len) {
        const view = bufs.slice(i);
        if (skip) view[0] = view[0].subarray(skip);
        const { bytesWritten } = await f.handle.writev(view, start + done);
        done += bytesWritten;
        // advance past what was written (short writes are rare but legal)
        let w = bytesWritten + skip;
        while (i < bufs.length && w >= bufs[i].length) { w -= bufs[i].length; i++; }
        skip = w;
      }
      if (start + len > f.size) f.size = start + len;
    })();
    p.catch(() => undefined); // awaited later; never an unhandled rejection if we stop first
    this.inflight.push(p);
    if (this.inflight.length >= MAX_INFLIGHT) await this.inflight.shift();
  }
  /** Resolves once every write started so far has completed. */
  whenWritten(): Promise<unknown> {
    return Promise.all(this.inflight);
  }
  /**
   * Waits for every started write, failed or not: before the file is closed on an error, so no
   * copy still running on libuv's pool uses a descriptor number that close may hand to another file.
   */
  async settle(): Promise<void> {
    const all = this.inflight;
    this.inflight = [];
    await Promise.allSettled(all);
  }
  /** Waits for every started write. */
  async drain(): Promise<void> {
    await this.flush();
    const all = this.inflight;
    this.inflight = [];
    await Promise.all(all);
  }
  /**
   * Appends `len` bytes of `src` from `srcOff` (one write as the crash hook counts): in the kernel
   * with copy_file_range where `native` is given and the kernel accepts, else read and written
   * through a buffer (from then on for every copy of this file: a refusal holds for the pair).
   * Bytes past the end of the source are zeros. Returns the host offset.
   */
  async copyFrom(src: ImageFile, srcOff: number, len: number, native: NativeCopy | undefined): Promise<number> {
    await this.flush();
    const at = this.pos;
    this.pos += len;
    beforeWrite();
    if (native && this.copyRefused) native = undefined;
    const f = this.f;
    const prev = this.lastCopy;
    const p = (async () => {
      let done = 0;
      if (native) {
        await prev;
        try {
          done = await native.copyRange(src.handle.fd, srcOff, f.handle.fd, at, len);
        } catch (e) {
          if (!isCopyRefusal(e)) throw new Qcow2Error(src.path, 'data cluster', srcOff, `cannot be copied to ${f.path} (${(e as CopyError).code ?? "error"}: ${(e as Error).message})`, 'io');
          this.copyRefused = true;
          done = (e as CopyError).done ?? 0;
        }
      }
      if (done < len) await bounce(src, srcOff + done, f, at + done, len - done);
      if (at + len > f.size) f.size = at + len;
    })();
    p.catch(() => undefined); // awaited later, as flush's writes
    if (native) this.lastCopy = p.catch(() => undefined);
    this.inflight.push(p);
    if (this.inflight.length >= MAX_INFLIGHT) await this.inflight.shift();
    return at;
  }
  private copyRefused = false;
  /** The last kernel copy started (settled, never rejecting): the next one waits for it. */
  private lastCopy: Promise<void> = Promise.resolve();
  async writeAt(off: number, b: Buffer, what: string): Promise<void> {
    await this.drain();
    beforeWrite();
    await this.f.write(off, b, what);
  }
}

/** Copies through a buffer: what copy_file_range would have done (past the source's end: zeros). */
async function bounce(src: ImageFile, from: number, dst: ImageFile, to: number, len: number): Promise<void> {
  const buf = Buffer.allocUnsafe(Math.min(len, BOUNCE_BYTES));
  for (let done = 0; done < len;) {
    const n = Math.min(buf.length, len - done);
    let got = 0;
    while (got < n) {
      const { bytesRead } = await src.handle.read(buf, got, n - got, from + done + got);
      if (bytesRead === 0) { buf.fill(0, got, n); break; }
      got += bytesRead;
    }
    let put = 0;
    while (put < n) put += (await dst.handle.write(buf, put, n - put, to + done + put)).bytesWritten;
    done += n;
  }
}

/** The temporary image beside `dest` and the side file its compressed stream is gathered in. */
export function tempNames(dest: string): { image: string; stream: string } {
  const image = path.join(path.dirname(path.resolve(dest)), `.${path.basename(dest)}.compact-${process.pid}-${Date.now()}.tmp`);
  return { image, stream: image + '.stream' };
}

/** Creates `file` (it must not exist) with `mode` and opens it for writing. */
export async function createTemp(file: string, mode: number): Promise<ImageFile> {
  const fh = await fs.promises.open(file, 'wx', mode);
  await fh.close();
  return ImageFile.open(file, true);
}

/** Removes temp files left by a compaction of `dest` whose process is gone (killed, crashed). */
export function removeStaleTemps(dest: string): void {
  const dir = path.dirname(path.resolve(dest));
  const re = new RegExp(`^\\.${path.basename(dest).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.compact-(\\d+)-\\d+\\.tmp(\\.stream)?$`);
  let names: string[];
  try { names = fs.readdirSync(dir); } catch { return; }
  for (const n of names) {
    const m = re.exec(n);
    if (!m) continue;
    const pid = Number(m[1]);
    let alive = pid === process.pid;
    if (!alive) {
      try { process.kill(pid, 0); alive = true; } catch (e) { alive = (e as NodeJS.ErrnoException).code === 'EPERM'; }
    }
    if (!alive) fs.rmSync(path.join(dir, n), { force: true });
  }
}

/**
 * Makes the synced temporary file the destination: the source's owner (in place) and mode, the
 * rename, then the folder synced so the rename itself survives a crash.
 */
export function replaceWith(tmp: string, dest: string, st: fs.Stats, inPlace: boolean): void {
  if (inPlace) {
    // the file keeps its owner and group (root compacting a VM's image must not hand it to root);
    // without the privilege to give it away, chown fails and the file stays ours
    try { fs.chownSync(tmp, st.uid, st.gid); } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'EPERM') throw e; }
  }
  fs.chmodSync(tmp, st.mode & 0o7777);
  fs.renameSync(tmp, dest);
  const dfd = fs.openSync(path.dirname(path.resolve(dest)), 'r');
  try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
}
