/**
 * sparsify: a compaction (src/engine/ops/compact) that also drops every data cluster lying wholly
 * in guest free space — the free runs of each ext2/3/4 and FAT file system inside the guest (block
 * bitmaps, FAT free clusters) and, with `swap`, Linux swap space after its header — as long as only
 * the active disk maps it (a snapshot's data is never touched). A dropped cluster reads as zero
 * afterwards: it becomes unallocated in a standalone image and a zero cluster in an overlay (never
 * unallocated there, which would show the backing file's bytes). Only free space changes, so every
 * file reads as before.
 *
 * Refused when a file system is dirty or needs journal recovery (what its bitmaps say may be
 * stale: a mounted guest, a crash), and where the image cannot record zero clusters (a version 2
 * overlay, extended L2 entries). Crash safety is compaction's: a temporary file beside the
 * destination, fsync, rename, the source only read; the drop set is computed after the compaction
 * opened the source, whose unchanged stamp is checked before the rename.
 *
 * An encrypted (LUKS) image is sparsified with its passphrase (`keys`, as the chain's layers look
 * theirs up): the compaction keeps it encrypted (compact/encrypted.ts) and the guest's free-space
 * map is read through the same keys; without them it is refused as compact refuses.
 */
import { Qcow2Error } from '../engine/errors';
import type { KeyLookup } from '../engine/image/encryption';
import { Qcow2Image } from '../engine/image/image';
import { compactImage, type CompactResult } from '../engine/ops/compact';
import type { DropSet, Settings, SourceTables } from '../engine/ops/compact/plan';
import { openGuest } from './guest';
import { qcow2GuestDisk } from './qcow2Disk';
import { buildFreeMap, type FreeMap, type FreeMapOptions } from './space/freeMap';
import { findReferences, sparsifyDrop } from './space/references';

export interface SparsifyOptions extends FreeMapOptions {
  /** Write here instead of replacing the source (through a temporary file). */
  output?: string;
  compress?: 'zlib' | 'zstd';
  /** Passphrases of the chain's encrypted layers (the top one's also keeps the output encrypted). */
  keys?: KeyLookup;
  signal?: AbortSignal;
  onProgress?(doneBytes: number, totalBytes: number): void;
}

export interface SparsifyResult extends CompactResult {
  /** Data and compressed clusters dropped because they lay in guest free space. */
  droppedClusters: number;
  /** Guest free space the file systems report, in bytes. */
  guestFreeBytes: number;
  notes: string[];
}

/** The guest's free-space map over an image opened with its backing chain, refusing dirty file systems. */
export async function guestFreeMap(full: Qcow2Image, opts: FreeMapOptions & { refuseDirty: boolean }): Promise<FreeMap> {
  const guest = await openGuest(qcow2GuestDisk(full), { strict: false });
  try {
    const free = await buildFreeMap(guest, full.clusterSize, full.path, opts);
    if (opts.refuseDirty && free.dirty.length) {
      throw new Qcow2Error(full.path, 'guest disk', undefined,
        `sparsify refused: ${free.dirty.join('; ')} — its free-space map may be stale; shut the guest down cleanly (or check the file system with e2fsck / fsck.vfat) first`, 'unsupported');
    }
    return free;
  } finally {
    await guest.close();
  }
}

/** The clusters sparsify drops from `img` (the compaction's source, its tables read). */
export async function sparsifyDropSet(img: Qcow2Image, tables: SourceTables, settings: Settings, opts: FreeMapOptions, signal?: AbortSignal, keys?: KeyLookup): Promise<{ drop: DropSet; free: FreeMap }> {
  if (!settings.detectZero) {
    throw new Qcow2Error(img.path, 'header', 0, img.g.extendedL2
      ? 'sparsify refused: images with extended L2 entries (subclusters) are not supported'
      : 'sparsify refused: a version 2 (compat 0.10) overlay has no zero clusters, so dropped clusters would show the backing file; amend it to compat 1.1 first', 'unsupported');
  }
  // the guest through the whole chain, each encrypted layer unlocked with its own passphrase
  const full = await Qcow2Image.open(img.path, { openDataFile: false, keys });
  try {
    const free = await guestFreeMap(full, { ...opts, refuseDirty: true });
    const refs = await findReferences(img, tables, free, signal);
    return { drop: sparsifyDrop(tables, refs, img.clusterSize), free };
  } finally {
    await full.close();
  }
}

export async function sparsifyImage(src: string, opts: SparsifyOptions = {}): Promise<SparsifyResult> {
  let dropped = 0, guestFreeBytes = 0;
  const notes: string[] = [];
  const r = await compactImage(src, {
    output: opts.output, compress: opts.compress, signal: opts.signal, onProgress: opts.onProgress,
    key: opts.keys?.({ path: src, depth: 0 }),
    drop: async (img, tables, settings) => {
      const { drop, free } = await sparsifyDropSet(img, tables, settings, { swap: opts.swap }, opts.signal, opts.keys);
      dropped = drop.data.size + drop.compressed.size;
      guestFreeBytes = free.freeBytes;
      notes.push(...free.skipped);
      if (!free.sources.length) notes.push('no browsable file system (ext2/3/4, FAT) was found: only what compact drops is dropped');
      return drop;
    },
  });
  return { ...r, droppedClusters: dropped, guestFreeBytes, notes };
}
