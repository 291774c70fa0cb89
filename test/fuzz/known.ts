/**
 * Divergences from qemu-img 7.2 that are known and tracked, each a class with a predicate over the
 * mutation and both tools' results. A mutant whose every divergence matches a class here is counted,
 * not failed; anything else fails the slice test. `slice.test.ts` keeps one deterministic mutant per
 * class and says to drop the entry once the engine no longer diverges on it.
 */
import type { Mutation } from './mutate';
import { stderrOf, type Divergence, type Outcome } from './oracle';

export interface Case {
  /** the base configuration's qemu-img create options */
  options: string;
  mutations: Mutation[];
  outcome: Outcome;
}

export interface KnownClass {
  id: string;
  /** where the class is tracked (issue 9, the README's known differences, or found by this fuzzer) */
  source: 'issue 9' | 'README' | 'fuzzer';
  description: string;
  match(c: Case, d: Divergence): boolean;
}

const STATUS: Divergence['aspect'][] = ['info-status', 'check-status'];
const touches = (c: Case, re: RegExp): boolean => c.mutations.some(m => re.test(m.target));
const ourErr = (c: Case): string => [c.outcome.info.ours, c.outcome.check.ours, c.outcome.repair?.ours].map(stderrOf).join('\n');
const qemuErr = (c: Case): string => [c.outcome.info.qemu, c.outcome.check.qemu, c.outcome.repair?.qemu].map(stderrOf).join('\n');

