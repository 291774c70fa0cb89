/**
 * Guest-disk builders for the guest-lens tests: file trees, ext2/3/4 and FAT images made by
 * Debian's tools (mkfs.ext4 -d, mkfs.vfat + mcopy), assembled into partitioned disks with
 * sfdisk/sgdisk, turned into qcow2 with qemu-img, and the host-side readers that compare with us.
 */
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, qemuImg, qemuIo } from '../helpers/qemu';

export function run(cmd: string, args: string[], input?: string): string {
  // mtools stores local time; the tests read FAT times as UTC, so every tool runs in UTC.
  return execFileSync(cmd, args, { encoding: 'utf8', input, maxBuffer: 256 * 1024 * 1024, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, TZ: 'UTC', MTOOLS_SKIP_CHECK: '1' } });
}

export function runBuffer(cmd: string, args: string[]): Buffer {
  return execFileSync(cmd, args, { maxBuffer: 256 * 1024 * 1024, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, TZ: 'UTC', MTOOLS_SKIP_CHECK: '1' } });
}

/** Deterministic pseudo-random bytes (a test must be repeatable). */
export function bytes(n: number, seed: string): Buffer {
  const out = Buffer.alloc(n);
  let block = crypto.createHash('sha256').update(seed).digest();
  for (let o = 0; o < n; o += 32) {
    block.copy(out, o);
    block = crypto.createHash('sha256').update(block).digest();
  }
  return out;
}

/** The tree every ext test stores: a big file, a sparse file, a deep tree, symlinks, unicode names, modes. */
export function makeTree(dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'big.bin'), bytes(3 * 1024 * 1024 + 123, 'big'));
  fs.writeFileSync(path.join(dir, 'hello.txt'), 'hello, guest\n');
  fs.writeFileSync(path.join(dir, 'empty'), '');
  const sparse = path.join(dir, 'sparse.img');
  fs.writeFileSync(sparse, 'head');
  fs.truncateSync(sparse, 8 * 1024 * 1024);
  fs.appendFileSync(sparse, 'tail');
  let deep = path.join(dir, 'deep');
  for (let i = 0; i < 8; i++) deep = path.join(deep, `level${i}`);
  fs.mkdirSync(deep, { recursive: true });
  fs.writeFileSync(path.join(deep, 'leaf.txt'), 'at the bottom\n');
  fs.mkdirSync(path.join(dir, 'etc'));
  fs.writeFileSync(path.join(dir, 'etc', 'fstab'), 'UUID=abc / ext4 defaults 0 1\n');
  fs.writeFileSync(path.join(dir, 'etc', 'shadow'), 'root:*:19000:0:99999:7:::\n');
  fs.chmodSync(path.join(dir, 'etc', 'shadow'), 0o640);
  fs.writeFileSync(path.join(dir, 'run.sh'), '#!/bin/sh\necho hi\n');
  fs.chmodSync(path.join(dir, 'run.sh'), 0o755);
  fs.writeFileSync(path.join(dir, 'ünïcødé — 名前.txt'), 'unicode\n');
  fs.symlinkSync('hello.txt', path.join(dir, 'link'));
  fs.symlinkSync('/' + 'long/'.repeat(20) + 'target', path.join(dir, 'longlink'));
  fs.mkdirSync(path.join(dir, 'many'));
  for (let i = 0; i < 120; i++) fs.writeFileSync(path.join(dir, 'many', `file-${String(i).padStart(3, '0')}.txt`), `n=${i}\n`.repeat(i));
  const when = new Date('2023-04-05T06:07:08Z');
  for (const p of walkHost(dir)) if (!fs.lstatSync(p).isSymbolicLink()) fs.utimesSync(p, when, when);
  return dir;
}

function walkHost(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    out.push(p);
    if (e.isDirectory()) out.push(...walkHost(p));
  }
  return out;
}

export interface HostEntry {
  type: 'file' | 'dir' | 'symlink';
  size?: number;
  mode: number;
  mtime: number;
  target?: string;
  sha?: string;
}

/** A host folder as path → entry (paths from the folder, starting with "/"), lost+found excluded. */
export function hostTree(dir: string): Map<string, HostEntry> {
  const m = new Map<string, HostEntry>();
  for (const p of walkHost(dir)) {
    const rel = '/' + path.relative(dir, p);
    if (rel === '/lost+found') continue;
    const st = fs.lstatSync(p);
    const e: HostEntry = { type: st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'dir' : 'file', mode: st.mode & 0o7777, mtime: Math.floor(st.mtimeMs / 1000) };
    if (e.type === 'symlink') e.target = fs.readlinkSync(p);
    if (e.type === 'file') {
      e.size = st.size;
      e.sha = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    }
    m.set(rel, e);
  }
  return m;
}

export function mkfsExt(kind: 'ext2' | 'ext3' | 'ext4', img: string, sizeM: number, src: string, extra: string[] = []): void {
  fs.rmSync(img, { force: true });
  run(`mkfs.${kind}`, ['-q', '-F', '-d', src, ...extra, img, `${sizeM}M`]);
}

export interface PartSpec {
  /** In 512-byte sectors. */
  start: number;
  size: number;
  /** sfdisk type (dos: "83"; gpt: sgdisk code "8300"). */
  type: string;
  /** A file-system image to copy in at the partition's offset. */
  image?: string;
}

