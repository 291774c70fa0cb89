/**
 * Where the metadata of a (healthy) qcow2 image lies, found with plain byte reads so the fuzzer
 * never depends on the engine it judges: every header field, header extension, L1/L2 entry,
 * refcount table and block entry, snapshot table field and bitmap directory field as a target the
 * mutator can damage.
 */

/** How a target's value is meant: the mutator picks damage that fits. */
export type TargetKind = 'offset' | 'count' | 'flags' | 'entry' | 'value';

export interface Target {
  /** e.g. `header.l1_table_offset`, `L2[1][0x1f]`, `snapshot[0].extra_data_size` */
  name: string;
  /** the group an entry belongs to (entries of one group may be swapped or copied onto each other) */
  group: string;
  off: number;
  size: 1 | 2 | 4 | 8;
  kind: TargetKind;
  /** for refcount entries narrower than a byte: the bit position and width within the byte */
  bits?: { shift: number; width: number };
  /** the entry refers to something (a non-zero L2 entry, an allocated cluster's refcount) */
  live?: boolean;
}

export interface Structures {
  fileSize: number;
  clusterSize: number;
  version: number;
  refcountBits: number;
  extendedL2: boolean;
  targets: Target[];
}

const OFF = 0x00fffffffffffe00n;
/** Unused entries kept per table: damage to one unused entry looks like damage to any other. */
const DEAD_PER_TABLE = 32;

function u64(b: Buffer, o: number): bigint {
  return o + 8 <= b.length ? b.readBigUInt64BE(o) : 0n;
}
function u32(b: Buffer, o: number): number {
  return o + 4 <= b.length ? b.readUInt32BE(o) : 0;
}
function u16(b: Buffer, o: number): number {
  return o + 2 <= b.length ? b.readUInt16BE(o) : 0;
}

const HEADER: [string, number, 1 | 2 | 4 | 8, TargetKind][] = [
  ['magic', 0, 4, 'value'], ['version', 4, 4, 'value'], ['backing_file_offset', 8, 8, 'offset'],
  ['backing_file_size', 16, 4, 'count'], ['cluster_bits', 20, 4, 'value'], ['size', 24, 8, 'count'],
  ['crypt_method', 32, 4, 'value'], ['l1_size', 36, 4, 'count'], ['l1_table_offset', 40, 8, 'offset'],
  ['refcount_table_offset', 48, 8, 'offset'], ['refcount_table_clusters', 56, 4, 'count'],
  ['nb_snapshots', 60, 4, 'count'], ['snapshots_offset', 64, 8, 'offset'],
];
const HEADER_V3: [string, number, 1 | 2 | 4 | 8, TargetKind][] = [
  ['incompatible_features', 72, 8, 'flags'], ['compatible_features', 80, 8, 'flags'],
  ['autoclear_features', 88, 8, 'flags'], ['refcount_order', 96, 4, 'value'], ['header_length', 100, 4, 'count'],
];

