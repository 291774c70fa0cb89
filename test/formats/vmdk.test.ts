/**
 * VMDK: our monolithicSparse and streamOptimized writers against `qemu-img convert -O vmdk` on the
 * same raw sources (sizes off the grain grid, zero runs, a sparse tail, up to 2 TiB with little
 * data), our reader against qemu-img's own monolithicSparse, streamOptimized, monolithicFlat and
 * twoGbMaxExtent* files, and damaged files against qemu-img's verdict.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { rawSource } from '../../src/engine/formats/raw';
import { parseDescriptor } from '../../src/engine/formats/vmdk/descriptor';
import { GD_AT_END, decodeHeader, decodeMarker } from '../../src/engine/formats/vmdk/layout';
import { VmdkImage } from '../../src/engine/formats/vmdk/read';
import { writeVmdk, type VmdkWriteOptions } from '../../src/engine/formats/vmdk/write';
import { pokeBytes, qemuImg, qemuImgStatus, qemuIo, sha256, tmpDir } from '../helpers/qemu';
import { GiB, MiB, holes, layerMap, makeRaw, qemuMap, readAll, readAt, withSink } from './helpers';

const dir = tmpDir('qcow2-lens-vmdk-');

const CASES = [
  // data, zero runs, a run across grain tables, data in the short last grain, not a multiple of 64 KiB
  { name: 'small', size: 40 * MiB + 12345 * 512, writes: ['write -P 0x41 0 1M', 'write -P 0x42 3M 100k', 'write -P 0x43 31M 2M', 'write -z 33M 64k', 'write -P 0x44 41983k 512'] },
  { name: 'one-sector', size: 1 * MiB, writes: ['write -P 0x45 1048064 512'] },
  { name: 'empty', size: 3 * MiB, writes: [] },
  { name: 'big', size: 20 * GiB + 3 * MiB, writes: ['write -P 0x51 0 64k', 'write -P 0x52 10G 3M', 'write -P 0x53 20G 2M'] },
  // qemu-img compare and map walk a VMDK grain by grain (~2 min for 2 TiB): this one is checked
  // through its tables (equal to the twin's), qemu-img check and qemu-io pattern reads instead.
  { name: '2T', size: '2T', writes: ['write -P 0x61 1M 1M', 'write -P 0x62 1T 64k', 'write -P 0x63 2097151M 1M'], huge: true },
];
const SRC = CASES.map(c => ({ ...c, file: makeRaw(path.join(dir, `${c.name}.raw`), c.size, c.writes) }));

async function ours(src: string, out: string, options: Omit<VmdkWriteOptions, 'fileName'>) {
  const source = await rawSource(src, { holes });
  try {
    return await withSink(out, sink => writeVmdk(source, sink, { fileName: path.basename(out), ...options }));
  } finally {
    await source.close();
  }
}

function info(file: string) {
  return JSON.parse(qemuImg('info', '--output=json', file));
}

/**
 * The descriptor text without its CID line (random in both), up to its NUL: when qemu-img
 * rewrites the CID with fewer hex digits, the old text's last bytes stay behind the NUL.
 */
function descriptorOf(file: string): string {
  return readAt(file, 512, 20 * 512).toString('latin1').split('\0')[0].replace(/^CID=[0-9a-f]+$/m, 'CID=…');
}

function assertCheckClean(file: string): void {
  const r = qemuImgStatus('check', file);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /No errors were found/);
}

