/**
 * Convert / Export, Commit, Rebase and Compare inside a real VS Code extension host, driven with
 * their arguments (as a keybinding or another extension would; the modal confirmation is skipped
 * with confirm: false) and judged by qemu-img on the files they write: check clean, compare equal
 * to the source or to what qemu-img itself makes of a twin copy, info's format and subformat.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { qemuImg, until, wsPath } from './util';

const MiB = 2 ** 20;
const qemuIo = (p: string, ...cmds: string[]) => { execFileSync('qemu-io', [...cmds.flatMap(c => ['-c', c]), p], { stdio: 'ignore' }); };
interface Info {
  format: string; 'virtual-size': number; 'backing-filename'?: string; 'backing-filename-format'?: string;
  'format-specific'?: { type: string; data: { 'create-type'?: string; 'compression-type'?: string } };
}
const info = (p: string, format?: string) => JSON.parse(qemuImg('info', '--output=json', '-U', ...(format ? ['-f', format] : []), p)) as Info;
/** qemu-img check's verdict: exit 0 and no leaks or corruptions; returns its JSON. */
const checkClean = (p: string) => JSON.parse(qemuImg('check', '--output=json', p)) as { 'compressed-clusters'?: number; 'allocated-clusters'?: number };
/** qemu-img compare's exit code (0 identical, 1 different). */
const compareCode = (...args: string[]) => spawnSync('qemu-img', ['compare', '-U', ...args], { stdio: 'ignore' }).status;
const run = <T>(cmd: string, ...args: unknown[]) => Promise.resolve(vscode.commands.executeCommand<T>(cmd, ...args));

function fresh(name: string, size: string, ...qemuImgArgs: string[]): string {
  const p = wsPath(name);
  fs.rmSync(p, { force: true });
  qemuImg('create', '-q', '-f', 'qcow2', ...qemuImgArgs, p, ...(size ? [size] : []));
  return p;
}

/** base (0x11 over 0-4 MiB) ← mid (0x22 at 1 MiB) ← top (0x33 at 2 MiB, zeros at 3 MiB) under `prefix`. */
function chain(prefix: string, depth: 2 | 3): { base: string; mid: string; top: string } {
  const base = fresh(`${prefix}-base.qcow2`, '32M', '-o', 'cluster_size=4096');
  qemuIo(base, 'write -P 0x11 0 4M', 'write -P 0x12 20M 64k');
  const mid = fresh(`${prefix}-mid.qcow2`, '', '-b', path.basename(base), '-F', 'qcow2');
  qemuIo(mid, 'write -P 0x22 1M 256k');
  if (depth === 2) return { base, mid, top: mid };
  const top = fresh(`${prefix}-top.qcow2`, '', '-b', path.basename(mid), '-F', 'qcow2', '-o', 'cluster_size=65536');
  qemuIo(top, 'write -P 0x33 2M 128k', 'write -z 3M 64k', 'write -P 0x34 31M 4k');
  return { base, mid, top };
}

/** A copy of `files` under new names (prefix replaced), backing names rewritten to the copies. */
function twin(files: string[], from: string, to: string): string[] {
  const out = files.map(f => wsPath(path.basename(f).replace(from, to)));
  files.forEach((f, i) => fs.copyFileSync(f, out[i]));
  for (let i = 1; i < out.length; i++) qemuImg('rebase', '-u', '-b', path.basename(out[i - 1]), '-F', 'qcow2', out[i]);
  return out;
}

/** The guest content now, as a raw file (to compare against after a write). */
function snapshotRaw(p: string, name: string): string {
  const raw = wsPath(name);
  fs.rmSync(raw, { force: true });
  qemuImg('convert', '-U', '-O', 'raw', p, raw);
  return raw;
}

