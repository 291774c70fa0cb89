/**
 * Who maps each host data cluster: the active L1 table, one snapshot's, or several — and, for
 * the active one, whether it maps the cluster at guest clusters lying wholly in guest free space.
 * Every L1 table (the compaction's SourceTables, already read) is walked with the engine's walker
 * (walkMapping), its L2 tables served from memory. `space` splits its parts by this; `sparsify`
 * drops what only the active disk maps, and only at free guest clusters.
 */
import type { Qcow2Image } from '../../engine/image/image';
import { l2Window, type SourceTables } from '../../engine/ops/compact/plan';
import { l1EntryOffset, SubclusterType, walkMapping } from '../../engine/qcow2/cluster';
import type { FreeMap } from './freeMap';

/** `owner` value: no L1 table maps the cluster. */
export const OWNER_NONE = -1;
/** `owner` value: more than one L1 table maps it (shared between snapshots, or a snapshot and the active disk). */
export const OWNER_SEVERAL = -2;

/** Active-map flags per host cluster. */
export const AT_USED = 1; // mapped by the active disk at a guest cluster not wholly free
export const AT_FREE = 2; // mapped by the active disk at a guest cluster wholly in free space
export const AT_ZERO_FLAG = 4; // mapped by the active disk with the zero flag (a preallocated zero cluster)
export const AT_INSIDE = 8; // (with AT_USED) the used guest cluster overlaps a browsable file system

export interface CompressedRef { owner: number; flags: number; bound: number }

export interface References {
  /** Per host cluster: the index of the only L1 table that maps it (0 = active, i = snapshot i-1), or OWNER_*. */
  owner: Int32Array;
  /** Per host cluster: AT_* flags from the active mapping. */
  active: Uint8Array;
  /** Compressed cluster offset → who maps it. */
  compressed: Map<number, CompressedRef>;
  /** L2 table offset → the only L1 table that points at it, or OWNER_SEVERAL. */
  l2Owner: Map<number, number>;
}

function activeFlag(free: FreeMap | null, gc: number): number {
  if (free?.isFree(gc)) return AT_FREE;
  return free?.inFileSystem(gc) ? AT_USED | AT_INSIDE : AT_USED;
}

function own(prev: number, t: number): number {
  return prev === OWNER_NONE || prev === t ? t : OWNER_SEVERAL;
}

export async function findReferences(img: Qcow2Image, tables: SourceTables, free: FreeMap | null, signal?: AbortSignal): Promise<References> {
  const g = img.g, cs = g.clusterSize;
  const nb = Math.ceil(img.file.size / cs) + 1;
  const owner = new Int32Array(nb).fill(OWNER_NONE);
  const active = new Uint8Array(nb);
  const compressed = new Map<number, CompressedRef>();
  const l2Owner = new Map<number, number>();
  const perL2 = cs * g.l2Size;
  // the L2 tables not held by `tables` are read a window at a time (4 MiB of them), never all at once
  const win = l2Window(img);
  const readWindow = async (_idx: readonly number[], offsets: readonly number[]) => {
    const held = offsets.every(o => tables.l2.has(o));
    const read = held ? null : await win.read(offsets.filter(o => !tables.l2.has(o)), o => `L2 table at 0x${o.toString(16)}`);
    return (o: number) => tables.l2.get(o) ?? read!.get(o)!;
  };
  for (let t = 0; t < tables.l1Tables.length; t++) {
    const { l1, label } = tables.l1Tables[t];
    const count = l1.length / 8;
    for (let i = 0; i < count; i++) {
      const o = l1EntryOffset(l1, i);
      if (o) l2Owner.set(o, own(l2Owner.get(o) ?? OWNER_NONE, t));
    }
    const size = t === 0 ? img.virtualSize : count * perL2;
    await walkMapping(g, img.path, l1, size, 0, size, readWindow, r => {
      if (r.type === SubclusterType.Compressed) {
        const c = compressed.get(r.compressedOffset!) ?? { owner: OWNER_NONE, flags: 0, bound: r.compressedSize! };
        c.owner = own(c.owner, t);
        if (t === 0) c.flags |= activeFlag(free, Math.floor(r.guestOffset / cs));
        compressed.set(r.compressedOffset!, c);
        return;
      }
      if (r.type !== SubclusterType.Normal && r.type !== SubclusterType.ZeroAlloc && r.type !== SubclusterType.UnallocatedAlloc) return;
      // one guest cluster at a time (extended L2 runs may start or end inside one)
      for (let pos = r.guestOffset; pos < r.guestOffset + r.length;) {
        const gc = Math.floor(pos / cs);
        const k = Math.floor((r.hostOffset + (pos - r.guestOffset)) / cs);
        if (k < nb) {
          owner[k] = own(owner[k], t);
          if (t === 0) active[k] |= r.type === SubclusterType.ZeroAlloc && !g.extendedL2 ? AT_ZERO_FLAG : activeFlag(free, gc);
        }
        pos = (gc + 1) * cs;
      }
    }, { signal, l1Label: label, window: win.capacity });
  }
  return { owner, active, compressed, l2Owner };
}

/**
 * What sparsify drops beyond compact: data clusters only the active disk maps, every one of its
 * mappings at a guest cluster wholly in free space, and compressed clusters likewise.
 */
export function sparsifyDrop(tables: SourceTables, refs: References, cs: number): { data: Set<number>; compressed: Set<number> } {
  const data = new Set<number>();
  for (const s of tables.data) {
    const k = s / cs;
    if (refs.owner[k] === 0 && refs.active[k] === AT_FREE) data.add(s);
  }
  const compressed = new Set<number>();
  for (const [off, c] of refs.compressed) if (c.owner === 0 && c.flags === AT_FREE) compressed.add(off);
  return { data, compressed };
}
