/**
 * `qemu-img create`: a new qcow2 (or raw) image laid out exactly as QEMU 7.2's qcow2_co_create
 * lays it out — header cluster, refcount table, one refcount block, then qcow2_co_truncate to the
 * size with the preallocation asked for (clusters.ts), the backing file recorded last — so the
 * file is byte for byte qemu-img's.
 *
 * Crash safety: the image is written to a temporary file beside the destination, synced, renamed
 * over it, and the folder synced; a crash or a cancellation leaves no half-written image (the
 * temporary file is removed on failure). An external data file is created the same way.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { resolveBackingPath } from '../../image/backing';
import * as L from '../../qcow2/layout';
import { OptionError, type Preallocation, type Qcow2CreateOptions } from '../options';
import { assertNotLocked } from '../writable';
import { ClusterModel, growFile } from './clusters';
import { FileDisk, TempOutput } from './disk';
import { encodeHeader, type HeaderImage } from './header';
import { RefAlloc, type Disk } from './refalloc';
import type { CipherAlgorithm, CipherMode, HashAlgorithm, IvGenAlgorithm } from '../../crypto/algorithms';
import { type DataCipher, luksDataCipher } from '../../crypto/dataCipher';
import { createLuks } from '../../crypto/luksCreate';
import type { Secret } from '../../crypto/secret';

export interface CreateRequest extends Qcow2CreateOptions {
  /** -u: do not open the backing file (its size then must be given). */
  unsafe?: boolean;
  signal?: AbortSignal;
  /** With `encrypt`: the passphrase `encrypt.key-secret` names (resolved by the caller; wiped by it). */
  encryptSecret?: Secret;
  /** The image's name in messages (the destination, not the temporary file written). */
  name?: string;
  /** Test hook: fixed PBKDF2 iteration counts instead of QEMU's timing (iter-time). */
  encryptIterations?: { slot: number; masterKey: number };
}

/**
 * Step 6 of qcow2_co_create, qcow2_set_up_encryption: a new LUKS area (luksCreate.ts) in newly
 * allocated clusters after everything else (zeroed whole, then the area written), crypt_method
 * 2 and the full disk encryption extension in the header. Returns the data cipher.
 */
async function setUpEncryption(disk: Disk, rc: RefAlloc, h: HeaderImage, req: CreateRequest): Promise<DataCipher> {
  const e = req.encrypt!;
  if (!req.encryptSecret) throw new OptionError(`No secret with id '${e.keySecret}'`);
  const name = req.name ?? disk.path;
  const created = await createLuks(name, req.encryptSecret, {
    cipherAlg: e.cipherAlg as CipherAlgorithm | undefined, cipherMode: e.cipherMode as CipherMode | undefined,
    ivgenAlg: e.ivgenAlg as IvGenAlgorithm | undefined, ivgenHashAlg: e.ivgenHashAlg as HashAlgorithm | undefined,
    hashAlg: e.hashAlg as HashAlgorithm | undefined, iterTimeMs: e.iterTime,
    slotIterations: req.encryptIterations?.slot, masterKeyIterations: req.encryptIterations?.masterKey, signal: req.signal,
  });
  try {
    const cs = rc.cs;
    const clusterLen = Math.ceil(created.area.length / cs) * cs;
    const off = await rc.allocClusters(clusterLen);
    await disk.writeZeroes(off, clusterLen, 'encryption header');
    await disk.write(off, created.area, 'encryption header');
    h.cryptMethod = L.CRYPT_LUKS;
    h.crypto = { offset: off, length: created.area.length };
    await disk.write(0, encodeHeader(h), 'header');
    return luksDataCipher({ file: name, offset: off }, created.header, created.masterKey, 'qcow2');
  } finally {
    created.masterKey.wipe();
  }
}

