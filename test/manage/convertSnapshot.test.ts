/**
 * `qcow2-lens convert -l SNAPSHOT` against `qemu-img convert -l` on the same QEMU-made images:
 * several cluster sizes, compressed clusters, two snapshots with writes between and after them, an
 * image grown after its snapshot (the snapshot's L1 is shorter), and a 2-deep chain whose base
 * changed after the top's snapshot (qemu-img reads the backing file as it is now). Every form
 * (snapshot.name=, snapshot.id=, both, a bare name, a bare id) into every output format; ours and
 * qemu-img's outputs compare equal, qcow2 outputs check clean. Then qemu-img's errors and exit codes.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../helpers/qemu';
import { assertClean } from '../write/util';

const dir = tmpDir('qcow2-lens-convert-snapshot-');

function standalone(cs: string): string {
  const p = path.join(dir, `solo-${cs}.qcow2`);
  if (fs.existsSync(p)) return p;
  // compressed writes are whole clusters
  const c = cs === '2M' ? '2M' : '256k';
  qemuImg('create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cs}`, p, '8M');
  qemuIo(p, ['write -P 0x11 0 1M', `write -c -P 0x12 2M ${c}`, 'write -z 4M 256k']);
  qemuImg('snapshot', '-c', 'first', p);
  qemuIo(p, ['write -P 0x13 512k 1M', `write -c -P 0x14 6M ${c}`, 'write -z 2M 64k']);
  qemuImg('snapshot', '-c', 'second', p);
  qemuIo(p, ['write -P 0x15 0 8M']);
  return p;
}

/** Grown after its snapshot: the snapshot's L1 table covers less than the disk. */
function grown(): string {
  const p = path.join(dir, 'grown.qcow2');
  if (fs.existsSync(p)) return p;
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', p, '1M');
  qemuIo(p, ['write -P 0x21 0 1M']);
  qemuImg('snapshot', '-c', 'small', p);
  qemuImg('resize', '-q', p, '64M');
  qemuIo(p, ['write -P 0x22 40M 1M', 'write -P 0x23 0 4k']);
  return p;
}

/** base ← top; the snapshot is in the top; the base is written after it. */
function chain(): string {
  const base = path.join(dir, 'chain-base.qcow2'), top = path.join(dir, 'chain-top.qcow2');
  if (fs.existsSync(top)) return top;
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', base, '4M');
  qemuIo(base, ['write -P 0x31 0 4M']);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=64k', '-b', base, '-F', 'qcow2', top);
  qemuIo(top, ['write -P 0x32 0 1M', 'write -z 1M 64k']);
  qemuImg('snapshot', '-c', 'mid', top);
  qemuIo(top, ['write -P 0x33 0 2M']);
  qemuIo(base, ['write -P 0x34 3M 1M']);
  return top;
}

function compare(a: string, b: string, fmt: string, what: string): void {
  const r = qemuImgStatus('compare', '-F', fmt, '-f', fmt, a, b);
  assert.equal(r.status, 0, `${what}: ${r.stdout}${r.stderr}`);
}

const OUTPUTS: Array<[string, string[]]> = [['qcow2', ['-O', 'qcow2']], ['raw', ['-O', 'raw']], ['vpc', ['-O', 'vpc', '-o', 'force_size=on']], ['vmdk', ['-O', 'vmdk']]];

test('-l in every form, into every output format: ours equals qemu-img\'s (several cluster sizes, compressed clusters, two snapshots)', () => {
  for (const cs of ['4k', '64k', '2M']) {
    const img = standalone(cs);
    for (const form of ['snapshot.name=first', 'snapshot.id=1', 'snapshot.id=2,snapshot.name=second', 'second', '1']) {
      for (const [fmt, args] of OUTPUTS) {
        const mine = path.join(dir, `l-${cs}-${fmt}.img`), theirs = path.join(dir, `l-${cs}-${fmt}-qemu.img`);
        const r = cli('convert', '-l', form, ...args, img, mine);
        assert.equal(r.status, 0, `${cs} ${form} ${fmt}: ${r.stderr}`);
        qemuImg('convert', '-l', form, ...args, img, theirs);
        compare(theirs, mine, fmt, `${cs} -l ${form} -O ${fmt}`);
        if (fmt === 'qcow2') assertClean(mine);
      }
    }
    // the snapshot's view differs from the active one (the test can fail)
    const snap = path.join(dir, `l-${cs}-raw.img`);
    assert.ok(cli('convert', '-l', 'first', '-O', 'raw', img, snap).status === 0);
    assert.notEqual(qemuImgStatus('compare', '-F', 'raw', img, snap).status, 0, 'the active view is not the snapshot\'s');
  }
});

