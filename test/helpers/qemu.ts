/**
 * Test helpers: run qemu-img / qemu-io (the ground truth) and our CLI, in throwaway directories.
 */
import { execFile, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { calibrationFailed, timingPause } from './qemuTiming';

/** The repository root: the nearest folder above the (bundled) test file holding package.json. */
export const ROOT = (() => {
  let d = __dirname;
  while (!fs.existsSync(path.join(d, 'package.json')) && path.dirname(d) !== d) d = path.dirname(d);
  return d;
})();
export const CLI = path.join(ROOT, 'dist', 'cli.js');

const scratchDirs: string[] = [];
process.on('exit', () => {
  if (process.env.KEEP_TEST_TMP) return;
  for (const d of scratchDirs) fs.rmSync(d, { recursive: true, force: true });
});

/** A fresh scratch folder, removed when the test process exits (KEEP_TEST_TMP=1 keeps it). */
export function tmpDir(prefix = 'qcow2-lens-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  scratchDirs.push(d);
  return d;
}

// stderr is captured, not inherited: qemu-img's repair chatter ("Repairing cluster 5 …") is not the
// test log's business; when a call fails, the thrown error carries it.
const QUIET_STDIO = ['ignore', 'pipe', 'pipe'] as const;

// QEMU's PBKDF2 calibration failures are retried (see qemuTiming.ts).
/** A pause between tries (synchronous helpers cannot await): the next calibration then runs on a quieter clock. */
const pause = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

function spawnQemu(cmd: string, args: string[], maxBuffer: number): ReturnType<typeof spawnSync> & { stdout: string; stderr: string } {
  let r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer, stdio: [...QUIET_STDIO] });
  for (let i = 1; calibrationFailed(r.status, r.stderr, i); i++) {
    pause(timingPause(i));
    r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer, stdio: [...QUIET_STDIO] });
  }
  return r;
}

function orThrow(cmd: string, args: string[], r: ReturnType<typeof spawnQemu>): string {
  if (r.error) throw r.error;
  if (r.status !== 0) {
    const shown = args.map(a => (a.startsWith('secret,') ? 'secret,…' : a)).join(' ');
    // qemu-io reports a failed command on stdout
    throw new Error(`${cmd} ${shown} exited ${r.status ?? r.signal}: ${r.stderr || r.stdout}`);
  }
  return r.stdout;
}

export function qemuImg(...args: string[]): string {
  return orThrow('qemu-img', args, spawnQemu('qemu-img', args, 256 * 1024 * 1024));
}

/** qemu-img with its exit code (for check, compare). */
export function qemuImgStatus(...args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnQemu('qemu-img', args, 256 * 1024 * 1024);
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** qemu-img without blocking the test process (several can run side by side); rejects with its stderr. */
export async function qemuImgAsync(...args: string[]): Promise<string> {
  const once = () => new Promise<{ err: Error | null; stdout: string; stderr: string }>(resolve =>
    execFile('qemu-img', args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => resolve({ err, stdout, stderr })));
  let r = await once();
  for (let i = 1; calibrationFailed(r.err ? 1 : 0, r.stderr, i); i++) {
    await new Promise(res => setTimeout(res, timingPause(i)));
    r = await once();
  }
  if (r.err) throw new Error(`qemu-img ${args.map(a => (a.startsWith('secret,') ? 'secret,…' : a)).join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/** One entry of `qemu-img map --output=json`. */
export interface MapEntry { start: number; length: number; depth: number; present: boolean; zero: boolean; data: boolean; offset?: number }

/** `qemu-img map --output=json` of an image (of `format`, else probed). */
export function qemuMap(image: string, format?: string): MapEntry[] {
  return JSON.parse(qemuImg('map', '--output=json', ...(format ? ['-f', format] : []), image)) as MapEntry[];
}

/** Runs qemu-io commands against an image (each string one -c). */
export function qemuIo(image: string, cmds: string[], extra: string[] = []): string {
  const args = [...extra];
  for (const c of cmds) args.push('-c', c);
  args.push(image);
  return orThrow('qemu-io', args, spawnQemu('qemu-io', args, 64 * 1024 * 1024));
}

export interface CliResult {
  status: number;
  stdout: Buffer;
  stderr: string;
}

export function cli(...args: string[]): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], { maxBuffer: 1024 * 1024 * 1024 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr.toString() };
}

export function cliJson<T = unknown>(...args: string[]): T {
  const r = cli(...args);
  if (r.status !== 0) throw new Error(`qcow2-lens ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout.toString()) as T;
}

export function sha256(buf: Buffer | string): string {
  return crypto.createHash('sha256').update(buf).digest('hex');
}

/** sha256 of the guest content as qemu-img sees it (convert -O raw). */
export function qemuGuestHash(image: string, dir: string): string {
  const raw = path.join(dir, `guest-${crypto.randomUUID()}.raw`);
  qemuImg('convert', '-O', 'raw', image, raw);
  const h = sha256(fs.readFileSync(raw));
  fs.rmSync(raw);
  return h;
}

/** Overwrites bytes of a file at an offset (for damage tests). */
export function pokeBytes(file: string, offset: number, bytes: Buffer | number[]): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes);
    fs.writeSync(fd, b, 0, b.length, offset);
  } finally {
    fs.closeSync(fd);
  }
}

export function readBE64(file: string, offset: number): bigint {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(8);
    fs.readSync(fd, b, 0, 8, offset);
    return b.readBigUInt64BE(0);
  } finally {
    fs.closeSync(fd);
  }
}

export function writeBE64(file: string, offset: number, v: bigint): void {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  pokeBytes(file, offset, b);
}
