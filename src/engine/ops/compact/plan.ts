/**
 * What a compaction keeps: the refusals (what cannot be compacted, and why), then every L1 table
 * (the active one and each snapshot's) and the distinct source clusters they reach. A source host
 * cluster reached from several L2 tables is listed once, so it is copied once and stays shared.
 */
import { pacer } from '../../cancel';
import type { NewKey } from './encrypted';
import type { Secret } from '../../crypto/secret';
import { Qcow2Error } from '../../errors';
import type { Qcow2Image } from '../../image/image';
import { TableWindow } from '../../io/tableWindow';
import { decodeCompressed, entryOffset, type L2Geometry, type SubclusterType, wordHi, wordLo } from '../../qcow2/cluster';
import * as L from '../../qcow2/layout';
import { assertWritable, type WriteFeature } from '../writable';
import { ClusterSet } from './places';

export interface CompactOptions {
  /** Write here instead of replacing the source. */
  output?: string;
  compress?: 'zlib' | 'zstd';
  /** Output cluster size in bytes (default: the source's); a different size re-clusters. */
  clusterSize?: number;
  signal?: AbortSignal;
  onProgress?(doneBytes: number, totalBytes: number): void;
  /** The passphrase of an encrypted (LUKS) source: the output keeps its LUKS area and master key. */
  key?: Secret;
  /** With `key`: the output gets a new LUKS area and master key under this passphrase instead (encrypted.ts). */
  newKey?: NewKey;
  /**
   * Sparsify's hook: source clusters to drop as if they read as zero (to a zero flag in an
   * overlay, unallocated otherwise), asked once the source's tables are read. Only where zero
   * clusters are dropped (`Settings.detectZero`) and without re-clustering.
   */
  drop?(img: Qcow2Image, tables: SourceTables, settings: Settings): Promise<DropSet>;
}

/** Source data cluster offsets and compressed cluster offsets a compaction drops (`CompactOptions.drop`). */
export interface DropSet { data: ReadonlySet<number>; compressed: ReadonlySet<number> }

/** What the options and the source decide before anything is read. */
export interface Settings {
  /** The output cluster size differs from the source's. */
  recluster: boolean;
  /** The output's compression type (header.compression_type). */
  outType: number;
  hasBacking: boolean;
  /** All-zero data clusters are dropped (to a zero flag in an overlay, to unallocated otherwise). */
  detectZero: boolean;
}

/** One L1 table to carry over: the active one first, then each snapshot's in table order. */
export interface L1Source { l1: Buffer; label: string }

/** The source's tables and the clusters they reach (or, re-clustering, synthetic ones: recluster.ts). */
export interface SourceTables {
  l1Tables: L1Source[];
  /** Every distinct source L2 table offset the L1 tables reach, ascending. */
  l2Offsets: number[];
  /**
   * Source L2 table offset → its bytes, for the tables held in memory: all of them when read with
   * `keepL2` (sparsify's guest walk wants them at hand) and re-clustering's synthetic ones; empty
   * otherwise, and the tables are re-read from the file a window at a time (tables.ts forEachL2),
   * so a compaction's memory does not grow with the number of L2 tables.
   */
  l2: Map<number, Buffer>;
  /** Source host offsets of data clusters (a bit each: places.ts). */
  data: ClusterSet;
  /** Compressed source offset → its size bound from the L2 entry. */
  compressed: Map<number, number>;
}

/** A stretch of one output cluster's guest range, and where its bytes come from in the source. */
export interface Piece { type: SubclusterType; guest: number; len: number; host: number; comp?: number; compSize?: number; within: number }
/** Re-clustering: one distinct output cluster, named by a synthetic host id (`fake`). */
export interface Job { fake: number; guest: number; pieces: Piece[] }

/** The tables the rest of the compaction lays out, in the geometry of the output. */
export interface CompactPlan {
  tables: SourceTables;
  g: L2Geometry;
  cs: number;
  /** Re-clustering only: the output clusters to assemble, in synthetic-id order. */
  jobs: Job[];
}

