/**
 * The fuzz loop: mutant `i` of a run with seed S takes seed mutantSeed(S, i), which picks its base
 * image and its damage; the mutant is judged by oracle.ts and its divergences sorted into the known
 * classes (known.ts) and the rest. A failing mutant is written out as the damaged image and a JSON
 * holding everything needed to replay it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BASES, BaseCache, recipe } from './bases';
import { classify } from './known';
import { mutate, type Mutation } from './mutate';
import { judge, type Divergence, type Outcome } from './oracle';
import { mutantSeed, Rng } from './prng';
import { locate } from './structures';

export interface MutantRecord {
  /** replay with `npm run fuzz -- --mutant 0x…` */
  seed: string;
  runSeed?: number;
  index?: number;
  base: string;
  recipe: string[];
  mutations: Mutation[];
  outcome: Outcome;
  /** each divergence a known class explains, with the class's id */
  known: { id: string; divergence: Divergence }[];
  /** the divergences no known class explains: these fail */
  unknown: Divergence[];
  ms: number;
}

export function hexSeed(n: number): string {
  return '0x' + (n >>> 0).toString(16).padStart(8, '0');
}

export class Fuzzer {
  readonly work: string;
  private readonly cache: BaseCache;
  private next = 0;
  constructor(work?: string) {
    this.work = work ?? fs.mkdtempSync(path.join(os.tmpdir(), 'qcow2-lens-fuzz-'));
    this.cache = new BaseCache(this.work);
  }

  /** Builds and judges one mutant. */
  async mutant(seed: number, where: { runSeed?: number; index?: number } = {}): Promise<MutantRecord & { image: Buffer }> {
    const t0 = Date.now();
    const rng = new Rng(seed);
    const cfg = rng.pick(BASES);
    const baseBytes = fs.readFileSync(this.cache.get(cfg));
    const { buf, mutations } = mutate(rng, baseBytes, locate(baseBytes));
    const dir = path.join(this.work, `m${this.next++}`);
    fs.mkdirSync(dir);
    const image = path.join(dir, 'mutant.qcow2');
    fs.writeFileSync(image, buf);
    try {
      const outcome = await judge(image, dir);
      const known: MutantRecord['known'] = [], unknown: Divergence[] = [];
      for (const d of outcome.divergences) {
        const id = classify({ options: cfg.options, mutations, outcome }, d);
        if (id) known.push({ id, divergence: d });
        else unknown.push(d);
      }
      return { seed: hexSeed(seed), ...where, base: cfg.name, recipe: recipe(cfg), mutations, outcome, known, unknown, ms: Date.now() - t0, image: buf };
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  /** Mutants index..index+count-1 of run `runSeed`, `parallel` at a time, in index order in the result. */
  async many(runSeed: number, count: number, opts: { parallel?: number; first?: number; onMutant?: (r: MutantRecord & { image: Buffer }) => void } = {}): Promise<(MutantRecord & { image: Buffer })[]> {
    const first = opts.first ?? 0;
    const out: (MutantRecord & { image: Buffer })[] = new Array(count);
    let i = 0;
    const worker = async (): Promise<void> => {
      while (i < count) {
        const k = i++;
        const r = await this.mutant(mutantSeed(runSeed, first + k), { runSeed, index: first + k });
        out[k] = r;
        opts.onMutant?.(r);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, opts.parallel ?? 1) }, worker));
    return out;
  }

  dispose(): void {
    fs.rmSync(this.work, { recursive: true, force: true });
  }
}

/** Writes a mutant as `<dir>/<seed>/mutant.qcow2` plus `mutant.json` (seed, base recipe, damage, both tools' results). */
export function saveMutant(dir: string, r: MutantRecord & { image: Buffer }): string {
  const d = path.join(dir, r.seed);
  fs.mkdirSync(d, { recursive: true });
  fs.writeFileSync(path.join(d, 'mutant.qcow2'), r.image);
  const { image: _image, ...json } = r;
  void _image;
  fs.writeFileSync(path.join(d, 'mutant.json'), JSON.stringify(json, null, 2) + '\n');
  return d;
}

/** One line naming a mutant's damage: `v3-4k-rb1: L2@0x30000[0x2] past-eof 0x8…→0x8…`. */
export function describe(r: MutantRecord): string {
  const m = r.mutations.map(x => (x.op === 'truncate' ? `truncate to ${x.length} (was ${x.before})` : `${x.target} ${x.op}${x.other ? ` with ${x.other}` : ''} ${x.before}→${x.after}`));
  return `${r.seed} ${r.base}: ${m.join('; ')}`;
}