test('-l on an image grown after its snapshot, and on the top of a chain whose base changed since: as qemu-img reads them', () => {
  for (const [label, img, sn] of [['grown', grown(), 'small'], ['chain', chain(), 'mid']] as const) {
    for (const [fmt, args] of [['qcow2', ['-O', 'qcow2']], ['raw', ['-O', 'raw']]] as const) {
      const mine = path.join(dir, `${label}-${fmt}.img`), theirs = path.join(dir, `${label}-${fmt}-qemu.img`);
      const r = cli('convert', '-l', sn, ...args, img, mine);
      assert.equal(r.status, 0, `${label} ${fmt}: ${r.stderr}`);
      qemuImg('convert', '-l', sn, ...args, img, theirs);
      compare(theirs, mine, fmt, `${label} -O ${fmt}`);
      if (fmt === 'qcow2') assertClean(mine);
      if (fmt === 'raw') assert.equal(fs.statSync(mine).size, fs.statSync(theirs).size, `${label}: the current virtual size`);
    }
  }
  // -B with -l: only what the snapshot's L1 allocates is copied over the new backing file
  const top = chain(), base = path.join(dir, 'chain-base.qcow2');
  const mine = path.join(dir, 'chain-B.qcow2'), theirs = path.join(dir, 'chain-B-qemu.qcow2');
  assert.equal(cli('convert', '-l', 'mid', '-O', 'qcow2', '-B', base, '-F', 'qcow2', top, mine).status, 0);
  qemuImg('convert', '-l', 'mid', '-O', 'qcow2', '-B', base, '-F', 'qcow2', top, theirs);
  compare(theirs, mine, 'qcow2', '-B');
  assertClean(mine);
});

test('-l errors are qemu-img\'s (message and exit code); -s is refused, qemu-img 7.2 has no -s', () => {
  const img = standalone('64k');
  const raw = path.join(dir, 'plain.raw');
  qemuImg('create', '-q', '-f', 'raw', raw, '1M');
  const cases: Array<[string[], RegExp]> = [
    [['-l', 'nope', img], /Failed to load snapshot: Can't find snapshot/],
    [['-l', 'snapshot.id=9', img], /Failed to load snapshot: Can't find snapshot/],
    [['-l', 'snapshot.id=1,snapshot.name=second', img], /Failed to load snapshot: Can't find snapshot/],
    [['-l', 'snapshot.foo=1', img], /Invalid parameter 'snapshot\.foo'/],
    [['-l', 'first', img, img], /No support for concatenating multiple snapshot/],
    [['-l', 'first', raw], /Block format 'raw' used by device '' does not support temporarily loading internal snapshots/],
  ];
  for (const [args, re] of cases) {
    const out = path.join(dir, 'err.raw');
    const q = qemuImgStatus('convert', ...args, out);
    fs.rmSync(out, { force: true });
    const r = cli('convert', ...args, out);
    assert.equal(q.status, 1, `qemu-img ${args.join(' ')}`);
    assert.equal(r.status, q.status, `${args.join(' ')}: ${r.stderr}`);
    assert.match(q.stderr, re, `qemu-img ${args.join(' ')}`);
    assert.match(r.stderr, re, args.join(' '));
    assert.ok(!fs.existsSync(out), 'nothing at DST');
  }
  // the option form with several sources: qemu-img loads it into the first one only
  const two = path.join(dir, 'two.raw'), twoQ = path.join(dir, 'two-qemu.raw');
  assert.equal(cli('convert', '-l', 'snapshot.name=first', '-O', 'raw', img, img, two).status, 0);
  qemuImg('convert', '-l', 'snapshot.name=first', '-O', 'raw', img, img, twoQ);
  compare(twoQ, two, 'raw', 'two sources');
  const s = cli('convert', '-s', 'first', img, path.join(dir, 's.raw'));
  const sq = qemuImgStatus('convert', '-s', 'first', img, path.join(dir, 's.raw'));
  assert.equal(sq.status, 1);
  assert.match(sq.stderr, /unrecognized option '-s'/);
  assert.equal(s.status, 64, 'a usage error here');
  assert.match(s.stderr, /-s is not an option of qemu-img 7\.2 convert.*-l/);
});

test('-l with -n: a snapshot\'s view written into an existing qcow2 and raw target, as qemu-img does', () => {
  const img = standalone('4k');
  for (const fmt of ['qcow2', 'raw']) {
    const mine = path.join(dir, `ln-${fmt}.img`), theirs = path.join(dir, `ln-${fmt}-qemu.img`);
    for (const p of [mine, theirs]) {
      fs.rmSync(p, { force: true });
      qemuImg('create', '-q', '-f', fmt, p, '12M');
      qemuIo(p, ['write -P 0x5a 0 12M'], ['-f', fmt]);
    }
    const r = cli('convert', '-n', '-l', 'snapshot.name=second', '-O', fmt, img, mine);
    assert.equal(r.status, 0, `${fmt}: ${r.stderr}`);
    qemuImg('convert', '-n', '-l', 'snapshot.name=second', '-O', fmt, img, theirs);
    compare(theirs, mine, fmt, `-n -l -O ${fmt}`);
    if (fmt === 'qcow2') assertClean(mine);
  }
});
