/**
 * The guest lens inside a real VS Code extension host: the `qcow2-guest` file system (what
 * readDirectory/readFile give equals the files mkfs.ext4 -d and mcopy put in), a guest file opened
 * as text, Copy Out (the host copy equals the files), and Sparsify (qemu-img check clean, e2fsck -fn
 * clean, every file's bytes unchanged by debugfs, refused on a file system that needs recovery).
 * Guest disks are built with Debian's tools (mkfs.ext4 -d, sfdisk, dd, mkfs.vfat, mcopy, debugfs)
 * and turned into qcow2 by qemu-img convert.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';

const env = { ...process.env, TZ: 'UTC', MTOOLS_SKIP_CHECK: '1' };
const run = (cmd: string, args: string[], input?: string) => execFileSync(cmd, args, { encoding: 'utf8', input, env, stdio: ['pipe', 'pipe', 'pipe'] });
const runBuffer = (cmd: string, args: string[]) => execFileSync(cmd, args, { env, maxBuffer: 64 * 1024 * 1024, stdio: ['pipe', 'pipe', 'pipe'] });
const qemuImg = (...args: string[]) => run('qemu-img', args);
const sha = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');

/** Deterministic bytes that do not compress away. */
function noise(n: number, seed: string): Buffer {
  const out = Buffer.alloc(n);
  let block = crypto.createHash('sha256').update(seed).digest();
  for (let o = 0; o < n; o += 32) { block.copy(out, o); block = crypto.createHash('sha256').update(block).digest(); }
  return out;
}

/** path (from the tree's root, "/etc/fstab") → bytes, for every regular file; folders listed separately. */
interface Tree { files: Map<string, Buffer>; dirs: Set<string>; links: Map<string, string> }

function makeTree(dir: string): Tree {
  const t: Tree = { files: new Map(), dirs: new Set(['/']), links: new Map() };
  const file = (rel: string, data: Buffer | string) => {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), data);
    t.files.set(rel, Buffer.from(data));
    for (let d = path.posix.dirname(rel); d !== '/'; d = path.posix.dirname(d)) t.dirs.add(d);
  };
  file('/etc/fstab', 'UUID=1234-abcd / ext4 errors=remount-ro 0 1\n/dev/vda2 none swap sw 0 0\n');
  file('/etc/hostname', 'guest-vm\n');
  file('/hello.txt', 'hello, guest\n');
  file('/data/big.bin', noise(1536 * 1024 + 77, 'big'));
  file('/data/deep/er/leaf.txt', 'at the bottom\n');
  file('/empty', '');
  return t;
}

const E2E_GUEST = fs.mkdtempSync(path.join(os.tmpdir(), 'qcow2-lens-guest-'));
const EXT_START = 2048; // sectors
const EXT_MB = 24;

interface Built { image: string; tree: Tree; raw: string }

/** An MBR disk with one ext4 partition holding the tree, plus a deleted 4 MiB file (freed blocks still holding data). */
function buildExt(name: string, opts: { needsRecovery?: boolean } = {}): Built {
  const src = path.join(E2E_GUEST, `${name}-src`);
  const tree = makeTree(src);
  fs.symlinkSync('../hello.txt', path.join(src, 'etc', 'hello-link'));
  tree.links.set('/etc/hello-link', '../hello.txt');
  fs.writeFileSync(path.join(src, 'junk.bin'), noise(4 * 1024 * 1024, 'junk'));
  const fsImg = path.join(E2E_GUEST, `${name}.ext4`);
  run('mkfs.ext4', ['-q', '-F', '-d', src, fsImg, `${EXT_MB}M`]);
  run('debugfs', ['-w', '-R', 'rm /junk.bin', fsImg]);
  if (opts.needsRecovery) run('debugfs', ['-w', '-R', 'feature needs_recovery', fsImg]);
  const raw = path.join(E2E_GUEST, `${name}.raw`);
  fs.writeFileSync(raw, '');
  fs.truncateSync(raw, (EXT_MB + 4) * 1024 * 1024);
  run('sfdisk', ['-q', raw], `label: dos\nstart=${EXT_START}, size=${EXT_MB * 2048}, type=83\n`);
  run('dd', [`if=${fsImg}`, `of=${raw}`, 'bs=512', `seek=${EXT_START}`, 'conv=notrunc', 'status=none']);
  const image = path.join(E2E_GUEST, `${name}.qcow2`);
  qemuImg('convert', '-q', '-O', 'qcow2', raw, image);
  return { image, tree, raw };
}