for (const subformat of ['monolithicSparse', 'streamOptimized'] as const) {
  for (const src of SRC) {
    test(`vmdk ${subformat} of ${src.name}: opens, checks clean and compares equal, like qemu-img's twin`, async () => {
      const mine = path.join(dir, `${src.name}-${subformat}.vmdk`);
      const theirs = path.join(dir, `${src.name}-${subformat}.qemu.vmdk`);
      const result = await ours(src.file, mine, { subformat });
      qemuImg('convert', '-f', 'raw', '-O', 'vmdk', '-o', `subformat=${subformat}`, src.file, theirs);
      // qemu-img writes the extent line with the file's own name: give ours the same name to compare.
      const a = info(mine), b = info(theirs);
      assert.equal(a.format, 'vmdk');
      assert.equal(a['format-specific'].data['create-type'], subformat);
      assert.equal(a['virtual-size'], b['virtual-size']);
      assert.equal(a['cluster-size'], b['cluster-size']);
      assert.equal(a['format-specific'].data.cid, result.cid);
      assert.deepEqual(a['format-specific'].data.extents.map((e: Record<string, unknown>) => ({ ...e, filename: '' })),
        b['format-specific'].data.extents.map((e: Record<string, unknown>) => ({ ...e, filename: '' })));
      assertCheckClean(mine);
      if (src.huge) {
        const reads = src.writes.map(w => w.replace(/^write/, 'read'));
        qemuIo(mine, [...reads, 'read -P 0 0 1M', 'read -P 0 3M 1M', 'read -P 0 1500G 64k', 'read -P 0 2047G 64k'], ['-f', 'vmdk']);
      } else {
        const cmp = qemuImgStatus('compare', '-f', 'raw', '-F', 'vmdk', src.file, mine);
        assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
      }
      assert.equal(descriptorOf(mine).replace(path.basename(mine), 'X'), descriptorOf(theirs).replace(path.basename(theirs), 'X'));
      assert.equal(result.fileSize, fs.statSync(mine).size);

      if (subformat === 'monolithicSparse') {
        // Same layout: header, both directories, every grain table and the file length.
        assert.ok(readAt(mine, 0, 512).equals(readAt(theirs, 0, 512)), 'header');
        const h = decodeHeader(readAt(mine, 0, 512));
        const tablesEnd = Number(h.grainOffset) * 512;
        const rgdAt = Number(h.rgdOffset) * 512;
        for (let at = rgdAt; at < tablesEnd; at += 16 * MiB) {
          const n = Math.min(16 * MiB, tablesEnd - at);
          assert.ok(readAt(mine, at, n).equals(readAt(theirs, at, n)), `directories and tables at ${at}`);
        }
        assert.equal(fs.statSync(mine).size, fs.statSync(theirs).size, 'file size');
        if (!src.huge) assert.deepEqual(qemuMap(mine), qemuMap(theirs));
      } else {
        // The stream layout: GD at end in the header, footer marker + footer + end-of-stream at the end.
        assert.equal(decodeHeader(readAt(mine, 0, 512)).gdOffset, GD_AT_END);
        const size = fs.statSync(mine).size;
        assert.deepEqual(decodeMarker(readAt(mine, size - 1536, 16)), { value: 1n, size: 0, type: 3 });
        const footer = decodeHeader(readAt(mine, size - 1024, 512));
        assert.notEqual(footer.gdOffset, GD_AT_END);
        assert.deepEqual(decodeMarker(readAt(mine, Number(footer.gdOffset) * 512 - 512, 16)).type, 2, 'GD marker');
        assert.deepEqual(decodeMarker(readAt(mine, size - 512, 16)), { value: 0n, size: 0, type: 0 });
        // Same allocated grains as qemu-img's (compressed: no host offsets in the map).
        if (!src.huge) assert.deepEqual(qemuMap(mine), qemuMap(theirs));
      }

      // Our reader reads our file back.
      const img = await VmdkImage.open(mine, { holes });
      try {
        assert.equal(img.createType, subformat);
        const map = await layerMap(img);
        if (!src.huge) assert.deepEqual(map, qemuMap(mine));
        for (const e of map.filter(m => m.data)) {
          const n = Math.min(e.length, 4 * MiB);
          assert.ok((await img.readGuest(e.start, n)).equals(readAt(src.file, e.start, n)), `bytes at ${e.start}`);
        }
      } finally {
        await img.close();
      }
    });
  }
}

test('vmdk options as qemu-img takes them: adapter type, hwversion, compat6, toolsversion, zeroed_grain', async () => {
  const src = SRC[0].file;
  const variants: Array<[string, Omit<VmdkWriteOptions, 'fileName'>]> = [
    ['adapter_type=lsilogic', { adapterType: 'lsilogic' }],
    ['adapter_type=buslogic,hwversion=11', { adapterType: 'buslogic', hwVersion: '11' }],
    ['compat6=on', { compat6: true }],
    ['toolsversion=12345', { toolsVersion: '12345' }],
    ['zeroed_grain=on', { zeroedGrain: true }],
  ];
  for (const [opts, mineOpts] of variants) {
    const mine = path.join(dir, 'opt.vmdk'), theirs = path.join(dir, 'opt.qemu.vmdk');
    await ours(src, mine, mineOpts);
    qemuImg('convert', '-f', 'raw', '-O', 'vmdk', '-o', opts, src, theirs);
    assert.equal(descriptorOf(mine).replace('opt.vmdk', 'X'), descriptorOf(theirs).replace('opt.qemu.vmdk', 'X'), opts);
    assert.ok(readAt(mine, 0, 512).equals(readAt(theirs, 0, 512)), `header with ${opts}`);
    assertCheckClean(mine);
  }
  await assert.rejects(ours(src, path.join(dir, 'x.vmdk'), { compat6: true, hwVersion: '7' }), /compat6 cannot be enabled with hwversion set/);
});

