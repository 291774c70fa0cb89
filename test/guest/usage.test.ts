/**
 * diskUsage (src/guest/space/usage.ts) against debugfs: an ext4 made by mkfs.ext4 -d from the
 * common test tree (a big file, a sparse one, a deep tree, 120 small files, symlinks) plus a hard
 * link; every entry's allocated bytes must be what debugfs's Blockcount says (512-byte units, as
 * `du` counts), a folder's the sum of everything under it with a hard-linked inode once, and the
 * top-N trimming must keep the largest children and sum the rest.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tmpDir } from '../helpers/qemu';
import { openGuest } from '../../src/guest/guest';
import { openDiskImage } from '../../src/guest/qcow2Disk';
import { diskUsage, type UsageNode } from '../../src/guest/space/usage';
import { bytes, makeTree, mkfsExt, run } from './common';

/** Every path inside the file system (from the host tree it was made of, plus lost+found). */
function guestPaths(src: string): string[] {
  const out = ['/', '/lost+found'];
  const walk = (d: string, g: string) => {
    for (const n of fs.readdirSync(d).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))) {
      const p = path.join(d, n), gp = g === '/' ? `/${n}` : `${g}/${n}`;
      out.push(gp);
      if (fs.lstatSync(p).isDirectory()) walk(p, gp);
    }
  };
  walk(src, '/');
  return out;
}

/** debugfs's inode number and Blockcount × 512 for each path (one debugfs run). */
function debugfsBlocks(fsImage: string, paths: string[], dir: string): Map<string, { inode: number; bytes: number }> {
  const cmds = path.join(dir, 'cmds');
  fs.writeFileSync(cmds, paths.map(p => `stat "${p}"\n`).join(''));
  const out = run('debugfs', ['-f', cmds, fsImage]);
  const res = new Map<string, { inode: number; bytes: number }>();
  for (const sec of out.split(/^debugfs: stat /m).slice(1)) {
    const p = /^"(.*)"$/m.exec(sec)![1];
    const inode = Number(/Inode: (\d+)/.exec(sec)![1]);
    const blocks = Number(/Blockcount: (\d+)/.exec(sec)![1]);
    res.set(p, { inode, bytes: blocks * 512 });
  }
  return res;
}

