/**
 * Other image formats: raw, VHD (vpc) and VMDK — readers shaped as the engine's block layers and
 * writers for `convert -O`. `probeFormat` guesses a file's format as qemu-img does without -f.
 */
import { FormatFile } from './file';
import type { BlockLayer, HoleSeeker } from './layer';
import { RawReader } from './raw';
import { VmdkImage } from './vmdk/read';
import { VMDK3_MAGIC, VMDK4_MAGIC } from './vmdk/layout';
import { VpcImage } from './vpc/read';

export * from './layer';
export { FileSink } from './file';
export { RawReader, rawSource, writeRaw, type RawWriteOptions } from './raw';
export { VpcImage } from './vpc/read';
export { writeVpc, type VpcWriteOptions, type VpcWriteResult } from './vpc/write';
export { vhdSize, type VhdSize } from './vpc/geometry';
export { VmdkImage, type VmdkCreateType, type VmdkExtentInfo } from './vmdk/read';
export { writeVmdk, type VmdkSubformat, type VmdkWriteOptions, type VmdkWriteResult } from './vmdk/write';
export type { VmdkAdapterType } from './vmdk/descriptor';

export type ForeignFormat = 'raw' | 'vpc' | 'vmdk';

/**
 * The format qemu-img 7.2 would pick for a file: qcow2 by its magic, vmdk by its magic or a
 * descriptor starting with "version=1|2|3" (after comments and blank lines), vpc by "conectix" at
 * offset 0 — so a fixed VHD, whose only footer is at the end, probes as raw, exactly as in QEMU.
 */
export async function probeFormat(path: string): Promise<'qcow2' | ForeignFormat> {
  const file = await FormatFile.open(path);
  try {
    const head = await file.readPadded(0, Math.min(file.size, 2048), 'file header');
    if (head.length >= 4 && head.readUInt32BE(0) === 0x514649fb && head.length >= 8 && head.readUInt32BE(4) >= 2) return 'qcow2';
    if (head.length >= 4 && (head.readUInt32BE(0) === VMDK4_MAGIC || head.readUInt32BE(0) === VMDK3_MAGIC)) return 'vmdk';
    if (looksLikeVmdkDescriptor(head.toString('latin1'))) return 'vmdk';
    if (head.length >= 8 && head.toString('latin1', 0, 8) === 'conectix') return 'vpc';
    return 'raw';
  } finally {
    await file.close();
  }
}

/** QEMU's vmdk_probe on text: comment lines and blank (space-only) lines, then "version=N". */
function looksLikeVmdkDescriptor(text: string): boolean {
  let p = 0;
  while (p < text.length) {
    if (text[p] === '#') {
      const nl = text.indexOf('\n', p);
      if (nl < 0) return false;
      p = nl + 1;
      continue;
    }
    if (text[p] === ' ') {
      while (p < text.length && text[p] === ' ') p++;
      if (text[p] === '\r') p++;
      if (p >= text.length || text[p] !== '\n') return false;
      p++;
      continue;
    }
    return /^version=[123]\r?\n/.test(text.slice(p, p + 11));
  }
  return false;
}

/** Opens a raw, VHD or VMDK image as a block layer. */
export async function openForeign(path: string, format: ForeignFormat, options: { holes?: HoleSeeker } = {}): Promise<BlockLayer> {
  switch (format) {
    case 'raw': return RawReader.open(path, options);
    case 'vpc': return VpcImage.open(path, options);
    case 'vmdk': return VmdkImage.open(path, options);
  }
}
