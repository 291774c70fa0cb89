/**
 * The editor's node-id codec: every kind of node reads back as the value it was minted from, the
 * text form is the one the webview has persisted (`l1e:a:3`, `…|p:0:256`), and ids it never minted
 * read as nothing. Also the one byte-count formatter and offset parser the CLI, host and webview share.
 */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { nodeId, type NodeRef, pagePath, pageRanges, parseNodeId } from '../../src/extension/nodeId';
import { formatBytes, parseOffset } from '../../src/engine/units';

const REFS: [NodeRef, string][] = [
  [{ kind: 'root' }, 'root'],
  [{ kind: 'header' }, 'header'],
  [{ kind: 'headerField', index: 3 }, 'hf:3'],
  [{ kind: 'featureBit', group: 'autoclear', bit: 1 }, 'fb:autoclear:1'],
  [{ kind: 'layer', depth: 'error' }, 'layer:error'],
  [{ kind: 'l1', table: 'active' }, 'l1:a'],
  [{ kind: 'l1', table: 2 }, 'l1:2'],
  [{ kind: 'l1Entry', table: 'active', l1Index: 3 }, 'l1e:a:3'],
  [{ kind: 'l2Entry', table: 0, l1Index: 3, l2Index: 31 }, 'l2e:0:3:31'],
  [{ kind: 'refcountEntry', index: 1, entry: 7 }, 'rbe:1:7'],
  [{ kind: 'snapshotField', index: 0, field: 'vm state size' }, 'si:0:vm state size'],
  [{ kind: 'bitmapEntry', index: 2, entry: 9 }, 'bme:2:9'],
  [{ kind: 'encryptionField', name: 'cipher' }, 'enc:cipher'],
];

test('node ids: each kind round-trips through its stable text form', () => {
  for (const [ref, text] of REFS) {
    assert.equal(nodeId(ref), text);
    assert.deepEqual(parseNodeId(text), { ref, page: undefined });
  }
  assert.equal(nodeId({ kind: 'l1Entry', table: 'active', l1Index: 0 }, { s: 0, e: 256 }), 'l1e:a:0|p:0:256');
  assert.deepEqual(parseNodeId('l1e:a:0|p:0:256'), { ref: { kind: 'l1Entry', table: 'active', l1Index: 0 }, page: { s: 0, e: 256 } });
  assert.equal(parseNodeId('nonsense:1'), undefined);
  assert.equal(parseNodeId('l1:a|p:x:1'), undefined);
});

test('pages: a table of 32768 children has 128 pages of 256, and the path to a child names its page', () => {
  assert.equal(pageRanges(0, 256), null);
  assert.equal(pageRanges(0, 32768)?.length, 128);
  assert.deepEqual(pagePath({ kind: 'l1', table: 'active' }, 32768, 32767), ['l1:a|p:32512:32768']);
  assert.deepEqual(pagePath({ kind: 'l1', table: 'active' }, 100, 5), []);
});

test('units: byte counts exact where a unit divides them, offsets in every spelling the tools accept', () => {
  assert.equal(formatBytes(65536), '64 KiB');
  assert.equal(formatBytes(1536 * 1024), '1536 KiB');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(100), '100 bytes');
  for (const [text, n] of [['1234', 1234], ['0x4d2', 1234], ['4d2h', 1234], ['64K', 65536], ['64 KiB', 65536], ['1m', 1048576], ['0x10k', 16384], ['1_000', 1000]] as const) {
    assert.equal(parseOffset(text), n, text);
  }
  for (const bad of ['', '12Q', '-1', '1.5G', '0x', 'k']) assert.equal(parseOffset(bad), undefined, bad);
});
