/**
 * VHD (vpc): our writer against `qemu-img convert -O vpc` on the same raw sources (fixed and
 * dynamic, force_size, sizes off the CHS grid and off the 2 MiB block grid, up to 2040 GiB with
 * little data), our reader against qemu-img's own files, the CHS size rule against
 * `qemu-img create -f vpc`, and damaged files against qemu-img's verdict.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { rawSource } from '../../src/engine/formats/raw';
import { vhdSize } from '../../src/engine/formats/vpc/geometry';
import { decodeDynamicHeader, decodeFooter } from '../../src/engine/formats/vpc/layout';
import { VpcImage } from '../../src/engine/formats/vpc/read';
import { writeVpc, type VpcWriteOptions } from '../../src/engine/formats/vpc/write';
import { pokeBytes, qemuImg, qemuImgStatus, sha256, tmpDir } from '../helpers/qemu';
import { GiB, MiB, holes, layerMap, makeRaw, qemuMap, readAll, readAt, withSink } from './helpers';

const dir = tmpDir('qcow2-lens-vpc-');

interface Case { name: string; size: number | string; writes: string[] }

const CASES: Case[] = [
  // data, a zero run, a data run straddling blocks, a sparse tail; not a multiple of 2 MiB or of a geometry
  { name: 'small', size: 5 * MiB + 12345 * 512, writes: ['write -P 0x41 0 1M', 'write -P 0x42 3M 100k', 'write -P 0x43 4000k 300k', 'write -z 4400k 64k'] },
  { name: 'one-sector', size: 1 * MiB, writes: ['write -P 0x44 1048064 512'] },
  { name: 'empty', size: 3 * MiB, writes: [] },
  { name: 'big', size: 200 * GiB + 3 * MiB, writes: ['write -P 0x51 0 64k', 'write -P 0x52 100G 3M', 'write -P 0x53 200G 2M'] },
  { name: 'max', size: '2040G', writes: ['write -P 0x61 1M 1M', 'write -P 0x62 2000G 64k', 'write -P 0x63 2088958M 1M'] },
];

function sources(): Array<Case & { file: string }> {
  return CASES.map(c => ({ ...c, file: makeRaw(path.join(dir, `${c.name}.raw`), c.size, c.writes) }));
}

const SRC = sources();

async function ours(src: string, out: string, options: VpcWriteOptions) {
  const source = await rawSource(src, { holes });
  try {
    return await withSink(out, sink => writeVpc(source, sink, options));
  } finally {
    await source.close();
  }
}

function twin(src: string, out: string, opts: string): void {
  qemuImg('convert', '-f', 'raw', '-O', 'vpc', '-o', opts, src, out);
}

/** Footer fields that must match qemu-img's twin (not the timestamp, UUID or checksum). */
function footerFacts(file: string, at: number) {
  const f = decodeFooter(readAt(file, at, 512));
  return { ...f, timestamp: 0, uuid: null, checksum: 0 };
}

for (const subformat of ['dynamic', 'fixed'] as const) {
  for (const forceSize of [false, true]) {
    for (const src of SRC) {
      test(`vpc ${subformat}${forceSize ? ' force_size' : ''} of ${src.name}: equals qemu-img's twin`, async () => {
        const mine = path.join(dir, `${src.name}-${subformat}-${forceSize}.vhd`);
        const theirs = path.join(dir, `${src.name}-${subformat}-${forceSize}.qemu.vhd`);
        const result = await ours(src.file, mine, { subformat, forceSize });
        twin(src.file, theirs, `subformat=${subformat}${forceSize ? ',force_size=on' : ''}`);

        const infoMine = JSON.parse(qemuImg('info', '-f', 'vpc', '--output=json', mine));
        const infoTheirs = JSON.parse(qemuImg('info', '-f', 'vpc', '--output=json', theirs));
        assert.equal(infoMine.format, 'vpc');
        assert.equal(infoMine['virtual-size'], infoTheirs['virtual-size']);
        assert.equal(infoMine['virtual-size'], result.size);
        assert.equal(infoMine['cluster-size'], infoTheirs['cluster-size']);
        assert.equal(fs.statSync(mine).size, fs.statSync(theirs).size, 'file size');
        assert.equal(result.fileSize, fs.statSync(mine).size);

        const cmp = qemuImgStatus('compare', '-f', 'raw', '-F', 'vpc', src.file, mine);
        assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);

        const size = fs.statSync(mine).size;
        assert.deepEqual(footerFacts(mine, size - 512), footerFacts(theirs, size - 512), 'footer');
        if (subformat === 'dynamic') {
          assert.deepEqual(readAt(mine, 0, 512), readAt(mine, size - 512, 512), 'footer copy at 0');
          assert.deepEqual(readAt(mine, 512, 1024), readAt(theirs, 512, 1024), 'dynamic header');
          const h = decodeDynamicHeader(readAt(mine, 512, 1024));
          const batBytes = Math.ceil(h.maxTableEntries * 4 / 512) * 512;
          assert.ok(readAt(mine, 1536, batBytes).equals(readAt(theirs, 1536, batBytes)), 'BAT');
        }
        // Same layout, so qemu-img maps both alike (offsets included).
        assert.deepEqual(qemuMap(mine, 'vpc'), qemuMap(theirs, 'vpc'));
      });
    }
  }
}