test('diskUsage: every listed entry has the bytes debugfs counts (du), folders sum their trees with hard links once, top-N keeps the largest', async () => {
  const dir = tmpDir('qcow2-lens-usage-');
  try {
    const src = makeTree(path.join(dir, 'src'));
    fs.writeFileSync(path.join(src, 'deep', 'mid.bin'), bytes(300 * 1024, 'mid'));
    fs.linkSync(path.join(src, 'big.bin'), path.join(src, 'deep', 'big-again.bin'));
    const fsImage = path.join(dir, 'fs.ext4');
    mkfsExt('ext4', fsImage, 32, src);
    const paths = guestPaths(src);
    const truth = debugfsBlocks(fsImage, paths, dir);
    assert.equal(truth.size, paths.length);
    // a hard-linked inode counts where the walk (by name, depth first) meets it first, as `du` of the whole tree
    const firstPath = new Map<number, string>();
    for (const q of paths) if (!firstPath.has(truth.get(q)!.inode)) firstPath.set(truth.get(q)!.inode, q);
    const duOf = (p: string) => {
      let n = 0;
      for (const q of paths) {
        if (q !== p && !q.startsWith(p === '/' ? '/' : p + '/')) continue;
        const t = truth.get(q)!;
        if (firstPath.get(t.inode) === q) n += t.bytes;
      }
      return n;
    };
    assert.ok(truth.get('/deep/big-again.bin')!.inode === truth.get('/big.bin')!.inode);

    const d = await openDiskImage(fsImage);
    try {
      const g = await openGuest(d.disk);
      try {
        const gfs = g.fileSystem();
        const r = await diskUsage(gfs, { top: 3, depth: 12 });
        assert.equal(r.partial, false);
        assert.deepEqual(r.errors, []);
        assert.equal(r.root.bytes, duOf('/'));
        assert.equal(r.root.entries, paths.length - 1);
        let checked = 0;
        const check = (n: UsageNode, level: number) => {
          assert.equal(n.bytes, duOf(n.path), n.path);
          checked++;
          if (n.type !== 'dir') return;
          const kids = n.children ?? [];
          if (level < 12) {
            assert.ok(kids.length <= 3, n.path);
            for (let i = 1; i < kids.length; i++) assert.ok(kids[i - 1].bytes >= kids[i].bytes, `${n.path} sorted`);
            const listed = kids.reduce((s, k) => s + k.bytes, 0);
            // the folder's own blocks, its listed children and the others make up its total
            // (a hard link seen first elsewhere counts 0 here, as du does)
            assert.equal(listed + (n.others?.bytes ?? 0) + truth.get(n.path)!.bytes, n.bytes, n.path);
          } else assert.equal(n.children, undefined);
          for (const k of kids) check(k, level + 1);
        };
        check(r.root, 0);
        assert.ok(checked > 12, String(checked));
        // the three largest at the top: big.bin (3 MiB), deep (its 300 KiB file; the hard link to big.bin counts once, where first met) …
        assert.equal(r.root.children![0].name, 'big.bin');
        assert.ok(r.root.others && r.root.others.entries >= 5);
        assert.equal(r.root.children!.reduce((s, k) => s + 1 + k.entries, 0) + r.root.others.entries, r.root.entries);
        // sparse.img holds two blocks' worth, not its 8 MiB length
        const all = await diskUsage(gfs, { top: 100, depth: 1 });
        const sparse = all.root.children!.find(k => k.name === 'sparse.img')!;
        assert.equal(sparse.bytes, truth.get('/sparse.img')!.bytes);
        assert.ok(sparse.bytes < 64 * 1024);
        // depth 1: the root's children are listed, theirs are not
        assert.ok(all.root.children!.every(k => k.children === undefined));
        assert.equal(all.root.bytes, r.root.bytes);
        // the entry cap makes the answer partial, never wrong past what it walked
        const capped = await diskUsage(gfs, { maxEntries: 5 });
        assert.equal(capped.partial, true);
        assert.ok(capped.root.entries <= 5);
      } finally { await g.close(); }
    } finally { await d.close(); }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('diskUsage on FAT: every file\'s bytes are the clusters mdu counts (mtools), folders are their own clusters (fileRanges) plus their entries\' (mdu\'s folder totals count folders\' clusters unevenly)', async () => {
  const dir = tmpDir('qcow2-lens-usage-fat-');
  try {
    const src = path.join(dir, 'src');
    fs.mkdirSync(path.join(src, 'docs', 'old'), { recursive: true });
    fs.writeFileSync(path.join(src, 'docs', 'a.bin'), bytes(10000, 'a'));
    fs.writeFileSync(path.join(src, 'docs', 'old', 'b.bin'), bytes(70000, 'b'));
    fs.writeFileSync(path.join(src, 'c.txt'), 'hi\n');
    const fsImage = path.join(dir, 'fs.vfat');
    run('mkfs.vfat', ['-C', fsImage, '8192']);
    run('mcopy', ['-s', '-i', fsImage, path.join(src, 'docs'), path.join(src, 'c.txt'), '::/']);
    const cluster = Number(/cluster size: (\d+) sectors/.exec(run('minfo', ['-i', fsImage]))![1]) * 512;
    const mdu = new Map<string, number>();
    for (const line of run('mdu', ['-a', '-i', fsImage, '::/']).trim().split('\n')) {
      const m = /^::(\S+) (\d+)$/.exec(line)!;
      mdu.set(m[1], Number(m[2]) * cluster);
    }
    const d = await openDiskImage(fsImage);
    try {
      const g = await openGuest(d.disk);
      try {
        const gfs = g.fileSystem();
        const r = await diskUsage(gfs, { top: 10 });
        const byPath = new Map<string, UsageNode>();
        const walk = (n: UsageNode) => { byPath.set(n.path, n); for (const k of n.children ?? []) walk(k); };
        walk(r.root);
        for (const p of ['/c.txt', '/docs/a.bin', '/docs/old/b.bin']) assert.equal(byPath.get(p)!.bytes, mdu.get(p), p);
        assert.equal(byPath.get('/docs/old/b.bin')!.bytes, Math.ceil(70000 / cluster) * cluster);
        for (const p of ['/', '/docs', '/docs/old']) {
          const n = byPath.get(p)!;
          let own = 0;
          for (const x of await gfs.fileRanges(p)) own += x.length;
          assert.ok(own > 0, p);
          assert.equal(n.bytes, own + (n.children ?? []).reduce((s, k) => s + k.bytes, 0), p);
        }
        assert.equal(r.root.entries, 5);
      } finally { await g.close(); }
    } finally { await d.close(); }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
