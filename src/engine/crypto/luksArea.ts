/**
 * The LUKS area: the bytes holding the LUKS header and its key material. Inside qcow2 it is the
 * range the full disk encryption header extension names (offset + length); for a raw LUKS file
 * (QEMU's `luks` driver) it is the file up to the payload. Every read of it goes through
 * `readLuksArea`, which keeps reads inside the area — as QEMU's qcow2 driver refuses "data outside
 * of extension header" — and names the structure and offset when it cannot.
 */
import { Qcow2Error } from '../errors';
import { LUKS_FIELD, LUKS_SLOT_FIELD, LuksHeaderField, LuksSlotField, slotDescriptorOffset } from './luksLayout';

/** The part of the engine's ImageFile this code needs (ImageFile.read matches it). */
export interface ByteReader {
  read(hostOffset: number, length: number, structure: string): Promise<Buffer>;
}

export interface LuksArea {
  /** The image file's name, for messages. */
  file: string;
  reader: ByteReader;
  /** Host offset of the LUKS header. */
  offset: number;
  /** Bytes of the area; nothing outside [offset, offset + length) is read. */
  length: number;
}

export const LUKS_STRUCTURE = 'encryption header';

/** Where in the LUKS header something is: a header field, or a key slot (and one of its fields). */
export type LuksPlace =
  | { field: LuksHeaderField }
  | { slot: number; field?: LuksSlotField | 'key_material' };

/** The one formatter of LUKS structure paths: `encryption header.key_slot[3].stripes`. */
export function luksStructure(place: LuksPlace): string {
  if ('slot' in place) return `${LUKS_STRUCTURE}.key_slot[${place.slot}]${place.field ? '.' + place.field : ''}`;
  return `${LUKS_STRUCTURE}.${place.field}`;
}

/** Offset of a place from the start of the header (key material has its own offset; see callers). */
export function luksPlaceOffset(place: LuksPlace): number {
  if ('slot' in place) {
    const base = slotDescriptorOffset(place.slot);
    return place.field && place.field !== 'key_material' ? base + LUKS_SLOT_FIELD[place.field] : base;
  }
  return LUKS_FIELD[place.field];
}

/** Where a LUKS header sits, for messages: the file and the host offset of the header. */
export interface LuksLocation {
  file: string;
  offset: number;
}

export function luksError(at: LuksLocation, place: LuksPlace, detail: string, code: Qcow2Error['code'] = 'corrupt', offsetInArea?: number): Qcow2Error {
  return new Qcow2Error(at.file, luksStructure(place), at.offset + (offsetInArea ?? luksPlaceOffset(place)), detail, code);
}

/**
 * Reads `length` bytes at `offsetInArea` from the start of the LUKS area. A range outside the area
 * is refused before anything is allocated (lengths here come from the header: 592 bytes, or one
 * key slot's material of at most 64 × 4000 bytes).
 */
export async function readLuksArea(area: LuksArea, offsetInArea: number, length: number, place: LuksPlace): Promise<Buffer> {
  if (!Number.isSafeInteger(offsetInArea) || offsetInArea < 0 || !Number.isSafeInteger(length) || length < 0 || offsetInArea + length > area.length) {
    throw luksError(area, place,
      `${length} bytes at 0x${offsetInArea.toString(16)} lie outside the ${area.length}-byte LUKS area`, 'corrupt', offsetInArea);
  }
  return area.reader.read(area.offset + offsetInArea, length, luksStructure(place));
}
