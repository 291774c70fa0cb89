/**
 * What `convert` reads: one or more source images (qcow2 through its whole backing chain, or raw,
 * VHD, VMDK through src/engine/formats), concatenated as qemu-img concatenates several SRCs. The
 * result is an `ImageSource` (guest reads, zero/data runs of the chain read through) plus the
 * top-layer view `-B` needs: which ranges the source images themselves allocate (copied), which
 * they mark zero (written as zeros) and which they leave to their backing files (left unallocated
 * in the output, so the new backing file shows through) — qemu-img's BLK_DATA / BLK_ZERO /
 * BLK_BACKING_FILE.
 */
import { Qcow2Error } from '../../errors';
import { type ForeignFormat, openForeign, probeFormat } from '../../formats';
import type { BlockLayer, ImageSource, SourceRun } from '../../formats/layer';
import { pushRun } from '../../formats/layer';
import type { KeyLookup } from '../../image/encryption';
import { Qcow2Image } from '../../image/image';
import { forEachMapEntry } from '../../image/map';
import { holeSeeker } from '../../io/holes';
import { locksOn } from '../../io/lock';

export type SourceFormat = 'qcow2' | ForeignFormat;

/** How the source's top layer (not its backing files) covers a range: qemu-img convert's block status with -B. */
export type TopKind = 'data' | 'zero' | 'backing';
export interface TopRun { start: number; length: number; kind: TopKind }

export interface ConvertSource extends ImageSource {
  /** The opened images, in order (each with its chain). */
  readonly layers: readonly BlockLayer[];
  /** Runs of [start, end) by the top layers alone (see TopKind). */
  topStatus(start: number, end: number): Promise<TopRun[]>;
  close(): Promise<void>;
}

export interface SourceOptions {
  /** -f: the format of every source (default: probed, as qemu-img does without -f). */
  format?: SourceFormat;
  /** -U: read images a running QEMU holds. */
  forceShare?: boolean;
  /** Passphrases of each source's encrypted layers, by source index. */
  keys?: readonly (KeyLookup | undefined)[];
}

/**
 * QEMU's image locks are bytes 100 + perm (held) and 200 + perm (not shared by the holder). A
 * read-only open as qemu-img convert makes it (consistent read held, write and resize not
 * shared) conflicts with a holder of write (101) or resize (103), or one that does not share
 * consistent read (200) — a running VM's disk, not a backing file it only reads.
 */
function conflicts(l: BlockLayer): boolean {
  return locksOn(l.path).some(h => {
    const start = Number(h.start), end = h.end === 'EOF' ? Infinity : Number(h.end);
    return [101, 103, 200].some(b => b >= start && b <= end);
  });
}

/** Refuses a chain a running QEMU writes, as qemu-img refuses to take its shared lock without -U. */
function assertReadable(layer: BlockLayer): void {
  for (let l: BlockLayer | null = layer; l; l = l.backing) {
    if (conflicts(l)) {
      throw new Qcow2Error(l.path, 'file', undefined,
        'the image is in use by a running QEMU (it holds a write lock); qemu-img convert refuses it too: shut the VM down, or pass -U (--force-share) to read it anyway (the copy may be inconsistent)', 'locked');
    }
  }
}

async function openOne(path: string, opts: SourceOptions, keys?: KeyLookup): Promise<BlockLayer> {
  const fmt = opts.format ?? await probeFormat(path);
  const layer: BlockLayer = fmt === 'qcow2'
    ? await Qcow2Image.open(path, { keys })
    : await openForeign(path, fmt, { holes: holeSeeker() });
  if (!opts.forceShare) {
    try { assertReadable(layer); } catch (e) { await layer.close(); throw e; }
  }
  return layer;
}

/** The block of guest bytes [start, end) of the concatenation that falls in each layer, in order. */
function pieces(layers: readonly BlockLayer[], bases: readonly number[], start: number, end: number): Array<{ i: number; from: number; to: number }> {
  const out: Array<{ i: number; from: number; to: number }> = [];
  for (let i = 0; i < layers.length; i++) {
    const b = bases[i], e = b + layers[i].virtualSize;
    const from = Math.max(start, b), to = Math.min(end, e);
    if (to > from) out.push({ i, from: from - b, to: to - b });
  }
  return out;
}

/** The map walk reads only status and backing links, which every format's layer has; its type names qcow2 and raw only. */
function asChainLayer(l: BlockLayer): Parameters<typeof forEachMapEntry>[0] {
  return l as Parameters<typeof forEachMapEntry>[0];
}

/** Opens every SRC; the first failure closes what was opened. */
export async function openSources(paths: readonly string[], opts: SourceOptions = {}): Promise<ConvertSource> {
  const layers: BlockLayer[] = [];
  try {
    for (const [i, p] of paths.entries()) layers.push(await openOne(p, opts, opts.keys?.[i]));
  } catch (e) {
    for (const l of layers) await l.close().catch(() => undefined);
    throw e;
  }
  const bases: number[] = [];
  let total = 0;
  for (const l of layers) { bases.push(total); total += l.virtualSize; }
  return {
    layers,
    virtualSize: total,
    async readGuest(off, len) {
      const parts = pieces(layers, bases, off, off + len);
      if (parts.length === 1) return layers[parts[0].i].readGuest(parts[0].from, parts[0].to - parts[0].from);
      const out = Buffer.alloc(len);
      for (const p of parts) (await layers[p.i].readGuest(p.from, p.to - p.from)).copy(out, bases[p.i] + p.from - off);
      return out;
    },
    async readGuestInto(off, len, dest, at) {
      // qcow2 layers read straight into `dest` (no buffer per run); the others through readGuest
      for (const p of pieces(layers, bases, off, off + len)) {
        const l = layers[p.i], to = at + bases[p.i] + p.from - off;
        if (l instanceof Qcow2Image) await l.readGuestInto(p.from, p.to - p.from, dest, to);
        else (await l.readGuest(p.from, p.to - p.from)).copy(dest, to);
      }
    },
    async status(start, end) {
      const runs: SourceRun[] = [];
      for (const p of pieces(layers, bases, start, end)) {
        const b = bases[p.i];
        // the chain read through: zero where every layer defers or says zero (holes of preallocated files too)
        await forEachMapEntry(asChainLayer(layers[p.i]), e => pushRun(runs, b + e.start, e.length, e.zero || !e.data), { start: p.from, end: p.to });
      }
      return runs;
    },
    async topStatus(start, end) {
      const runs: TopRun[] = [];
      const push = (s: number, length: number, kind: TopKind) => {
        const last = runs[runs.length - 1];
        if (last && last.kind === kind && last.start + last.length === s) last.length += length;
        else if (length > 0) runs.push({ start: s, length, kind });
      };
      for (const p of pieces(layers, bases, start, end)) {
        const l = layers[p.i], b = bases[p.i];
        await l.layerStatus(p.from, p.to, e => {
          // unallocated without a backing file reads as zero (QEMU's block layer adds ZERO there)
          const kind: TopKind = e.present ? (e.zero || !e.data ? 'zero' : 'data') : l.backing ? 'backing' : 'zero';
          push(b + e.start, e.length, kind);
        });
      }
      return runs;
    },
    async close() {
      for (const l of layers) await l.close().catch(() => undefined);
    },
  };
}