/** A raw disk of sizeM MiB with an MBR (sfdisk, incl. extended/logical entries) or a GPT (sgdisk). */
export function buildDisk(out: string, sizeM: number, label: 'dos' | 'gpt', parts: PartSpec[]): void {
  fs.rmSync(out, { force: true });
  fs.writeFileSync(out, '');
  fs.truncateSync(out, sizeM * 1024 * 1024);
  if (label === 'dos') {
    run('sfdisk', ['-q', out], 'label: dos\n' + parts.map(p => `start=${p.start}, size=${p.size}, type=${p.type}\n`).join(''));
  } else {
    const args: string[] = [];
    parts.forEach((p, i) => args.push('-n', `${i + 1}:${p.start}:${p.start + p.size - 1}`, '-t', `${i + 1}:${p.type}`));
    run('sgdisk', [...args, out]); // (sgdisk -q writes nothing on Debian 12's gdisk 1.0.9)
  }
  for (const p of parts) if (p.image) run('dd', [`if=${p.image}`, `of=${out}`, 'bs=512', `seek=${p.start}`, 'conv=notrunc,sparse', 'status=none']);
}

export type Variant = 'raw' | 'plain' | 'compressed' | 'snapshot' | 'overlay';

/**
 * The raw disk as the image a test reads: itself, qemu-img convert (plain or -c), with an internal
 * snapshot taken and the disk changed after it (the active state is the raw disk), or an overlay
 * over a base whose guest bytes are partly written through the overlay by qemu-io.
 */
export function asImage(raw: string, variant: Variant): string {
  if (variant === 'raw') return raw;
  const out = raw.replace(/\.raw$/, '') + `.${variant}.qcow2`;
  fs.rmSync(out, { force: true });
  if (variant === 'plain') qemuImg('convert', '-q', '-O', 'qcow2', raw, out);
  else if (variant === 'compressed') qemuImg('convert', '-q', '-c', '-O', 'qcow2', raw, out);
  else if (variant === 'snapshot') {
    // The snapshot holds different bytes at the start of the last MiB; the active layer is the raw disk again.
    qemuImg('convert', '-q', '-O', 'qcow2', raw, out);
    const size = fs.statSync(raw).size;
    const tail = size - 1024 * 1024;
    const saved = out + '.tail';
    run('dd', [`if=${raw}`, `of=${saved}`, 'bs=1M', `skip=${tail / 1048576}`, 'count=1', 'status=none']);
    qemuImg('snapshot', '-c', 'before', out);
    qemuIo(out, [`write -P 0x5a ${tail} 64k`]);
    qemuImg('snapshot', '-c', 'after', out);
    qemuImg('snapshot', '-a', 'before', out);
    fs.rmSync(saved);
  } else {
    // Base: the disk with its second half zeroed; the overlay writes the real second half back with qemu-io.
    const base = raw.replace(/\.raw$/, '') + '.base.qcow2';
    const size = fs.statSync(raw).size, half = Math.floor(size / 2 / 65536) * 65536;
    const trimmed = raw + '.half';
    fs.copyFileSync(raw, trimmed);
    const fd = fs.openSync(trimmed, 'r+');
    fs.writeSync(fd, Buffer.alloc(size - half), 0, size - half, half);
    fs.closeSync(fd);
    fs.rmSync(base, { force: true });
    qemuImg('convert', '-q', '-O', 'qcow2', trimmed, base);
    fs.rmSync(trimmed);
    qemuImg('create', '-q', '-f', 'qcow2', '-b', path.basename(base), '-F', 'qcow2', out);
    // The second half goes in through the overlay in 1 MiB pieces (qemu-io write -s FILE), skipping all-zero ones.
    const rfd = fs.openSync(raw, 'r');
    const chunk = Buffer.alloc(1024 * 1024);
    const piece = `${out}.piece`;
    for (let at = half; at < size; at += chunk.length) {
      const n = fs.readSync(rfd, chunk, 0, Math.min(chunk.length, size - at), at);
      if (chunk.subarray(0, n).every(b => b === 0)) continue;
      fs.writeFileSync(piece, chunk.subarray(0, n));
      qemuIo(out, [`write -s ${piece} ${at} ${n}`]);
    }
    fs.closeSync(rfd);
    fs.rmSync(piece, { force: true });
  }
  return out;
}

export function cliOk(...args: string[]): Buffer {
  const r = cli(...args);
  if (r.status !== 0) throw new Error(`qcow2-lens ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

export function cliJsonOk<T>(...args: string[]): T {
  return JSON.parse(cliOk(...args).toString()) as T;
}

/** dumpe2fs's per-group "Free blocks:" lines, merged into runs [first, last] of blocks. */
export function dumpe2fsFreeRuns(fsImage: string): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const line of run('dumpe2fs', [fsImage]).split('\n')) {
    const m = /^\s+Free blocks: (.*)$/.exec(line);
    if (!m || !m[1].trim()) continue;
    for (const part of m[1].split(',')) {
      const [a, b] = part.trim().split('-').map(Number);
      const last = out[out.length - 1];
      const lo = a, hi = b ?? a;
      if (last && last[1] + 1 === lo) last[1] = hi;
      else out.push([lo, hi]);
    }
  }
  return out;
}

export function debugfs(fsImage: string, request: string): string {
  return run('debugfs', ['-R', request, fsImage]);
}
