/**
 * One mutant judged by both tools: info, check, and (when either finds damage) repair of a copy each,
 * then qemu-img check and qemu-img compare of the two repaired copies. Every difference is a
 * Divergence; our CLI additionally must never hang, crash or exit outside its documented codes.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI } from '../helpers/qemu';

export interface Proc {
  status: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  ms: number;
}

export interface Side {
  status: number | null;
  signal?: string | null;
  timedOut?: boolean;
  /** the parsed JSON on stdout, when there was one */
  json?: Record<string, unknown>;
  /** stderr, trimmed and capped */
  err?: string;
}

export type Aspect = 'hang' | 'crash' | 'info-status' | 'info-field' | 'check-status' | 'check-count' | 'repair-worse' | 'repair-content';

export interface Divergence {
  aspect: Aspect;
  detail: string;
}

export interface Outcome {
  info: { ours: Side; qemu: Side };
  check: { ours: Side; qemu: Side };
  repair?: { ours: Side; qemu: Side; afterOurs: Side; afterQemu: Side; compare?: Side };
  divergences: Divergence[];
}

/** A hang: no answer within a minute (a repair of a 2 MiB-cluster image full of garbage L2 entries takes seconds, also for qemu-img). */
export const OUR_TIMEOUT_MS = 60000;
/** Heap cap for our CLI: a damaged count must be refused, never allocated. */
export const OUR_HEAP_MB = 256;

export function run(cmd: string, args: string[], timeoutMs: number): Promise<Proc> {
  return new Promise(resolve => {
    const t0 = Date.now();
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [], err: Buffer[] = [];
    let timedOut = false, outLen = 0;
    p.stdout.on('data', (d: Buffer) => { if ((outLen += d.length) < 16 * 1024 * 1024) out.push(d); });
    p.stderr.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => { timedOut = true; p.kill('SIGKILL'); }, timeoutMs);
    p.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), timedOut, ms: Date.now() - t0 });
    });
  });
}

export const ours = (args: string[]): Promise<Proc> => run(process.execPath, [`--max-old-space-size=${OUR_HEAP_MB}`, CLI, ...args], OUR_TIMEOUT_MS);
export const qemuImg = (args: string[]): Promise<Proc> => run('qemu-img', args, 60000);

/**
 * JSON with integers beyond 2^53 kept exact (as strings): qemu-img prints 64-bit values exactly, and
 * a double that rounds them must show as a difference.
 */
export function parseExact(text: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(text.replace(/([:[,]\s*)(-?\d{16,})(?=\s*[,\]}])/g, (_m, pre: string, n: string) => (Number.isSafeInteger(Number(n)) ? `${pre}${n}` : `${pre}"${n}"`))) as Record<string, unknown>;
  } catch {
    return undefined; // no JSON: the tool could not open the image
  }
}

/** JSON text with object keys sorted: qemu-img and we may order keys differently where order carries no meaning. */
export function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x)) ?? 'undefined';
}

function side(p: Proc): Side {
  const json = parseExact(p.stdout);
  const err = p.stderr.trim();
  const s: Side = { status: p.status, signal: p.signal, timedOut: p.timedOut || undefined, json, err: err ? err.slice(0, 600) : undefined };
  // the whole stderr for the known classes' predicates (qemu-img's key line may come after thousands), kept out of the saved JSON
  Object.defineProperty(s, 'stderr', { value: err, enumerable: false });
  return s;
}

/** A side's whole stderr (Side.err is capped for the saved JSON). */
export function stderrOf(s: Side | undefined): string {
  return s ? ((s as Side & { stderr?: string }).stderr ?? s.err ?? '') : '';
}

/**
 * A crash shows as a signal, an exit code outside the command's documented set, V8's fatal-error
 * text, or an error line that is not a Qcow2Error: those always begin with the file's name, while
 * main.ts prints any other exception as bare `qcow2-lens: <message>`.
 */
function crashOf(p: Proc, file: string, codes: number[], what: string): Divergence | undefined {
  if (p.timedOut) return { aspect: 'hang', detail: `${what}: no answer within ${OUR_TIMEOUT_MS / 1000} s` };
  if (p.signal || p.status === null || !codes.includes(p.status)) return { aspect: 'crash', detail: `${what}: exit ${p.status ?? p.signal}: ${p.stderr.trim().slice(0, 300)}` };
  if (/FATAL ERROR|heap out of memory|\n\s+at \S+ \(|^\s+at /m.test(p.stderr)) return { aspect: 'crash', detail: `${what}: ${p.stderr.trim().slice(0, 300)}` };
  for (const line of p.stderr.split('\n')) {
    if (!line.startsWith('qcow2-lens: ')) continue;
    const rest = line.slice('qcow2-lens: '.length);
    if (rest === 'Check failed' || rest.startsWith(`${file}: `) || rest.startsWith(`${file} `)) continue;
    return { aspect: 'crash', detail: `${what}: internal error (not a Qcow2Error): ${rest.slice(0, 300)}` };
  }
  return undefined;
}

const num = (j: Record<string, unknown> | undefined, k: string): number => (typeof j?.[k] === 'number' ? (j[k]) : typeof j?.[k] === 'string' ? Number(j[k]) : 0);

function infoDiff(a: Record<string, unknown>, b: Record<string, unknown>): string[] {
  const out: string[] = [];
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const k of keys) {
    if (k === 'actual-size') continue;
    if (k === 'format-specific') {
      const da = (a[k] as { data?: Record<string, unknown> } | undefined)?.data ?? {}, db = (b[k] as { data?: Record<string, unknown> } | undefined)?.data ?? {};
      for (const d of new Set([...Object.keys(da), ...Object.keys(db)])) {
        if (canonical(da[d]) !== canonical(db[d])) out.push(`format-specific.data.${d}: ours ${canonical(da[d]).slice(0, 300)} vs qemu-img ${canonical(db[d]).slice(0, 300)}`);
      }
    } else if (canonical(a[k]) !== canonical(b[k])) out.push(`${k}: ours ${canonical(a[k]).slice(0, 300)} vs qemu-img ${canonical(b[k]).slice(0, 300)}`);
  }
  return out;
}

