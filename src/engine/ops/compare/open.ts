/**
 * Opening an image read-only as qemu-img opens it for compare, commit and rebase: by the format
 * given (-f) or probed, qcow2 with its whole backing chain, raw, VHD and VMDK through the
 * formats/ readers. One function so every operation of this kind opens images alike.
 */
import { Qcow2Error } from '../../errors';
import { openForeign, probeFormat, type BlockLayer, type LayerFormat } from '../../formats';
import { holeSeeker } from '../../io/holes';
import type { KeyLookup } from '../../image/encryption';
import { Qcow2Image } from '../../image/image';

export const IMAGE_FORMATS: readonly LayerFormat[] = ['qcow2', 'raw', 'vpc', 'vmdk'];

/** The image as a block layer (its backing chain opened, encrypted layers unlocked by `keys`), by `format` or by probing as qemu-img does. */
export async function openImageLayer(path: string, format?: string, keys?: KeyLookup): Promise<BlockLayer> {
  const fmt = format ?? await probeFormat(path);
  switch (fmt) {
    case 'qcow2': return Qcow2Image.open(path, { keys });
    case 'raw': case 'vpc': case 'vmdk': return openForeign(path, fmt, { holes: holeSeeker() });
    default: throw new Qcow2Error(path, 'format', undefined, `Unknown driver '${fmt}' (qcow2, raw, vpc and vmdk are read)`, 'unsupported');
  }
}
