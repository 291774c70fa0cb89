/**
 * The CLI as a command-line tool: --help lists every command, `help CMD` and `CMD --help` every
 * option the command's spec declares, --version prints package.json's version, and a wrong
 * command line exits 64 (EX_USAGE) with the usage on stderr.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { allOptions } from '../../src/cli/args';
import { optionLabel } from '../../src/cli/command';
import { loadCommands } from '../../src/cli/commands';
import { cli, ROOT } from '../helpers/qemu';

test('qcow2-lens --help lists every command with its summary, and the exit codes', async () => {
  const commands = await loadCommands();
  for (const argv of [['--help'], ['-h'], ['help']]) {
    const r = cli(...argv);
    assert.equal(r.status, 0, argv.join(' '));
    const out = r.stdout.toString();
    for (const c of commands) assert.ok(out.includes(`  ${c.name}`) && out.includes(c.summary), `${argv.join(' ')} lists ${c.name}`);
    assert.match(out, /Exit codes: 0 success, 1 error .*64 usage error/);
    assert.match(out, /check: 0 clean, 1 check not completed, 2 corruptions, 3 leaks only/);
  }
});

test('help CMD and CMD --help print the usage and every option of the command', async () => {
  for (const c of await loadCommands()) {
    const a = cli('help', c.name), b = cli(c.name, '--help'), h = cli(c.name, '-h', 'ignored-operand');
    for (const r of [a, b, h]) assert.equal(r.status, 0, c.name);
    const out = a.stdout.toString();
    assert.equal(b.stdout.toString(), out);
    assert.equal(h.stdout.toString(), out);
    assert.ok(out.startsWith(`usage: qcow2-lens ${c.name} ${c.usage[0]}\n`), `${c.name} help starts with its usage`);
    for (const o of allOptions(c)) assert.ok(out.includes(optionLabel(o)), `help ${c.name} shows ${optionLabel(o)}`);
    assert.match(out, /Exit codes: /);
  }
});

test('--version prints the package version', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  for (const flag of ['--version', '-V']) {
    const r = cli(flag);
    assert.equal(r.status, 0);
    assert.equal(r.stdout.toString(), `qcow2-lens ${pkg.version}\n`);
  }
});

test('usage errors exit 64 with the usage on stderr and nothing on stdout', () => {
  const cases = [[], ['nosuchcommand'], ['help', 'nosuchcommand'], ['--bogus'], ['info'], ['info', 'a', 'b'], ['info', 'a', '--bogus'], ['check', 'a', '--output=xml'], ['snapshot', 'a'], ['snapshot', 'a', '-l', '-c', 'x']];
  for (const argv of cases) {
    const r = cli(...argv);
    assert.equal(r.status, 64, `qcow2-lens ${argv.join(' ')}: exit ${r.status}`);
    assert.equal(r.stdout.length, 0, `qcow2-lens ${argv.join(' ')} printed on stdout`);
    assert.match(r.stderr, /usage|unknown command|a command comes first/, `qcow2-lens ${argv.join(' ')}`);
  }
});