test('our reader on qemu-img-made VMDKs of every subformat: bytes and map equal qemu-img', async () => {
  const src = SRC[0].file;
  for (const subformat of ['monolithicSparse', 'streamOptimized', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat']) {
    const sub = path.join(dir, `r-${subformat}`);
    fs.mkdirSync(sub, { recursive: true });
    const theirs = path.join(sub, 'disk.vmdk');
    qemuImg('convert', '-f', 'raw', '-O', 'vmdk', '-o', `subformat=${subformat}`, src, theirs);
    const img = await VmdkImage.open(theirs, { holes });
    try {
      const q = info(theirs);
      assert.equal(img.createType, q['format-specific'].data['create-type']);
      assert.equal(img.cid, q['format-specific'].data.cid);
      assert.equal(img.parentCid, q['format-specific'].data['parent-cid']);
      assert.equal(img.clusterSize, q['cluster-size']);
      assert.deepEqual(img.extentInfo.map(e => ({
        filename: e.filename, format: e.format, 'virtual-size': e.virtualSize,
        ...(e.clusterSize !== undefined ? { 'cluster-size': e.clusterSize } : {}), ...(e.compressed ? { compressed: true } : {}),
      })), q['format-specific'].data.extents.map((e: Record<string, unknown>) => {
        const { compressed, ...rest } = e;
        return compressed ? { ...rest, compressed } : rest;
      }), `${subformat} extents`);
      assert.deepEqual(await layerMap(img), qemuMap(theirs), `${subformat} map`);
      const raw = path.join(dir, 'guest.raw');
      qemuImg('convert', '-f', 'vmdk', '-O', 'raw', theirs, raw);
      assert.equal(sha256(await readAll(img)), sha256(fs.readFileSync(raw)), `${subformat} bytes`);
    } finally {
      await img.close();
    }
  }
});

test('twoGbMaxExtent disks of several extents: every data extent reads as the source', async () => {
  const src = makeRaw(path.join(dir, 'five.raw'), '5G', ['write -P 0x71 1M 1M', 'write -P 0x72 2047M 2M', 'write -P 0x73 4G 64k', 'write -P 0x74 5119M 1M']);
  for (const subformat of ['twoGbMaxExtentSparse', 'twoGbMaxExtentFlat']) {
    const sub = path.join(dir, `five-${subformat}`);
    fs.mkdirSync(sub, { recursive: true });
    const theirs = path.join(sub, 'five.vmdk');
    qemuImg('convert', '-f', 'raw', '-O', 'vmdk', '-o', `subformat=${subformat}`, src, theirs);
    const img = await VmdkImage.open(theirs, { holes });
    try {
      assert.equal(img.extentInfo.length, 3);
      assert.deepEqual(await layerMap(img), qemuMap(theirs), `${subformat} map`);
      for (const e of qemuMap(theirs).filter(m => m.data && !m.zero)) {
        const n = Math.min(e.length, 4 * MiB);
        assert.ok((await img.readGuest(e.start, n)).equals(readAt(src, e.start, n)), `${subformat} at ${e.start}`);
      }
      // A read across the boundary of two extents.
      assert.ok((await img.readGuest(2048 * MiB - 4096, 8192)).equals(readAt(src, 2048 * MiB - 4096, 8192)));
    } finally {
      await img.close();
    }
  }
});

test('zeroed grains (zeroed_grain=on + write -z) read as zero and map as present zero', async () => {
  const f = path.join(dir, 'zg.vmdk');
  qemuImg('create', '-q', '-f', 'vmdk', '-o', 'zeroed_grain=on', f, '4M');
  qemuIo(f, ['write -P 0x55 0 1M', 'write -z 512k 128k', 'write -z 2M 1M']);
  const img = await VmdkImage.open(f);
  try {
    assert.deepEqual(await layerMap(img), qemuMap(f));
    assert.ok((await layerMap(img)).some(e => e.present && e.zero));
    const raw = path.join(dir, 'zg.raw');
    qemuImg('convert', '-O', 'raw', f, raw);
    assert.equal(sha256(await readAll(img)), sha256(fs.readFileSync(raw)));
  } finally {
    await img.close();
  }
});

test('our streamOptimized files convert back with qemu-img byte for byte', async () => {
  const mine = path.join(dir, 'small-streamOptimized.vmdk');
  if (!fs.existsSync(mine)) await ours(SRC[0].file, mine, { subformat: 'streamOptimized' });
  const raw = path.join(dir, 'back.raw');
  qemuImg('convert', '-f', 'vmdk', '-O', 'raw', mine, raw);
  assert.equal(sha256(fs.readFileSync(raw)), sha256(fs.readFileSync(SRC[0].file)));
});

// --- damaged files

function damaged(name: string, subformat: string, damage: (file: string) => void): string {
  const f = path.join(dir, `bad-${name}.vmdk`);
  qemuImg('convert', '-f', 'raw', '-O', 'vmdk', '-o', `subformat=${subformat}`, SRC[0].file, f);
  damage(f);
  return f;
}

async function assertRefused(file: string, pattern: RegExp, qemuRefuses = true): Promise<void> {
  if (qemuRefuses) assert.notEqual(qemuImgStatus('info', file).status, 0, `qemu-img opened ${file}`);
  await assert.rejects(async () => {
    const img = await VmdkImage.open(file);
    try {
      await readAll(img);
    } finally {
      await img.close();
    }
  }, (e: Error) => {
    assert.match(e.message, pattern);
    assert.ok(e.message.startsWith(file + ': '), e.message);
    return true;
  });
}

test('damaged VMDKs: truncation, absurd grains and tables, bad footer and markers, no CID', async () => {
  await assertRefused(damaged('truncated', 'monolithicSparse', f => fs.truncateSync(f, 30000)), /VMDK header at 0x0: file truncated, expecting at least 65536 bytes/);
  await assertRefused(damaged('gtes', 'monolithicSparse', f => pokeBytes(f, 44, [0x01, 0x04, 0, 0])), /grain table size too big/);
  await assertRefused(damaged('granularity', 'monolithicSparse', f => pokeBytes(f, 20, [0, 0, 0x40, 0])), /invalid granularity of 4194304 sectors/);
  await assertRefused(damaged('version', 'monolithicSparse', f => pokeBytes(f, 4, [4])), /unsupported VMDK version 4/);
  // Without "CID" anywhere (QEMU finds the first "CID", even inside "parentCID").
  await assertRefused(damaged('nocid', 'monolithicSparse', f => pokeBytes(f, 512, Buffer.from(readAt(f, 512, 1024).toString('latin1').replace(/CID/g, 'XID'), 'latin1'))), /VMDK descriptor at 0x200: no CID/);
  // Grains of 32 MiB: QEMU would allocate 64 MiB per read; we refuse them.
  await assertRefused(damaged('biggrain', 'monolithicSparse', f => pokeBytes(f, 20, [0, 0, 1, 0])), /grains of 33554432 bytes are beyond/, false);
  // A grain table past the end of the file: QEMU reads it as zeros; we say where it points.
  const gtPast = damaged('gtpast', 'monolithicSparse', f => {
    const h = decodeHeader(readAt(f, 0, 512));
    pokeBytes(f, Number(h.gdOffset) * 512, [0, 0, 0, 0x10]);
  });
  await assertRefused(gtPast, /GD\[0\] → grain table at 0x2000000000: .*past the end of the file/, false);
  // A compressed grain whose marker claims an absurd length.
  const marker = damaged('marker', 'streamOptimized', f => {
    const h = decodeHeader(readAt(f, 0, 512));
    pokeBytes(f, Number(h.grainOffset) * 512 + 8, [0xff, 0xff, 0xff, 0x00]);
  });
  await assertRefused(marker, /compressed grain at sector 128 at 0x10000: grain marker says 16777215 compressed bytes/, false);
  // A compressed grain whose deflate data is damaged.
  const corrupt = damaged('deflate', 'streamOptimized', f => {
    const h = decodeHeader(readAt(f, 0, 512));
    pokeBytes(f, Number(h.grainOffset) * 512 + 12, [0x00, 0x00, 0x00]);
  });
  await assertRefused(corrupt, /compressed grain at sector 128 at 0x10000: deflate data does not inflate/, false);
});

test('a stream-optimized file whose footer is gone is refused, as qemu-img refuses it', async () => {
  const mine = path.join(dir, 'nofooter.vmdk');
  await ours(SRC[0].file, mine, { subformat: 'streamOptimized' });
  fs.truncateSync(mine, fs.statSync(mine).size - 512);
  await assertRefused(mine, /VMDK footer at 0x[0-9a-f]+: invalid footer/);
});

test('descriptor parsing follows QEMU: RW extent lines only, FLAT needs its offset', () => {
  const d = parseDescriptor('# Disk DescriptorFile\nversion=1\nCID=12ab\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRDONLY 100 FLAT "ro.img" 0\nRW 2048 FLAT "a-flat.vmdk" 0\nRW 10 SPARSE "s.vmdk"\n');
  assert.equal(d.cid, 0x12ab);
  assert.equal(d.parentCid, 0xffffffff);
  assert.equal(d.createType, 'monolithicFlat');
  assert.deepEqual(d.extents.map(e => [e.type, e.sectors, e.fileName, e.flatOffset]), [['FLAT', 2048, 'a-flat.vmdk', 0], ['SPARSE', 10, 's.vmdk', 0]]);
  assert.equal(parseDescriptor('CID=1\nparentCID=1\nRW 10 FLAT "x"\n').invalidLine, 'RW 10 FLAT "x"');
});
