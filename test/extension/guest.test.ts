/**
 * The host side of the guest lens, in Node: the qcow2-guest URI codec, symlinks followed inside a
 * guest file system, the pool reopening an image that changed, and the structure tree's Guest
 * section (ViewModel over a qcow2 made by qemu-img convert of an sfdisk disk holding an ext4 made
 * by mkfs.ext4 -d and a swap partition made by mkswap): partitions, folders, sizes and pages as the
 * source tree has them.
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { guestUriPath, parseGuestUriPath } from '../../src/extension/guestUri';
import { GuestPool, resolveGuestLinks } from '../../src/extension/guestPool';
import { parseGuestNodeId, guestNodeId } from '../../src/extension/guestTree';
import { ViewModel } from '../../src/extension/viewModel';
import type { TreeChildrenReply, TreeNode } from '../../src/protocol';
import { TREE_PAGE_SIZE } from '../../src/protocol';
import { formatBytes } from '../../src/engine/units';
import { createSnapshotAt, sparsifyPath } from '../../src/extension/engineApi';
import { qemuImg, qemuImgStatus, tmpDir } from '../helpers/qemu';
import { buildDisk, run, runBuffer } from '../guest/common';

describe('qcow2-guest URIs', () => {
  it('round-trip image paths with slashes, spaces, percent signs and unicode', () => {
    for (const image of ['/vm/disk.qcow2', '/tmp/a b/100%/ünï — 名前.qcow2', '/x/%2F.qcow2']) {
      for (const loc of [{ image, path: '/' }, { image, partition: 1, path: '/' }, { image, partition: 5, path: '/etc/fstab' }, { image, partition: 0, path: '/a b/%c/名' }]) {
        const p = guestUriPath(loc);
        assert.equal(p.split('/')[1], encodeURIComponent(image), 'the image is one path segment');
        assert.deepEqual(parseGuestUriPath(p), loc);
      }
    }
  });
  it('resolve "." and ".." inside the guest and refuse what they did not make', () => {
    assert.deepEqual(parseGuestUriPath(`/${encodeURIComponent('/d.qcow2')}/1/etc/../etc/./fstab`), { image: '/d.qcow2', partition: 1, path: '/etc/fstab' });
    assert.deepEqual(parseGuestUriPath(`/${encodeURIComponent('/d.qcow2')}/1/../../..`), { image: '/d.qcow2', partition: 1, path: '/' });
    assert.equal(parseGuestUriPath('/relative.qcow2/1/x'), undefined, 'the image path must be absolute');
    assert.equal(parseGuestUriPath(`/${encodeURIComponent('/d.qcow2')}/p1/x`), undefined, 'the partition is a number');
    assert.equal(parseGuestUriPath('/%E0%A4%A/1'), undefined, 'bad percent-encoding');
  });
});

describe('guest tree node ids', () => {
  it('round-trip folders and pages, and leave the qcow2 structure ids alone', () => {
    for (const r of [{ kind: 'section' as const }, { kind: 'dir' as const, partition: 1, path: '/' }, { kind: 'dir' as const, partition: 2, path: '/a:b/c d/名' }, { kind: 'dir' as const, partition: 0, path: '/many', page: { s: 256, e: 300 } }]) {
      assert.deepEqual(parseGuestNodeId(guestNodeId(r)), r);
    }
    for (const id of ['root', 'header', 'l1:a', 'l2e:0:3:31', 'snap:0', 'bm:1']) assert.equal(parseGuestNodeId(id), undefined, id);
  });
});

const SECTOR = 512;
const EXT = { start: 2048, size: 24 * 2048 };
const SWAP = { start: 2048 + 24 * 2048, size: 4 * 2048 };

describe('Guest section of the structure tree, and the pool', () => {
  let dir: string, image: string, src: string;
  let id = 1;
  const children = async (vm: ViewModel, nodeId: string): Promise<TreeNode[]> => {
    const r = await vm.handle({ type: 'getTreeChildren', requestId: id++, nodeId });
    if (r?.type === 'error') throw new Error(r.message);
    return (r as TreeChildrenReply).children;
  };

  before(() => {
    dir = tmpDir('qcow2-lens-guest-tree-');
    src = path.join(dir, 'src');
    fs.mkdirSync(path.join(src, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(src, 'etc', 'fstab'), 'UUID=1 / ext4 defaults 0 1\n');
    fs.writeFileSync(path.join(src, 'big.bin'), Buffer.alloc(300_000, 7));
    fs.symlinkSync('etc/fstab', path.join(src, 'link'));
    fs.symlinkSync('../etc/../etc/fstab', path.join(src, 'etc', 'rel'));
    fs.symlinkSync('loop-b', path.join(src, 'loop-a'));
    fs.symlinkSync('loop-a', path.join(src, 'loop-b'));
    fs.symlinkSync('/nowhere', path.join(src, 'dangling'));
    fs.mkdirSync(path.join(src, 'many'));
    for (let i = 0; i < TREE_PAGE_SIZE + 44; i++) fs.writeFileSync(path.join(src, 'many', `f${String(i).padStart(4, '0')}`), 'x'.repeat(i));
    const fsImg = path.join(dir, 'p1.ext4');
    run('mkfs.ext4', ['-q', '-F', '-L', 'rootfs', '-d', src, fsImg, '24M']);
    const swap = path.join(dir, 'p2.swap');
    fs.writeFileSync(swap, '');
    fs.truncateSync(swap, SWAP.size * SECTOR);
    run('mkswap', ['-q', swap]);
    const raw = path.join(dir, 'disk.raw');
    buildDisk(raw, 32, 'dos', [{ ...EXT, type: '83', image: fsImg }, { ...SWAP, type: '82', image: swap }]);
    image = path.join(dir, 'disk.qcow2');
    qemuImg('convert', '-q', '-O', 'qcow2', raw, image);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('lists the partitions: the ext4 one browsable with its label, swap not browsable with its size', async () => {
    const vm = await ViewModel.open(image);
    try {
      const top = await children(vm, 'root');
      const section = top.find(n => n.kind === 'guest');
      assert.ok(section?.hasChildren, 'the root has a Guest section');
      const parts = await children(vm, section.id);
      assert.match(parts[0].label, /MBR partition table/);
      const p1 = parts.find(n => n.label === 'partition 1')!, p2 = parts.find(n => n.label === 'partition 2')!;
      assert.equal(p1.guestOffset, EXT.start * SECTOR);
      assert.equal(p1.guestLength, EXT.size * SECTOR);
      assert.ok(p1.hasChildren);
      assert.match(p1.description ?? '', /^ext4 · "rootfs" · 24 MiB$/);
      assert.equal(p2.hasChildren, false);
      assert.equal(p2.guestLength, SWAP.size * SECTOR);
      assert.match(p2.description ?? '', /^swap · 4 MiB · not browsable$/);
    } finally {
      await vm.close();
    }
  });

  it('lists folders first, then files with their sizes, and pages a folder with more than a page of entries', async () => {
    const vm = await ViewModel.open(image);
    try {
      const p1 = (await children(vm, 'guest')).find(n => n.label === 'partition 1')!;
      const rootEntries = await children(vm, p1.id);
      const names = rootEntries.map(n => n.label);
      assert.deepEqual(names, ['etc', 'lost+found', 'many', 'big.bin', 'dangling', 'link', 'loop-a', 'loop-b']);
      const big = rootEntries.find(n => n.label === 'big.bin')!;
      assert.equal(big.kind, 'guestFile');
      assert.equal(big.description, '293.0 KiB');
      assert.deepEqual(big.guestFile, { partition: 1, path: '/big.bin' });
      assert.equal(rootEntries.find(n => n.label === 'link')!.description, '→ etc/fstab');
      const etc = await children(vm, rootEntries.find(n => n.label === 'etc')!.id);
      assert.deepEqual(etc.map(n => [n.label, n.guestFile?.path]), [['fstab', '/etc/fstab'], ['rel', '/etc/rel']]);
      assert.equal(etc[0].description, formatBytes(fs.statSync(path.join(src, 'etc', 'fstab')).size));
      const pages = await children(vm, rootEntries.find(n => n.label === 'many')!.id);
      assert.deepEqual(pages.map(p => p.kind), ['page', 'page']);
      const first = await children(vm, pages[0].id), second = await children(vm, pages[1].id);
      assert.equal(first.length, TREE_PAGE_SIZE);
      assert.equal(second.length, 44);
      const all = [...first, ...second];
      assert.deepEqual(all.map(n => n.label), fs.readdirSync(path.join(src, 'many')).sort());
      for (const n of all) assert.equal(n.description, formatBytes(Number(n.label.slice(1))), 'file fN holds N bytes');
    } finally {
      await vm.close();
    }
  });

  it('follows symlinks inside the guest (relative, absolute, chains), reports dangling ones and stops loops', async () => {
    const pool = new GuestPool();
    try {
      await pool.use(image, async g => {
        const f = g.fileSystem(1);
        assert.equal((await resolveGuestLinks(f, '/link')).path, '/etc/fstab');
        assert.equal((await resolveGuestLinks(f, '/etc/rel')).path, '/etc/fstab');
        assert.equal((await resolveGuestLinks(f, '/big.bin')).stat.size, 300_000);
        const d = await resolveGuestLinks(f, '/dangling');
        assert.equal(d.dangling, true);
        assert.equal(d.stat.target, '/nowhere');
        await assert.rejects(resolveGuestLinks(f, '/loop-a'), /too many levels of symbolic links/);
      });
    } finally {
      pool.dispose();
    }
  });

  it('Sparsify runs in the per-file write queue: started with a snapshot write on the same image, both land and the image stays clean', async () => {
    const copy = path.join(dir, 'queued.qcow2');
    fs.copyFileSync(image, copy);
    const [r] = await Promise.all([sparsifyPath(copy, {}), createSnapshotAt(copy, 'during')]);
    assert.equal(r.output, copy);
    const check = qemuImgStatus('check', copy);
    assert.equal(check.status, 0, check.stdout + check.stderr);
    const info = JSON.parse(qemuImg('info', '--output=json', copy)) as { snapshots?: { name: string }[] };
    assert.deepEqual((info.snapshots ?? []).map(x => x.name), ['during']);
    // the guest's files are what mkfs.ext4 -d stored (e2fsck -fn and debugfs on the partition, out of qemu-img convert)
    const raw = path.join(dir, 'queued.raw'), p1 = path.join(dir, 'queued.p1');
    qemuImg('convert', '-q', '-O', 'raw', copy, raw);
    run('dd', [`if=${raw}`, `of=${p1}`, 'bs=512', `skip=${EXT.start}`, `count=${EXT.size}`, 'status=none']);
    run('e2fsck', ['-fn', p1]);
    for (const f of ['/etc/fstab', '/big.bin', '/many/f0299']) assert.ok(runBuffer('debugfs', ['-R', `cat ${f}`, p1]).equals(fs.readFileSync(path.join(src, f))), f);
  });

  it('the pool reuses an unchanged image and reopens one that changed on disk', async () => {
    const copy = path.join(dir, 'copy.qcow2');
    fs.copyFileSync(image, copy);
    const pool = new GuestPool(60_000);
    try {
      const g1 = await pool.use(copy, async g => g);
      const g2 = await pool.use(copy, async g => g);
      assert.equal(g1, g2, 'the same open guest while the file is unchanged');
      // another image renamed over it (what sparsify and compact do in place): a new inode
      const other = path.join(dir, 'other.qcow2');
      qemuImg('convert', '-q', '-O', 'qcow2', image, other);
      fs.renameSync(other, copy);
      const g3 = await pool.use(copy, async g => g);
      assert.notEqual(g3, g1, 'reopened after the file changed');
      assert.equal(pool.size, 1);
      pool.invalidate(copy);
      assert.equal(pool.size, 0);
    } finally {
      pool.dispose();
    }
  });
});
