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
const qemuErr = (c: Case): string => [c.outcome.info.qemu, c.outcome.check.qemu, c.outcome.repair?.qemu].map(stderrOf).join('\n');

export const KNOWN: KnownClass[] = [
  {
    id: 'qemu-cannot-open-bitmap',
    source: 'README',
    description: 'an invalid persistent-bitmap entry: QEMU cannot open the image at all, we check it and report the bitmap as a corruption',
    match: (c, d) => [...STATUS, 'check-count'].includes(d.aspect) && /bitmap/i.test(qemuErr(c)) && (c.outcome.check.qemu.status === 1 || c.outcome.info.qemu.status === 1),
  },
  {
    id: 'bitmap-not-restored',
    source: 'README',
    description: 'a damaged persistent bitmap: QEMU re-stores bitmaps when -r all opens the image read-write, our repair leaves them as they are',
    match: (c, d) => d.aspect === 'repair-worse' && c.mutations.some(m => m.cls === 'bitmap'),
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