/** A FAT file system filling the whole disk (no partition table: partition 0), filled by mcopy. */
function buildFat(): Built {
  const src = path.join(E2E_GUEST, 'fat-src');
  const tree = makeTree(src);
  const raw = path.join(E2E_GUEST, 'fat.raw');
  fs.rmSync(raw, { force: true });
  run('mkfs.vfat', ['-C', raw, String(16 * 1024)]);
  for (const e of fs.readdirSync(src)) run('mcopy', ['-s', '-i', raw, path.join(src, e), '::']);
  const image = path.join(E2E_GUEST, 'fat.qcow2');
  qemuImg('convert', '-q', '-O', 'qcow2', raw, image);
  return { image, tree, raw };
}

const guest = (image: string, partition?: number, p = '/') =>
  vscode.Uri.from({ scheme: 'qcow2-guest', path: '/' + encodeURIComponent(image) + (partition === undefined ? '/' : `/${partition}${p === '/' ? '/' : p}`) });

/** Walks a guest folder through vscode.workspace.fs, as the Explorer does. */
async function walk(root: vscode.Uri): Promise<{ files: Map<string, string>; dirs: Set<string>; links: Set<string> }> {
  const out = { files: new Map<string, string>(), dirs: new Set<string>(['/']), links: new Set<string>() };
  const visit = async (dir: vscode.Uri, rel: string) => {
    for (const [name, type] of await vscode.workspace.fs.readDirectory(dir)) {
      if (name === 'lost+found') continue;
      const p = rel === '/' ? `/${name}` : `${rel}/${name}`;
      const child = vscode.Uri.joinPath(dir, name);
      if (type & vscode.FileType.SymbolicLink) { out.links.add(p); continue; }
      if (type & vscode.FileType.Directory) { out.dirs.add(p); await visit(child, p); }
      else if (type & vscode.FileType.File) out.files.set(p, sha(await vscode.workspace.fs.readFile(child)));
    }
  };
  await visit(root, '/');
  return out;
}

function assertSameTree(got: Awaited<ReturnType<typeof walk>>, want: Tree, what: string): void {
  assert.deepEqual([...got.dirs].sort(), [...want.dirs].sort(), `${what}: folders`);
  assert.deepEqual([...got.files.keys()].sort(), [...want.files.keys()].sort(), `${what}: files`);
  for (const [p, b] of want.files) assert.equal(got.files.get(p), sha(b), `${what}: ${p}'s bytes`);
}

/** A host folder's files as path → sha256. */
function hostFiles(dir: string, rel = '/', out = new Map<string, string>()): Map<string, string> {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = rel === '/' ? `/${e.name}` : `${rel}/${e.name}`;
    if (e.isDirectory()) hostFiles(path.join(dir, e.name), p, out);
    else if (e.isFile()) out.set(p, sha(fs.readFileSync(path.join(dir, e.name))));
  }
  return out;
}

/** Partition 1 of a qcow2 image as a raw file-system image (qemu-img convert, then dd), for e2fsck and debugfs. */
function extractExt(image: string, out: string): string {
  const raw = out + '.disk';
  qemuImg('convert', '-q', '-O', 'raw', image, raw);
  run('dd', [`if=${raw}`, `of=${out}`, 'bs=512', `skip=${EXT_START}`, `count=${EXT_MB * 2048}`, 'status=none']);
  fs.rmSync(raw);
  return out;
}