/** The virtual size of a backing file (qcow2 header, else the file's length for raw), in bytes. */
export async function backingSize(overlay: string, backing: string, fmt: string | undefined): Promise<number> {
  const p = resolveBackingPath(overlay, backing);
  let fd: number;
  try {
    fd = fs.openSync(p, 'r');
  } catch (e) {
    throw new OptionError(`Could not open '${p}': ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'No such file or directory' : String((e as Error).message)}\nCould not open backing image.`);
  }
  try {
    const head = Buffer.alloc(32);
    fs.readSync(fd, head, 0, 32, 0);
    const isQcow2 = head.readUInt32BE(0) === L.QCOW_MAGIC;
    if ((fmt ?? (isQcow2 ? 'qcow2' : 'raw')) === 'qcow2') {
      if (!isQcow2) throw new OptionError(`Could not open backing image: '${p}' is not a qcow2 image`);
      return Number(head.readBigUInt64BE(24));
    }
    if (fmt !== undefined && fmt !== 'raw') {
      const { openForeign } = await import('../../formats');
      const layer = await openForeign(p, fmt as 'vpc' | 'vmdk');
      try { return layer.virtualSize; } finally { await layer.close(); }
    }
    return Math.ceil(fs.fstatSync(fd).size / 512) * 512;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Steps 1–5 of qcow2_co_create on an empty `disk` (header, refcount table and block, the size
 * with its preallocation, the backing file), caches written; returns the allocator model, so a
 * caller (convert) can go on writing guest data into the new image before it is committed.
 */
export async function formatQcow2(disk: Disk, req: CreateRequest, size: number, dataDisk?: Disk): Promise<ClusterModel> {
  const cs = req.clusterSize, bits = Math.log2(cs);
  const order = Math.log2(req.refcountBits);
  const h: HeaderImage = {
    version: req.version, clusterBits: bits, size: 0, l1Size: 0, l1Offset: 0, reftableOffset: cs, reftableClusters: 1,
    incompatible: 0n, compatible: 0n, autoclear: 0n, refcountOrder: order, compressionType: req.compressionType === 'zstd' ? L.COMPRESSION_ZSTD : L.COMPRESSION_ZLIB,
  };
  if (req.lazyRefcounts) h.compatible |= L.COMPAT_LAZY_REFCOUNTS;
  if (dataDisk) h.incompatible |= L.INCOMPAT_DATA_FILE;
  if (req.dataFileRaw) h.autoclear |= L.AUTOCLEAR_DATA_FILE_RAW;
  if (req.compressionType !== 'zlib') h.incompatible |= L.INCOMPAT_COMPRESSION;
  if (req.extendedL2) h.incompatible |= L.INCOMPAT_EXTL2;
  // 1. the header cluster; 2. a refcount table whose one block (cluster 2) is still empty
  await disk.write(0, encodeHeader(h), 'header');
  const rt = Buffer.alloc(2 * cs);
  rt.writeBigUInt64BE(BigInt(2 * cs), 0);
  await disk.write(cs, rt, 'refcount table');
  // 3. opened: the three clusters counted, the full header written
  const rc = new RefAlloc(disk, { clusterBits: bits, refcountOrder: order, reftable: Float64Array.from({ length: cs / 8 }, (_, i) => (i === 0 ? 2 * cs : 0)), reftableOffset: cs, counts: new Float64Array(64) });
  await rc.allocClusters(3 * cs);
  if (dataDisk) h.dataFile = req.dataFile;
  await disk.write(0, encodeHeader(h), 'header');
  // 4. the size, with its preallocation
  const m = new ClusterModel(disk, rc, { size: 0, l1Offset: 0, l1Size: 0, l1: Buffer.alloc(0), extendedL2: req.extendedL2, dataDisk, dataFileRaw: req.dataFileRaw });
  await m.truncate(size, req.preallocation);
  h.size = size;
  h.l1Size = m.l1Size;
  h.l1Offset = m.l1Offset;
  h.reftableOffset = rc.reftableOffset;
  h.reftableClusters = (rc.reftableSize * 8) / cs;
  // 5. the backing file
  if (req.backingFile !== undefined) {
    h.backingFile = req.backingFile;
    h.backingFormat = req.backingFmt;
    await disk.write(0, encodeHeader(h), 'header');
  }
  // 6. encryption
  if (req.encrypt) m.cipher = await setUpEncryption(disk, rc, h, req);
  await m.writeCaches();
  return m;
}

/** Creates a qcow2 image at `dest` (replacing any file there, as qemu-img does). */
export async function createQcow2(dest: string, req: CreateRequest): Promise<{ size: number }> {
  if (fs.existsSync(dest)) assertNotLocked(dest);
  let size = req.size;
  if (req.backingFile !== undefined && !req.unsafe) {
    const bs = await backingSize(dest, req.backingFile, req.backingFmt);
    if (size === undefined) size = bs;
  }
  if (size === undefined) throw new OptionError('Image creation needs a size parameter');
  size = Math.ceil(size / 512) * 512;
  const out = new TempOutput(dest);
  const dataOut = req.dataFile !== undefined ? new TempOutput(path.resolve(req.dataFile)) : undefined;
  const disk = FileDisk.open(out.tmp, 'w', req.signal);
  const dataDisk = dataOut ? FileDisk.open(dataOut.tmp, 'w', req.signal) : undefined;
  try {
    const m = await formatQcow2(disk, { name: dest, ...req }, size, dataDisk);
    m.cipher?.dispose();
    disk.finish();
    disk.close();
    if (dataDisk) { dataDisk.finish(); dataDisk.close(); dataOut!.commit(); }
    out.commit();
    return { size };
  } catch (e) {
    try { disk.close(); } catch { /* already closed */ }
    try { dataDisk?.close(); } catch { /* already closed */ }
    out.discard();
    dataOut?.discard();
    throw e;
  }
}

/** `qemu-img create -f raw`: a file of the size (rounded up to 512), preallocated as asked. */
export async function createRaw(dest: string, size: number | undefined, prealloc: Preallocation, signal?: AbortSignal): Promise<{ size: number }> {
  if (size === undefined) throw new OptionError('Image creation needs a size parameter');
  if (fs.existsSync(dest)) assertNotLocked(dest);
  size = Math.ceil(size / 512) * 512;
  const out = new TempOutput(dest);
  const disk = FileDisk.open(out.tmp, 'w', signal);
  try {
    if (prealloc === 'off' || prealloc === 'metadata') await growFile(disk, size);
    else {
      await disk.writeZeroes(0, size, 'data');
      if (prealloc === 'falloc' && size > 0) await disk.write(0, Buffer.alloc(size < 4096 ? 512 : 4096), 'first block');
    }
    disk.finish();
    disk.close();
    out.commit();
    return { size };
  } catch (e) {
    try { disk.close(); } catch { /* already closed */ }
    out.discard();
    throw e;
  }
}