test('our reader on qemu-img-made VHDs: guest bytes and block status equal qemu-img', async () => {
  for (const src of SRC) {
    for (const subformat of ['dynamic', 'fixed']) {
      const theirs = path.join(dir, `${src.name}-${subformat}-false.qemu.vhd`);
      if (!fs.existsSync(theirs)) twin(src.file, theirs, `subformat=${subformat}`);
      const img = await VpcImage.open(theirs, { holes });
      try {
        assert.equal(img.subformat, subformat);
        assert.equal(img.virtualSize, JSON.parse(qemuImg('info', '-f', 'vpc', '--output=json', theirs))['virtual-size']);
        assert.deepEqual(await layerMap(img), qemuMap(theirs, 'vpc'), `${src.name} ${subformat} map`);
        if (img.virtualSize <= 64 * MiB) {
          const raw = path.join(dir, 'guest.raw');
          qemuImg('convert', '-f', 'vpc', '-O', 'raw', theirs, raw);
          assert.equal(sha256(await readAll(img)), sha256(fs.readFileSync(raw)), `${src.name} ${subformat} bytes`);
        } else {
          // Large disks: every data extent qemu-img reports reads as the source's bytes there.
          for (const e of qemuMap(theirs, 'vpc').filter(m => m.data && !m.zero)) {
            const n = Math.min(e.length, 4 * MiB);
            assert.ok((await img.readGuest(e.start, n)).equals(readAt(src.file, e.start, n)), `${src.name} at ${e.start}`);
          }
        }
      } finally {
        await img.close();
      }
    }
  }
});

test('VHD sizes: the CHS rounding and force_size equal qemu-img create -f vpc', () => {
  const c = 65535 * 16;
  const sizes = [
    512, 1000, 1 * MiB, 1000000, 3 * MiB + 7, 16 * 17 * 1024 * 512, 16 * 17 * 1024 * 512 + 512,
    4 * 17 * 1024 * 512 - 512, c * 63 * 512 - 512, c * 63 * 512, c * 63 * 512 + 512, 65535 * 16 * 255 * 512 - 512,
    65535 * 16 * 255 * 512, 127 * GiB, 200 * GiB + 1, 2040 * GiB,
  ];
  for (const size of sizes) {
    for (const force of [false, true]) {
      const f = path.join(dir, 'size.vhd');
      qemuImg('create', '-q', '-f', 'vpc', ...(force ? ['-o', 'force_size=on'] : []), f, String(size));
      const info = JSON.parse(qemuImg('info', '-f', 'vpc', '--output=json', f));
      const footer = decodeFooter(readAt(f, 0, 512));
      const mine = vhdSize(size, force);
      assert.equal(mine.size, info['virtual-size'], `size ${size} force=${force}`);
      assert.deepEqual([mine.cylinders, mine.heads, mine.sectorsPerTrack, mine.creatorApp],
        [footer.cylinders, footer.heads, footer.sectorsPerTrack, footer.creatorApp], `geometry of ${size} force=${force}`);
      fs.rmSync(f);
    }
  }
  assert.equal(vhdSize(4 * MiB, true).azureAligned, true);
  assert.equal(vhdSize(4 * MiB, false).azureAligned, false);
});

test('a disk over 2040 GiB is refused, as qemu-img refuses it', async () => {
  const src = makeRaw(path.join(dir, 'huge.raw'), '2041G', []);
  const r = qemuImgStatus('convert', '-f', 'raw', '-O', 'vpc', src, path.join(dir, 'huge.qemu.vhd'));
  assert.notEqual(r.status, 0);
  await assert.rejects(ours(src, path.join(dir, 'huge.vhd'), {}), /too large for the vpc format/);
});

