/**
 * Progress on stderr: a bar redrawn in place on a terminal, nothing when piped, qemu-img's
 * `(NN.NN/100%)` lines with -p, nothing with -q; stdout (the JSON) never carries any of it.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { createProgress } from '../../src/cli/progress';
import { cli, qemuImg, qemuIo, tmpDir } from '../helpers/qemu';

function sink(isTTY: boolean): { stream: { isTTY: boolean; columns: number; write(s: string): boolean }; text(): string } {
  let text = '';
  return { stream: { isTTY, columns: 60, write(s: string) { text += s; return true; } }, text: () => text };
}

test('on a terminal: a bar redrawn in place, at most once per permille, erased at the end', () => {
  const s = sink(true);
  const p = createProgress({ label: 'checking a.qcow2', stream: s.stream });
  for (let i = 0; i <= 10000; i++) p.update(i, 10000);
  p.end();
  const frames = s.text().split('\r').filter(Boolean);
  assert.ok(frames.length <= 1002, `${frames.length} redraws`);
  assert.match(frames[0], /^checking a\.qcow2 \[-+\] {3}0\.0%$/);
  assert.match(frames[frames.length - 2], /^checking a\.qcow2 \[#+\] 100\.0%$/);
  assert.equal(frames[frames.length - 1], '\x1b[K');
  assert.ok(frames.slice(0, -1).every(f => f.length <= 60), 'fits the terminal width');
});

test('not a terminal: nothing; with -p one line per whole percent; -q silences both', () => {
  const piped = sink(false);
  const p = createProgress({ label: 'x', stream: piped.stream });
  p.update(5, 10); p.end();
  assert.equal(piped.text(), '');

  const forced = sink(false);
  const f = createProgress({ label: 'x', force: true, stream: forced.stream });
  for (let i = 0; i <= 1000; i++) f.update(i, 1000);
  f.end();
  const lines = forced.text().split('\n').filter(Boolean);
  assert.equal(lines.length, 101);
  assert.equal(lines[0], '    (0.00/100%)');
  assert.equal(lines[100], '    (100.00/100%)');

  for (const tty of [true, false]) {
    const q = sink(tty);
    const qp = createProgress({ label: 'x', quiet: true, force: true, stream: q.stream });
    qp.update(1, 2); qp.end();
    assert.equal(q.text(), '');
  }
});

test('check and compact: -p prints progress on stderr, piped runs print none, the JSON stays clean', () => {
  const dir = tmpDir('qcow2-lens-progress-');
  const img = path.join(dir, 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', img, '64M');
  qemuIo(img, ['write -P 1 0 4M', 'write -P 2 32M 4M']);
  for (const argv of [['check', img, '--output=json'], ['compact', img, '-o', path.join(dir, 'out.qcow2'), '--json']]) {
    const plain = cli(...argv);
    assert.equal(plain.status, 0, plain.stderr);
    assert.equal(plain.stderr, '', `${argv[0]} piped prints no progress`);
    const forced = cli(...argv, '-p');
    assert.equal(forced.status, 0, forced.stderr);
    assert.match(forced.stderr, /^ {4}\(0\.00\/100%\)\n/, `${argv[0]} -p starts at 0%`);
    assert.match(forced.stderr, /\(100\.00\/100%\)\n$/, `${argv[0]} -p ends at 100%`);
    JSON.parse(forced.stdout.toString());
    const quiet = cli(...argv, '-p', '-q');
    assert.equal(quiet.status, 0);
    assert.equal(quiet.stderr, '');
  }
});
