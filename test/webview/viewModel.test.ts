/**
 * The ViewModel (host side of the editor) against QEMU: the summary matches qemu-img info, the
 * cluster roles match qemu-img map and qemu-img check, guest bytes and their source layers match
 * qemu-img convert / map, and every answer is bounded (paged tree, capped reads).
 */
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ViewModel } from '../../src/extension/viewModel';
import { ask } from '../helpers/viewModel';
import type { BytesReply, ClusterMapReply, ToWebviewMessage, TreeChildrenReply } from '../../src/protocol';
import { CLUSTER_ROLES, MAX_READ_LENGTH, TREE_PAGE_SIZE } from '../../src/protocol';
import { pokeBytes, qemuImg, qemuImgStatus, qemuIo, readBE64, tmpDir, qemuMap } from '../helpers/qemu';

const CS = 65536;


describe('ViewModel against QEMU', () => {
  let dir: string, base: string, top: string;
  before(() => {
    dir = tmpDir();
    base = path.join(dir, 'base.qcow2');
    top = path.join(dir, 'top.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', base, '64M');
    qemuIo(base, ['write -P 0x11 0 64k', 'write -P 0x22 5M 128k']);
    qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
    qemuIo(top, ['write -P 0xab 1M 64k', 'write -c -P 0xcd 2M 64k', 'write -z 5M 64k']);
    qemuImg('snapshot', '-c', 'first', top);
    qemuIo(top, ['write -P 0xef 3M 8k']);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('summarises the image as qemu-img info does', async () => {
    const vm = await ViewModel.open(top);
    try {
      const info = JSON.parse(qemuImg('info', '--output=json', '--backing-chain', top)) as Array<{ filename: string; 'virtual-size': number; 'cluster-size': number; 'actual-size': number; snapshots?: Array<{ name: string }> }>;
      const { summary } = await ask<Extract<ToWebviewMessage, { type: 'summary' }>>(vm, { type: 'getSummary' });
      assert.equal(summary.virtualSize, info[0]['virtual-size']);
      assert.equal(summary.clusterSize, info[0]['cluster-size']);
      assert.equal(summary.fileSize, fs.statSync(top).size);
      assert.deepEqual(summary.backingChain.map(l => path.resolve(l.path)), info.map(i => path.resolve(i.filename)));
      assert.deepEqual(summary.snapshots.map(s => s.name), (info[0].snapshots ?? []).map(s => s.name));
      const field = (n: string) => summary.header.find(f => f.name === n)!;
      assert.equal(field('cluster_bits').value, '16');
      assert.equal(field('l1_table_offset').value, '0x' + Number(readBE64(top, 40)).toString(16));
      assert.equal(field('size').meaning, '64 MiB virtual disk');
    } finally {
      await vm.close();
    }
  });

  it('cluster roles agree with qemu-img map (data) and qemu-img check (leaks, corruptions)', async () => {
    const img = path.join(dir, 'roles.qcow2');
    fs.copyFileSync(top, img);
    // one leaked cluster appended, and one data cluster's refcount set to 0 (a corruption)
    const leak = Math.ceil(fs.statSync(img).size / CS);
    fs.truncateSync(img, (leak + 1) * CS);
    const block = Number(readBE64(img, Number(readBE64(img, 48))));
    pokeBytes(img, block + leak * 2, [0, 1]);
    const map = qemuMap(img);
    const dataClusters = map.filter(e => e.depth === 0 && e.data && e.offset !== undefined).flatMap(e => Array.from({ length: e.length / CS }, (_, k) => (e.offset! + k * CS) / CS));
    assert.ok(dataClusters.length >= 2);
    const broken = map.find(e => e.start === 3 * 1024 * 1024)!.offset! / CS; // written after the snapshot: refcount 1
    pokeBytes(img, block + broken * 2, [0, 0]);
    const chk = qemuImgStatus('check', img);
    const out = chk.stdout + chk.stderr;
    assert.match(out, new RegExp(`Leaked cluster ${leak} refcount=1 reference=0`));
    assert.match(out, new RegExp(`ERROR cluster ${broken} refcount=0 reference=1`));

    const vm = await ViewModel.open(img, { readOnly: true });
    try {
      const m = await ask<ClusterMapReply>(vm, { type: 'getClusterMap', startCluster: 0, count: 1000, zoom: 1 });
      assert.equal(m.totalClusters, leak + 1);
      const role = (c: number) => CLUSTER_ROLES[m.cells[c]];
      for (const c of dataClusters) if (c !== broken) assert.equal(role(c), 'data', `cluster ${c} holds guest data per qemu-img map`);
      assert.equal(role(0), 'header');
      assert.equal(role(Number(readBE64(img, 48)) / CS), 'refcountTable');
      assert.equal(role(Number(readBE64(img, 40)) / CS), 'l1');
      assert.equal(role(leak), 'leaked');
      assert.equal(role(broken), 'conflict');
      assert.ok(m.cells.some(x => CLUSTER_ROLES[x] === 'compressed'));
      assert.ok(m.cells.some(x => CLUSTER_ROLES[x] === 'snapshotL1'));
      // zoomed out: one cell for every 4 clusters, a problem wins over the others
      const z = await ask<ClusterMapReply>(vm, { type: 'getClusterMap', startCluster: 0, count: 1000, zoom: 4 });
      assert.equal(z.cells.length, Math.ceil((leak + 1) / 4));
      assert.equal(CLUSTER_ROLES[z.cells[Math.floor(leak / 4)]], Math.floor(broken / 4) === Math.floor(leak / 4) ? 'conflict' : 'leaked');
      assert.equal(CLUSTER_ROLES[z.cells[Math.floor(broken / 4)]], 'conflict');
      assert.equal(CLUSTER_ROLES[z.cells[0]], 'mixed', 'header, refcount table, block and L1 share the first cell');
      const d = await ask<Extract<ToWebviewMessage, { type: 'clusterDescription' }>>(vm, { type: 'describeCluster', hostCluster: broken });
      assert.equal(d.description.refcount, 0);
      assert.equal(d.description.owners[0].structure, 'L1[0] → L2[0x30]');
      assert.equal(d.description.owners[0].guestOffset, 3 * 1024 * 1024);
      // the owner leads back into the tree
      const p = await ask<Extract<ToWebviewMessage, { type: 'nodePath' }>>(vm, { type: 'locateNode', hostOffset: broken * CS + 100 });
      assert.deepEqual(p.path, ['l1:a', 'l1e:a:0', 'l1e:a:0|p:0:256', 'l2e:a:0:48']);
      // a byte of the L2 table leads to its entry; a byte of the refcount block to its entry
      const l2Table = Number(readBE64(img, Number(readBE64(img, 40))) & 0x00fffffffffffe00n); // L1[0] without its flags
      const viaTable = await ask<Extract<ToWebviewMessage, { type: 'nodePath' }>>(vm, { type: 'locateNode', hostOffset: l2Table + 48 * 8 + 3 });
      assert.deepEqual(viaTable.path, ['l1:a', 'l1e:a:0', 'l1e:a:0|p:0:256', 'l2e:a:0:48']);
      const viaBlock = await ask<Extract<ToWebviewMessage, { type: 'nodePath' }>>(vm, { type: 'locateNode', hostOffset: block + broken * 2 });
      assert.deepEqual(viaBlock.path, ['refcount', 'rte:0', 'rte:0|p:0:256', `rbe:0:${broken}`]);
      const err = await vm.handle({ type: 'describeCluster', requestId: 999, hostCluster: leak + 5 });
      assert.equal(err?.type, 'error');
      assert.equal((err as { requestId?: number }).requestId, 999);
    } finally {
      await vm.close();
    }
  });

  it('guest bytes and their source layer match qemu-img convert and map', async () => {
    const raw = path.join(dir, 'top.raw');
    qemuImg('convert', '-O', 'raw', top, raw);
    const want = fs.readFileSync(raw);
    const map = qemuMap(top);
    const vm = await ViewModel.open(top);
    try {
      for (const at of [0, 1024 * 1024 - 100, 2 * 1024 * 1024 + 7, 3 * 1024 * 1024, 5 * 1024 * 1024 - 8, 5 * 1024 * 1024 + 65530, 64 * 1024 * 1024 - 4096]) {
        const r = await ask<BytesReply>(vm, { type: 'readGuest', guestOffset: at, length: 4096 });
        const got = Buffer.from(r.data, 'base64');
        assert.deepEqual(got, want.subarray(at, at + got.length), `guest bytes at ${at}`);
        assert.equal(got.length, Math.min(4096, want.length - at));
        for (const s of r.sources) {
          const e = map.find(x => s.offset >= x.start && s.offset < x.start + x.length)!;
          assert.equal(s.depth, e.depth, `depth at ${s.offset}`);
          assert.equal(s.kind === 'zero' || s.kind === 'unallocated', !e.data, `kind at ${s.offset}`);
          if (e.offset !== undefined) assert.equal(s.hostOffset, e.offset + (s.offset - e.start));
        }
      }
      const big = await ask<BytesReply>(vm, { type: 'readHost', hostOffset: 0, length: 64 * 1024 * 1024 });
      assert.equal(Buffer.from(big.data, 'base64').length, Math.min(MAX_READ_LENGTH, fs.statSync(top).size), 'host reads are capped');
      const past = await ask<BytesReply>(vm, { type: 'readHost', hostOffset: 2 ** 50, length: 16 });
      assert.equal(past.data, '');
      const head = await ask<BytesReply>(vm, { type: 'readHost', hostOffset: 0, length: 4 });
      assert.equal(Buffer.from(head.data, 'base64').toString('latin1'), 'QFI\xfb');
    } finally {
      await vm.close();
    }
  });

  it('pages large tables: a 1 GiB disk with 512-byte clusters has 32768 L1 entries', async () => {
    const img = path.join(dir, 'small-clusters.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', img, '1G');
    qemuIo(img, [`write -P 0x77 ${1024 * 1024 * 1024 - 512} 512`]);
    const vm = await ViewModel.open(img);
    try {
      const top1 = await ask<TreeChildrenReply>(vm, { type: 'getTreeChildren', nodeId: 'l1:a' });
      assert.equal(top1.children.length, 32768 / TREE_PAGE_SIZE);
      assert.ok(top1.children.every(c => c.kind === 'page'));
      const last = top1.children[top1.children.length - 1];
      const leaves = await ask<TreeChildrenReply>(vm, { type: 'getTreeChildren', nodeId: last.id });
      assert.equal(leaves.children.length, TREE_PAGE_SIZE);
      const l1e = leaves.children[leaves.children.length - 1];
      assert.equal(l1e.label, 'L1[32767]');
      assert.match(l1e.description!, /^→ L2 table at 0x/);
      const l2 = await ask<TreeChildrenReply>(vm, { type: 'getTreeChildren', nodeId: l1e.id });
      assert.equal(l2.children.length, 64);
      assert.match(l2.children[63].description!, /^data at 0x/);
      const host = parseInt(/0x([0-9a-f]+)/.exec(l2.children[63].description!)![1], 16);
      const qmap = qemuMap(img);
      assert.equal(host, qmap.find(e => e.data)!.offset);
      const p = await ask<Extract<ToWebviewMessage, { type: 'nodePath' }>>(vm, { type: 'locateNode', structure: 'L1[32767] → L2[0x3f]' });
      assert.deepEqual(p.path, ['l1:a', 'l1:a|p:32512:32768', 'l1e:a:32767', 'l2e:a:32767:63']);
    } finally {
      await vm.close();
    }
  });

  it('bitmaps: directory, table and data clusters in the map, table entries in the tree', async () => {
    const img = path.join(dir, 'bitmap.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '64M');
    qemuImg('bitmap', '--add', '-g', '65536', img, 'b0');
    qemuIo(img, ['write -P 0x5 0 64k']); // the auto bitmap records the write and is stored on close
    const info = JSON.parse(qemuImg('info', '--output=json', img)) as { 'format-specific': { data: { bitmaps: Array<{ name: string; granularity: number }> } } };
    const vm = await ViewModel.open(img);
    try {
      const { summary } = await ask<Extract<ToWebviewMessage, { type: 'summary' }>>(vm, { type: 'getSummary' });
      assert.deepEqual(summary.bitmaps.map(b => [b.name, b.granularity]), info['format-specific'].data.bitmaps.map(b => [b.name, b.granularity]));
      const kids = await ask<TreeChildrenReply>(vm, { type: 'getTreeChildren', nodeId: 'bm:0' });
      const entry = kids.children.find(c => c.kind === 'bitmapTableEntry')!;
      assert.match(entry.description!, /^data at 0x/);
      const m = await ask<ClusterMapReply>(vm, { type: 'getClusterMap', startCluster: 0, count: 100, zoom: 1 });
      const role = (off: number) => CLUSTER_ROLES[m.cells[Math.floor(off / CS)]];
      assert.equal(role(entry.targetHostOffset!), 'bitmapData');
      assert.equal(role(summary.bitmaps[0].bitmapTableOffset), 'bitmapTable');
      assert.equal(role(summary.bitmaps[0].hostOffset), 'bitmapDirectory');
      const p = await ask<Extract<ToWebviewMessage, { type: 'nodePath' }>>(vm, { type: 'locateNode', hostOffset: entry.targetHostOffset! });
      assert.deepEqual(p.path, ['bitmaps', 'bm:0', 'bme:0:0']);
    } finally {
      await vm.close();
    }
  });

  it('LUKS: encryption fields in the summary and tree, the header in the map, guest reads say "encrypted"', async () => {
    const img = path.join(dir, 'luks.qcow2');
    const secret = ['--object', 'secret,id=sec0,data=lens'];
    qemuImg('create', '-q', '-f', 'qcow2', ...secret, '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', img, '16M');
    execFileSync('qemu-io', [...secret, '--image-opts', '-c', 'write -P 0x71 0 64k', `driver=qcow2,file.filename=${img},encrypt.key-secret=sec0`]);
    const info = JSON.parse(qemuImg('info', '--output=json', img)) as { 'format-specific': { data: { encrypt: { format: string; 'cipher-alg': string } } } };
    const vm = await ViewModel.open(img);
    try {
      const { summary } = await ask<Extract<ToWebviewMessage, { type: 'summary' }>>(vm, { type: 'getSummary' });
      assert.equal(summary.encryption?.format, info['format-specific'].data.encrypt.format);
      assert.deepEqual(summary.encryption?.fields.find(f => f[0] === 'cipher-alg'), ['cipher-alg', info['format-specific'].data.encrypt['cipher-alg']]);
      const enc = await ask<TreeChildrenReply>(vm, { type: 'getTreeChildren', nodeId: 'encryption' });
      assert.ok(enc.children.some(c => c.label === 'cipher-mode'));
      const m = await ask<ClusterMapReply>(vm, { type: 'getClusterMap', startCluster: 0, count: 1000, zoom: 1 });
      const hdr = summary.extensions.find(e => e.typeName === 'full disk encryption')!;
      const cryptoOffset = Number(readBE64(img, hdr.hostOffset + 8)); // the extension's first field
      assert.equal(CLUSTER_ROLES[m.cells[cryptoOffset / CS]], 'crypto');
      const r = await vm.handle({ type: 'readGuest', requestId: 77, guestOffset: 0, length: 16 });
      assert.equal(r?.type, 'error');
      assert.equal((r as { code?: string }).code, 'encrypted');
      const z = await ask<BytesReply>(vm, { type: 'readGuest', guestOffset: 1024 * 1024, length: 16 });
      assert.deepEqual(Buffer.from(z.data, 'base64'), Buffer.alloc(16), 'unallocated ranges read as zero without the key');
    } finally {
      await vm.close();
    }
  });

  it('external data file: entries name the data file, guest bytes come from it', async () => {
    const img = path.join(dir, 'ext.qcow2');
    const data = path.join(dir, 'ext.raw');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${data}`, img, '16M');
    qemuIo(img, ['write -P 0x62 1M 64k']);
    const vm = await ViewModel.open(img);
    try {
      const page = await ask<TreeChildrenReply>(vm, { type: 'getTreeChildren', nodeId: 'l1e:a:0|p:0:256' });
      const e = page.children[16];
      assert.equal(e.description, `data at 0x100000 in ext.raw`);
      assert.equal(e.targetHostOffset, undefined, 'the target is not in the qcow2 file');
      const r = await ask<BytesReply>(vm, { type: 'readGuest', guestOffset: 1024 * 1024, length: 16 });
      assert.deepEqual(Buffer.from(r.data, 'base64'), fs.readFileSync(data).subarray(1024 * 1024, 1024 * 1024 + 16));
      assert.equal(r.sources[0].layerPath, data);
      const m = await ask<ClusterMapReply>(vm, { type: 'getClusterMap', startCluster: 0, count: 100, zoom: 1 });
      assert.ok(!m.cells.some(c => CLUSTER_ROLES[c] === 'data'), 'no guest data clusters in the metadata file');
    } finally {
      await vm.close();
    }
  });

  it('a damaged L1 entry: the entry is flagged, expanding it answers an error naming the structure, the map still builds', async () => {
    const img = path.join(dir, 'damaged.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', img, '64M');
    qemuIo(img, ['write -P 0x9 0 64k']);
    const l1 = Number(readBE64(img, 40));
    const good = readBE64(img, l1);
    const writeBE = (off: number, v: bigint) => { const b = Buffer.alloc(8); b.writeBigUInt64BE(v); pokeBytes(img, off, b); };
    writeBE(l1, good + 0x200n); // L2 table offset no longer cluster-aligned
    const chk = qemuImgStatus('check', img);
    assert.notEqual(chk.status, 0, 'qemu-img check sees the damage');
    const vm = await ViewModel.open(img);
    try {
      const entries = await ask<TreeChildrenReply>(vm, { type: 'getTreeChildren', nodeId: 'l1:a' });
      assert.equal(entries.children[0].severity, 'error');
      const r = await vm.handle({ type: 'getTreeChildren', requestId: 5, nodeId: 'l1e:a:0|p:0:256' });
      assert.equal(r?.type, 'error');
      assert.match((r as { message: string }).message, /L1\[0\] → L2 table at 0x[0-9a-f]+: L2 table offset is not cluster-aligned/);
      assert.equal((r as { structure?: string }).structure, 'L1[0] → L2 table');
      const m = await ask<ClusterMapReply>(vm, { type: 'getClusterMap', startCluster: 0, count: 100, zoom: 1 });
      assert.ok(m.cells.length > 0);
    } finally {
      await vm.close();
    }
  });
});
