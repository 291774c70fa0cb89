/**
 * Metadata damage, chosen by the seeded PRNG from the targets `locate` found: bit flips, 0,
 * all-ones, huge values, offsets past the end of the file, misaligned offsets, off-by-one counts,
 * entries swapped or copied within a table, and truncation of the file.
 */
import type { Rng } from './prng';
import type { Structures, Target } from './structures';

/** `set` and `bytes` are the hand-written mutants' edits (fuzz.ts `scripted`). */
export type Op = 'set' | 'bytes' | 'bitflip' | 'zero' | 'ones' | 'huge' | 'small' | 'plusminus' | 'past-eof' | 'misalign' | 'swap' | 'copy' | 'lowflag' | 'truncate';

export interface Mutation {
  op: Op;
  /** the target's name (`L2@0x50000[0x3]`, `header.l1_size`, …); for truncate, `file` */
  target: string;
  group: string;
  /** the structure class the target was picked from (header, extension, L1, L2, reftable, refblock, snapshot, bitmap, file) */
  cls: string;
  offset: number;
  /** the other entry of a swap or copy */
  other?: string;
  before?: string;
  after?: string;
  /** truncate: the new file length */
  length?: number;
}

const OFF = 0x00fffffffffffe00n;

export function classOf(group: string): string {
  if (group === 'header') return 'header';
  if (group === 'ext' || group === 'bitmapext') return 'extension';
  if (group.endsWith('L1')) return 'L1';
  if (group.startsWith('L2')) return 'L2';
  if (group === 'reftable' || group === 'refblock') return group;
  if (group.startsWith('snapfield.')) return 'snapshot';
  return 'bitmap';
}

function read(b: Buffer, t: Target): bigint {
  let v = 0n;
  for (let i = 0; i < t.size; i++) v = (v << 8n) | BigInt(b[t.off + i]);
  if (t.bits) v = (v >> BigInt(t.bits.shift)) & ((1n << BigInt(t.bits.width)) - 1n);
  return v;
}

function write(b: Buffer, t: Target, v: bigint): void {
  const width = t.bits ? t.bits.width : t.size * 8;
  v &= (1n << BigInt(width)) - 1n;
  if (t.bits) {
    const mask = ((1 << t.bits.width) - 1) << t.bits.shift;
    b[t.off] = (b[t.off] & ~mask) | (Number(v) << t.bits.shift);
    return;
  }
  for (let i = t.size - 1; i >= 0; i--) {
    b[t.off + i] = Number(v & 0xffn);
    v >>= 8n;
  }
}

function hexOf(v: bigint): string {
  return '0x' + v.toString(16);
}

const HUGE: Record<number, bigint[]> = {
  8: [1n << 62n, 1n << 56n, 1n << 40n, 0x7fffffffffffffffn, (1n << 53n) + 1n, 1n << 63n],
  4: [0x80000000n, 0x7fffffffn, 0x10000000n, 0x10000n, 0xffffn],
  2: [0xffffn, 0x8000n, 0x1000n],
  1: [0xffn, 0x80n],
};

function ops(t: Target, peers: number): Op[] {
  const o: Op[] = ['bitflip', 'bitflip', 'zero', 'ones', 'huge', 'small', 'plusminus'];
  if (t.kind === 'offset' || t.kind === 'entry') o.push('past-eof', 'past-eof', 'misalign', 'misalign');
  if (t.kind === 'flags') o.push('lowflag', 'lowflag', 'lowflag');
  if (peers > 1) o.push('swap', 'copy');
  return o;
}

/** Picks a target: a class first (each equally likely), then an entry, in use three times in four. */
function pickTarget(rng: Rng, s: Structures): Target {
  const byClass = new Map<string, Target[]>();
  for (const t of s.targets) {
    const c = classOf(t.group);
    let l = byClass.get(c);
    if (!l) byClass.set(c, (l = []));
    l.push(t);
  }
  const list = byClass.get(rng.pick([...byClass.keys()].sort()))!;
  const live = list.filter(t => t.live);
  return live.length && rng.chance(0.75) ? rng.pick(live) : rng.pick(list);
}

