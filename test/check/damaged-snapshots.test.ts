/**
 * Damaged snapshot tables (made with `qemu-img snapshot -c` and byte pokes): our check counts what
 * `qemu-img check` counts (or fails where it fails), and `--repair all` fixes the table as
 * `qemu-img check -r all` does (QEMU 7.2, qcow2_check_read_snapshot_table and
 * qcow2_check_fix_snapshot_table): extra data cut, overhanging entries dropped, the table rewritten.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { CLI, cli, pokeBytes, qemuGuestHash, qemuImg, qemuImgStatus, qemuIo } from '../helpers/qemu';
import { assertCheckMatches, assertRepairMatches, ourCheck, qemuCheck, scratchDir } from './common';

/** A v3 image with two internal snapshots; returns the image and its snapshot entries' offsets. */
function withSnapshots(dir: string, name: string, opts = 'cluster_size=65536'): { img: string; entries: number[] } {
  const img = path.join(dir, name);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', opts, img, '64M');
  qemuIo(img, ['write -P 0x11 0 1M']);
  qemuImg('snapshot', '-c', 's1', img);
  qemuIo(img, ['write -P 0x22 2M 64k']);
  qemuImg('snapshot', '-c', 's2', img);
  const b = fs.readFileSync(img);
  const nb = b.readUInt32BE(60);
  let p = Number(b.readBigUInt64BE(64));
  const entries: number[] = [];
  for (let i = 0; i < nb; i++) {
    p = Math.ceil(p / 8) * 8;
    entries.push(p);
    p += 40 + b.readUInt32BE(p + 36) + b.readUInt16BE(p + 12) + b.readUInt16BE(p + 14);
  }
  return { img, entries };
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}

function kinds(j: { findings?: { kind: string }[] }): string[] {
  return (j.findings ?? []).map(f => f.kind);
}

test('snapshot L1 size over QEMU\'s limit: a corruption with QEMU\'s counts, info still opens the image', () => {
  const dir = scratchDir();
  const { img, entries } = withSnapshots(dir, 'l1big.qcow2');
  pokeBytes(img, entries[0] + 8, u32(0x10000000));
  assert.equal(qemuImgStatus('info', img).status, 0);
  assert.equal(cli('info', img).status, 0, 'our info opens it as qemu-img info does');
  const r = assertCheckMatches(img, 'snapshot l1_size too large');
  assert.equal(r.corruptions, 1);
  assert.ok(kinds(r).includes('snapshot-l1-too-large'));
  assertRepairMatches(img, dir, 'snapshot l1_size too large');
});

test('v3 entries without the 16 bytes of extra data v3 requires: corruptions, and -r all rewrites the table', () => {
  const dir = scratchDir();
  for (const size of [0, 8]) {
    const { img, entries } = withSnapshots(dir, `extra${size}.qcow2`);
    pokeBytes(img, entries[1] + 36, u32(size));
    const r = assertCheckMatches(img, `extra_data_size ${size}`);
    assert.equal(r.corruptions, 1);
    assert.ok(kinds(r).includes('snapshot-incomplete'));
    const { ours } = assertRepairMatches(img, dir, `extra_data_size ${size}`);
    assert.equal(ours.json['corruptions-fixed'], 1);
    assert.equal(ours.status, 0, 'repair ends clean');
  }
});

test('too much extra data: check fails as qemu-img check fails; -r all cuts it as QEMU does', () => {
  const dir = scratchDir();
  const { img, entries } = withSnapshots(dir, 'extrahuge.qcow2');
  pokeBytes(img, entries[1] + 36, u32(2000));
  const q = qemuCheck(img), o = ourCheck(img);
  assert.equal(q.status, 1);
  assert.equal(o.status, q.status, o.stderr);
  assert.equal(o.json['check-errors'], 1);
  assert.deepEqual(kinds(o.json), ['snapshot-table-unreadable']);
  assert.match(o.json.findings![0].message, /2000 bytes of extra data/);
  // -r leaks cannot read it either
  assert.equal(ourCheck(img, '-r', 'leaks').status, qemuCheck(img, '-r', 'leaks').status);
  const { ours } = assertRepairMatches(img, dir, 'extra_data_size 2000');
  assert.equal(ours.status, 0);
  assert.equal(ours.json['corruptions-fixed'], 1);
  assert.equal(qemuImgStatus('info', path.join(dir, `ours-${path.basename(img)}`)).status, 0, 'qemu-img opens our repaired copy');
});

