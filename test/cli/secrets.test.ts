/**
 * A passphrase given through --object never reaches stdout or stderr, whatever the command and
 * whatever else is wrong with the command line (GUIDE: secrets never reach a log or an error
 * message). Run against the built CLI on QEMU-made images.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { commands } from '../../src/cli/commands';
import { cli, qemuImg, qemuIo, tmpDir } from '../helpers/qemu';

const PASS = 'Pa55-phrase-x9';
const B64 = Buffer.from(PASS).toString('base64');
const dir = tmpDir('qcow2-lens-secrets-');
const img = path.join(dir, 'a.qcow2');
qemuImg('create', '-q', '-f', 'qcow2', img, '16M');
qemuIo(img, ['write -P 7 0 64k']);
const notQcow2 = path.join(dir, 'plain.raw');
fs.writeFileSync(notQcow2, Buffer.alloc(65536, 1));

/** What each command needs besides the image to do its real work. */
const EXTRA: Record<string, string[]> = {
  snapshot: ['-l'], compact: ['-o', path.join(dir, 'out.qcow2')],
  ls: ['/'], cat: ['/etc/fstab'], cp: ['/etc', path.join(dir, 'copied')], whose: ['--guest-offset', '0'],
  convert: [path.join(dir, 'converted.raw')], compare: [img],
};
/** Commands taking any number of operands (convert SRC... DST): a stray word there would be an operand (a file it writes), so that run is left out. */
const VARIADIC = new Set(['convert']);

const obj = `secret,id=sec0,data=${PASS}`;

for (const c of commands) {
  test(`${c.name}: the --object passphrase appears in no output, errors included`, () => {
    const extra = EXTRA[c.name] ?? [];
    const runs: { argv: string[]; usage?: boolean }[] = [
      { argv: [img, ...extra, '--object', obj] },
      { argv: [`--object=${obj}`, ...extra, img] },
      { argv: [img, ...extra, '--object', `secret,id=sec0,format=base64,data=${B64}`] },
      { argv: [notQcow2, ...extra, '--object', obj] },
      { argv: [path.join(dir, 'missing.qcow2'), ...extra, '--object', obj] },
      { argv: ['--help', '--object', obj] },
      { argv: ['--object', obj], usage: true },
      // a stray word after the operands: a usage error, except where it is one more operand (convert's DST)
      ...(VARIADIC.has(c.name) ? [] : [{ argv: [img, ...extra, '--object', obj, PASS], usage: true }]),
      { argv: [img, ...extra, '--object', obj, '--bogus', PASS], usage: true },
      { argv: [img, ...extra, `--bogus=${PASS}`], usage: true },
      { argv: [img, ...extra, '--object', `${obj},bogus=1`], usage: true },
      { argv: [img, ...extra, '--object', `${obj},${PASS}`], usage: true },
      { argv: [img, ...extra, '--object', `secret,id=sec0,data=${PASS},file=/x`], usage: true },
      { argv: [img, ...extra, '--object', `secret,id=sec0,data=${PASS},format=${PASS}`], usage: true },
      { argv: [img, ...extra, '--object', PASS], usage: true },
      { argv: [img, ...extra, '--object', `iothread,id=${PASS}`], usage: true },
      { argv: [img, ...extra, '--object', obj, '--object', obj], usage: true },
      { argv: [img, ...extra, '--object', `secret,id=sec1,format=base64,data=${PASS}!`, '--bogus'], usage: true },
    ];
    for (const { argv, usage } of runs) {
      const r = cli(c.name, ...argv);
      const out = r.stdout.toString('latin1') + r.stderr;
      for (const s of [PASS, B64]) assert.ok(!out.includes(s), `qcow2-lens ${c.name} ${argv.join(' ')} printed the secret (exit ${r.status})`);
      if (usage) assert.equal(r.status, 64, `qcow2-lens ${c.name} ${argv.join(' ')}: a usage error (exit ${r.status}: ${r.stderr.replaceAll(PASS, '…')})`);
    }
  });
}

test('top level: a passphrase typed where a command or a command\'s help is expected is not echoed', () => {
  for (const argv of [[PASS], ['help', PASS], [`--${PASS}`], ['info', '--help', PASS]]) {
    const r = cli(...argv);
    assert.ok(!(r.stdout.toString() + r.stderr).includes(PASS), `qcow2-lens ${argv.join(' ')} printed it`);
  }
});