/** qemu-img check's verdict as a rank: can't open or not completed is worst, then corruptions, then leaks. */
function worse(a: Side, b: Side): boolean {
  const bad = (s: Side): boolean => s.status !== 0 && s.status !== 2 && s.status !== 3;
  if (bad(a) !== bad(b)) return bad(a);
  if (bad(a)) return false;
  const ca = num(a.json, 'corruptions'), cb = num(b.json, 'corruptions');
  return ca > cb || (ca === cb && num(a.json, 'leaks') > num(b.json, 'leaks'));
}

async function readable(file: string, dir: string): Promise<boolean> {
  const raw = path.join(dir, `readable-${path.basename(file)}.raw`);
  const r = await qemuImg(['convert', '-O', 'raw', file, raw]);
  fs.rmSync(raw, { force: true });
  return r.status === 0;
}

export async function judge(image: string, dir: string): Promise<Outcome> {
  const divergences: Divergence[] = [];
  // `-f qcow2` for info: we read only qcow2, and a damaged magic must not make qemu-img judge the file as raw.
  // One tool at a time on one file: qemu-img holds a lock on the image while it reads it, and we refuse locked images
  const oi = await ours(['info', '--json', image]), qi = await qemuImg(['info', '-f', 'qcow2', '--output=json', image]);
  const info = { ours: side(oi), qemu: side(qi) };
  const ci = crashOf(oi, image, [0, 1], 'info');
  if (ci) divergences.push(ci);
  else if ((oi.status === 0) !== (qi.status === 0)) divergences.push({ aspect: 'info-status', detail: `info: ours exits ${oi.status} vs qemu-img ${qi.status}` });
  else if (oi.status === 0 && info.ours.json && info.qemu.json) {
    for (const d of infoDiff(info.ours.json, info.qemu.json)) divergences.push({ aspect: 'info-field', detail: `info ${d}` });
  }

  const oc = await ours(['check', '--json', image]), qc = await qemuImg(['check', '--output=json', image]);
  const check = { ours: side(oc), qemu: side(qc) };
  const cc = crashOf(oc, image, [0, 1, 2, 3, 63], 'check');
  if (cc) divergences.push(cc);
  else if (oc.status !== qc.status) divergences.push({ aspect: 'check-status', detail: `check: ours exits ${oc.status} vs qemu-img ${qc.status}` });
  else if (check.ours.json && check.qemu.json) {
    for (const k of ['corruptions', 'leaks', 'check-errors']) {
      if (num(check.ours.json, k) !== num(check.qemu.json, k)) divergences.push({ aspect: 'check-count', detail: `check "${k}": ours ${num(check.ours.json, k)} vs qemu-img ${num(check.qemu.json, k)}` });
    }
  }

  let repair: Outcome['repair'];
  const damaged = (s: number | null): boolean => s === 2 || s === 3;
  if (damaged(qc.status) || damaged(oc.status)) {
    const a = path.join(dir, 'repaired-ours.qcow2'), b = path.join(dir, 'repaired-qemu.qcow2');
    fs.copyFileSync(image, a);
    fs.copyFileSync(image, b);
    const [or, qr] = await Promise.all([ours(['check', '-r', 'all', '--json', a]), qemuImg(['check', '-r', 'all', '--output=json', b])]);
    const cr = crashOf(or, a, [0, 1, 2, 3, 63], 'check -r all');
    if (cr) divergences.push(cr);
    const [qa, qb] = await Promise.all([qemuImg(['check', '--output=json', a]), qemuImg(['check', '--output=json', b])]);
    repair = { ours: side(or), qemu: side(qr), afterOurs: side(qa), afterQemu: side(qb) };
    if (worse(repair.afterOurs, repair.afterQemu)) {
      divergences.push({ aspect: 'repair-worse', detail: `after -r all, qemu-img check: ours exits ${qa.status} (corruptions ${num(repair.afterOurs.json, 'corruptions')}, leaks ${num(repair.afterOurs.json, 'leaks')}) vs theirs ${qb.status} (corruptions ${num(repair.afterQemu.json, 'corruptions')}, leaks ${num(repair.afterQemu.json, 'leaks')}); our repair exited ${or.status}${or.stderr.trim() ? `: ${or.stderr.trim().slice(0, 200)}` : ''}` });
    }
    // guest content is compared where qemu-img's own repair left an image it judges consistent: after a
    // repair that ends with corruptions, neither tool promises what a read returns
    if (qb.status === 0 || qb.status === 3) {
      const cmp = await qemuImg(['compare', '-q', a, b]);
      repair.compare = side(cmp);
      if (cmp.status === 1) divergences.push({ aspect: 'repair-content', detail: 'after -r all, the guest content of our copy differs from qemu-img\'s' });
      else if (cmp.status !== 0 && (await readable(b, dir)) && !(await readable(a, dir))) divergences.push({ aspect: 'repair-content', detail: `after -r all, qemu-img cannot read our copy but reads its own: ${cmp.stderr.trim().slice(0, 200)}` });
    }
    fs.rmSync(a, { force: true });
    fs.rmSync(b, { force: true });
  }
  return { info, check, repair, divergences };
}
