/**
 * The cipher's worker threads (crypto/cipherPool.ts, sector.worker.ts): runs in shared memory are
 * decrypted and encrypted there — byte for byte what the caller's thread does, in every mode —
 * while runs in ordinary memory or below the size threshold stay on the caller's thread; stopping
 * the workers mid-run fails the run instead of hanging; and a process that never stops them still
 * exits. Agreement with QEMU of the worker path on real images is in image-read.test.ts.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import { CipherMode } from '../../src/engine/crypto/algorithms';
import { sharedBuffer } from '../../src/engine/io/bufferRing';
import { DataCipher } from '../../src/engine/crypto/dataCipher';
import { SectorCipher, SectorCipherSpec } from '../../src/engine/crypto/sectorCipher';

const spec = (mode: CipherMode): SectorCipherSpec => ({ cipherAlg: 'aes-256', cipherMode: mode, ivgenAlg: 'plain64', ivgenCipherAlg: 'aes-256' });
const keyFor = (mode: CipherMode) => crypto.randomBytes(mode === 'xts' ? 64 : 32);

/** A DataCipher whose own thread's cipher counts the runs it is given. */
function counted(mode: CipherMode, key: Buffer, workers = 2): { dc: DataCipher; here: { runs: number } } {
  const sc = new SectorCipher(spec(mode), key);
  const here = { runs: 0 };
  const dec = sc.decrypt.bind(sc), enc = sc.encrypt.bind(sc);
  sc.decrypt = (b, s) => { here.runs++; dec(b, s); };
  sc.encrypt = (b, s) => { here.runs++; enc(b, s); };
  const dc = new DataCipher(sc, 'host', 0, key);
  dc.workers = workers;
  dc.parallelMin = 4096;
  return { dc, here };
}

// Child mode: a process that uses the workers and ends without dispose() must exit on its own.
if (process.env.QCOW2_LENS_POOL_CHILD) {
  const { dc } = counted('xts', keyFor('xts'));
  const b = sharedBuffer(1 << 20);
  void dc.decryptRunAsync(b, 0).then(() => console.log('decrypted'));
} else {
  for (const mode of ['xts', 'cbc', 'ecb', 'ctr'] as CipherMode[]) {
    test(`aes-256-${mode}: runs in shared memory are done on the workers, equal to the caller's thread`, async () => {
      const key = keyFor(mode);
      const ref = new SectorCipher(spec(mode), key);
      const { dc, here } = counted(mode, key);
      try {
        // 1 MiB and 3 sectors (parts of unequal size), at an odd sector number, in a run that starts inside its buffer
        const plain = crypto.randomBytes((1 << 20) + 512 * 3);
        const expected = Buffer.from(plain);
        ref.encrypt(expected, 12345);
        const shared = sharedBuffer(plain.length + 4096);
        const run = shared.subarray(4096);
        plain.copy(run);
        await dc.encryptRunAsync(run, 12345 * 512);
        assert.ok(run.equals(expected), 'encrypted on the workers differs');
        await dc.decryptRunAsync(run, 12345 * 512);
        assert.ok(run.equals(plain), 'decrypted on the workers differs');
        assert.equal(here.runs, 0);
        // several runs at once (a copy's windows in flight)
        const many = Array.from({ length: 6 }, (_, i) => { const b = sharedBuffer(64 * 1024); expected.copy(b, 0, i * 65536, (i + 1) * 65536); return b; });
        await Promise.all(many.map((b, i) => dc.decryptRunAsync(b, 12345 * 512 + i * 65536)));
        many.forEach((b, i) => assert.ok(b.equals(plain.subarray(i * 65536, (i + 1) * 65536)), `run ${i}`));
        assert.equal(here.runs, 0);
        // ordinary memory, and a run below the threshold: the caller's thread
        const own = Buffer.from(expected);
        await dc.decryptRunAsync(own, 12345 * 512);
        assert.ok(own.equals(plain));
        const small = sharedBuffer(2048);
        expected.copy(small, 0, 0, 2048);
        await dc.decryptRunAsync(small, 12345 * 512);
        assert.ok(small.equals(plain.subarray(0, 2048)));
        assert.equal(here.runs, 2);
      } finally {
        dc.dispose();
        ref.dispose();
      }
    });
  }

  test('no workers wanted (workers = 0): everything on the caller\'s thread', async () => {
    const key = keyFor('xts');
    const { dc, here } = counted('xts', key, 0);
    const b = sharedBuffer(1 << 20);
    await dc.decryptRunAsync(b, 0);
    assert.equal(here.runs, 1);
    dc.dispose();
  });

  test('dispose() while a run is on the workers fails the run (no hang); the cipher is unusable after', async () => {
    const { dc } = counted('xts', keyFor('xts'));
    const b = sharedBuffer(16 << 20);
    const running = dc.decryptRunAsync(b, 0);
    dc.dispose();
    await assert.rejects(running, /stopped/);
    await assert.rejects(dc.decryptRunAsync(b, 0), /disposed/);
  });

  test('a process that used the workers and never stopped them exits by itself', () => {
    const r = spawnSync(process.execPath, [__filename], { env: { ...process.env, QCOW2_LENS_POOL_CHILD: '1' }, encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.signal, null, 'the child was killed at the timeout: the workers kept it alive');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'decrypted');
  });
}
