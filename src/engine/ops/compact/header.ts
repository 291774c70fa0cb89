/**
 * The new header cluster: the source's header, extensions and backing file name, with the fields
 * that point into the file set to the new layout, the dirty bit cleared, the compression type
 * recorded, and a relative backing file name re-pointed when the output is in another folder.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Qcow2Error } from '../../errors';
import type { Qcow2Image } from '../../image/image';
import * as L from '../../qcow2/layout';
import { putOffset } from '../../qcow2/cluster';
import type { Layout } from './layout';

export interface HeaderInput {
  img: Qcow2Image;
  cs: number;
  /** The active L1 table's entries. */
  l1Entries: number;
  layout: Layout;
  outType: number;
  /** Set when writing to another file than the source: where it goes. */
  output: string | undefined;
  dest: string;
}

export async function buildHeader(x: HeaderInput): Promise<Buffer> {
  const { img, cs, layout: lay } = x;
  const h = img.header;
  const src = img.path;
  const hdr = Buffer.alloc(cs);
  const first = await img.file.read(0, Math.min(h.clusterSize, img.file.size), 'header');
  first.copy(hdr, 0, 0, Math.min(first.length, h.headerEnd));
  L.writeHeaderField(hdr, 'cluster_bits', Math.log2(cs));
  L.writeHeaderField(hdr, 'l1_size', x.l1Entries);
  L.writeHeaderField(hdr, 'l1_table_offset', lay.l1Offsets[0]);
  L.writeHeaderField(hdr, 'refcount_table_offset', lay.tableAt);
  L.writeHeaderField(hdr, 'refcount_table_clusters', lay.nTable);
  L.writeHeaderField(hdr, 'nb_snapshots', img.snapshots.length);
  L.writeHeaderField(hdr, 'snapshots_offset', lay.snapshotsAt);
  if (h.version >= 3) {
    let incompat = h.incompatibleFeatures & ~L.INCOMPAT_DIRTY;
    if (x.outType === L.COMPRESSION_ZSTD) incompat |= L.INCOMPAT_COMPRESSION; else incompat &= ~L.INCOMPAT_COMPRESSION;
    L.writeHeaderField(hdr, 'incompatible_features', incompat);
    if (h.headerLength > L.HEADER_FIELD.compression_type.offset) L.writeHeaderField(hdr, 'compression_type', x.outType);
  }
  // a relative backing file name is resolved against the image's folder: written into another
  // folder, the output would silently read a different file of that name (or none). Re-point it.
  // (in place the folder is the same; through a symlink QEMU still resolves against the link's)
  if (x.output && h.backingFile && !path.isAbsolute(h.backingFile)) {
    const target = path.resolve(path.dirname(src), h.backingFile);
    const rel = path.relative(path.dirname(path.resolve(x.dest)), target);
    if (rel !== h.backingFile && fs.existsSync(target)) {
      const name = Buffer.from(rel, 'utf8');
      const extEnd = h.extensions.reduce((a, e) => Math.max(a, e.hostOffset + L.EXT_HEADER_SIZE + L.alignUp(e.length, 8) + L.EXT_HEADER_SIZE), h.headerLength);
      if (name.length > L.QCOW_MAX_BACKING_FILE_NAME || h.backingFileOffset < extEnd || h.backingFileOffset + name.length > cs) {
        throw new Qcow2Error(src, 'header.backing_file_offset', L.HEADER_FIELD.backing_file_offset.offset, `the backing file name "${h.backingFile}" is relative and the output's name for it ("${rel}") does not fit in the header; write the output next to the source`, 'unsupported');
      }
      hdr.fill(0, h.backingFileOffset, Math.min(cs, h.backingFileOffset + h.backingFileSize));
      name.copy(hdr, h.backingFileOffset);
      L.writeHeaderField(hdr, 'backing_file_size', name.length);
    }
  }
  if (lay.bitmapDir) {
    const ext = h.extensions.find(e => e.type === L.EXT_BITMAPS)!;
    putOffset(hdr, ext.hostOffset + L.EXT_HEADER_SIZE + L.BITMAPS_EXT.bitmap_directory_size, lay.bitmapDir.size);
    putOffset(hdr, ext.hostOffset + L.EXT_HEADER_SIZE + L.BITMAPS_EXT.bitmap_directory_offset, lay.bitmapDir.offset);
  }
  return hdr;
}
