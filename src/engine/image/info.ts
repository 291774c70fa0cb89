/**
 * `qemu-img info --output=json` for a qcow2 image: the same keys, names and values.
 */
import * as fs from 'node:fs';
import { resolveBackingPath } from './backing';
import { readEncryptInfo, EncryptInfo } from './encryption';
import { Qcow2Image } from './image';
import { exactInteger, stringifyExact } from '../json';
import * as L from '../qcow2/layout';
import { NO_ICOUNT } from '../qcow2/snapshot';

/**
 * One snapshot as QEMU's SnapshotInfo has it: its 64-bit fields are QAPI int64, so they are the
 * on-disk unsigned values read as signed (an icount of 2^64-2 prints as -2), printed exactly.
 */
export interface SnapshotInfo {
  id: string;
  name: string;
  'vm-state-size': bigint;
  'date-sec': number;
  'date-nsec': number;
  'vm-clock-sec': number;
  'vm-clock-nsec': number;
  icount?: bigint;
}

export interface ImageInfo {
  /** Up to 2^61 with 2 MiB clusters: a bigint past 2^53, printed exactly. */
  'virtual-size': number | bigint;
  filename: string;
  'cluster-size': number;
  format: 'qcow2';
  'actual-size': number;
  encrypted?: boolean;
  snapshots?: SnapshotInfo[];
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  'format-specific': {
    type: 'qcow2';
    data: {
      compat: string;
      'compression-type': string;
      'lazy-refcounts'?: boolean;
      bitmaps?: { flags: string[]; name: string; granularity: number }[];
      'refcount-bits': number;
      encrypt?: EncryptInfo;
      'data-file'?: string;
      'data-file-raw'?: boolean;
      corrupt?: boolean;
      'extended-l2'?: boolean;
    };
  };
  'dirty-flag': boolean;
}

export async function imageInfo(img: Qcow2Image): Promise<ImageInfo> {
  const h = img.header;
  const st = await fs.promises.stat(img.path);
  const data: ImageInfo['format-specific']['data'] = {
    compat: h.version === 2 ? '0.10' : '1.1',
    'compression-type': h.compressionType === L.COMPRESSION_ZSTD ? 'zstd' : 'zlib',
    'refcount-bits': h.refcountBits,
  };
  if (h.version === 3) {
    data['lazy-refcounts'] = (h.compatibleFeatures & L.COMPAT_LAZY_REFCOUNTS) !== 0n;
    if (img.bitmaps.length > 0) {
      data.bitmaps = img.bitmaps.map(b => ({
        flags: [...(b.inUse ? ['in-use'] : []), ...(b.auto ? ['auto'] : [])],
        name: b.name,
        granularity: 2 ** b.granularityBits,
      }));
    }
  }
  const enc = await readEncryptInfo(img.file, h);
  if (enc) data.encrypt = enc;
  if (h.version === 3) {
    if ((h.incompatibleFeatures & L.INCOMPAT_DATA_FILE) !== 0n && h.dataFile !== undefined) {
      data['data-file'] = h.dataFile;
      data['data-file-raw'] = (h.autoclearFeatures & L.AUTOCLEAR_DATA_FILE_RAW) !== 0n;
    }
    data.corrupt = (h.incompatibleFeatures & L.INCOMPAT_CORRUPT) !== 0n;
    data['extended-l2'] = h.extendedL2;
  }
  const info: ImageInfo = {
    'virtual-size': exactInteger(h.size),
    filename: img.path,
    'cluster-size': h.clusterSize,
    format: 'qcow2',
    'actual-size': st.blocks * 512,
    'format-specific': { type: 'qcow2', data },
    'dirty-flag': (h.incompatibleFeatures & L.INCOMPAT_DIRTY) !== 0n,
  };
  if (h.cryptMethod !== L.CRYPT_NONE) info.encrypted = true;
  if (img.snapshots.length > 0) {
    info.snapshots = img.snapshots.map(s => {
      const si: SnapshotInfo = {
        id: s.id, name: s.name,
        'vm-state-size': BigInt.asIntN(64, s.vmStateSizeLarge ?? BigInt(s.vmStateSize)),
        'date-sec': s.dateSec, 'date-nsec': s.dateNsec,
        // at most 2^64/10^9 seconds: exact as a number
        'vm-clock-sec': Number(s.vmClockNsec / 1000000000n),
        'vm-clock-nsec': Number(s.vmClockNsec % 1000000000n),
      };
      if (s.icount !== undefined && s.icount !== NO_ICOUNT) si.icount = BigInt.asIntN(64, s.icount);
      return si;
    });
  }
  if (h.backingFile !== undefined) {
    info['backing-filename'] = h.backingFile;
    info['full-backing-filename'] = resolveBackingPath(img.path, h.backingFile);
    if (h.backingFormat !== undefined) info['backing-filename-format'] = h.backingFormat;
  }
  return info;
}

/** Serialises like QEMU's JSON printer (4-space indent, 64-bit integers digit-exact). */
export function formatInfoJson(info: ImageInfo): string {
  return stringifyExact(info, 4) + '\n';
}
