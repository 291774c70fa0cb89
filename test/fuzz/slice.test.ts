/**
 * The bounded, seeded slice of the fuzzer that `npm test` runs (`npm run fuzz` runs more): every
 * mutant's divergences from qemu-img must be explained by a known class (known.ts), and every known
 * class must still occur on its hand-written case (cases.ts), or its entry is stale.
 */
import { after, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { tmpDir } from '../helpers/qemu';
import { KNOWN_CASES } from './cases';
import { describe, Fuzzer, type MutantRecord } from './fuzz';
import { KNOWN } from './known';
import { mutate } from './mutate';
import { mutantSeed, Rng } from './prng';
import { locate } from './structures';

const SLICE_SEED = 2026;
const SLICE_COUNT = Number(process.env.FUZZ_SLICE_COUNT ?? 24);

const fuzzer = new Fuzzer(tmpDir('qcow2-lens-fuzz-'));
after(() => fuzzer.dispose());

test('a seed reproduces its mutant byte for byte', () => {
  const base = fs.readFileSync(fuzzer.basePath('v3-64k-rb16-snapshots'));
  for (let i = 0; i < 50; i++) {
    const a = mutate(new Rng(mutantSeed(7, i)), base, locate(base)), b = mutate(new Rng(mutantSeed(7, i)), base, locate(base));
    assert.deepEqual(a.mutations, b.mutations);
    assert.ok(a.buf.equals(b.buf));
  }
  assert.notDeepEqual(mutate(new Rng(1), base, locate(base)).mutations, mutate(new Rng(2), base, locate(base)).mutations);
});

function explain(r: MutantRecord): string {
  return `${describe(r)}\n${r.unknown.map(d => `    ${d.aspect}: ${d.detail}`).join('\n')}\n    replay: npm run fuzz -- --mutant ${r.seed}`;
}

test(`fuzz slice: ${SLICE_COUNT} seeded mutants (run ${SLICE_SEED}) judged against qemu-img info, check and check -r all`, async t => {
  const rs = await fuzzer.many(SLICE_SEED, SLICE_COUNT, { parallel: 2 });
  const perClass = new Map<string, number>();
  for (const r of rs) for (const id of new Set(r.known.map(k => k.id))) perClass.set(id, (perClass.get(id) ?? 0) + 1);
  const clean = rs.filter(r => r.known.length === 0 && r.unknown.length === 0).length;
  const failing = rs.filter(r => r.unknown.length > 0);
  t.diagnostic(`fuzz: ${rs.length} mutants, ${clean} clean, ${rs.length - clean - failing.length} only known divergences (${[...perClass].map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}), ${failing.length} new`);
  assert.equal(failing.length, 0, `divergences from qemu-img that known.ts does not list:\n${failing.map(explain).join('\n')}`);
});

test('each known divergence class still occurs on its hand-written mutant', async t => {
  const stale: string[] = [];
  let next = 0;
  const one = async (): Promise<void> => {
    while (next < KNOWN_CASES.length) {
      const c = KNOWN_CASES[next++];
      const r = await fuzzer.scripted(`known-${c.id}`, c.base, c.edits);
      if (!r.known.some(k => k.id === c.id)) stale.push(`${c.id}: ${describe(r)} → ${r.unknown.length ? r.unknown.map(d => d.detail).join('; ') : r.known.length ? `now ${r.known.map(k => k.id).join(', ')}` : 'no divergence'}`);
    }
  };
  await Promise.all([one(), one()]);
  const missing = KNOWN.filter(k => !KNOWN_CASES.some(c => c.id === k.id)).map(k => k.id);
  assert.deepEqual(missing, [], 'every known class has a hand-written case in cases.ts');
  t.diagnostic(`known classes: ${KNOWN_CASES.length - stale.length} of ${KNOWN_CASES.length} still occur`);
  assert.equal(stale.length, 0, `these known classes no longer occur (drop them from test/fuzz/known.ts and cases.ts if the engine now agrees with qemu-img):\n${stale.join('\n')}`);
});
