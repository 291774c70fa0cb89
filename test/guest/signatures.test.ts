/**
 * File systems identified by signature only (not browsable): NTFS, XFS, btrfs, swap, LUKS2 and
 * ISO 9660 made by their own tools in GPT partitions, named and sized; browsing them is refused
 * with a clear message, and whose inside them names the kind.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, tmpDir } from '../helpers/qemu';
import { buildDisk, cliJsonOk, run } from './common';

const dir = tmpDir('qcow2-lens-guest-sig-');
const MiB = 1024 * 1024;

function part(name: string, sizeM: number, make: (file: string) => void): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, '');
  fs.truncateSync(f, sizeM * MiB);
  make(f);
  return f;
}

test('NTFS, XFS, btrfs, swap, LUKS, ISO 9660: identified, sized, not browsable', () => {
  const isoSrc = path.join(dir, 'iso');
  fs.mkdirSync(isoSrc);
  fs.writeFileSync(path.join(isoSrc, 'readme.txt'), 'iso\n');
  const images: Array<[string, number, string]> = [
    [part('ntfs', 8, f => run('mkfs.ntfs', ['-q', '-F', '-Q', f])), 8, 'ntfs'],
    [part('xfs', 300, f => run('mkfs.xfs', ['-q', f])), 300, 'xfs'],
    [part('btrfs', 120, f => run('mkfs.btrfs', ['-q', f])), 120, 'btrfs'],
    [part('swap', 4, f => run('mkswap', [f])), 4, 'swap'],
    [part('luks', 20, f => run('cryptsetup', ['luksFormat', '-q', '--type', 'luks2', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', f, '-'], 'not-a-secret')), 20, 'luks'],
  ];
  const iso = path.join(dir, 'cd.iso');
  run('genisoimage', ['-quiet', '-o', iso, isoSrc]);
  const isoM = Math.ceil(fs.statSync(iso).size / MiB);
  images.push([iso, isoM, 'iso9660']);
  const disk = path.join(dir, 'sig.raw');
  let at = 2048;
  const specs = images.map(([image, sizeM]) => { const s = { start: at, size: sizeM * 2048, type: '8300', image }; at += sizeM * 2048; return s; });
  buildDisk(disk, Math.ceil((at * 512) / MiB) + 2, 'gpt', specs);
  const r = cliJsonOk<{ table: string; partitions: Array<{ number: number; fs: string; fsSize: number; browsable: boolean; start: number }> }>('partitions', '--json', disk);
  assert.equal(r.table, 'gpt');
  assert.deepEqual(r.partitions.map(p => [p.number, p.fs, p.browsable]), images.map(([, , kind], i) => [i + 1, kind, false]));
  assert.equal(r.partitions[0].fsSize, 8 * MiB); // NTFS: total sectors + the backup boot sector
  assert.equal(r.partitions[1].fsSize, 300 * MiB);
  assert.equal(r.partitions[3].fsSize, 4 * MiB);
  assert.equal(r.partitions[5].fsSize, fs.statSync(iso).size);
  const ls = cli('ls', disk, '2:/');
  assert.equal(ls.status, 1);
  assert.match(ls.stderr, /partition 2 holds xfs, which is not browsable/);
  const w = cliJsonOk<{ kind: string; fs: string; partition: number; metadata: string }>('whose', '--json', disk, '--guest-offset', String(r.partitions[3].start + 8192));
  assert.deepEqual([w.kind, w.fs, w.partition, w.metadata], ['not browsable', 'swap', 4, 'swap space']);
});