/** Refuses what cannot be compacted; returns what the options decide. */
export function checkCompactable(img: Qcow2Image, opts: CompactOptions): Settings {
  const src = img.path;
  const h = img.header;
  const features: WriteFeature[] = [];
  if (opts.compress === 'zstd') features.push('zstd');
  assertWritable(img, features);
  // encrypted images: encrypted.ts decides (LUKS with the passphrase is compacted, kept encrypted)
  const incompatAt = L.HEADER_FIELD.incompatible_features.offset;
  if ((h.incompatibleFeatures & L.INCOMPAT_DATA_FILE) !== 0n) throw new Qcow2Error(src, 'header.incompatible_features', incompatAt, 'images with an external data file hold no data clusters to compact', 'unsupported');
  const recluster = opts.clusterSize !== undefined && opts.clusterSize !== h.clusterSize;
  if (recluster) {
    const c = opts.clusterSize!;
    if (!Number.isInteger(Math.log2(c)) || c < 2 ** L.MIN_CLUSTER_BITS || c > 2 ** L.MAX_CLUSTER_BITS) {
      throw new Qcow2Error(src, 'cluster size', undefined, `${c} is not a power of two between 512 and 2 MiB`, 'unsupported');
    }
    if (h.headerEnd > c) throw new Qcow2Error(src, 'header', 0, `the header and its extensions (${h.headerEnd} bytes) do not fit in a ${c}-byte cluster`, 'unsupported');
  }
  if (opts.compress && img.g.extendedL2) {
    throw new Qcow2Error(src, 'header.incompatible_features', incompatAt, 'compressing an image with extended L2 entries (subclusters) is not supported', 'unsupported');
  }
  const outType = opts.compress === 'zstd' ? L.COMPRESSION_ZSTD : opts.compress === 'zlib' ? L.COMPRESSION_ZLIB : h.compressionType;
  if (outType === L.COMPRESSION_ZSTD && h.headerLength <= L.HEADER_FIELD.compression_type.offset) {
    throw new Qcow2Error(src, 'header.header_length', L.HEADER_FIELD.header_length.offset, 'the header has no compression_type field, so zstd cannot be recorded', 'unsupported');
  }
  const hasBacking = !!h.backingFile;
  // zero flags are kept in overlays (they hide backing data); a v2 overlay keeps zero data clusters
  const canZeroFlag = h.version >= 3;
  const detectZero = !img.g.extendedL2 && (!hasBacking || canZeroFlag);
  return { recluster, outType, hasBacking, detectZero };
}

/** Bytes of L2 tables read at once while scanning them. */
export const L2_WINDOW_BYTES = 4 * 1024 * 1024;

/**
 * Reads every L1 table and scans the L2 tables they reach (through one reused window); lists the
 * data and compressed clusters. `keepL2`: also hold every table in `l2`.
 */
export async function readSourceTables(img: Qcow2Image, keepL2 = true, signal?: AbortSignal): Promise<SourceTables> {
  const g = img.g, cs = img.header.clusterSize;
  const l1Tables: L1Source[] = [{ l1: img.l1, label: 'L1' }];
  for (const sn of img.snapshots) {
    l1Tables.push({ l1: sn.l1Size ? await img.file.read(sn.l1TableOffset, sn.l1Size * 8, `snapshot "${sn.name}" L1 table`) : Buffer.alloc(0), label: `snapshot "${sn.name}" L1` });
  }
  const seen = new Set<number>();
  const l2Offsets: number[] = [];
  const labels = new Map<number, string>();
  const labelOf = (o: number) => labels.get(o) ?? 'L1';
  for (const { l1, label } of l1Tables) {
    for (let i = 0; i < l1.length / 8; i++) {
      const o = entryOffset(wordHi(l1, i * 8), wordLo(l1, i * 8));
      if (o && !seen.has(o)) { img.checkL2Offset(o, i, label); seen.add(o); l2Offsets.push(o); labels.set(o, label); }
    }
  }
  l2Offsets.sort((a, b) => a - b);
  const l2 = new Map<number, Buffer>();
  const data = new ClusterSet(img.file.size, cs);
  const compressed = new Map<number, number>();
  const win = l2Window(img, pacer(signal, img.path, 'reading tables'));
  await win.forEach(l2Offsets, o => `${labelOf(o)} → L2 table at 0x${o.toString(16)}`, (o, t) => {
    if (keepL2) l2.set(o, Buffer.from(t));
    for (let j = 0; j < g.l2Size; j++) {
      const p = j * g.l2EntrySize;
      const hi = wordHi(t, p), lo = wordLo(t, p);
      if (hi & L.OFLAG_COMPRESSED_HI) {
        const c = decodeCompressed(g, hi, lo);
        compressed.set(c.hostOffset, c.compressedSize);
      } else {
        const host = entryOffset(hi, lo);
        if (host && !(!g.extendedL2 && (lo & L.OFLAG_ZERO_LO))) {
          if (host % cs) throw new Qcow2Error(img.path, `${labelOf(o)} → L2 table at 0x${o.toString(16)}[${j}]`, o + p, 'data cluster offset is not cluster-aligned');
          data.add(host);
        }
      }
    }
  });
  return { l1Tables, l2Offsets, l2, data, compressed };
}

/**
 * Source L2 tables a bounded window at a time (io/tableWindow.ts), strict: every table must lie
 * inside the file (an error names the table). Each table is handed on as a view valid only during
 * the call.
 */
export type L2Window = TableWindow;

export function l2Window(img: Qcow2Image, pause?: () => Promise<void>): L2Window {
  const win = new TableWindow(img.file, img.header.clusterSize, L2_WINDOW_BYTES, 'strict');
  win.pause = pause;
  return win;
}
