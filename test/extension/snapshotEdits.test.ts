/**
 * The pending snapshot edits of an open image (the custom document's model), without VS Code:
 * undo/redo, saving with the engine, hot-exit backups. Results are read back with qemu-img.
 */
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { applyWithEngine, SnapshotEditList } from '../../src/extension/snapshotEdits';
import { qemuImg, qemuImgStatus, qemuIo, tmpDir } from '../helpers/qemu';

function image(): string {
  const p = path.join(tmpDir(), 'a.qcow2');
  qemuImg('create', '-q', '-f', 'qcow2', p, '16M');
  qemuIo(p, ['write -P 0x5a 0 1M']);
  qemuImg('snapshot', '-c', 'base', p);
  return p;
}
const names = (p: string): string[] => (JSON.parse(qemuImg('info', '-U', '--output=json', p)).snapshots ?? []).map((s: { name: string }) => s.name);

test('pending edits: names after save, undo and redo', () => {
  const list = new SnapshotEditList();
  const a = list.add({ kind: 'create', name: 'one' });
  list.add({ kind: 'delete', name: 'base' });
  assert.deepEqual(list.namesAfterSave(['base']), ['one']);
  assert.equal(a.undo(), undefined);
  assert.deepEqual(list.pending, [{ kind: 'delete', name: 'base' }]);
  a.redo();
  assert.deepEqual(list.namesAfterSave(['base']), ['one']);
  assert.equal(list.dirty, true);
});

test('saving applies the edits in order; qemu-img lists the result and checks the image clean', async () => {
  const p = image();
  const list = new SnapshotEditList();
  list.add({ kind: 'create', name: 'one' });
  list.add({ kind: 'create', name: 'two' });
  list.add({ kind: 'delete', name: 'base' });
  assert.deepEqual(names(p), ['base'], 'nothing is written before saving');
  await list.applyTo(p, applyWithEngine, true);
  assert.deepEqual(names(p), ['one', 'two']);
  assert.equal(list.dirty, false);
  assert.equal(qemuImgStatus('check', p).status, 0);
});

test('undoing a saved create deletes the snapshot on the next save; a saved delete cannot be undone', async () => {
  const p = image();
  const list = new SnapshotEditList();
  const create = list.add({ kind: 'create', name: 'keep-or-not' });
  const del = list.add({ kind: 'delete', name: 'base' });
  await list.applyTo(p, applyWithEngine, true);
  assert.deepEqual(names(p), ['keep-or-not']);
  assert.match(del.undo() ?? '', /cannot be undone/);
  assert.equal(create.undo(), undefined);
  assert.deepEqual(list.pending, [{ kind: 'delete', name: 'keep-or-not' }]);
  await list.applyTo(p, applyWithEngine, true);
  assert.deepEqual(names(p), []);
  assert.equal(qemuImgStatus('check', p).status, 0);
});

test('save as: edits go to the copy and stay pending for the original', async () => {
  const p = image();
  const copy = p.replace(/a\.qcow2$/, 'b.qcow2');
  fs.copyFileSync(p, copy);
  const list = new SnapshotEditList();
  list.add({ kind: 'create', name: 'only-in-copy' });
  await list.applyTo(copy, applyWithEngine, false);
  assert.deepEqual(names(copy), ['base', 'only-in-copy']);
  assert.deepEqual(names(p), ['base']);
  assert.equal(list.dirty, true);
});

test('a hot-exit backup round-trips the pending edits and rejects other JSON', () => {
  const list = new SnapshotEditList();
  list.add({ kind: 'create', name: 'x' });
  list.add({ kind: 'delete', name: 'y' });
  const restored = SnapshotEditList.fromBackup(list.toBackup('file:///a.qcow2'));
  assert.deepEqual(restored.pending, list.pending);
  assert.throws(() => SnapshotEditList.fromBackup('{"pending": 3}'), /not a QCOW2 Lens backup/);
  const filtered = SnapshotEditList.fromBackup(JSON.stringify({ version: 1, uri: '', pending: [{ kind: 'create', name: 'ok' }, { kind: 'rm', name: 'bad' }] }));
  assert.deepEqual(filtered.pending, [{ kind: 'create', name: 'ok' }]);
});

test('saving is refused while QEMU holds the image, and nothing is written', async () => {
  const p = image();
  const before = fs.readFileSync(p);
  const holder = spawn('qemu-io', [p], { stdio: ['pipe', 'ignore', 'ignore'] });
  try {
    const ino = fs.statSync(p).ino;
    for (let i = 0; i < 100 && !fs.readFileSync('/proc/locks', 'utf8').includes(`:${ino} `); i++) await new Promise(r => setTimeout(r, 50));
    const list = new SnapshotEditList();
    list.add({ kind: 'create', name: 'while-locked' });
    await assert.rejects(list.applyTo(p, applyWithEngine, true), /in use by QEMU/);
    assert.equal(list.dirty, true);
  } finally {
    holder.stdin.end('quit\n');
    await new Promise(r => holder.once('exit', r));
  }
  assert.ok(fs.readFileSync(p).equals(before));
});
