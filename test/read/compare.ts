/**
 * The three comparisons every read-path test makes against QEMU for one image:
 * `info --json` deep-equals `qemu-img info --output=json`, `map --json` is byte-equal to
 * `qemu-img map --output=json`, and the sha256 of `read` equals that of `qemu-img convert -O raw`.
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, cli, cliJson, qemuGuestHash, qemuImg, sha256 } from '../helpers/qemu';

/** Flushes the image so its allocated size (info's actual-size) cannot change between our run and qemu-img's. */
function settle(image: string): void {
  const fd = fs.openSync(image, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function assertInfoEqual(image: string): void {
  settle(image);
  assert.deepEqual(cliJson('info', image, '--json'), JSON.parse(qemuImg('info', '--output=json', image)), `info of ${image}`);
}

export function assertMapEqual(image: string): void {
  const ours = cli('map', image, '--json');
  assert.equal(ours.status, 0, ours.stderr);
  assert.equal(ours.stdout.toString(), qemuImg('map', '--output=json', image), `map of ${image}`);
}

export function assertReadEqual(image: string, dir: string): void {
  const ours = cli('read', image);
  assert.equal(ours.status, 0, ours.stderr);
  assert.equal(sha256(ours.stdout), qemuGuestHash(image, dir), `guest content of ${image}`);
}

export function assertMatchesQemu(image: string, dir: string): void {
  assertInfoEqual(image);
  assertMapEqual(image);
  assertReadEqual(image, dir);
}

/** Runs qemu-io commands given as one list of -c arguments (each a command string). */
export function ioArgs(cmds: string[]): string[] {
  return cmds.flatMap(c => ['-c', c]);
}

/**
 * Runs the CLI on a damaged image under a 256 MiB heap cap and a 20 s timeout, and asserts a clean
 * failure: non-zero exit (not a signal), nothing on stdout, exactly one line on stderr that names the
 * file, the structure (`structure`) and, when given, the host offset; no stack trace.
 */
export function assertCleanFailure(args: string[], file: string, structure: RegExp, hostOffset?: number): string {
  const r = spawnSync(process.execPath, ['--max-old-space-size=256', CLI, ...args], { timeout: 20000, maxBuffer: 64 * 1024 * 1024 });
  const stderr = r.stderr.toString();
  const what = `qcow2-lens ${args.join(' ')}`;
  assert.equal(r.signal, null, `${what} was killed by ${r.signal} (timeout or crash): ${stderr}`);
  assert.notEqual(r.status, 0, `${what} succeeded`);
  assert.ok(r.status === 1, `${what} exited ${r.status}, expected 1 (error): ${stderr}`);
  const lines = stderr.split('\n').filter(l => l !== '');
  assert.equal(lines.length, 1, `${what}: expected one line on stderr, got:\n${stderr}`);
  const line = lines[0];
  assert.ok(line.includes(path.basename(file)), `${what}: "${line}" does not name ${path.basename(file)}`);
  assert.match(line, structure, `${what}: "${line}" does not name the structure`);
  if (hostOffset !== undefined) assert.ok(line.includes(`0x${hostOffset.toString(16)}`), `${what}: "${line}" does not give offset 0x${hostOffset.toString(16)}`);
  assert.doesNotMatch(stderr, /\n\s+at |TypeError|RangeError|ReferenceError/, `${what}: stack trace or internal error: ${stderr}`);
  assert.equal(r.stdout.length, 0, `${what} printed to stdout`);
  return line;
}
