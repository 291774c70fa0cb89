/**
 * The fuzz loop: mutant `i` of a run with seed S takes seed mutantSeed(S, i), which picks its base
 * image and its damage; the mutant is judged by oracle.ts and its divergences sorted into the known
 * classes (known.ts) and the rest. A failing mutant is written out as the damaged image and a JSON
 * holding everything needed to replay it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BASES, BaseCache, recipe, type BaseConfig } from './bases';
import { classify } from './known';
import { classOf, mutate, type Mutation } from './mutate';
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

/** A hand-written mutant: edits of named targets (as `locate` names them), raw bytes, or a truncation. */
export type Edit =
  | { target: string; value: bigint | ((before: bigint) => bigint) }
  | { at: number; bytes: Buffer }
  | { truncate: number };

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

  /** The healthy base image `name`, built on first use. */
  basePath(name: string): string {
    const cfg = BASES.find(b => b.name === name);
    if (!cfg) throw new Error(`no base ${name}`);
    return this.cache.get(cfg);
  }

  /** Builds and judges one mutant. */
  async mutant(seed: number, where: { runSeed?: number; index?: number } = {}): Promise<MutantRecord & { image: Buffer }> {
    const t0 = Date.now();
    const rng = new Rng(seed);
    const cfg = rng.pick(BASES);
    const baseBytes = fs.readFileSync(this.cache.get(cfg));
    const { buf, mutations } = mutate(rng, baseBytes, locate(baseBytes));
    return this.judged(hexSeed(seed), where, cfg, buf, mutations, t0);
  }

  /** Builds and judges a hand-written mutant of base `baseName`. */
  async scripted(name: string, baseName: string, edits: Edit[]): Promise<MutantRecord & { image: Buffer }> {
    const t0 = Date.now();
    const cfg = BASES.find(b => b.name === baseName);
    if (!cfg) throw new Error(`no base ${baseName}`);
    let buf: Buffer = fs.readFileSync(this.cache.get(cfg));
    const targets = locate(buf).targets;
    const mutations: Mutation[] = [];
    for (const e of edits) {
      if ('truncate' in e) {
        mutations.push({ op: 'truncate', target: 'file', group: 'file', cls: 'file', offset: e.truncate, length: e.truncate, before: String(buf.length), after: String(e.truncate) });
        buf = buf.subarray(0, e.truncate);
      } else if ('at' in e) {
        const before = buf.subarray(e.at, e.at + e.bytes.length).toString('hex');
        e.bytes.copy(buf, e.at);
        mutations.push({ op: 'bytes', target: `bytes@0x${e.at.toString(16)}`, group: 'raw', cls: 'raw', offset: e.at, before, after: e.bytes.toString('hex') });
      } else {
        const t = targets.find(x => x.name === e.target);
        if (!t || t.bits) throw new Error(`${baseName}: no byte-sized target ${e.target}`);
        const before = t.size === 8 ? buf.readBigUInt64BE(t.off) : BigInt(buf.readUIntBE(t.off, t.size));
        const after = typeof e.value === 'function' ? e.value(before) : e.value;
        if (t.size === 8) buf.writeBigUInt64BE(after, t.off);
        else buf.writeUIntBE(Number(after), t.off, t.size);
        mutations.push({ op: 'set', target: t.name, group: t.group, cls: classOf(t.group), offset: t.off, before: `0x${before.toString(16)}`, after: `0x${after.toString(16)}` });
      }
    }
    return this.judged(name, {}, cfg, buf, mutations, t0);
  }

  private async judged(seed: string, where: { runSeed?: number; index?: number }, cfg: BaseConfig, buf: Buffer, mutations: Mutation[], t0: number): Promise<MutantRecord & { image: Buffer }> {
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
      return { seed, ...where, base: cfg.name, recipe: recipe(cfg), mutations, outcome, known, unknown, ms: Date.now() - t0, image: buf };
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
