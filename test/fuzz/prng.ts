/**
 * The fuzzer's own PRNG (splitmix32): a seed reproduces a mutant exactly on any machine and Node
 * version, which Math.random cannot promise.
 */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** A uniform 32-bit unsigned integer. */
  next(): number {
    this.s = (this.s + 0x9e3779b9) | 0;
    let z = this.s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  }
  /** 0 ≤ result < n. */
  int(n: number): number {
    return Math.floor((this.next() / 0x100000000) * n);
  }
  chance(p: number): boolean {
    return this.next() / 0x100000000 < p;
  }
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[this.int(items.length)];
  }
}

/** The seed of mutant `index` of a run: every mutant can be replayed alone (`--mutant SEED`). */
export function mutantSeed(runSeed: number, index: number): number {
  return new Rng((runSeed >>> 0) ^ Math.imul(index + 1, 0x27d4eb2d)).next();
}
