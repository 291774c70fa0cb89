/**
 * One hand-written mutant per known class (known.ts): while the engine still diverges, each shows
 * its class; once it is fixed, the slice test names the class to drop.
 */
import type { Edit } from './fuzz';

export interface KnownCase {
  id: string;
  base: string;
  edits: Edit[];
}

export const KNOWN_CASES: KnownCase[] = [
  { id: 'qemu-cannot-open-bitmap', base: 'v3-64k-rb32-bitmap', edits: [{ target: 'bitmap[0].table[0]', value: v => v ^ 0x40n }] },
  { id: 'bitmap-not-restored', base: 'v3-64k-rb32-bitmap', edits: [{ target: 'bitmap[0].table[0]', value: 0x3f60000n }] },
  { id: 'unaligned-l2-table-repair', base: 'v3-64k-rb64-snapshot', edits: [{ target: 'L1[0]', value: v => v + 0xa200n }] },
];
