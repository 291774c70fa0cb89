/**
 * `convert -l SNAPSHOT`: the first source read as of one of its internal snapshots, as qemu-img 7.2
 * does it (bdrv_snapshot_load_tmp → qcow2_snapshot_load_tmp):
 *
 * - the forms: `snapshot.id=ID`, `snapshot.name=NAME` or both (option syntax, recognised by the
 *   `snapshot.` prefix: a snapshot matching every key given), or a bare `NAME` (matched as an id
 *   first, then as a name; refused with several sources);
 * - only the first source's top image changes view: its active L1 table is replaced by the
 *   snapshot's, read-only; its backing chain is read as it is now (the snapshot does not record
 *   what the backing file held), and the virtual size stays the image's current size (guest
 *   ranges past the snapshot's L1 table read through to the backing file, or as zeros);
 * - `-s` (the old spelling) is gone from qemu-img 7.2: it is an unknown option there.
 */
import { Qcow2Error } from '../../errors';
import type { BlockLayer } from '../../formats/layer';
import { Qcow2Image } from '../../image/image';
import * as L from '../../qcow2/layout';

/** Which snapshot -l names. `bare`: a plain NAME (id or name), else the option form. */
export interface SnapshotSelector {
  id?: string;
  name?: string;
  bare: boolean;
}

/** qemu-img's parse of -l's argument; an unknown `snapshot.` key is its "Invalid parameter". */
export function parseSnapshotArg(text: string): SnapshotSelector {
  if (!text.startsWith('snapshot.')) return { name: text, bare: true };
  const sel: SnapshotSelector = { bare: false };
  for (const part of splitOpts(text)) {
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq), value = eq < 0 ? 'on' : part.slice(eq + 1);
    if (key === 'snapshot.id') sel.id = value;
    else if (key === 'snapshot.name') sel.name = value;
    else throw new SnapshotArgError(`Invalid parameter '${key}'\nFailed in parsing snapshot param '${text}'`);
  }
  return sel;
}

/** QemuOpts list splitting: ',' separates, ',,' is a literal comma. */
function splitOpts(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    if (text[i] === ',') {
      if (text[i + 1] === ',') { cur += ','; i++; continue; }
      out.push(cur); cur = '';
    } else cur += text[i];
  }
  out.push(cur);
  return out;
}

export class SnapshotArgError extends Error {}

function cantFind(path: string): Qcow2Error {
  return new Qcow2Error(path, 'snapshot table', undefined, "Failed to load snapshot: Can't find snapshot", 'not-found');
}

/**
 * Switches `layer` (the first source's top image) to the snapshot's L1 table. `sources` is the
 * number of SRC operands (a bare NAME refuses several, as qemu-img does).
 */
export async function loadSnapshot(layer: BlockLayer, sel: SnapshotSelector, sources: number): Promise<void> {
  if (sel.bare && sources > 1) throw new Qcow2Error(layer.path, 'options', undefined, 'No support for concatenating multiple snapshot', 'unsupported');
  if (!(layer instanceof Qcow2Image)) {
    throw new Qcow2Error(layer.path, 'options', undefined, `Failed to load snapshot: Block format '${layer.format}' used by device '' does not support temporarily loading internal snapshots`, 'unsupported');
  }
  const img = layer;
  const find = (id?: string, name?: string) => img.snapshots.find(s => (id === undefined || s.id === id) && (name === undefined || s.name === name));
  // qemu's bdrv_snapshot_find_by_id_and_name needs at least one of the two
  const sn = sel.bare ? find(sel.name, undefined) ?? find(undefined, sel.name) : sel.id === undefined && sel.name === undefined ? undefined : find(sel.id, sel.name);
  if (!sn) throw cantFind(img.path);
  const what = `snapshot "${sn.name}" L1 table`;
  if (sn.l1Size > L.QCOW_MAX_L1_SIZE / 8) throw new Qcow2Error(img.path, what, sn.l1TableOffset, 'Failed to load snapshot: Snapshot L1 table too large');
  if (sn.l1TableOffset % img.clusterSize !== 0) throw new Qcow2Error(img.path, what, sn.l1TableOffset, 'Failed to load snapshot: Snapshot L1 table offset invalid');
  const l1 = sn.l1Size > 0 ? await img.file.read(sn.l1TableOffset, sn.l1Size * 8, what) : Buffer.alloc(0);
  img.l1 = Buffer.from(l1);
}
