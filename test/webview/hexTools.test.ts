/**
 * The hex view's tools in Node: Find in the image file (src/extension/findBytes.ts) against a
 * plain scan of the whole file, including matches across the 1 MiB read chunks and window ends;
 * Copy as formats and Find's hex patterns (webview/copyFormat.ts).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { findInFile } from '../../src/extension/findBytes';
import { ViewModel } from '../../src/extension/viewModel';
import { formatBytesAs, parseHexPattern, utf8Preview } from '../../webview/copyFormat';
import { qemuImg, qemuIo, tmpDir } from '../helpers/qemu';

const MIB = 1024 * 1024;

describe('find in the image file', () => {
  let dir: string, file: string, vm: ViewModel, bytes: Buffer;
  const pat = Buffer.from('QCOW2-LENS-NEEDLE');
  before(async () => {
    dir = tmpDir();
    file = path.join(dir, 'find.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', file, '64M');
    // the needle at guest offsets whose host bytes straddle a 1 MiB chunk boundary, and elsewhere
    qemuIo(file, ['write -P 0x41 0 3M', `write -P 0x42 ${3 * MIB} 64k`]);
    vm = await ViewModel.open(file);
    // put needles in host data clusters directly: one across the 2 MiB chunk boundary, one near the end
    const fd = fs.openSync(file, 'r+');
    const size = fs.fstatSync(fd).size;
    fs.writeSync(fd, pat, 0, pat.length, 2 * MIB - 5);
    fs.writeSync(fd, pat, 0, pat.length, size - 100);
    fs.writeSync(fd, pat, 0, pat.length, 1 * MIB + 3);
    fs.closeSync(fd);
    await vm.reload();
    bytes = fs.readFileSync(file);
  });
  after(async () => {
    await vm?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const all = () => { const out: number[] = []; for (let i = bytes.indexOf(pat); i >= 0; i = bytes.indexOf(pat, i + 1)) out.push(i); return out; };

  it('forward and backward visit every match a plain scan finds, across chunk and window boundaries', async () => {
    const expected = all();
    assert.deepEqual(expected, [MIB + 3, 2 * MIB - 5, bytes.length - 100]);
    const fwd: number[] = [];
    let from = 0;
    while (from < bytes.length) {
      // 1 MiB windows: the search goes on from scannedTo until the end of the file
      const r = await findInFile(vm.img.file, pat, from, 'next', MIB);
      if (r.offset !== undefined) fwd.push(r.offset);
      assert.ok(r.scannedTo > from, 'the search moves forward');
      from = r.scannedTo;
    }
    assert.deepEqual(fwd, expected);
    const back: number[] = [];
    from = bytes.length;
    while (from > 0) {
      const r = await findInFile(vm.img.file, pat, from, 'previous', MIB);
      if (r.offset !== undefined) back.push(r.offset);
      assert.ok(r.scannedTo < from);
      from = r.scannedTo;
    }
    assert.deepEqual(back, [...expected].reverse());
  });

  it('answers findBytes requests and refuses an empty pattern', async () => {
    const r = await vm.handle({ type: 'findBytes', requestId: 1, pattern: pat.toString('base64'), from: 0, direction: 'next' });
    assert.deepEqual(r, { type: 'foundBytes', requestId: 1, offset: MIB + 3, scannedTo: MIB + 4 });
    const e = await vm.handle({ type: 'findBytes', requestId: 2, pattern: '', from: 0, direction: 'next' });
    assert.equal(e?.type, 'error');
  });
});

describe('copy formats and hex patterns', () => {
  it('formats bytes as hex, a C array and base64', () => {
    const b = new Uint8Array([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3, 0, 0, 0, 0, 0xff]);
    assert.equal(formatBytesAs(b, 'hex'), '51 46 49 fb 00 00 00 03 00 00 00 00 ff');
    assert.equal(formatBytesAs(b, 'base64'), Buffer.from(b).toString('base64'));
    assert.equal(formatBytesAs(b, 'c'), 'unsigned char data[13] = {\n  0x51, 0x46, 0x49, 0xfb, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00,\n  0xff\n};');
  });
  it('parses hex patterns in the usual spellings and refuses half bytes', () => {
    assert.deepEqual(parseHexPattern('51 46 49 fb'), new Uint8Array([0x51, 0x46, 0x49, 0xfb]));
    assert.deepEqual(parseHexPattern('0x51,0x46'), new Uint8Array([0x51, 0x46]));
    assert.deepEqual(parseHexPattern('5146'), new Uint8Array([0x51, 0x46]));
    assert.equal(parseHexPattern('514'), undefined);
    assert.equal(parseHexPattern('zz'), undefined);
  });
  it('previews UTF-8: one character at a byte, the text of a selection', () => {
    const euro = new TextEncoder().encode('€uro');
    assert.equal(utf8Preview(euro, 1), '€');
    assert.equal(utf8Preview(euro, euro.length), '€uro');
    assert.equal(utf8Preview(new Uint8Array([0xe2, 0x82]), 1), 'incomplete');
    assert.equal(utf8Preview(new Uint8Array([0x80]), 1), 'invalid');
  });
});