function truncate(rng: Rng, b: Buffer, s: Structures): { buf: Buffer; m: Mutation } {
  const choices = [
    () => { const t = rng.pick(s.targets); return t.off + rng.int(t.size + 1); }, // through a structure
    () => Math.max(0, b.length - s.clusterSize), // the last cluster lost
    () => Math.max(0, b.length - 1 - rng.int(512)),
    () => rng.int(b.length),
    () => rng.int(112), // inside the header
  ];
  const length = rng.pick(choices)();
  return { buf: b.subarray(0, length), m: { op: 'truncate', target: 'file', group: 'file', cls: 'file', offset: length, length, before: String(b.length), after: String(length) } };
}

/** Applies one mutation to `b` (in place, or a shorter view for a truncation). */
export function mutateOnce(rng: Rng, b: Buffer, s: Structures): { buf: Buffer; m: Mutation } {
  if (rng.chance(0.07) || s.targets.length === 0) return truncate(rng, b, s);
  const t = pickTarget(rng, s);
  const peers = s.targets.filter(x => x.group === t.group && x !== t && x.size === t.size && !!x.bits === !!t.bits);
  const op = rng.pick(ops(t, peers.length + 1));
  const before = read(b, t);
  const width = t.bits ? t.bits.width : t.size * 8;
  const cs = BigInt(s.clusterSize);
  const end = ((BigInt(s.fileSize) + cs - 1n) / cs) * cs;
  let v = before;
  let other: string | undefined;
  switch (op) {
    case 'bitflip': v ^= 1n << BigInt(rng.int(width)); break;
    case 'lowflag': v ^= 1n << BigInt(rng.int(Math.min(width, 8))); break;
    case 'zero': v = 0n; break;
    case 'ones': v = (1n << BigInt(width)) - 1n; break;
    case 'huge': v = t.bits ? (1n << BigInt(width)) - 1n : rng.pick(HUGE[t.size]); break;
    case 'small': v = BigInt(rng.int(17)); break;
    case 'plusminus': v = rng.chance(0.5) ? before + 1n : before - 1n; break;
    case 'past-eof': {
      const far = end + BigInt(rng.pick([0, 1, 7, 1000])) * cs;
      v = t.kind === 'entry' ? (before & ~OFF) | (far & OFF) : far;
      break;
    }
    case 'misalign':
      if (t.kind === 'entry') v = s.clusterSize > 512 ? before + 512n * BigInt(1 + rng.int(s.clusterSize / 512 - 1)) : before | (1n << BigInt(1 + rng.int(8)));
      else v = before + BigInt(rng.pick([1, 8, 512, s.clusterSize / 2]));
      break;
    case 'swap':
    case 'copy': {
      const p = rng.pick(peers);
      other = p.name;
      v = read(b, p);
      if (op === 'swap') write(b, p, before);
      break;
    }
    default: break;
  }
  write(b, t, v);
  return { buf: b, m: { op, target: t.name, group: t.group, cls: classOf(t.group), offset: t.off, other, before: hexOf(before), after: hexOf(read(b, t)) } };
}

/** One or two mutations, located on the healthy base; a truncation ends the list. */
export function mutate(rng: Rng, base: Buffer, s: Structures): { buf: Buffer; mutations: Mutation[] } {
  let buf: Buffer = Buffer.from(base);
  const mutations: Mutation[] = [];
  const n = rng.chance(0.2) ? 2 : 1;
  for (let i = 0; i < n; i++) {
    const r = mutateOnce(rng, buf, s);
    buf = r.buf;
    mutations.push(r.m);
    if (r.m.op === 'truncate') break;
  }
  return { buf, mutations };
}