export const KNOWN: KnownClass[] = [
  {
    id: 'compression-bit-zlib',
    source: 'issue 9',
    description: 'the compression-type incompatible bit on a zlib image: QEMU refuses to open it, we accept it',
    match: (c, d) => STATUS.includes(d.aspect) && !/compression_type=zstd/.test(c.options)
      && c.mutations.some(m => m.target === 'header.incompatible_features' && (BigInt(m.after!) & 8n) !== 0n) && c.outcome.check.qemu.status === 1,
  },
  {
    id: '64-bit-values',
    source: 'issue 9',
    description: '64-bit on-disk values beyond 2^53 (refcounts at refcount_bits=64, snapshot icount, vm-state and disk sizes) are read as doubles',
    match: (c, d) => (d.aspect === 'info-field' && /\d{16,}/.test(d.detail))
      || (/refcount_bits=64/.test(c.options) && c.mutations.some(m => m.group === 'refblock' && BigInt(m.after!) >= 2n ** 53n)),
  },
  {
    id: 'missing-backing',
    source: 'issue 9',
    description: 'a backing file that does not exist: qemu-img check cannot open the chain (exit 1), we judge the file alone',
    match: (c, d) => STATUS.includes(d.aspect) && c.outcome.check.qemu.status === 1 && /backing/i.test(stderrOf(c.outcome.check.qemu)) && c.outcome.check.ours.status !== 1,
  },
  {
    id: 'l1-reserved-bit0',
    source: 'issue 9',
    description: 'bit 0 of an L1 entry is reserved: QEMU counts it as a corruption, our L1 reserved mask leaves it out',
    match: (c, d) => d.aspect !== 'info-field' && c.mutations.some(m => m.cls === 'L1' && ((BigInt(m.before!) ^ BigInt(m.after!)) & 1n) !== 0n),
  },
  {
    id: 'qemu-cannot-open-bitmap',
    source: 'README',
    description: 'an invalid persistent-bitmap entry: QEMU cannot open the image at all, we check it and report the bitmap as a corruption',
    match: (c, d) => [...STATUS, 'check-count'].includes(d.aspect) && /bitmap/i.test(qemuErr(c)) && (c.outcome.check.qemu.status === 1 || c.outcome.info.qemu.status === 1),
  },
  {
    id: 'reftable-entry-reserved',
    source: 'README',
    description: 'a refcount-table entry with reserved bits or an unaligned refcount block: QEMU 7.2 gives up (exit 1), we count and repair it',
    match: (c, d) => [...STATUS, 'check-count'].includes(d.aspect) && touches(c, /^reftable\[/) && /refcount table entry \d+ has reserved bits|Refblock offset 0x[0-9a-f]+ unaligned|refcount block \d+ is not cluster aligned/.test(qemuErr(c)),
  },
  {
    id: 'refblock-outside-image',
    source: 'fuzzer',
    description: 'a refcount-table entry pointing past the end of the file ("refcount block N is outside image"): QEMU 7.2 cannot read those refcounts and reports check errors (exit 1); we count corruptions (exit 2) and repair them',
    match: (c, d) => [...STATUS, 'check-count'].includes(d.aspect) && /refcount block \d+ is outside image/.test(stderrOf(c.outcome.check.qemu)) && c.outcome.check.qemu.status === 1,
  },
  {
    id: 'bitmap-not-restored',
    source: 'README',
    description: 'a damaged persistent bitmap: QEMU re-stores bitmaps when -r all opens the image read-write, our repair leaves them as they are',
    match: (c, d) => d.aspect === 'repair-worse' && c.mutations.some(m => m.cls === 'bitmap'),
  },
  {
    id: 'l1-table-past-eof-counts',
    source: 'fuzzer',
    description: 'an active L1 table reaching past the end of the file (l1_size grown, so file data is read as L1 entries): our check\'s corruption count differs from QEMU\'s by a few',
    match: (c, d) => d.aspect === 'check-count' && touches(c, /^header\.(l1_size|l1_table_offset)$/)
      && ((c.outcome.check.ours.json?.findings ?? []) as { kind: string; structure: string }[]).some(f => f.kind === 'offset-past-eof' && f.structure === 'L1 table'),
  },
  {
    id: 'header-length-unaligned',
    source: 'fuzzer',
    description: 'a v3 header_length that is not a multiple of 8 (but at least 104): QEMU opens the image (it reads extensions from that offset), we refuse it',
    match: (c, d) => STATUS.includes(d.aspect) && /header_length \d+ is invalid \(must be a multiple of 8/.test(ourErr(c)) && c.outcome.info.qemu.status === 0,
  },
  {
    id: 'virtual-size-unaligned',
    source: 'fuzzer',
    description: 'a header size that is not a multiple of 512: qemu-img info reports it rounded down to whole sectors, we report the header value',
    match: (c, d) => d.aspect === 'info-field' && d.detail.startsWith('info virtual-size:') && touches(c, /^header\.size$/),
  },
  {
    id: 'backing-name-empty',
    source: 'fuzzer',
    description: 'backing_file_offset set with backing_file_size 0: QEMU reads an empty name and opens the image without a backing file; we refuse ("backing file name length 0 is invalid")',
    match: (c, d) => STATUS.includes(d.aspect) && /backing file name length 0 is invalid/.test(ourErr(c)),
  },
  {
    id: 'snapshot-name-nul',
    source: 'fuzzer',
    description: 'a snapshot id or name holding a NUL byte: qemu-img prints it up to the NUL (a C string), we print the NULs',
    match: (_c, d) => d.aspect === 'info-field' && d.detail.startsWith('info snapshots:') && d.detail.includes('\\u0000'),
  },
  {
    id: 'unaligned-l2-table-repair',
    source: 'fuzzer',
    description: 'an L1 entry pointing at an unaligned "L2 table" (inside a data cluster): QEMU checks the bytes there as L2 entries and -r all rewrites them (turning "preallocated, unaligned" entries into zero entries, i.e. writing into whatever cluster lies there); we count the same but leave them, so qemu-img check after our repair finds more corruptions',
    match: (c, d) => d.aspect === 'repair-worse' && /Table is not cluster aligned; L1 entry corrupted/.test(stderrOf(c.outcome.repair?.afterQemu)),
  },
];

/** The id of the first class that explains the divergence, if any. */
export function classify(c: Case, d: Divergence): string | undefined {
  return KNOWN.find(k => k.match(c, d))?.id;
}