suite('Image management: convert, commit, rebase, compare', () => {
  test('Convert / Export writes a standalone compressed qcow2 of a 3-deep chain that reads as the chain', async () => {
    const { top } = chain('cv', 3);
    const out = wsPath('cv-standalone.qcow2');
    fs.rmSync(out, { force: true });
    const r = await run<{ output: string; format: string; virtualSize: number }>('qcow2Lens.convertImage', vscode.Uri.file(top), { output: out, format: 'qcow2', compress: 'zlib' });
    assert.equal(r.output, out);
    assert.equal(r.virtualSize, 32 * MiB);
    const i = info(out);
    assert.equal(i.format, 'qcow2');
    assert.equal(i['backing-filename'], undefined, 'standalone: no backing file');
    const c = checkClean(out);
    assert.ok((c['compressed-clusters'] ?? 0) > 0, 'the data clusters are compressed');
    assert.equal(compareCode(top, out), 0);
    // zstd is recorded as the image's compression type
    const z = wsPath('cv-zstd.qcow2');
    fs.rmSync(z, { force: true });
    await run('qcow2Lens.convertImage', vscode.Uri.file(top), { output: z, format: 'qcow2', compress: 'zstd' });
    assert.equal(info(z)['format-specific']?.data['compression-type'], 'zstd');
    checkClean(z);
    assert.equal(compareCode(top, z), 0);
  });

  test('Convert / Export makes fixed and dynamic VHDs, sparse and stream-optimized VMDKs and raw, each equal to the source', async () => {
    const { top } = chain('ex', 3);
    const vhdType = (p: string) => { // the footer's disk type: 2 fixed, 3 dynamic
      const fd = fs.openSync(p, 'r');
      try {
        const f = Buffer.alloc(512);
        fs.readSync(fd, f, 0, 512, fs.fstatSync(fd).size - 512);
        assert.equal(f.toString('latin1', 0, 8), 'conectix');
        return f.readUInt32BE(60);
      } finally { fs.closeSync(fd); }
    };
    for (const [format, subformat, name] of [['vpc', 'fixed', 'ex.vhd'], ['vpc', 'dynamic', 'ex-dyn.vhd'], ['vmdk', 'monolithicSparse', 'ex.vmdk'], ['vmdk', 'streamOptimized', 'ex-stream.vmdk'], ['raw', undefined, 'ex.img']] as const) {
      const out = wsPath(name);
      fs.rmSync(out, { force: true });
      const r = await run<{ format: string; subformat?: string; fileSize: number }>('qcow2Lens.convertImage', vscode.Uri.file(top), { output: out, format, subformat });
      assert.equal(r.format, format);
      // a fixed VHD has its footer only at the end, which qemu-img does not probe: name the format
      const i = info(out, format === 'vpc' && subformat === 'fixed' ? 'vpc' : undefined);
      assert.equal(i.format, format, name);
      if (format === 'vpc') assert.ok(i['virtual-size'] >= 32 * MiB, `${name}: CHS geometry rounds up, never down`);
      if (format === 'vmdk') assert.equal(i['format-specific']?.data['create-type'], subformat, name);
      if (format === 'vpc') assert.equal(vhdType(out), subformat === 'fixed' ? 2 : 3, name);
      if (format === 'vmdk') checkClean(out);
      assert.equal(compareCode('-F', format, top, out), 0, `${name} reads as the source`);
      if (format === 'vpc' && subformat === 'fixed') assert.equal(fs.statSync(out).size, i['virtual-size'] + 512, 'a fixed VHD is the whole disk plus its footer');
    }
  });

  test('Convert / Export replaces an existing file only when told, refuses the source as its own output and a subformat the format lacks', async () => {
    const src = fresh('cvr.qcow2', '8M');
    qemuIo(src, 'write -P 0x5a 0 1M');
    const out = wsPath('cvr-out.qcow2');
    fs.writeFileSync(out, 'old content');
    await run('qcow2Lens.convertImage', vscode.Uri.file(src), { output: out, format: 'qcow2', compress: 'none', confirm: false });
    checkClean(out);
    assert.equal(compareCode(src, out), 0);
    await assert.rejects(run('qcow2Lens.convertImage', vscode.Uri.file(src), { output: src, format: 'raw' }), /different file/);
    await assert.rejects(run('qcow2Lens.convertImage', vscode.Uri.file(src), { output: wsPath('cvr.vhd'), format: 'vpc', subformat: 'streamOptimized' }), /no subformat/);
    assert.equal(fs.existsSync(wsPath('cvr.vhd')), false);
  });

  test('Commit writes the overlay into its backing file and empties it, as qemu-img commit does', async () => {
    const { base, mid } = chain('cm', 2);
    const [tBase, tMid] = twin([base, mid], 'cm-', 'cmq-');
    const before = snapshotRaw(mid, 'cm-before.raw');
    const r = await run<{ base: string; emptied: boolean; bytesWritten: number }>('qcow2Lens.commitImage', vscode.Uri.file(mid), { keepOverlay: false, confirm: false });
    assert.equal(r.base, base);
    assert.equal(r.emptied, true);
    assert.ok(r.bytesWritten >= 256 * 1024);
    qemuImg('commit', '-q', tMid);
    checkClean(base);
    checkClean(mid);
    assert.equal(compareCode(base, tBase), 0, 'the base holds what qemu-img commit puts there');
    assert.equal(compareCode('-F', 'raw', base, before), 0);
    assert.equal(compareCode('-F', 'raw', mid, before), 0, 'the guest content of the overlay is unchanged');
    // emptied: nothing left allocated in the overlay itself (qemu-img map depth 0)
    const map = JSON.parse(qemuImg('map', '--output=json', mid)) as { depth: number; data: boolean }[];
    assert.ok(map.every(e => e.depth > 0 || !e.data), 'the overlay allocates nothing');
  });

  test('Commit into a deeper base of a 3-deep chain leaves the overlay as qemu-img commit -b does', async () => {
    const { base, mid, top } = chain('cd', 3);
    const [tBase, , tTop] = twin([base, mid, top], 'cd-', 'cdq-');
    const before = snapshotRaw(top, 'cd-before.raw');
    const topBytes = fs.readFileSync(top);
    const r = await run<{ base: string; emptied: boolean; baseSize: { after: number } }>('qcow2Lens.commitImage', vscode.Uri.file(top), { base, confirm: false });
    assert.equal(r.base, base);
    assert.equal(r.emptied, false);
    qemuImg('commit', '-q', '-b', path.basename(tBase), tTop);
    checkClean(base);
    assert.equal(compareCode(base, tBase), 0);
    assert.equal(compareCode('-F', 'raw', base, before), 0);
    assert.ok(fs.readFileSync(top).equals(topBytes), 'the top image is left as it is');
    await assert.rejects(run('qcow2Lens.commitImage', vscode.Uri.file(base), { confirm: false }), /no backing file/);
  });

  test('Rebase (safe) onto another file keeps the guest content and matches qemu-img rebase', async () => {
    const { base, mid } = chain('rb', 2);
    const other = fresh('rb-other.qcow2', '32M');
    qemuIo(other, 'write -P 0x44 0 2M', 'write -P 0x12 20M 64k');
    const [, tMid] = twin([base, mid], 'rb-', 'rbq-');
    const before = snapshotRaw(mid, 'rb-before.raw');
    const r = await run<{ mode: string; backingFile: string; backingFormat: string; bytesWritten: number }>('qcow2Lens.rebaseImage', vscode.Uri.file(mid), { mode: 'safe', backing: other, confirm: false });
    assert.equal(r.backingFile, 'rb-other.qcow2', 'the name is recorded relative to the overlay');
    assert.equal(r.backingFormat, 'qcow2', 'the format is probed');
    assert.ok(r.bytesWritten > 0);
    const i = info(mid);
    assert.equal(i['backing-filename'], 'rb-other.qcow2');
    assert.equal(i['backing-filename-format'], 'qcow2');
    checkClean(mid);
    assert.equal(compareCode('-F', 'raw', mid, before), 0, 'the guest sees the same disk');
    qemuImg('rebase', '-q', '-b', 'rb-other.qcow2', '-F', 'qcow2', tMid);
    assert.equal(compareCode(mid, tMid), 0);
  });

  test('Rebase flattens a chain into a standalone image', async () => {
    const { top } = chain('fl', 3);
    const before = snapshotRaw(top, 'fl-before.raw');
    const r = await run<{ mode: string; backingFile?: string }>('qcow2Lens.rebaseImage', vscode.Uri.file(top), { mode: 'flatten', confirm: false });
    assert.equal(r.backingFile, undefined);
    assert.equal(info(top)['backing-filename'], undefined);
    checkClean(top);
    assert.equal(compareCode('-F', 'raw', top, before), 0);
  });

  test('a missing backing file: the picker offers the images of the overlay\'s size first, rename-only re-points it, safe modes are refused', async () => {
    const { base, mid } = chain('mv', 2);
    fresh('mv-small.qcow2', '16M');
    const moved = wsPath('mv-moved-base.qcow2');
    fs.renameSync(base, moved);
    const candidates = await run<{ path: string; size: number }[]>('qcow2Lens.internal.backingCandidates', vscode.Uri.file(mid), 32 * MiB);
    const firstOther = candidates.findIndex(c => c.size !== 32 * MiB);
    assert.ok(candidates.some(c => c.path === moved), 'the moved base is offered');
    assert.ok(candidates.some(c => c.path === wsPath('mv-small.qcow2')), 'other sizes are offered too');
    assert.ok(candidates.slice(0, firstOther < 0 ? undefined : firstOther).some(c => c.path === moved), 'the moved base comes among the same-size images');
    assert.ok(firstOther < 0 || candidates.slice(firstOther).every(c => c.size !== 32 * MiB), 'same-size images first');
    assert.ok(!candidates.some(c => c.path === mid), 'not the overlay itself');
    await assert.rejects(run('qcow2Lens.rebaseImage', vscode.Uri.file(mid), { mode: 'safe', backing: moved, confirm: false }), /missing/);
    const bytes = fs.readFileSync(mid).length;
    const r = await run<{ backingFile: string; bytesWritten: number }>('qcow2Lens.rebaseImage', vscode.Uri.file(mid), { mode: 'unsafe', backing: moved, confirm: false });
    assert.equal(r.bytesWritten, 0);
    assert.equal(info(mid)['backing-filename'], 'mv-moved-base.qcow2');
    assert.equal(fs.readFileSync(mid).length, bytes, 'nothing copied');
    checkClean(mid);
    // the chain reads again as it did: base data with the overlay's write over it
    const expected = wsPath('mv-expected.raw');
    fs.copyFileSync(snapshotRaw(moved, 'mv-base.raw'), expected);
    const fd = fs.openSync(expected, 'r+');
    fs.writeSync(fd, Buffer.alloc(256 * 1024, 0x22), 0, 256 * 1024, MiB);
    fs.closeSync(fd);
    assert.equal(compareCode('-F', 'raw', mid, expected), 0);
    await assert.rejects(run('qcow2Lens.rebaseImage', vscode.Uri.file(mid), { mode: 'unsafe', backing: mid, confirm: false }), /own backing file/);
  });

  test('Compare with… gives qemu-img compare\'s verdict and first offset, and every differing range', async () => {
    const a = fresh('cp-a.qcow2', '16M');
    qemuIo(a, 'write -P 0x61 0 8M');
    const b = wsPath('cp-b.qcow2');
    fs.copyFileSync(a, b);
    const same = await run<{ identical: boolean; differences: unknown[] }>('qcow2Lens.compareImages', vscode.Uri.file(a), { other: b });
    assert.equal(same.identical, true);
    assert.equal(compareCode(a, b), 0);
    qemuIo(b, 'write -P 0x62 1M 64k', 'write -P 0x63 4M 512', 'write -P 0x64 12M 4k');
    const text = spawnSync('qemu-img', ['compare', a, b], { encoding: 'utf8' });
    assert.equal(text.status, 1);
    const first = Number(/offset (\d+)/.exec(text.stdout)![1]);
    const r = await run<{ identical: boolean; firstMismatch: number; differences: { start: number; length: number }[]; report: string }>('qcow2Lens.compareImages', vscode.Uri.file(a), { other: b });
    assert.equal(r.identical, false);
    assert.equal(r.firstMismatch, first);
    assert.deepEqual(r.differences, [{ start: MiB, length: 65536 }, { start: 4 * MiB, length: 512 }, { start: 12 * MiB, length: 4096 }]);
    assert.match(r.report, /3 differing ranges, 68\.5 KiB in all/);
    assert.match(r.report, /0x400000\s+0x400200\s+512 bytes/);
    // a raw image compares too (the format probed), and the Explorer's two-file selection picks the other one
    const raw = snapshotRaw(b, 'cp-b.raw');
    const viaSelection = await run<{ identical: boolean }>('qcow2Lens.compareImages', vscode.Uri.file(b), [vscode.Uri.file(b), vscode.Uri.file(raw)]);
    assert.equal(viaSelection.identical, true);
  });

  test('commit and rebase refuse an image QEMU holds open, and write nothing', async () => {
    const { base, mid } = chain('lk', 2);
    const holder = spawn('qemu-io', [mid], { stdio: ['pipe', 'ignore', 'ignore'] });
    try {
      await until('QEMU lock', () => fs.readFileSync('/proc/locks', 'utf8').includes(`:${fs.statSync(mid).ino} `) || undefined, 10000);
      const before = [fs.readFileSync(base), fs.readFileSync(mid)];
      await assert.rejects(run('qcow2Lens.commitImage', vscode.Uri.file(mid), { keepOverlay: false, confirm: false }), /in use by QEMU/);
      await assert.rejects(run('qcow2Lens.rebaseImage', vscode.Uri.file(mid), { mode: 'flatten', confirm: false }), /in use by QEMU/);
      assert.ok(fs.readFileSync(base).equals(before[0]) && fs.readFileSync(mid).equals(before[1]), 'nothing was written');
    } finally {
      holder.stdin.end('quit\n');
      holder.kill();
    }
  });
});
