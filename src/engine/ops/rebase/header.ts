/**
 * The backing file name and format of a qcow2 image changed, as QEMU 7.2's
 * qcow2_change_backing_file does it: the header cluster rewritten whole in qcow2_update_header's
 * layout (create/header.ts) with the new name after the extensions and the backing format
 * extension present only when a format is given. One write, synced: before it the old chain,
 * after it the new one.
 */
import { Qcow2Error } from '../../errors';
import { Qcow2Image } from '../../image/image';
import * as L from '../../qcow2/layout';
import { encodeHeader } from '../create/header';
import { writeAt } from '../refcountWrite';
import { assertNotLocked, assertWritable } from '../writable';

const KNOWN = new Set([L.EXT_BACKING_FORMAT, L.EXT_DATA_FILE, L.EXT_FEATURE_TABLE, L.EXT_BITMAPS, L.EXT_CRYPTO]);

/** Points the image at `backingFile` (with `backingFormat`), or at none when `backingFile` is undefined. */
export async function changeBackingFile(path: string, backingFile: string | undefined, backingFormat: string | undefined): Promise<void> {
  const label = backingFile ?? '';
  if (backingFile !== undefined && Buffer.byteLength(backingFile) > L.QCOW_MAX_BACKING_FILE_NAME) {
    throw new Qcow2Error(path, 'header.backing_file_offset', L.HEADER_FIELD.backing_file_offset.offset, `Could not change the backing file to '${label}': the name is longer than ${L.QCOW_MAX_BACKING_FILE_NAME} bytes`, 'unsupported');
  }
  assertNotLocked(path);
  const img = await Qcow2Image.open(path, { writable: true, openBacking: false, openDataFile: false });
  try {
    assertWritable(img);
    const h = img.header;
    const ext = (t: number) => h.extensions.find(e => e.type === t);
    let header: Buffer;
    try {
      header = encodeHeader({
        version: h.version as 2 | 3, clusterBits: h.clusterBits, size: h.size, cryptMethod: h.cryptMethod, l1Size: h.l1Size, l1Offset: h.l1TableOffset,
        reftableOffset: h.refcountTableOffset, reftableClusters: h.refcountTableClusters, nbSnapshots: h.nbSnapshots, snapshotsOffset: h.snapshotsOffset,
        incompatible: h.incompatibleFeatures, compatible: h.compatibleFeatures,
        autoclear: h.autoclearFeatures & (L.AUTOCLEAR_BITMAPS | L.AUTOCLEAR_DATA_FILE_RAW), refcountOrder: h.refcountOrder, compressionType: h.compressionType,
        backingFile, backingFormat: backingFile !== undefined ? backingFormat : undefined, dataFile: ext(L.EXT_DATA_FILE) ? h.dataFile : undefined,
        crypto: h.crypto, bitmaps: h.bitmaps && ext(L.EXT_BITMAPS) ? { nb: h.bitmaps.nbBitmaps, dirSize: h.bitmaps.bitmapDirectorySize, dirOffset: h.bitmaps.bitmapDirectoryOffset } : undefined,
        unknown: h.extensions.filter(e => !KNOWN.has(e.type)).map(e => ({ type: e.type, data: e.data })),
      });
    } catch {
      throw new Qcow2Error(path, 'header', 0, `Could not change the backing file to '${label}': No space left in the file header`, 'unsupported');
    }
    await writeAt(img.file, 0, header, 'header');
    await img.file.sync();
  } finally {
    await img.close();
  }
}
