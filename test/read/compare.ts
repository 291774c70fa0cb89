/**
 * The three comparisons every read-path test makes against QEMU for one image:
 * `info --json` deep-equals `qemu-img info --output=json`, `map --json` is byte-equal to
 * `qemu-img map --output=json`, and the sha256 of `read` equals that of `qemu-img convert -O raw`.
 */
import * as assert from 'node:assert/strict';
import { cli, cliJson, qemuGuestHash, qemuImg, sha256 } from '../helpers/qemu';

export function assertInfoEqual(image: string): void {
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
