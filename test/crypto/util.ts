/**
 * Helpers for the encryption tests: qemu-img/qemu-io with secrets (run asynchronously, two at a
 * time, because every `qemu-img create` of a LUKS image spends ~2 s of CPU benchmarking PBKDF2
 * whatever iter-time says), a file reader for the engine's LUKS code, a test-only qcow2 mapper
 * (plain byte reads of the header, the crypto header extension and L1/L2 tables — deliberately
 * not the engine's reader), and the leak scan: every output captured here and every file in the
 * tests' folders is searched for the passphrases used.
 */
import { execFile } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ByteReader, LuksArea } from '../../src/engine/crypto/luksArea';
import { calibrationFailed, timingPause } from '../helpers/qemuTiming';

/** Everything the tools printed and every error message seen, for the leak scan. */
export const captured: string[] = [];

export function capture(text: string): string {
  captured.push(text);
  return text;
}

/** A passphrase unique to this run, so a leak scan cannot be fooled by unrelated bytes. */
export function passphrase(label: string): string {
  return `${label}-${crypto.randomBytes(6).toString('hex')}`;
}

/** `--object secret,…` for qemu: `data=` as the brief's reference usage (no ',' in test passphrases). */
export function secretArgs(...secrets: [id: string, pass: string][]): string[] {
  const out: string[] = [];
  for (const [id, pass] of secrets) {
    if (pass.includes(',')) throw new Error('test passphrases must not contain commas');
    out.push('--object', `secret,id=${id},data=${pass}`);
  }
  return out;
}

export interface RunResult {
  /** Exit code; -1 when killed by a signal (see `signal`). */
  status: number;
  signal: string | null;
  stdout: string;
  stderr: string;
}

let running = 0;
const waiting: (() => void)[] = [];
/** At most two QEMU processes at once (two cores, shared). */
async function slot<T>(fn: () => Promise<T>): Promise<T> {
  if (running >= 2) await new Promise<void>(r => waiting.push(r));
  running++;
  try {
    return await fn();
  } finally {
    running--;
    waiting.shift()?.();
  }
}

/**
 * Runs a tool. qemu-img's PBKDF2 calibration can fail on a busy machine ("Unable to get accurate CPU
 * usage") before the command does anything: that is QEMU timing itself, so the command runs again
 * (test/helpers/qemuTiming.ts) and the caller sees the command's own outcome.
 */
export async function run(cmd: string, args: string[]): Promise<RunResult> {
  let r = await runOnce(cmd, args);
  for (let attempt = 1; calibrationFailed(r.status, r.stderr, attempt); attempt++) {
    await new Promise(res => setTimeout(res, timingPause(attempt)));
    r = await runOnce(cmd, args);
  }
  return r;
}

function runOnce(cmd: string, args: string[]): Promise<RunResult> {
  return slot(() => new Promise(resolve => {
    execFile(cmd, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => {
      capture(stdout);
      capture(stderr);
      const e = err as (Error & { code?: unknown; signal?: string | null }) | null;
      resolve({ status: !e ? 0 : typeof e.code === 'number' ? e.code : -1, signal: e?.signal ?? null, stdout, stderr });
    });
  }));
}

/** Runs and throws with the tool's own message when it fails. */
export async function runOk(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args); // run() already retries qemu-img's calibration failures
  if (r.status !== 0) throw new Error(`${cmd} ${args.filter(a => !a.startsWith('secret,')).join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** qemu-img convert of an encrypted image to raw, read back. */
export async function qemuRaw(imageOpts: string, secrets: [string, string][], out: string): Promise<Buffer> {
  await runOk('qemu-img', ['convert', ...secretArgs(...secrets), '--image-opts', imageOpts, '-O', 'raw', out]);
  return fs.readFileSync(out);
}

/** A plain reader over a file (the engine's ImageFile.read contract: exact reads or an error). */
export function fileReader(file: string): ByteReader {
  return {
    async read(hostOffset: number, length: number, structure: string): Promise<Buffer> {
      const fh = await fs.promises.open(file, 'r');
      try {
        const b = Buffer.alloc(length);
        const { bytesRead } = await fh.read(b, 0, length, hostOffset);
        if (bytesRead !== length) throw new Error(`${file}: ${structure} at 0x${hostOffset.toString(16)}: file ends`);
        return b;
      } finally {
        await fh.close();
      }
    },
  };
}

export function rawLuksArea(file: string): LuksArea {
  return { file, reader: fileReader(file), offset: 0, length: fs.statSync(file).size };
}

/** What the test-only qcow2 reader found: the crypto extension and where each data cluster is. */
export interface Qcow2Map {
  clusterSize: number;
  size: number;
  cryptMethod: number;
  crypto?: { offset: number; length: number };
  /** Guest offset → host offset of every allocated standard data cluster. */
  clusters: { guestOffset: number; hostOffset: number }[];
}

const OFFSET_MASK = 0x00fffffffffffe00n;

/** Reads just enough of a qcow2 file (header, extensions, L1, L2) with plain byte reads. */
export function mapQcow2(file: string): Qcow2Map {
  const f = fs.readFileSync(file);
  if (f.readUInt32BE(0) !== 0x514649fb) throw new Error(`${file} is not qcow2`);
  const version = f.readUInt32BE(4);
  const clusterBits = f.readUInt32BE(20);
  const clusterSize = 2 ** clusterBits;
  const size = Number(f.readBigUInt64BE(24));
  const cryptMethod = f.readUInt32BE(32);
  const l1Size = f.readUInt32BE(36);
  const l1Offset = Number(f.readBigUInt64BE(40));
  let ext = version >= 3 ? f.readUInt32BE(100) : 72;
  let cryptoExt: Qcow2Map['crypto'];
  for (;;) {
    const type = f.readUInt32BE(ext), len = f.readUInt32BE(ext + 4);
    if (type === 0) break;
    if (type === 0x0537be77) cryptoExt = { offset: Number(f.readBigUInt64BE(ext + 8)), length: Number(f.readBigUInt64BE(ext + 16)) };
    ext += 8 + Math.ceil(len / 8) * 8;
  }
  const l2Entries = clusterSize / 8;
  const clusters: Qcow2Map['clusters'] = [];
  for (let i = 0; i < l1Size; i++) {
    const l2 = Number(f.readBigUInt64BE(l1Offset + i * 8) & OFFSET_MASK);
    if (!l2) continue;
    for (let j = 0; j < l2Entries; j++) {
      const e = f.readBigUInt64BE(l2 + j * 8);
      if (e & (1n << 62n)) throw new Error('compressed clusters are not expected in these tests');
      const host = Number(e & OFFSET_MASK);
      if (!host || (e & 1n)) continue;
      clusters.push({ guestOffset: (i * l2Entries + j) * clusterSize, hostOffset: host });
    }
  }
  return { clusterSize, size, cryptMethod, crypto: cryptoExt, clusters };
}

/** Every file below `dirs` and every captured output, searched for each passphrase (as UTF-8). */
export function findLeaks(dirs: string[], passphrases: string[], extraTexts: string[] = []): string[] {
  const needles = passphrases.map(p => Buffer.from(p, 'utf8'));
  const leaks: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        const b = fs.readFileSync(p);
        for (const n of needles) if (b.includes(n)) leaks.push(`${p} holds a passphrase`);
      }
    }
  };
  for (const d of dirs) if (fs.existsSync(d)) walk(d);
  for (const t of [...captured, ...extraTexts]) for (const p of passphrases) if (t.includes(p)) leaks.push(`output holds a passphrase: ${t.slice(0, 80).replace(p, '<passphrase>')}…`);
  return leaks;
}
