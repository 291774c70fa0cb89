/**
 * An image this user may not read (libvirt keeps /var/lib/libvirt/images root-only) gets a message
 * saying so and what to do, with exit code 1 — not a stack trace. As root the CLI runs as `nobody`
 * (runuser), since root reads every file.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, qemuImg, tmpDir } from '../helpers/qemu';

test('an image the user may not read: "may not read it … give this user access", exit 1, no stack trace', () => {
  const dir = tmpDir('qcow2-lens-perm-');
  fs.chmodSync(dir, 0o755);
  const img = path.join(dir, 'root-only.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '1M');
  fs.chmodSync(img, 0o600);
  const asRoot = process.getuid?.() === 0;
  if (!asRoot) fs.chmodSync(img, 0o000);
  const cmd = asRoot ? ['runuser', ['-u', 'nobody', '--', process.execPath, CLI, 'info', img]] as const : [process.execPath, [CLI, 'info', img]] as const;
  const r = spawnSync(cmd[0], [...cmd[1]], { encoding: 'utf8' });
  assert.equal(r.status, 1, r.stderr);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, new RegExp(`^qcow2-lens: ${img.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: file: cannot open \\(EACCES\\): this user may not read it .*give this user access`));
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
});
