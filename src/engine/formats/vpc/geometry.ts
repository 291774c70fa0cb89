/**
 * The size of a VHD: Virtual PC sizes a disk by its CHS geometry, so QEMU rounds a requested size
 * up to the next size a geometry can express (the VHD specification's algorithm, with QEMU's
 * 255-sectors-per-track extension) and records that size; with `force_size` it keeps the exact
 * size (rounded to a sector) and marks the footer "qem2" so readers take `currentSize`.
 */
import { CHS_MAX_CYLINDERS, CHS_MAX_HEADS, CHS_MAX_SECTORS_PER_TRACK, VHD_MAX_GEOMETRY, VHD_MAX_SECTORS } from './layout';

export interface ChsGeometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

/** The VHD specification's geometry for a sector count (it may round down). */
export function calculateGeometry(totalSectors: number): ChsGeometry {
  const sectors = Math.min(totalSectors, VHD_MAX_GEOMETRY);
  let sectorsPerTrack: number, heads: number, cylTimesHeads: number;
  if (sectors >= 65535 * 16 * 63) {
    sectorsPerTrack = 255;
    heads = 16;
    cylTimesHeads = Math.floor(sectors / sectorsPerTrack);
  } else {
    sectorsPerTrack = 17;
    cylTimesHeads = Math.floor(sectors / sectorsPerTrack);
    heads = Math.max(4, Math.ceil(cylTimesHeads / 1024));
    if (cylTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31;
      heads = 16;
      cylTimesHeads = Math.floor(sectors / sectorsPerTrack);
    }
    if (cylTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63;
      heads = 16;
      cylTimesHeads = Math.floor(sectors / sectorsPerTrack);
    }
  }
  return { cylinders: Math.floor(cylTimesHeads / heads), heads, sectorsPerTrack };
}

export interface VhdSize extends ChsGeometry {
  /** The disk size the VHD records and readers see, in bytes. */
  size: number;
  /** "qemu" (size from the geometry) or "qem2" (size from currentSize, `force_size`). */
  creatorApp: 'qemu' | 'qem2';
  /** Azure takes only fixed VHDs whose size is a whole number of MiB. */
  azureAligned: boolean;
}

/** Why a size cannot be a VHD: more than 2040 GiB. */
export class VhdTooLargeError extends Error {}

/**
 * The VHD QEMU 7.2 creates for a requested size: rounded up to a sector, then (without
 * `forceSize`) up to the first size the CHS geometry expresses, searching upwards one sector at a
 * time so a conversion never truncates. Disks at the largest geometry keep their exact size.
 */
export function vhdSize(requestedBytes: number, forceSize = false): VhdSize {
  const bytes = Math.ceil(requestedBytes / 512) * 512;
  let geometry: ChsGeometry = { cylinders: 0, heads: 0, sectorsPerTrack: 0 };
  if (forceSize) {
    geometry = { cylinders: CHS_MAX_CYLINDERS, heads: CHS_MAX_HEADS, sectorsPerTrack: CHS_MAX_SECTORS_PER_TRACK };
  } else {
    const wanted = Math.min(VHD_MAX_GEOMETRY, bytes / 512);
    for (let i = 0; wanted > chs(geometry); i++) geometry = calculateGeometry(wanted + i);
  }
  let totalSectors: number;
  if (chs(geometry) === VHD_MAX_GEOMETRY) {
    totalSectors = bytes / 512;
    if (totalSectors > VHD_MAX_SECTORS) throw new VhdTooLargeError('Disk size is too large, max size is 2040 GiB');
  } else {
    totalSectors = chs(geometry);
  }
  const size = totalSectors * 512;
  return { ...geometry, size, creatorApp: forceSize ? 'qem2' : 'qemu', azureAligned: size % (1024 * 1024) === 0 };
}

function chs(g: ChsGeometry): number {
  return g.cylinders * g.heads * g.sectorsPerTrack;
}
