/**
 * Compaction: a new image holding only the clusters that carry data. Unlike `qemu-img convert` it
 * keeps internal snapshots (a source host cluster shared by several L2 tables is copied once and
 * stays shared), persistent bitmaps and the backing file reference (unallocated stays
 * unallocated; in an overlay, zero stays zero-flagged). Optionally compresses (zlib or zstd) on
 * two worker threads.
 *
 * The phases, in order (one file each):
 *   plan       refusals; every L1 table and the source clusters it reaches
 *   recluster  (another cluster size) the guest view cut into output clusters
 *   copy       data clusters to the image, compressed ones to a side stream
 *   tables     which L2 tables survive; the bitmaps' data
 *   layout     where each table goes after the data
 *   refcounts  the final L2 tables and the refcount blocks
 *   (here)     the metadata written in layout order, then the stream
 *   header     the header cluster, written last
 *   encrypted  (LUKS) the LUKS area right after the header cluster, each data cluster
 *              decrypted for its source host offset and encrypted for its new one
 *
 * Crash safety: everything is written to a temporary file in the destination's folder, which no
 * reader sees until it is complete, so the order of writes inside it does not matter to a crash
 * and it is synced once, at the end; then it is renamed over the destination and the folder is
 * synced. The source is only read: a crash or a cancellation leaves it untouched (the temporary
 * files are removed on cancel or error; a killed run's are removed by the next compaction). Every
 * write passes `beforeWrite`, the crash tests' hook.
 */
import * as fs from 'node:fs';
import { throwIfCancelled } from '../../cancel';
import { Qcow2Error } from '../../errors';
import { Qcow2Image } from '../../image/image';
import { nativeCopy } from '../../io/copyRange';
import type { ImageFile } from '../../io/reader';
import { readBitmapTable } from '../../qcow2/bitmap';
import { assertNotLocked } from '../writable';
import { copyClusters } from './copy';
import { patchHeader, placeArea, prepare as prepareEncryption, release as releaseEncryption } from './encrypted';
import { buildHeader } from './header';
import { type Layout, layoutMetadata } from './layout';
import { createTemp, OutFile, removeStaleTemps, replaceWith, tempNames } from './output';
import { checkCompactable, type CompactOptions, type CompactPlan, type L1Source, type L2Window, l2Window, readSourceTables, type SourceTables } from './plan';
import { CompressPool } from './pool';
import { checkReclusterable, reclusterTables } from './recluster';
import { buildRefcounts, type Refcounted } from './refcounts';
import { type BitmapData, countL2Refs, encodeL1, encodeRefcountTable, fillBitmapTable, forEachL2, readBitmapData } from './tables';

export type { CompactOptions } from './plan';

export interface CompactResult {
  bytesBefore: number;
  bytesAfter: number;
  output: string;
}

/** The compressed stream is copied into the image in pieces of this size (in the kernel where it can: OutFile.copyFrom). */
const STREAM_COPY_BYTES = 8 * 1024 * 1024;

