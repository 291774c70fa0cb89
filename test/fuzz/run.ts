/**
 * `npm run fuzz -- [--count N] [--seed S] [--out DIR] [--parallel P] [--mutant SEED] [--known] [--keep-known]`:
 * runs N mutants of run S (or the one mutant SEED, or with --known the hand-written case of each known class), prints one line per divergent mutant, writes
 * each mutant with an unknown divergence (with --keep-known, every divergent one) to DIR, and exits 1
 * when any divergence is unknown.
 */
import { parseArgs } from 'node:util';
import { KNOWN_CASES } from './cases';
import { Fuzzer, describe, saveMutant, type MutantRecord } from './fuzz';

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      count: { type: 'string', default: '100' }, seed: { type: 'string', default: '1' }, out: { type: 'string', default: 'fuzz-out' },
      parallel: { type: 'string', default: '2' }, mutant: { type: 'string' }, known: { type: 'boolean', default: false }, 'keep-known': { type: 'boolean', default: false },
    },
  });
  const fuzzer = new Fuzzer();
  const counts = new Map<string, number>();
  let clean = 0, failed = 0, n = 0;
  const t0 = Date.now();
  const report = (r: MutantRecord & { image: Buffer }): void => {
    if (++n % 10 === 0) process.stderr.write(`fuzz: ${n} mutants, ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
    for (const k of new Set(r.known.map(x => x.id))) counts.set(k, (counts.get(k) ?? 0) + 1);
    if (r.unknown.length === 0 && r.known.length === 0) { clean++; return; }
    if (r.unknown.length) failed++;
    const tag = r.unknown.length ? 'NEW ' : 'known';
    console.log(`${tag} ${describe(r)}`);
    for (const d of r.unknown) console.log(`      ${d.aspect}: ${d.detail}`);
    if (r.known.length) console.log(`      known: ${[...new Set(r.known.map(k => k.id))].join(', ')}`);
    if (r.unknown.length || values['keep-known']) console.log(`      → ${saveMutant(values.out, r)}`);
  };
  try {
    if (values.known) {
      for (const c of KNOWN_CASES) {
        const r = await fuzzer.scripted(`known-${c.id}`, c.base, c.edits);
        console.log(`${c.id}: ${r.known.some(k => k.id === c.id) ? 'occurs' : 'DOES NOT OCCUR'}`);
        report(r);
      }
    } else if (values.mutant) report(await fuzzer.mutant(Number(values.mutant)));
    else await fuzzer.many(Number(values.seed), Number(values.count), { parallel: Number(values.parallel), onMutant: report });
  } finally {
    fuzzer.dispose();
  }
  console.log(`fuzz: ${n} mutants in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${clean} clean, ${n - clean - failed} known only (${[...counts].map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}), ${failed} with new divergences`);
  return failed ? 1 : 0;
}

main().then(c => { process.exitCode = c; }, (e: unknown) => { console.error(e); process.exitCode = 1; });
