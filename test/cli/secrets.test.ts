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

/**
 * Encrypted images: the passphrase reaches the commands that take --image-opts (read, map, compare,
 * convert, compact, space, sparsify) and create/convert's -o encrypt.key-secret, right or wrong, well or badly
 * formed; it never reaches their output, their errors, or a file they write.
 */
const encImg = path.join(dir, 'enc.qcow2');
const encOpts = (id = 'sec0') => `driver=qcow2,file.filename=${encImg},encrypt.key-secret=${id}`;
qemuImg('create', '-q', '-f', 'qcow2', '--object', obj, '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', encImg, '4M');
qemuIo(encOpts(), ['write -P 7 0 64k'], ['--object', obj, '--image-opts']);

const ENC_EXTRA: Record<string, string[]> = {
  read: [], map: ['--json'], compare: [`driver=qcow2,file.filename=${img}`],
  convert: ['-O', 'raw', path.join(dir, 'enc-out.raw')], compact: ['-o', path.join(dir, 'enc-out.qcow2')],
  space: ['--json', '--zero-scan'], sparsify: ['-o', path.join(dir, 'enc-sparse.qcow2')],
};

for (const [name, extra] of Object.entries(ENC_EXTRA)) {
  test(`${name} --image-opts on an encrypted image: the passphrase appears in no output and no file`, () => {
    const wrong = `secret,id=sec0,data=${PASS}-not`;
    const runs: { argv: string[]; status?: number }[] = [
      { argv: ['--object', obj, '--image-opts', encOpts(), ...extra], status: 0 },
      { argv: ['--object', `secret,id=sec0,format=base64,data=${B64}`, '--image-opts', encOpts(), ...extra], status: 0 },
      { argv: ['--object', wrong, '--image-opts', encOpts(), ...extra] },
      { argv: ['--object', obj, '--image-opts', encOpts('sec9'), ...extra], status: 64 },
      { argv: ['--object', obj, '--image-opts', `${encOpts()},${PASS}`, ...extra], status: 64 },
      { argv: ['--object', obj, '--image-opts', `${encOpts()},${PASS}=1`, ...extra], status: 64 },
      { argv: ['--object', obj, '--image-opts', `driver=${PASS},file.filename=${encImg}`, ...extra], status: 64 },
      // without --image-opts the key is not bound to the image: map needs none, space reports without the
      // guest (and says what to give), the others cannot read the data
      { argv: ['--object', obj, encImg, ...extra], status: name === 'map' || name === 'space' ? 0 : undefined },
    ];
    for (const { argv, status } of runs) {
      const r = cli(name, ...argv);
      const shown = name === 'read' ? r.stderr : r.stdout.toString('latin1') + r.stderr;
      for (const s of [PASS, B64]) assert.ok(!shown.includes(s), `qcow2-lens ${name} printed the secret (exit ${r.status})`);
      if (status !== undefined) assert.equal(r.status, status, `qcow2-lens ${name}: exit ${r.status}: ${r.stderr.replaceAll(PASS, '…')}`);
      else assert.notEqual(r.status, 0);
    }
    for (const f of fs.readdirSync(dir)) {
      const p = path.join(dir, f);
      if (fs.statSync(p).isFile()) assert.ok(!fs.readFileSync(p).includes(Buffer.from(PASS)), `${f} holds the passphrase`);
    }
  });
}

test('create and convert -o encrypt.key-secret: the passphrase appears in no output and no file they write', () => {
  const out = path.join(dir, 'enc-made.qcow2');
  for (const argv of [
    ['create', '-f', 'qcow2', '--object', obj, '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', out, '1M'],
    ['create', '-f', 'qcow2', '--object', obj, '-o', `encrypt.format=luks,encrypt.key-secret=${PASS}`, out, '1M'],
    ['convert', '--object', obj, '-O', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', img, out],
  ]) {
    const r = cli(...argv);
    const shown = r.stdout.toString('latin1') + r.stderr;
    // a word typed where the secret's id belongs is an id, shown as qemu-img shows it (the Formatting
    // line, "No secret with id '…'"); the secret's data itself never is
    const ids = shown.replaceAll(`encrypt.key-secret=${PASS}`, '').replaceAll(`No secret with id '${PASS}'`, '');
    for (const s of [PASS, B64]) assert.ok(!ids.includes(s), `qcow2-lens ${argv[0]} printed the secret`);
    if (fs.existsSync(out)) assert.ok(!fs.readFileSync(out).includes(Buffer.from(PASS)), `${argv[0]}: the image holds the passphrase`);
  }
});