test('timestamp and UUID are as given (or now and random)', async () => {
  const src = SRC[0].file;
  const out = path.join(dir, 'stamp.vhd');
  const uuid = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
  await ours(src, out, { now: new Date('2024-01-02T03:04:05Z'), uuid });
  const f = decodeFooter(readAt(out, 0, 512));
  assert.equal(f.timestamp, Date.UTC(2024, 0, 2, 3, 4, 5) / 1000 - 946684800);
  assert.deepEqual(f.uuid, uuid);
  const before = Math.floor(Date.now() / 1000) - 946684800;
  await ours(src, out, {});
  const g = decodeFooter(readAt(out, 0, 512));
  assert.ok(g.timestamp >= before && g.timestamp <= before + 60);
  assert.equal(g.uuid[6] >> 4, 4, 'version-4 UUID');
});

// --- damaged files: qemu-img refuses each, and so do we, naming the file and the structure

function damaged(name: string, subformat: 'dynamic' | 'fixed', damage: (file: string) => void): string {
  const f = path.join(dir, `bad-${name}.vhd`);
  twin(SRC[0].file, f, `subformat=${subformat}`);
  damage(f);
  return f;
}

async function assertBothRefuse(file: string, pattern: RegExp): Promise<void> {
  const q = qemuImgStatus('info', '-f', 'vpc', file);
  assert.notEqual(q.status, 0, `qemu-img opened ${file}`);
  await assert.rejects(VpcImage.open(file), (e: Error) => {
    assert.match(e.message, pattern);
    assert.ok(e.message.startsWith(file + ': '), e.message);
    return true;
  });
}

test('damaged VHDs: truncated, bad checksum, BAT past EOF, bad block size, short BAT', async () => {
  // A dynamic disk cut short: its last block (and the footer) are gone.
  await assertBothRefuse(damaged('truncated', 'dynamic', f => fs.truncateSync(f, fs.statSync(f).size - 4096)), /BAT\[\d+\] at 0x[0-9a-f]+: .*truncated/);
  // A fixed disk whose footer is cut: no footer anywhere. (Cutting only the footer's zero tail is
  // harmless: QEMU counts the file in whole sectors and still finds it; so do we.)
  const cut = damaged('cuttail', 'fixed', f => fs.truncateSync(f, fs.statSync(f).size - 100));
  assert.equal(qemuImgStatus('info', '-f', 'vpc', cut).status, 0);
  await (await VpcImage.open(cut)).close();
  await assertBothRefuse(damaged('nofooter', 'fixed', f => fs.truncateSync(f, fs.statSync(f).size - 600)), /VHD footer at 0x[0-9a-f]+: not a VHD image/);
  await assertBothRefuse(damaged('checksum', 'dynamic', f => pokeBytes(f, 0x30, [0x7f])), /VHD footer at 0x0: checksum/);
  await assertBothRefuse(damaged('bat', 'dynamic', f => pokeBytes(f, 1536, [0x00, 0x40, 0x00, 0x00])), /BAT\[0\] at 0x600: .*past the end of the file/);
  await assertBothRefuse(damaged('blocksize', 'dynamic', f => pokeBytes(f, 512 + 32, [0x00, 0x30, 0x00, 0x00])), /VHD dynamic disk header at 0x200: invalid block size/);
  await assertBothRefuse(damaged('pagetable', 'dynamic', f => pokeBytes(f, 512 + 28, [0, 0, 0, 1])), /page table too small/);
  await assertBothRefuse(damaged('magic', 'dynamic', f => pokeBytes(f, 512, Buffer.from('xxsparse'))), /invalid header magic/);
  // An absurd BAT size: refused before anything is allocated.
  const absurd = damaged('absurd', 'dynamic', f => pokeBytes(f, 512 + 28, [0x7f, 0xff, 0xff, 0xff]));
  await assert.rejects(VpcImage.open(absurd), /BAT of 2147483647 entries is beyond/);
});

test('differencing VHDs are refused with a clear reason', async () => {
  const f = damaged('diff', 'dynamic', () => undefined);
  // Type 4 with a correct checksum: a differencing disk.
  const buf = readAt(f, 0, 512);
  buf.writeUInt32BE(4, 60);
  buf.writeUInt32BE(0, 64);
  let sum = 0;
  for (const b of buf) sum = (sum + b) >>> 0;
  buf.writeUInt32BE((~sum) >>> 0, 64);
  pokeBytes(f, 0, buf);
  await assert.rejects(VpcImage.open(f), (e: Error & { code?: string }) => /differencing VHD/.test(e.message) && e.code === 'unsupported');
});