suite('Guest files', function () {
  this.timeout(180000);
  let ext: Built, fat: Built;
  suiteSetup(() => {
    ext = buildExt('ext');
    fat = buildFat();
  });
  suiteTeardown(() => fs.rmSync(E2E_GUEST, { recursive: true, force: true }));

  test('readDirectory and readFile of an ext4 partition give the files mkfs.ext4 -d stored', async () => {
    await vscode.extensions.getExtension('qcow2-lens.qcow2-lens')?.activate();
    const root = await vscode.workspace.fs.readDirectory(guest(ext.image));
    assert.deepEqual(root, [['1', vscode.FileType.Directory]], 'the image root lists its one browsable partition');
    assertSameTree(await walk(guest(ext.image, 1)), ext.tree, 'ext4');
    const st = await vscode.workspace.fs.stat(guest(ext.image, 1, '/data/big.bin'));
    assert.equal(st.type, vscode.FileType.File);
    assert.equal(st.size, ext.tree.files.get('/data/big.bin')!.length);
    assert.equal(st.permissions, vscode.FilePermission.Readonly);
    // a symlink is followed inside the guest: it reads as its target
    const link = await vscode.workspace.fs.stat(guest(ext.image, 1, '/etc/hello-link'));
    assert.equal(link.type, vscode.FileType.File | vscode.FileType.SymbolicLink);
    assert.equal(Buffer.from(await vscode.workspace.fs.readFile(guest(ext.image, 1, '/etc/hello-link'))).toString(), 'hello, guest\n');
    await assert.rejects(Promise.resolve(vscode.workspace.fs.stat(guest(ext.image, 1, '/no/such'))), (e: unknown) => e instanceof vscode.FileSystemError && e.code === 'FileNotFound');
    await assert.rejects(Promise.resolve(vscode.workspace.fs.readDirectory(guest(ext.image, 1, '/hello.txt'))), vscode.FileSystemError);
    await assert.rejects(Promise.resolve(vscode.workspace.fs.stat(guest(path.join(E2E_GUEST, 'no-such.qcow2'), 1, '/etc'))), (e: unknown) => e instanceof vscode.FileSystemError && e.code === 'FileNotFound');
    await assert.rejects(Promise.resolve(vscode.workspace.fs.readDirectory(guest(ext.image, 3))), (e: unknown) => e instanceof vscode.FileSystemError && e.code === 'FileNotFound');
  });

  test('an overlay reads through its backing file: the same tree, and a file qemu-io changed in the overlay only', async () => {
    const overlay = path.join(E2E_GUEST, 'overlay.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', ext.image, '-F', 'qcow2', overlay);
    assertSameTree(await walk(guest(overlay, 1)), ext.tree, 'overlay');
    // overwrite /hello.txt's data block in the overlay (its guest offset from debugfs bmap): the overlay reads the new bytes, the base the old
    const p1 = extractExt(ext.image, path.join(E2E_GUEST, 'ext-base.fs'));
    const block = Number(run('debugfs', ['-R', 'bmap /hello.txt 0', p1]).trim());
    const blockSize = Number(/Block size:\s+(\d+)/.exec(run('dumpe2fs', ['-h', p1]))![1]);
    const at = EXT_START * 512 + block * blockSize;
    fs.writeFileSync(path.join(E2E_GUEST, 'hola'), 'HELLO, GUEST\n');
    run('qemu-io', ['-f', 'qcow2', '-c', `write -s ${path.join(E2E_GUEST, 'hola')} ${at} 13`, overlay]);
    assert.equal(Buffer.from(await vscode.workspace.fs.readFile(guest(overlay, 1, '/hello.txt'))).toString(), 'HELLO, GUEST\n');
    assert.equal(Buffer.from(await vscode.workspace.fs.readFile(guest(ext.image, 1, '/hello.txt'))).toString(), 'hello, guest\n');
  });

  test('readDirectory and readFile of a FAT disk without a partition table give the files mcopy stored', async () => {
    assert.deepEqual(await vscode.workspace.fs.readDirectory(guest(fat.image)), [['0', vscode.FileType.Directory]]);
    assertSameTree(await walk(guest(fat.image, 0)), fat.tree, 'FAT');
  });

  test('a guest file opens as text in an ordinary tab, read-only', async () => {
    const uri = guest(ext.image, 1, '/etc/fstab');
    const doc = await vscode.workspace.openTextDocument(uri);
    await vscode.window.showTextDocument(doc);
    assert.equal(doc.getText(), ext.tree.files.get('/etc/fstab')!.toString());
    assert.equal(vscode.window.activeTextEditor?.document.uri.toString(), uri.toString());
    // every write is refused: the file system is registered read-only and writeFile says NoPermissions
    await assert.rejects(Promise.resolve(vscode.workspace.fs.writeFile(uri, Buffer.from('x'))), vscode.FileSystemError);
    await assert.rejects(Promise.resolve(vscode.workspace.fs.delete(uri)), vscode.FileSystemError);
    assert.equal((await vscode.workspace.fs.readFile(uri)).length, ext.tree.files.get('/etc/fstab')!.length);
    await vscode.commands.executeCommand('workbench.action.closeActiveEditor');
  });

  test('Open Guest File (the structure tree\'s action) opens the guest file in a tab', async () => {
    const r = await vscode.commands.executeCommand<string>('qcow2Lens.openGuestFile', vscode.Uri.file(ext.image), { partition: 1, path: '/etc/hostname' });
    assert.equal(r, guest(ext.image, 1, '/etc/hostname').toString());
    assert.equal(vscode.window.activeTextEditor?.document.getText(), 'guest-vm\n');
    await vscode.commands.executeCommand('workbench.action.closeActiveEditor');
  });

  test('Copy Out copies a guest folder and a file to the host, equal to the source, and refuses to overwrite unasked', async () => {
    const dest = fs.mkdtempSync(path.join(E2E_GUEST, 'out-'));
    const r = await vscode.commands.executeCommand<{ target: string; files: number; bytes: number }>('qcow2Lens.copyOutGuest', guest(ext.image, 1, '/data'), { dest });
    assert.equal(r.target, path.join(dest, 'data'));
    const want = new Map([...ext.tree.files].filter(([p]) => p.startsWith('/data/')).map(([p, b]) => [p.slice('/data'.length), sha(b)]));
    assert.deepEqual(hostFiles(r.target), want);
    assert.equal(r.files, want.size);
    // the whole FAT disk, by "[PARTITION:]PATH" on the image
    const all = await vscode.commands.executeCommand<{ target: string }>('qcow2Lens.copyOutGuest', vscode.Uri.file(fat.image), { source: '0:/', dest });
    assert.deepEqual(hostFiles(all.target), new Map([...fat.tree.files].map(([p, b]) => [p, sha(b)])));
    // again: the entry exists; overwrite: false refuses and leaves it as it was
    fs.writeFileSync(path.join(r.target, 'mine.txt'), 'not from the guest');
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.copyOutGuest', guest(ext.image, 1, '/data'), { dest, overwrite: false })), /already exists/);
    assert.equal(fs.readFileSync(path.join(r.target, 'mine.txt'), 'utf8'), 'not from the guest');
    // overwrite: true (the modal's "Replace") replaces it with the guest's folder
    await vscode.commands.executeCommand('qcow2Lens.copyOutGuest', guest(ext.image, 1, '/data'), { dest, overwrite: true });
    assert.deepEqual(hostFiles(r.target), want);
    const one = await vscode.commands.executeCommand<{ target: string }>('qcow2Lens.copyOutGuest', guest(ext.image, 1, '/etc/fstab'), { dest });
    assert.equal(fs.readFileSync(one.target, 'utf8'), ext.tree.files.get('/etc/fstab')!.toString());
    assert.deepEqual(fs.readdirSync(dest).filter(n => n.includes('qcow2-lens')), [], 'no temporary folder is left behind');
  });

  test('Sparsify reclaims the deleted file\'s clusters as forecast; qemu-img check and e2fsck -fn stay clean and every file reads the same', async () => {
    const before = fs.statSync(ext.image).size;
    // read once so the provider holds the image open: the in-place rewrite must make it reopen
    assert.equal((await vscode.workspace.fs.stat(guest(ext.image, 1, '/hello.txt'))).size, 13);
    const r = await vscode.commands.executeCommand<{ output: string; sizeBefore: number; sizeAfter: number; forecast: number; droppedClusters: number }>(
      'qcow2Lens.sparsifyImage', vscode.Uri.file(ext.image), { inPlace: true, confirm: false });
    assert.equal(r.output, ext.image);
    assert.equal(r.sizeBefore, before);
    assert.ok(r.forecast >= 4 * 1024 * 1024 * 0.9, `the forecast counts the deleted 4 MiB file (${r.forecast})`);
    assert.ok(r.droppedClusters > 0);
    const saved = r.sizeBefore - r.sizeAfter;
    assert.ok(Math.abs(saved - r.forecast) <= 2 * 65536, `reclaimed ${saved} bytes, forecast ${r.forecast}`);
    qemuImg('check', ext.image);
    const p1 = extractExt(ext.image, path.join(E2E_GUEST, 'ext-after.fs'));
    run('e2fsck', ['-fn', p1]);
    for (const [p, b] of ext.tree.files) assert.equal(sha(runBuffer('debugfs', ['-R', `cat ${p}`, p1])), sha(b), `${p} after sparsify (debugfs)`);
    assertSameTree(await walk(guest(ext.image, 1)), ext.tree, 'ext4 after sparsify (the provider reopened the image)');
  });

  test('Sparsify is refused with a clear message on a file system that needs journal recovery, and writes nothing', async () => {
    const dirty = buildExt('dirty', { needsRecovery: true });
    const bytes = sha(fs.readFileSync(dirty.image));
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.sparsifyImage', vscode.Uri.file(dirty.image), { inPlace: true, confirm: false })),
      /refused: partition 1 \(ext4\): the journal needs recovery/);
    assert.equal(sha(fs.readFileSync(dirty.image)), bytes, 'the image is unchanged');
  });

  test('Sparsify of a LUKS image: refused while locked; unlocked, measured and sparsified with the session key, the output still encrypted', async () => {
    const b = buildExt('luks');
    const pass = 'lens-sparsify-e2e passphrase';
    const secret = ['--object', `secret,id=s0,data=${pass}`];
    const enc = path.join(E2E_GUEST, 'luks-enc.qcow2');
    qemuImg('convert', '-q', ...secret, '-O', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10', b.raw, enc);
    const uri = vscode.Uri.file(enc);
    const out = path.join(E2E_GUEST, 'luks-sparse.qcow2');
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.sparsifyImage', uri, { output: out, confirm: false })), /encrypted and locked: unlock it/);
    assert.ok(!fs.existsSync(out), 'nothing written while locked');
    assert.equal(await vscode.commands.executeCommand('qcow2Lens.unlockImage', uri, { passphrase: pass, remember: false }), true);
    try {
      const r = await vscode.commands.executeCommand<{ sizeBefore: number; sizeAfter: number; forecast: number; forecastCompact: number; droppedClusters: number }>(
        'qcow2Lens.sparsifyImage', uri, { output: out, confirm: false });
      assert.ok(r.forecast >= 4 * 1024 * 1024 * 0.9, `the forecast reads the guest through the key and counts the deleted 4 MiB file (${r.forecast})`);
      assert.ok(r.droppedClusters > 0);
      const saved = r.sizeBefore - r.sizeAfter;
      assert.ok(Math.abs(saved - r.forecast) <= 2 * 65536, `reclaimed ${saved} bytes, forecast ${r.forecast}`);
      const opts = `driver=qcow2,file.filename=${out},encrypt.key-secret=s0`;
      assert.equal((JSON.parse(qemuImg('info', '--output=json', out)) as { encrypted?: boolean }).encrypted, true);
      assert.match(qemuImg('check', ...secret, '--image-opts', opts), /No errors were found/);
      const disk = path.join(E2E_GUEST, 'luks-after.disk'), p1 = path.join(E2E_GUEST, 'luks-after.fs');
      qemuImg('convert', '-q', ...secret, '--image-opts', opts, '-O', 'raw', disk);
      run('dd', [`if=${disk}`, `of=${p1}`, 'bs=512', `skip=${EXT_START}`, `count=${EXT_MB * 2048}`, 'status=none']);
      run('e2fsck', ['-fn', p1]);
      for (const [f, data] of b.tree.files) assert.equal(sha(runBuffer('debugfs', ['-R', `cat ${f}`, p1])), sha(data), `${f} after sparsify (debugfs)`);
    } finally {
      await vscode.commands.executeCommand('qcow2Lens.lockImage', uri);
    }
  });

  test('Browse Guest Files refuses an image without a browsable file system, naming what it found', async () => {
    const blank = path.join(E2E_GUEST, 'blank.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', blank, '8M');
    await assert.rejects(Promise.resolve(vscode.commands.executeCommand('qcow2Lens.browseGuestFiles', vscode.Uri.file(blank), { via: 'pick' })), /no file system QCOW2 Lens can browse/);
  });
});