test('a table larger than QEMU allows (an entry ending past 2 GiB): -r all drops it as QEMU does', () => {
  const dir = scratchDir();
  const { img, entries } = withSnapshots(dir, 'toobig.qcow2');
  pokeBytes(img, entries[1] + 36, u32(0x90000000));
  assert.equal(ourCheck(img).status, qemuCheck(img).status);
  const { ours } = assertRepairMatches(img, dir, 'snapshot table too large');
  assert.equal(ours.status, 0);
  assert.equal(ours.json['corruptions-fixed'], 4);
  const snaps = JSON.parse(cli('snapshot', '-l', '--output=json', path.join(dir, `ours-${path.basename(img)}`)).stdout.toString()) as unknown[];
  assert.equal(snaps.length, 1, 'the overhanging snapshot is gone');
});

test('nb_snapshots one more than the table holds: the zero entry past the table is incomplete (v3)', () => {
  const dir = scratchDir();
  const { img } = withSnapshots(dir, 'nb3.qcow2');
  pokeBytes(img, 60, u32(3));
  const r = assertCheckMatches(img, 'nb_snapshots + 1');
  assert.equal(r.corruptions, 1);
  assertRepairMatches(img, dir, 'nb_snapshots + 1');
});

test('more snapshots than QEMU allows: check fails as qemu-img check fails; -r all drops the overhang and ends clean', () => {
  const dir = scratchDir();
  const { img } = withSnapshots(dir, 'nbmax.qcow2');
  const guest = qemuGuestHash(img, dir);
  pokeBytes(img, 60, u32(65537));
  const q = qemuCheck(img), o = ourCheck(img);
  assert.equal(q.status, 1);
  assert.equal(o.status, 1, o.stderr);
  assert.deepEqual(kinds(o.json), ['snapshot-table-unreadable']);
  // qemu-img 7.2's own -r all fails here (its new table overlaps the old one: "Preventing invalid
  // write on metadata"); ours drops the overhanging entry, rewrites the 65536 entries and ends clean
  const a = path.join(dir, 'ours.qcow2');
  fs.copyFileSync(img, a);
  const r = ourCheck(a, '-r', 'all');
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.json['corruptions-fixed'], 65535, '1 dropped + 65534 incomplete entries rewritten');
  assert.equal(qemuCheck(a).status, 0, 'qemu-img check after our repair: clean');
  assert.equal(qemuGuestHash(a, dir), guest, 'guest content unchanged');
});

test('a crash before any write of the snapshot-table repair leaves the old table or the new one, never worse', () => {
  const dir = scratchDir();
  const { img, entries } = withSnapshots(dir, 'crash.qcow2');
  pokeBytes(img, entries[1] + 36, u32(8)); // incomplete entry: -r all rewrites the table
  const ref = path.join(dir, 'qemu-ref.qcow2');
  fs.copyFileSync(img, ref);
  qemuImg('check', '-q', '-r', 'all', ref);
  const want = qemuGuestHash(ref, dir);
  let k = 0;
  for (; k < 100; k++) {
    const c = path.join(dir, `crash-${k}.qcow2`);
    fs.copyFileSync(img, c);
    const r = spawnSync(process.execPath, [CLI, 'check', c, '--repair', 'all', '--json'], { env: { ...process.env, QCOW2_LENS_CRASH_AFTER_WRITES: String(k) } });
    if (r.signal !== 'SIGKILL') { assert.equal(r.status, 0, r.stderr.toString()); fs.rmSync(c); break; }
    // killed before write k+1: at most leaks besides the original damage (the incomplete entry, while the old table is live)
    const q = qemuImgStatus('check', '--output=json', c);
    const j = JSON.parse(q.stdout) as { corruptions?: number };
    assert.ok((j.corruptions ?? 0) <= 1 && !/ERROR cluster|OFLAG_COPIED|refcount=0/.test(q.stderr), `crash before write ${k + 1}: ${q.stderr}`);
    assert.ok((j.corruptions ?? 0) === 0 || /snapshot table entry 1 is incomplete/.test(q.stderr), `crash before write ${k + 1}: ${q.stderr}`);
    const second = ourCheck(c, '-r', 'all');
    assert.ok(second.status === 0, `crash before write ${k + 1}, then our repair: ${second.stderr}`);
    assert.equal(qemuCheck(c).status, 0, `crash before write ${k + 1}, then our repair: qemu-img check clean`);
    assert.equal(qemuGuestHash(c, dir), want, `crash before write ${k + 1}: guest content`);
    fs.rmSync(c);
  }
  assert.ok(k >= 4, `the table rewrite takes several writes (${k})`);
});
