/**
 * Helpers for the check/repair tests: images made by qemu-img/qemu-io, damaged byte by byte, then
 * judged by both `qemu-img check` and ours.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, qemuGuestHash, qemuImgStatus, readBE64, tmpDir } from '../helpers/qemu';

export const NUMERIC_KEYS = ['check-errors', 'image-end-offset', 'corruptions', 'leaks', 'total-clusters', 'allocated-clusters', 'fragmented-clusters', 'compressed-clusters'] as const;

export interface Finding { kind: string; severity: string; structure: string; message: string; explanation: string; hostOffset?: number; count?: number }
export type CheckJson = Record<string, number | string | undefined> & { findings?: Finding[] };

export function qemuCheck(img: string, ...extra: string[]): { status: number; json: CheckJson } {
  const r = qemuImgStatus('check', '--output=json', ...extra, img);
  let json: CheckJson = {};
  try { json = JSON.parse(r.stdout) as CheckJson; } catch { /* qemu-img printed nothing (could not open) */ }
  return { status: r.status, json };
}

export function ourCheck(img: string, ...extra: string[]): { status: number; json: CheckJson; stdout: string; stderr: string } {
  const r = cli('check', img, '--json', ...extra);
  const stdout = r.stdout.toString();
  let json: CheckJson = {};
  try { json = JSON.parse(stdout) as CheckJson; } catch { /* not completed */ }
  return { status: r.status, json, stdout, stderr: r.stderr };
}

/** Our check equals qemu-img check: every numeric key and the exit code. Returns our result. */
export function assertCheckMatches(img: string, what: string): CheckJson {
  const q = qemuCheck(img);
  const o = ourCheck(img);
  assert.equal(o.status, q.status, `${what}: exit code ours ${o.status} (${o.stderr.trim()}) vs qemu-img ${q.status}`);
  for (const k of NUMERIC_KEYS) assert.equal(o.json[k], q.json[k], `${what}: "${k}" ours ${o.json[k]} vs qemu-img ${q.json[k]}`);
  // the JSON without our findings key is byte-for-byte qemu-img's (same key order)
  const { findings, ...rest } = o.json;
  assert.ok(Array.isArray(findings), `${what}: findings missing`);
  assert.equal(JSON.stringify(rest, null, 4) + '\n', JSON.stringify(q.json, null, 4) + '\n', `${what}: JSON differs from qemu-img's`);
  return o.json;
}

/**
 * Repairs one copy with ours and another with `qemu-img check -r MODE`; afterwards qemu-img check
 * must judge both copies the same (clean when qemu-img's repair made its copy clean), and the guest
 * content must be identical.
 */
export function assertRepairMatches(img: string, dir: string, what: string, mode: 'all' | 'leaks' = 'all'): { ours: ReturnType<typeof ourCheck>; qemuStatus: number } {
  const a = path.join(dir, `ours-${path.basename(img)}`);
  const b = path.join(dir, `qemu-${path.basename(img)}`);
  fs.copyFileSync(img, a);
  fs.copyFileSync(img, b);
  const ours = ourCheck(a, '--repair', mode);
  const qr = qemuCheck(b, '-r', mode);
  assert.equal(ours.status, qr.status, `${what}: repair exit code ours ${ours.status} (${ours.stderr.trim()}) vs qemu-img ${qr.status}`);
  // the repair's own report: what was fixed and what remains, counted as qemu-img counts it
  if (qr.status !== 1) {
    for (const k of ['leaks-fixed', 'corruptions-fixed', 'leaks', 'corruptions', 'check-errors'] as const) {
      assert.equal(ours.json[k], qr.json[k], `${what}: repair report "${k}" ours ${ours.json[k]} vs qemu-img ${qr.json[k]}`);
    }
  }
  const qa = qemuCheck(a), qb = qemuCheck(b);
  assert.equal(qa.status, qb.status, `${what}: after repair qemu-img check exits ${qa.status} on ours vs ${qb.status} on its own`);
  for (const k of ['check-errors', 'corruptions', 'leaks'] as const) assert.equal(qa.json[k], qb.json[k], `${what}: after repair "${k}" ${qa.json[k]} (ours) vs ${qb.json[k]} (qemu-img)`);
  // our own report after repair agrees with qemu-img's judgement of our repaired copy (when the
  // repair completed: qemu-img prints no report when it could not, e.g. -r leaks needing a rebuild)
  if (qr.status !== 1) for (const k of ['check-errors', 'corruptions', 'leaks'] as const) assert.equal(ours.json[k], qa.json[k], `${what}: our post-repair "${k}" ${ours.json[k]} vs qemu-img ${qa.json[k]}`);
  if (qa.status === 0 || qb.status === 0) {
    assert.equal(qemuGuestHash(a, dir), qemuGuestHash(b, dir), `${what}: guest content differs after repair`);
  }
  return { ours, qemuStatus: qr.status };
}

/** Offsets of on-disk structures, read with plain byte reads (independent of the engine). */
export function layout(img: string): { cs: number; l1: number; reftable: number; refblock0: number; l2(i: number): number; refcountBits: number } {
  const hdr = fs.readFileSync(img).subarray(0, 112);
  const clusterBits = hdr.readUInt32BE(20);
  const version = hdr.readUInt32BE(4);
  const l1 = Number(hdr.readBigUInt64BE(40));
  const reftable = Number(hdr.readBigUInt64BE(48));
  const refcountBits = version >= 3 ? 2 ** hdr.readUInt32BE(96) : 16;
  return {
    cs: 2 ** clusterBits, l1, reftable, refcountBits,
    refblock0: Number(readBE64(img, reftable) & ~0x1ffn),
    l2: (i: number) => Number(readBE64(img, l1 + 8 * i) & 0x00fffffffffffe00n),
  };
}

const scratch: string[] = [];
process.on('exit', () => { for (const d of scratch) fs.rmSync(d, { recursive: true, force: true }); });
/** A temporary folder removed when the test process exits. */
export function scratchDir(): string {
  const d = tmpDir('qcow2-lens-check-');
  scratch.push(d);
  return d;
}
