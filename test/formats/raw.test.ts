/**
 * Raw output and the glue between formats: writeRaw against `qemu-img convert -O raw` (size,
 * bytes and holes), the raw reader against qemu-img on odd-sized files, format probing against
 * qemu-img's, conversions from one foreign format to another through `layerSource`, and the
 * writers' progress and cancellation.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { type ImageSink, layerSource, openForeign, probeFormat, RawReader, rawSource, writeRaw, writeVmdk, writeVpc } from '../../src/engine/formats';
import { qemuImg, qemuImgStatus, sha256, tmpDir } from '../helpers/qemu';
import { MiB, holes, layerMap, makeRaw, qemuMap, readAll, withSink } from './helpers';

const dir = tmpDir('qcow2-lens-raw-');
const src = makeRaw(path.join(dir, 'src.raw'), 9 * MiB + 512 * 7, ['write -P 0x11 0 8k', 'write -P 0x12 2M 1M', 'write -P 0x13 5000k 4k', 'write -P 0x14 9M 3584']);

test('writeRaw of a VHD and a VMDK equals qemu-img convert -O raw: size, bytes and holes', async () => {
  for (const [fmt, opts] of [['vpc', 'subformat=dynamic'], ['vmdk', 'subformat=streamOptimized'], ['vmdk', 'subformat=monolithicSparse']]) {
    const img = path.join(dir, `in.${fmt}`);
    qemuImg('convert', '-f', 'raw', '-O', fmt, '-o', opts, src, img);
    const theirs = path.join(dir, `out-${fmt}.qemu.raw`), mine = path.join(dir, `out-${fmt}.raw`);
    qemuImg('convert', '-f', fmt, '-O', 'raw', img, theirs);
    const layer = await openForeign(img, fmt as 'vpc' | 'vmdk', { holes });
    try {
      await withSink(mine, sink => writeRaw(layerSource(layer), sink));
    } finally {
      await layer.close();
    }
    assert.equal(fs.statSync(mine).size, fs.statSync(theirs).size, `${opts} size`);
    assert.equal(sha256(fs.readFileSync(mine)), sha256(fs.readFileSync(theirs)), `${opts} bytes`);
    assert.deepEqual(qemuMap(mine, 'raw'), qemuMap(theirs, 'raw'), `${opts} holes`);
  }
});

test('raw reader: size in whole sectors and holes as qemu-img sees them', async () => {
  const odd = path.join(dir, 'odd.raw');
  fs.writeFileSync(odd, Buffer.alloc(1000, 0x5a));
  fs.truncateSync(odd, 3 * MiB + 1000);
  for (const f of [odd, src]) {
    const raw = await RawReader.open(f, { holes });
    try {
      assert.equal(raw.virtualSize, JSON.parse(qemuImg('info', '-f', 'raw', '--output=json', f))['virtual-size']);
      assert.deepEqual(await layerMap(raw), qemuMap(f, 'raw'));
      const guest = path.join(dir, 'guest.raw');
      qemuImg('convert', '-f', 'raw', '-O', 'raw', f, guest);
      assert.equal(sha256(await readAll(raw)), sha256(fs.readFileSync(guest)));
    } finally {
      await raw.close();
    }
  }
});

test('format probing agrees with qemu-img info (a fixed VHD probes as raw, as in QEMU)', async () => {
  const files: Record<string, string> = {
    qcow2: path.join(dir, 'p.qcow2'), dyn: path.join(dir, 'p.vhd'), fixed: path.join(dir, 'pf.vhd'),
    sparse: path.join(dir, 'p.vmdk'), flat: path.join(dir, 'pflat.vmdk'), raw: src,
  };
  qemuImg('create', '-q', '-f', 'qcow2', files.qcow2, '1M');
  qemuImg('create', '-q', '-f', 'vpc', files.dyn, '1M');
  qemuImg('create', '-q', '-f', 'vpc', '-o', 'subformat=fixed', files.fixed, '1M');
  qemuImg('create', '-q', '-f', 'vmdk', files.sparse, '1M');
  qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', files.flat, '1M');
  for (const [name, f] of Object.entries(files)) {
    assert.equal(await probeFormat(f), JSON.parse(qemuImg('info', '--output=json', f)).format, name);
  }
});

test('VHD → streamOptimized VMDK and VMDK → fixed VHD through our readers compare equal', async () => {
  const vhd = path.join(dir, 'x.vhd');
  qemuImg('convert', '-f', 'raw', '-O', 'vpc', src, vhd);
  const layer = await openForeign(vhd, 'vpc', { holes });
  const vmdk = path.join(dir, 'x.vmdk');
  try {
    await withSink(vmdk, sink => writeVmdk(layerSource(layer), sink, { fileName: 'x.vmdk', subformat: 'streamOptimized' }));
  } finally {
    await layer.close();
  }
  assert.equal(qemuImgStatus('compare', '-f', 'vpc', '-F', 'vmdk', vhd, vmdk).status, 0);
  const back = await openForeign(vmdk, 'vmdk', { holes });
  const fixed = path.join(dir, 'y.vhd');
  try {
    await withSink(fixed, sink => writeVpc(layerSource(back), sink, { subformat: 'fixed' }));
  } finally {
    await back.close();
  }
  assert.equal(qemuImgStatus('compare', '-f', 'vmdk', '-F', 'vpc', vmdk, fixed).status, 0);
});

test('writers report progress up to the disk size and stop when cancelled', async () => {
  const source = await rawSource(src, { holes });
  try {
    const seen: number[] = [];
    await withSink(path.join(dir, 'p.vmdk'), sink => writeVmdk(source, sink, { fileName: 'p.vmdk', onProgress: done => seen.push(done) }));
    assert.ok(seen.length > 0);
    assert.deepEqual([...seen].sort((a, b) => a - b), seen, 'monotonic');
    assert.equal(seen[seen.length - 1], source.virtualSize);
    const ac = new AbortController();
    ac.abort();
    const writers: Array<(s: ImageSink) => Promise<unknown>> = [
      s => writeRaw(source, s, { signal: ac.signal }),
      s => writeVpc(source, s, { signal: ac.signal }),
      s => writeVmdk(source, s, { fileName: 'c.vmdk', signal: ac.signal }),
    ];
    for (const write of writers) {
      await assert.rejects(withSink(path.join(dir, 'c.out'), write), (e: Error & { code?: string }) => e.code === 'cancelled');
    }
  } finally {
    await source.close();
  }
});