export async function compactImage(src: string, opts: CompactOptions = {}): Promise<CompactResult> {
  assertNotLocked(src);
  if (opts.output && fs.existsSync(opts.output)) assertNotLocked(opts.output);
  const img = await Qcow2Image.open(src, { openBacking: false, openDataFile: false });
  // in place through a symbolic link: the linked file is replaced, not the link
  const dest = opts.output ?? fs.realpathSync(src);
  removeStaleTemps(dest);
  const tmp = tempNames(dest);
  let out: ImageFile | null = null;
  let streamFile: ImageFile | null = null;
  let pool: CompressPool | null = null;
  let full: Qcow2Image | null = null;
  let o: OutFile | null = null, zs: OutFile | null = null;
  let crypt: Awaited<ReturnType<typeof prepareEncryption>> = null;
  try {
    const h = img.header;
    const settings = checkCompactable(img, opts);
    crypt = await prepareEncryption(img, opts.key, { recluster: settings.recluster, compress: !!opts.compress }, opts.newKey);
    const bytesBefore = img.file.size;
    const st = fs.statSync(src);
    const stamp = fs.statSync(src, { bigint: true });

    // ── plan: what is kept ──
    // the L2 tables are held only for sparsify's drop hook; otherwise re-read a window at a time
    let plan: CompactPlan = { tables: await readSourceTables(img, !!opts.drop, opts.signal), g: img.g, cs: h.clusterSize, jobs: [] };
    const l2Win = l2Window(img);
    if (settings.recluster) {
      checkReclusterable(img);
      if (settings.hasBacking) full = await Qcow2Image.open(src, { openDataFile: false });
      plan = await reclusterTables(img, plan.tables, opts.clusterSize!, settings.hasBacking, opts.signal);
    }
    const { g, cs } = plan;
    const drop = opts.drop ? await opts.drop(img, plan.tables, settings) : undefined;
    if (drop && (drop.data.size || drop.compressed.size) && (settings.recluster || !settings.detectZero)) {
      throw new Qcow2Error(src, 'header', 0, settings.recluster ? 'clusters cannot be dropped while re-clustering' : 'this image cannot record dropped clusters (a version 2 overlay, or extended L2 entries)', 'unsupported');
    }
    const bitmapTables = [];
    for (const bm of img.bitmaps) bitmapTables.push(await readBitmapTable(img.file, bm));
    const bitmapClusters = bitmapTables.reduce((a, t) => a + t.filter(e => e.hostOffset).length, 0);
    const totalBytes = (plan.tables.data.size + plan.tables.compressed.size + bitmapClusters + plan.jobs.length) * cs;
    let doneBytes = 0;
    const progress = (n: number) => { doneBytes += n; opts.onProgress?.(Math.min(doneBytes, totalBytes), totalBytes); };

    // ── copy: the data, from cluster 1 on (cluster 0 is the header, written last) ──
    out = await createTemp(tmp.image, st.mode & 0o7777);
    o = new OutFile(out);
    o.push(Buffer.alloc(cs));
    if (crypt) placeArea(crypt, o, cs);
    streamFile = await createTemp(tmp.stream, 0o600);
    zs = new OutFile(streamFile);
    if (opts.compress) pool = new CompressPool(opts.compress, 2, cs);
    const placed = await copyClusters({
      img, full, plan, recluster: settings.recluster, detectZero: settings.detectZero, drop, outType: settings.outType,
      out: o, stream: zs, pool, crypt, progress, signal: opts.signal,
    });

    // ── tables and layout: the surviving L2 tables, the bitmaps' data, where each goes ──
    const l2Refs = await countL2Refs(l2Win, plan.tables, g, settings.hasBacking, placed);
    const bitmaps = await readBitmapData(img, bitmapTables, cs, progress);
    const rawBitmapDir = img.bitmaps.length ? await img.file.read(h.bitmaps!.bitmapDirectoryOffset, h.bitmaps!.bitmapDirectorySize, 'bitmap directory') : null;
    const l1Tables = plan.tables.l1Tables;
    const lay = layoutMetadata({ img, cs, start: o.pos, l1Tables, l2Refs, bitmaps, rawBitmapDir, streamLen: placed.streamLen });
    const rc = await buildRefcounts({ file: src, g, hasBacking: settings.hasBacking, tables: plan.tables, l2Refs, placed, layout: lay, bitmaps, crypto: crypt ? { offset: crypt.at, length: crypt.area.length } : undefined }, l2Win);

    // ── the metadata, in layout order, then the compressed stream ──
    await writeMetadata(o, { cs, l1Tables, l2Refs, bitmaps, lay, rc, tables: plan.tables, l2Win });
    const native = nativeCopy();
    for (let at = 0; at < placed.streamLen; at += STREAM_COPY_BYTES) {
      throwIfCancelled(opts.signal, src, 'compaction');
      await o.copyFrom(streamFile, at, Math.min(STREAM_COPY_BYTES, placed.streamLen - at), native);
    }
    await o.drain();
    await streamFile.close();
    streamFile = null;
    fs.rmSync(tmp.stream, { force: true });

    // ── header, last; then the whole file synced and renamed over the destination ──
    const hdr = await buildHeader({ img, cs, l1Entries: l1Tables[0].l1.length / 8, layout: lay, outType: settings.outType, output: opts.output, dest });
    if (crypt) patchHeader(crypt, img, hdr);
    await o.writeAt(0, hdr, 'header');
    await out.sync();
    const bytesAfter = out.size;
    await out.close();
    out = null;
    throwIfCancelled(opts.signal, src, 'compaction');
    // nothing holds the source while we read it: a VM started meanwhile (or any writer) may have
    // changed it, and replacing it now would drop those writes (a separate output would be torn)
    assertNotLocked(src);
    const now = fs.statSync(src, { bigint: true });
    if (now.ino !== stamp.ino || now.size !== stamp.size || now.mtimeNs !== stamp.mtimeNs) {
      throw new Qcow2Error(src, 'file', undefined, 'the image changed while it was being compacted; nothing was replaced, compact it again', 'changed-on-disk');
    }
    replaceWith(tmp.image, dest, st, !opts.output);
    return { bytesBefore, bytesAfter, output: dest };
  } catch (e) {
    await o?.settle();
    await zs?.settle();
    if (out) await out.close().catch(() => undefined);
    if (streamFile) await streamFile.close().catch(() => undefined);
    fs.rmSync(tmp.image, { force: true });
    fs.rmSync(tmp.stream, { force: true });
    throw e;
  } finally {
    releaseEncryption(crypt);
    await pool?.close();
    await full?.close();
    await img.close();
  }
}

interface Metadata {
  cs: number;
  l1Tables: L1Source[];
  l2Refs: Map<number, number>;
  bitmaps: BitmapData[];
  lay: Layout;
  rc: Refcounted;
  tables: SourceTables;
  l2Win: L2Window;
}

/** Appends the metadata after the data, in the order layoutMetadata placed it. */
async function writeMetadata(o: OutFile, { cs, l1Tables, l2Refs, bitmaps, lay, rc, tables, l2Win }: Metadata): Promise<void> {
  await forEachL2(l2Win, tables, lay.l2Order, async (_so, t) => { await o.append(rc.finalL2(t)); });
  for (let i = 0; i < l1Tables.length; i++) {
    const l1 = l1Tables[i].l1;
    if (!l1.length || (i === 0 && lay.l1Last)) continue;
    await o.append(encodeL1(l1, true, cs, lay.l2Dest, l2Refs));
  }
  if (lay.snapshotTable) { await o.append(lay.snapshotTable); await o.padTo(cs); }
  for (let b = 0; b < bitmaps.length; b++) {
    const bd = bitmaps[b];
    fillBitmapTable(bd, lay.bitmaps[b].dataAt);
    for (const c of bd.clusters) await o.append(c.data);
    if (bd.tbl.length) { await o.append(bd.tbl); await o.padTo(cs); }
  }
  if (lay.bitmapDir) { await o.append(lay.bitmapDir.data); await o.padTo(cs); }
  await o.append(rc.blocks);
  await o.append(encodeRefcountTable(lay.nTable, lay.nBlocks, lay.blocksAt, cs));
  if (lay.l1Last) await o.append(encodeL1(l1Tables[0].l1, false, cs, lay.l2Dest, l2Refs));
  await o.drain();
  if (o.pos !== lay.streamBase) throw new Error(`internal: layout mismatch (${o.pos} != ${lay.streamBase})`);
}
