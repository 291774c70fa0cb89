/**
 * The guest lens's host side (src/extension/spaceReport.ts) through the real ViewModel, on an image
 * with an internal snapshot whose old copy of /etc/fstab's cluster only the snapshot still maps
 * (qemu-io rewrote it after `qemu-img snapshot -c`): the owner of the old host cluster is the file,
 * said to be in the snapshot; of the new one, the file; the space report's snapshot part is what
 * `qcow2-lens space --json` says; the file's highlight is the active copy's cluster only.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ViewModel } from '../../src/extension/viewModel';
import { ownerText } from '../../src/extension/spaceReport';
import type { FromWebviewMessage, ToWebviewMessage } from '../../src/protocol';
import { cliJson, qemuImg, qemuIo, tmpDir } from '../helpers/qemu';
import { buildDisk, run } from '../guest/common';

const PART_START = 2048 * 512;

async function ask<T extends ToWebviewMessage['type']>(vm: ViewModel, m: FromWebviewMessage, type: T): Promise<Extract<ToWebviewMessage, { type: T }>> {
  const r = await vm.handle(m);
  assert.ok(r && r.type === type, JSON.stringify(r));
  return r as Extract<ToWebviewMessage, { type: T }>;
}

describe('guest lens host side (spaceReport.ts)', { timeout: 120000 }, () => {
  let dir: string, image: string, fstabGuest: number, oldHost: number, newHost: number;
  const hostOf = (guest: number): number => {
    const map = JSON.parse(qemuImg('map', '--output=json', image)) as { start: number; length: number; data: boolean; offset?: number }[];
    const e = map.find(m => guest >= m.start && guest < m.start + m.length && m.data && m.offset !== undefined)!;
    return e.offset! + (guest - e.start);
  };

  before(() => {
    dir = tmpDir('qcow2-lens-space-host-');
    const src = path.join(dir, 'src');
    fs.mkdirSync(path.join(src, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(src, 'etc', 'fstab'), 'UUID=42 / ext4 defaults 0 1\n');
    const fsImg = path.join(dir, 'p1.ext4');
    run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', src, fsImg, '16M']);
    const block = Number(run('debugfs', ['-R', 'blocks /etc/fstab', fsImg]).trim());
    fstabGuest = PART_START + block * 4096;
    const raw = path.join(dir, 'disk.raw');
    buildDisk(raw, 20, 'gpt', [{ start: 2048, size: 16 * 2048, type: '8300', image: fsImg }]);
    image = path.join(dir, 'disk.qcow2');
    qemuImg('convert', '-q', '-O', 'qcow2', '-o', 'cluster_size=4096', raw, image);
    oldHost = hostOf(fstabGuest);
    qemuImg('snapshot', '-c', 's1', image);
    // the guest rewrites the file's block in place: the active L2 now points at a new cluster
    qemuIo(image, [`write -P 0x55 ${fstabGuest} 4096`]);
    newHost = hostOf(fstabGuest);
    assert.notEqual(Math.floor(oldHost / 4096), Math.floor(newHost / 4096));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('names the owner of the active copy and of the copy only the snapshot keeps', async () => {
    const vm = await ViewModel.open(image);
    try {
      const now = await ask(vm, { type: 'describeOwner', requestId: 1, hostOffset: newHost + 9 }, 'owner');
      assert.equal(now.text, '/etc/fstab, partition 1');
      const old = await ask(vm, { type: 'describeOwner', requestId: 2, hostOffset: oldHost + 9 }, 'owner');
      assert.equal(old.text, '/etc/fstab, partition 1 (in snapshot "s1"; the active disk may hold something else there)');
      const hdr = await ask(vm, { type: 'describeOwner', requestId: 3, hostOffset: 0 }, 'owner');
      assert.equal(hdr.text, undefined);
      const fileMap = await ask(vm, { type: 'getGuestFileMap', requestId: 4, partition: 1, path: '/etc/fstab' }, 'guestFileMap');
      assert.deepEqual(fileMap.hostClusters, [Math.floor(newHost / 4096)]);
      assert.deepEqual(fileMap.ranges, [{ start: fstabGuest, length: 4096 }]);
      assert.equal(fileMap.truncated, false);
    } finally {
      await vm.close();
    }
  });

  it('the space report is the CLI\'s (the snapshot part included), computed once per open image', async () => {
    const vm = await ViewModel.open(image);
    try {
      const r = await ask(vm, { type: 'getSpaceReport', requestId: 1 }, 'spaceReport');
      const truth = cliJson<{ parts: { name: string; bytes: number; compact: number; sparsify: number }[]; reclaim: { compact: number; sparsify: number } }>('space', '--json', image);
      assert.ok(r.report);
      assert.deepEqual(r.report.parts.map(p => [p.name, p.bytes, p.compact, p.sparsify]), truth.parts.map(p => [p.name, p.bytes, p.compact, p.sparsify]));
      assert.deepEqual(r.report.reclaim, truth.reclaim);
      assert.equal(r.report.parts.find(p => p.name === 'snapshots')!.bytes, 4096, 'the old copy of the rewritten cluster');
      const again = await ask(vm, { type: 'getSpaceReport', requestId: 2 }, 'spaceReport');
      assert.strictEqual(again.report!.parts[0].bytes, r.report.parts[0].bytes);
    } finally {
      await vm.close();
    }
  });

  it('ownerText words every kind of owner', () => {
    assert.equal(ownerText({ guestOffset: 1, kind: 'file', path: '/a', role: 'extent tree', partition: 2 }), '/a (extent tree), partition 2');
    assert.equal(ownerText({ guestOffset: 1, kind: 'free', partition: 0 }), 'guest free space, whole disk');
    assert.equal(ownerText({ guestOffset: 1, kind: 'metadata', metadata: 'FAT', partition: 1 }), 'file-system metadata: FAT, partition 1');
    assert.equal(ownerText({ guestOffset: 1, kind: 'partition table', metadata: 'GPT header' }), 'partition table (GPT header)');
    assert.equal(ownerText({ guestOffset: 1, kind: 'unpartitioned' }), 'outside any partition');
    assert.equal(ownerText({ guestOffset: 1, kind: 'not browsable', metadata: 'swap space', partition: 3 }), 'swap space, partition 3');
  });
});