export function locate(b: Buffer): Structures {
  const targets: Target[] = [];
  const add = (t: Target): void => {
    if (t.off >= 0 && t.off + t.size <= b.length) targets.push(t);
  };
  const version = u32(b, 4);
  const clusterBits = u32(b, 20);
  const cs = 2 ** clusterBits;
  for (const [n, o, s, k] of HEADER) add({ name: `header.${n}`, group: 'header', off: o, size: s, kind: k });
  let headerLength = 72, refcountBits = 16, extendedL2 = false;
  if (version >= 3) {
    for (const [n, o, s, k] of HEADER_V3) add({ name: `header.${n}`, group: 'header', off: o, size: s, kind: k });
    headerLength = u32(b, 100);
    refcountBits = 2 ** u32(b, 96);
    extendedL2 = (u64(b, 72) & (1n << 4n)) !== 0n;
    if (headerLength > 104) add({ name: 'header.compression_type', group: 'header', off: 104, size: 1, kind: 'value' });
  }

  // header extensions: type, length, data padded to 8
  let bitmapDir: { off: number; size: number; n: number } | undefined;
  for (let o = headerLength, i = 0; o + 8 <= Math.min(b.length, cs) && i < 64; i++) {
    const type = u32(b, o), len = u32(b, o + 4);
    if (type === 0) break;
    const tn = `ext[${i}](0x${type.toString(16)})`;
    add({ name: `${tn}.type`, group: 'ext', off: o, size: 4, kind: 'value' });
    add({ name: `${tn}.length`, group: 'ext', off: o + 4, size: 4, kind: 'count' });
    if (type === 0x23852875) {
      add({ name: `${tn}.nb_bitmaps`, group: 'bitmapext', off: o + 8, size: 4, kind: 'count' });
      add({ name: `${tn}.reserved`, group: 'bitmapext', off: o + 12, size: 4, kind: 'value' });
      add({ name: `${tn}.bitmap_directory_size`, group: 'bitmapext', off: o + 16, size: 8, kind: 'count' });
      add({ name: `${tn}.bitmap_directory_offset`, group: 'bitmapext', off: o + 24, size: 8, kind: 'offset' });
      bitmapDir = { n: u32(b, o + 8), size: Number(u64(b, o + 16)), off: Number(u64(b, o + 24)) };
    } else if (type === 0xe2792aca && len > 0) {
      add({ name: `${tn}.data`, group: 'ext', off: o + 8, size: 1, kind: 'value' });
    }
    o += 8 + Math.ceil(len / 8) * 8;
  }

  // L1 and L2 tables (the active one and each snapshot's)
  const l2Entry = extendedL2 ? 16 : 8;
  const seenL2 = new Set<number>();
  const table = (l1Off: number, l1Size: number, prefix: string): void => {
    for (let i = 0; i < l1Size && l1Off + 8 * i + 8 <= b.length; i++) {
      const e = u64(b, l1Off + 8 * i);
      add({ name: `${prefix}L1[${i}]`, group: `${prefix}L1`, off: l1Off + 8 * i, size: 8, kind: 'entry', live: e !== 0n });
      const l2 = Number(e & OFF);
      if (!l2 || seenL2.has(l2) || l2 + cs > b.length) continue;
      seenL2.add(l2);
      let dead = 0;
      for (let j = 0; j < cs / l2Entry; j++) {
        const eo = l2 + j * l2Entry;
        const v = u64(b, eo);
        if (v === 0n && (!extendedL2 || u64(b, eo + 8) === 0n) && ++dead > DEAD_PER_TABLE) continue;
        add({ name: `L2@0x${l2.toString(16)}[0x${j.toString(16)}]`, group: 'L2', off: eo, size: 8, kind: 'entry', live: v !== 0n });
        if (extendedL2) add({ name: `L2@0x${l2.toString(16)}[0x${j.toString(16)}].bitmap`, group: 'L2bitmap', off: eo + 8, size: 8, kind: 'flags', live: u64(b, eo + 8) !== 0n });
      }
    }
  };
  table(Number(u64(b, 40)), u32(b, 36), '');

  // refcount table and blocks
  const rt = Number(u64(b, 48)), rtClusters = u32(b, 56);
  for (let i = 0; i < (rtClusters * cs) / 8 && rt + 8 * i + 8 <= b.length; i++) {
    const e = u64(b, rt + 8 * i);
    if (e === 0n && i > DEAD_PER_TABLE) continue;
    add({ name: `reftable[${i}]`, group: 'reftable', off: rt + 8 * i, size: 8, kind: 'entry', live: e !== 0n });
    const rb = Number(e & ~0x1ffn);
    if (!rb || rb + cs > b.length) continue;
    // past the end of the file every refcount is 0 and the damage looks the same: a few suffice
    const perBlock = Math.min((cs * 8) / refcountBits, Math.max(0, Math.ceil(b.length / cs) - i * ((cs * 8) / refcountBits)) + DEAD_PER_TABLE);
    for (let j = 0; j < perBlock; j++) {
      const bit = j * refcountBits;
      const off = rb + Math.floor(bit / 8);
      const base = { name: `refblock[${i}][0x${j.toString(16)}]`, group: 'refblock', off };
      let live: boolean;
      if (refcountBits < 8) {
        const shift = bit % 8; // QEMU packs narrow refcounts from the least significant bit of each byte
        live = ((b[off] >> shift) & ((1 << refcountBits) - 1)) !== 0;
        add({ ...base, size: 1, kind: 'value', bits: { shift, width: refcountBits }, live });
      } else {
        const size = (refcountBits / 8) as 1 | 2 | 4 | 8;
        live = b.subarray(off, off + size).some(x => x !== 0);
        add({ ...base, size, kind: 'value', live });
      }
    }
  }

  // snapshot table
  const nSnap = u32(b, 60);
  let so = Number(u64(b, 64));
  for (let i = 0; i < nSnap && so + 40 <= b.length; i++) {
    const p = `snapshot[${i}]`;
    const f = (n: string, o: number, s: 1 | 2 | 4 | 8, k: TargetKind): void => add({ name: `${p}.${n}`, group: `snapfield.${n}`, off: so + o, size: s, kind: k });
    f('l1_table_offset', 0, 8, 'offset'); f('l1_size', 8, 4, 'count'); f('id_str_size', 12, 2, 'count'); f('name_size', 14, 2, 'count');
    f('date_sec', 16, 4, 'value'); f('date_nsec', 20, 4, 'value'); f('vm_clock_nsec', 24, 8, 'value'); f('vm_state_size', 32, 4, 'count');
    f('extra_data_size', 36, 4, 'count');
    const extra = u32(b, so + 36);
    if (extra >= 8) f('vm_state_size_large', 40, 8, 'count');
    if (extra >= 16) f('disk_size', 48, 8, 'count');
    if (extra >= 24) f('icount', 56, 8, 'value');
    table(Number(u64(b, so)), u32(b, so + 8), `${p}.`);
    so += 40 + extra + u16(b, so + 12) + u16(b, so + 14);
    so = Math.ceil(so / 8) * 8;
  }

  // bitmap directory and bitmap tables
  if (bitmapDir) {
    let o = bitmapDir.off;
    for (let i = 0; i < bitmapDir.n && o + 24 <= b.length; i++) {
      const p = `bitmap[${i}]`;
      const f = (n: string, d: number, s: 1 | 2 | 4 | 8, k: TargetKind): void => add({ name: `${p}.${n}`, group: `bitmapfield.${n}`, off: o + d, size: s, kind: k });
      f('bitmap_table_offset', 0, 8, 'offset'); f('bitmap_table_size', 8, 4, 'count'); f('flags', 12, 4, 'flags');
      f('type', 16, 1, 'value'); f('granularity_bits', 17, 1, 'value'); f('name_size', 18, 2, 'count'); f('extra_data_size', 20, 4, 'count');
      const bt = Number(u64(b, o)), btSize = u32(b, o + 8);
      for (let j = 0; j < btSize && bt + 8 * j + 8 <= b.length; j++) {
        add({ name: `${p}.table[${j}]`, group: 'bitmaptable', off: bt + 8 * j, size: 8, kind: 'entry', live: u64(b, bt + 8 * j) !== 0n });
      }
      o += 24 + u32(b, o + 20) + u16(b, o + 18);
      o = Math.ceil(o / 8) * 8;
    }
  }
  return { fileSize: b.length, clusterSize: cs, version, refcountBits, extendedL2, targets };
}
