/**
 * `qcow2-lens compare` against `qemu-img compare` on the same QEMU-made images: the exit code and
 * every line of stdout must be qemu-img's, in both argument orders, plain and strict (-s), across
 * identical, differing, size-differing (zero and non-zero tails), chain-versus-flat,
 * raw-versus-qcow2, compressed-versus-plain, zero-cluster-versus-unallocated and VHD/VMDK pairs. Then our
 * --json: every differing range, where qemu-img names only the first.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../helpers/qemu';
import { isLockedByQemu } from '../../src/engine/io/lock';

function mk(dir: string, name: string, size: string, cmds: string[], opts: string[] = []): string {
  const img = path.join(dir, name);
  qemuImg('create', '-q', '-f', 'qcow2', ...opts, img, size);
  if (cmds.length) qemuIo(img, cmds);
  return img;
}

const BASE = ['write -P 1 0 1M', 'write -P 2 3M 192k', 'write -P 0 6M 64k', 'write -P 3 7M 64k'];

function fixtures(dir: string): { pairs: [string, string, string][]; fmt: Map<string, string> } {
  const a = mk(dir, 'a.qcow2', '16M', BASE);
  const same = mk(dir, 'same-512.qcow2', '16M', BASE, ['-o', 'cluster_size=512']);
  const differ = mk(dir, 'differ.qcow2', '16M', [...BASE, 'write -P 9 3M 512', 'write -P 9 9M 4k']);
  const unalloc = mk(dir, 'unalloc.qcow2', '16M', BASE.filter(c => !c.includes('-P 0')));
  const zeroes = mk(dir, 'zeroes.qcow2', '16M', [...BASE, 'write -z 12M 1M']);
  const larger0 = mk(dir, 'larger-zero.qcow2', '24M', [...BASE, 'write -z 20M 64k']);
  const largerData = mk(dir, 'larger-data.qcow2', '24M', [...BASE, 'write -P 5 20M 4k']);
  const smaller = mk(dir, 'smaller.qcow2', '8M', BASE);
  const raw = path.join(dir, 'a.raw');
  qemuImg('convert', '-O', 'raw', a, raw);
  const compressed = path.join(dir, 'compressed.qcow2');
  qemuImg('convert', '-c', '-O', 'qcow2', a, compressed);
  // a chain with the same guest content as a
  const base = mk(dir, 'chain-base.qcow2', '16M', ['write -P 1 0 1M', 'write -P 7 3M 192k']);
  const top = path.join(dir, 'chain-top.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top, '16M');
  qemuIo(top, ['write -P 2 3M 192k', 'write -P 0 6M 64k', 'write -P 3 7M 64k']);
  // an overlay larger than its backing file, zeros past the backing file's end
  const shortBase = mk(dir, 'short-base.qcow2', '8M', BASE);
  const longTop = path.join(dir, 'long-top.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-b', shortBase, '-F', 'qcow2', longTop, '16M');
  const converted = (name: string, o: string[]) => { const p = path.join(dir, name); qemuImg('convert', ...o, a, p); return p; };
  const vhd = converted('a.vhd', ['-O', 'vpc']), vhdFixed = converted('fixed.vhd', ['-O', 'vpc', '-o', 'subformat=fixed,force_size=on']);
  const vmdk = converted('a.vmdk', ['-O', 'vmdk']), stream = converted('stream.vmdk', ['-O', 'vmdk', '-o', 'subformat=streamOptimized']);
  const fmt = new Map([[raw, 'raw'], [vhdFixed, 'vpc']]);
  const pairs: [string, string, string][] = [
    ['identical copies', a, a],
    ['same content, 512 B clusters', a, same],
    ['content differs', a, differ],
    ['written zeros vs unallocated', a, unalloc],
    ['zero clusters vs unallocated', a, zeroes],
    ['larger, zero tail', a, larger0],
    ['larger, data in the tail', a, largerData],
    ['smaller', a, smaller],
    ['raw vs qcow2', a, raw],
    ['compressed vs plain', a, compressed],
    ['chain vs flat', a, top],
    ['overlay past its backing file', smaller, longTop],
    ['dynamic VHD', a, vhd],
    ['fixed VHD (force_size)', a, vhdFixed],
    ['monolithicSparse VMDK', a, vmdk],
    ['streamOptimized VMDK', a, stream],
  ];
  return { pairs, fmt };
}

test('compare: exit codes and messages are qemu-img compare\'s', () => {
  const dir = tmpDir('qcow2-lens-compare-');
  const { pairs, fmt } = fixtures(dir);
  let differing = 0, strictOnly = 0;
  for (const [name, x, y] of pairs) {
    for (const [p, q] of [[x, y], [y, x]]) {
      const fa = fmt.get(p) ? ['-f', fmt.get(p)!] : [], fb = fmt.get(q) ? ['-F', fmt.get(q)!] : [];
      const verdicts: number[] = [];
      for (const strict of [[], ['-s']]) {
        const theirs = qemuImgStatus('compare', ...strict, ...fa, ...fb, p, q);
        const ours = cli('compare', ...strict, ...fa, ...fb, p, q);
        const label = `${name} ${strict.join('')} ${path.basename(p)} ${path.basename(q)}`;
        assert.equal(ours.status, theirs.status, `${label}: exit ${ours.status}, qemu-img ${theirs.status} (${theirs.stdout}${theirs.stderr}) ours ${ours.stdout}${ours.stderr}`);
        assert.equal(ours.stdout.toString(), theirs.stdout, label);
        verdicts.push(theirs.status);
        if (theirs.status === 1) differing++;
      }
      if (verdicts[0] === 0 && verdicts[1] === 1) strictOnly++;
    }
    const quiet = cli('compare', '-q', ...(fmt.get(x) ? ['-f', fmt.get(x)!] : []), ...(fmt.get(y) ? ['-F', fmt.get(y)!] : []), x, y);
    assert.equal(quiet.stdout.length, 0, `${name}: -q prints nothing`);
  }
  // the fixtures exercise both verdicts and the strict-only ones
  assert.ok(differing >= 10, `only ${differing} differing comparisons`);
  assert.ok(strictOnly >= 4, `only ${strictOnly} strict-only mismatches`);
});

test('compare: errors exit 2, as qemu-img', () => {
  const dir = tmpDir('qcow2-lens-compare-');
  const a = mk(dir, 'a.qcow2', '1M', ['write -P 1 0 4k']);
  const missing = path.join(dir, 'missing.qcow2');
  assert.equal(qemuImgStatus('compare', a, missing).status, 2);
  const r = cli('compare', a, missing);
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /missing\.qcow2/);
  const notQcow2 = path.join(dir, 'text.qcow2');
  fs.writeFileSync(notQcow2, 'hello');
  assert.equal(qemuImgStatus('compare', '-F', 'qcow2', a, notQcow2).status, 2);
  assert.equal(cli('compare', '-F', 'qcow2', a, notQcow2).status, 2);
  const broken = path.join(dir, 'broken-backing.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', 'nowhere.qcow2', '-F', 'qcow2', broken, '1M');
  assert.equal(qemuImgStatus('compare', a, broken).status, 2);
  assert.equal(cli('compare', a, broken).status, 2);
  assert.equal(cli('compare', a).status, 64);
});

test('compare --json: every differing range, the first as qemu-img names it', () => {
  const dir = tmpDir('qcow2-lens-compare-');
  const a = mk(dir, 'a.qcow2', '16M', BASE);
  const b = mk(dir, 'b.qcow2', '20M', [...BASE, 'write -P 9 512k 1536', 'write -P 9 3M 64k', 'write -P 8 10M 4k', 'write -P 4 18M 512']);
  const theirs = qemuImgStatus('compare', a, b);
  const r = cli('compare', '--json', a, b);
  assert.equal(r.status, 1);
  const j = JSON.parse(r.stdout.toString()) as { identical: boolean; 'first-mismatch': number; messages: string[]; differences: { start: number; length: number }[] };
  assert.equal(j.identical, false);
  assert.equal(`${j.messages[0]}\n`, theirs.stdout.split('\n')[0] + '\n');
  assert.equal(j['first-mismatch'], 512 * 1024);
  assert.deepEqual(j.differences, [
    { start: 512 * 1024, length: 1536 }, { start: 3 * 1024 * 1024, length: 64 * 1024 },
    { start: 10 * 1024 * 1024, length: 4096 }, { start: 18 * 1024 * 1024, length: 512 },
  ]);
  const same = cli('compare', '--json', a, a);
  assert.equal(same.status, 0);
  assert.deepEqual((JSON.parse(same.stdout.toString()) as { differences: unknown[] }).differences, []);
});

test('compare refuses an image a running QEMU holds, unless -U', async () => {
  const dir = tmpDir('qcow2-lens-compare-');
  const a = mk(dir, 'a.qcow2', '1M', ['write -P 1 0 4k']);
  const b = path.join(dir, 'b.qcow2');
  fs.copyFileSync(a, b);
  const q = spawn('qemu-io', ['-c', 'sleep 20000', b], { stdio: 'ignore' });
  try {
    for (let i = 0; i < 100 && !isLockedByQemu(b); i++) await new Promise(r => setTimeout(r, 50));
    assert.ok(isLockedByQemu(b));
    assert.equal(qemuImgStatus('compare', a, b).status, 2);
    const r = cli('compare', a, b);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /in use by a running QEMU/);
    assert.equal(qemuImgStatus('compare', '-U', a, b).status, 0);
    assert.equal(cli('compare', '-U', a, b).status, 0);
  } finally {
    q.kill('SIGKILL');
    await new Promise(r => q.once('exit', r));
  }
});
