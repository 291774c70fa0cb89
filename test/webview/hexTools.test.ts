/**
 * The hex view's tools in Node: Find in the image file (src/extension/findBytes.ts) against a
 * plain scan of the whole file, including matches across the 1 MiB read chunks and window ends;
 * Find in the guest disk against a plain scan of `qemu-img convert -O raw` of a chain (matches
 * running into unallocated space, a backing file's data hidden by the overlay's zero cluster, the
 * all-zero pattern), and across a sparse 1 TiB disk in a few requests;
 * Copy as formats and Find's hex patterns (webview/copyFormat.ts).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { findInFile, findInGuest, MAX_GUEST_SPAN } from '../../src/extension/findBytes';
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

describe('find in the guest disk', { timeout: 120000 }, () => {
  let dir: string, vm: ViewModel, raw: Buffer;
  const needle = Buffer.from('NEEDLE');
  before(async () => {
    dir = tmpDir();
    // the base: needles written into a raw file; qemu-img convert makes data clusters of the non-zero parts only
    const src = Buffer.alloc(64 * MIB);
    src.fill(0x11, 0, 64 * 1024);
    for (const at of [5 * MIB - 3, 20 * MIB - 6, 30 * MIB, 40 * MIB + 100, 64 * MIB - 20]) needle.copy(src, at);
    const rawBase = path.join(dir, 'base.raw'), base = path.join(dir, 'base.qcow2'), top = path.join(dir, 'top.qcow2');
    fs.writeFileSync(rawBase, src);
    qemuImg('convert', '-q', '-f', 'raw', '-O', 'qcow2', rawBase, base);
    qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
    // the overlay: a zero cluster over the base's needle at 40 MiB, and its own data with a needle
    qemuIo(top, ['write -z 40M 64k', 'write -P 0x4e 50M 64k']);
    vm = await ViewModel.open(top);
    const out = path.join(dir, 'top.raw');
    qemuImg('convert', '-q', '-O', 'raw', top, out);
    raw = fs.readFileSync(out);
  });
  after(async () => {
    await vm?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const scan = (pat: Buffer) => { const out: number[] = []; for (let i = raw.indexOf(pat); i >= 0; i = raw.indexOf(pat, i + 1)) out.push(i); return out; };
  async function visit(pat: Buffer, direction: 'next' | 'previous', window: number): Promise<number[]> {
    const found: number[] = [];
    let from = direction === 'next' ? 0 : raw.length;
    for (let asked = 0; direction === 'next' ? from < raw.length : from > 0; asked++) {
      assert.ok(asked < 10000, 'the search ends');
      const r = await findInGuest(vm.img, pat, from, direction, window);
      if (r.offset !== undefined) found.push(r.offset);
      assert.ok(direction === 'next' ? r.scannedTo > from : r.scannedTo < from, 'the search moves on');
      from = r.scannedTo;
    }
    return found;
  }

  it('forward and backward find what a scan of qemu-img convert\'s raw finds, into unallocated space and not under a zero cluster', async () => {
    // the needles; a needle with zeros after it or before it (running into unallocated space); the end of the base's 64 KiB of 0x11 and the zeros after it
    const cases: Buffer[] = [needle, Buffer.concat([needle, Buffer.alloc(4)]), Buffer.concat([Buffer.alloc(4), needle]), Buffer.from('\x11\x11\x11\x11\x00', 'latin1')];
    for (const pat of cases) {
      const expected = scan(pat);
      assert.ok(expected.length > 0, `${JSON.stringify(pat.toString('latin1'))} is on the disk`);
      assert.ok(!expected.includes(40 * MIB + 100 - (pat[0] === 0 ? 4 : 0)), 'the needle under the zero cluster reads as zeros');
      for (const window of [MIB, 16 * MIB]) {
        assert.deepEqual(await visit(pat, 'next', window), expected, `next ${JSON.stringify(pat.toString('latin1'))} window ${window}`);
        assert.deepEqual(await visit(pat, 'previous', window), [...expected].reverse(), `previous ${JSON.stringify(pat.toString('latin1'))} window ${window}`);
      }
    }
    // needles ending in the zeros after a data cluster, and starting in the zeros before one
    assert.ok(scan(Buffer.concat([needle, Buffer.alloc(4)])).includes(20 * MIB - 6));
    assert.ok(scan(Buffer.concat([Buffer.alloc(4), needle])).includes(30 * MIB - 4));
  });

  it('the all-zero pattern is found in unallocated space, forward and backward', async () => {
    const zeros = Buffer.alloc(8);
    const first = raw.indexOf(zeros), last = raw.lastIndexOf(zeros);
    const f = await findInGuest(vm.img, zeros, 0, 'next', MIB);
    assert.equal(f.offset, first);
    const b = await findInGuest(vm.img, zeros, raw.length, 'previous', MIB);
    assert.equal(b.offset, last);
  });

  it('crosses a sparse 1 TiB disk in a few requests, and answers findBytes with space guest', async () => {
    const big = path.join(dir, 'big.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', big, '1T');
    qemuIo(big, [`write -P 0x4e ${2 ** 40 - 65536} 64k`]);
    const bvm = await ViewModel.open(big);
    try {
      let from = 0, asked = 0, offset: number | undefined;
      while (offset === undefined && from < 2 ** 40) {
        const r = await findInGuest(bvm.img, Buffer.from('NNNN'), from, 'next', 16 * MIB);
        asked++;
        offset = r.offset;
        from = r.scannedTo;
      }
      assert.equal(offset, 2 ** 40 - 65536);
      assert.ok(asked <= 2 ** 40 / MAX_GUEST_SPAN + 1, `${asked} requests`);
      const r = await bvm.handle({ type: 'findBytes', requestId: 1, pattern: Buffer.from('NNNN').toString('base64'), from: 2 ** 40 - 1, direction: 'previous', space: 'guest' });
      assert.equal(r?.type, 'foundBytes');
      assert.ok(r && r.type === 'foundBytes' && r.offset === 2 ** 40 - 4, JSON.stringify(r));
    } finally {
      await bvm.close();
    }
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
