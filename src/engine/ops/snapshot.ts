/**
 * Internal snapshot operations: create / apply / delete, as `qemu-img snapshot -c / -a / -d` (QEMU 7.2,
 * block/qcow2-snapshot.c), and the listing `-l`.
 *
 * Write order (each step synced before the next; a crash between any two writes leaves an image
 * whose only refcount problems are leaks — see the note on COPIED flags below):
 *  create: 1. the snapshot's copy of the active L1 table, in new clusters
 *          2. refcounts +1 for every L2 table and data cluster the active L1 reaches (and for the
 *             new L1 copy and the new snapshot table)                    — refcount blocks first
 *          3. active L2 tables and L1 table with COPIED cleared where a cluster is now shared
 *          4. the new snapshot table (old entries + the new one), in new clusters
 *          5. the header's nb_snapshots + snapshots_offset (one 12-byte write): the switch
 *          6. the old snapshot table's clusters freed
 *  apply:  1. refcounts +1 for everything the snapshot's L1 reaches; its L2 tables' COPIED flags
 *          2. the snapshot's L1 copied into new clusters as the future active L1
 *          3. the header's size + l1_size + l1_table_offset (one 24-byte write): the switch
 *          4. refcounts -1 for everything the old active L1 reached, old L1 clusters freed
 *          5. COPIED flags of the new active L1/L2 recomputed
 *  delete: 1. the snapshot table without the entry, in new clusters; header switch
 *          2. refcounts -1 for everything the deleted snapshot's L1 reached; its L1 freed
 *          3. COPIED flags of the active L1/L2 recomputed; the old table's clusters freed
 * QEMU writes the active L1 in place on apply; we write it to new clusters so the size and the L1
 * change in one header write. Between a refcount step and the COPIED step that follows it,
 * `qemu-img check` reports OFLAG_COPIED mismatches (a flag and a refcount live in different
 * clusters, so no order avoids this — QEMU has the same window); `qemu-img check -r all` repairs
 * them and no guest data is at risk.
 */
import { throwIfCancelled } from '../cancel';
import { compressedLength, compressedOffset, entryOffset, isCompressed, l1EntryOffset, l2Geometry, withCopied } from '../qcow2/cluster';
import { Qcow2Error } from '../errors';
import { headerPath } from '../qcow2/header';
import { Qcow2Image } from '../image/image';
import { readMany } from '../io/reader';
import * as L from '../qcow2/layout';
import { encodeHeaderRun, HEADER_FIELD } from '../qcow2/layout';
import { encodeSnapshot, Snapshot, SnapshotInfo, snapshotInfo } from '../qcow2/snapshot';
import { RefcountWriter, writeAt } from './refcountWrite';
import { assertNotLocked, assertWritable } from './writable';

export interface SnapshotOpOptions {
  signal?: AbortSignal;
  onProgress?(done: number, total: number): void;
}

async function openImage(path: string, writable: boolean): Promise<Qcow2Image> {
  if (writable) assertNotLocked(path);
  return Qcow2Image.open(path, { writable, openBacking: false });
}

export async function listSnapshots(path: string): Promise<SnapshotInfo[]> {
  const img = await openImage(path, false);
  try {
    return img.snapshots.map(snapshotInfo);
  } finally {
    await img.close();
  }
}

/** QEMU's lookup for goto: by id first, then by name (first match in table order). */
function findSnapshot(img: Qcow2Image, nameOrId: string, mode: 'id-or-name' | 'name'): Snapshot {
  const byId = mode === 'id-or-name' ? img.snapshots.find(s => s.id === nameOrId) : undefined;
  const sn = byId ?? img.snapshots.find(s => s.name === nameOrId);
  if (!sn) throw new Qcow2Error(img.path, 'snapshot table', img.header.snapshotsOffset || undefined, `snapshot "${nameOrId}" not found`, 'not-found');
  return sn;
}

/** The state one snapshot operation works with: the image, its refcounts, and L2 tables. */
class SnapshotSession {
  readonly rc: RefcountWriter;
  readonly cs: number;
  private progressDone = 0;
  progressTotal = 0;
  /** Once the first write has happened, cancellation is no longer honoured. */
  committed = false;

  private constructor(readonly img: Qcow2Image, rc: RefcountWriter, private opts: SnapshotOpOptions) {
    this.rc = rc;
    this.cs = img.clusterSize;
  }

  static async open(path: string, opts: SnapshotOpOptions): Promise<SnapshotSession> {
    const img = await openImage(path, true);
    try {
      assertWritable(img, []);
      if (img.dataFile || (img.header.incompatibleFeatures & L.INCOMPAT_DATA_FILE) !== 0n) {
        throw new Qcow2Error(path, headerPath('incompatible_features'), HEADER_FIELD.incompatible_features.offset, 'images with an external data file cannot have internal snapshots (QEMU refuses them too)', 'unsupported');
      }
      const h = img.header;
      const rc = await RefcountWriter.load({ file: img.file, clusterBits: h.clusterBits, refcountOrder: h.refcountOrder, tableOffset: h.refcountTableOffset, tableClusters: h.refcountTableClusters, table: img.refcountTable });
      return new SnapshotSession(img, rc, opts);
    } catch (e) {
      await img.close();
      throw e;
    }
  }

  checkCancel(): void {
    if (!this.committed) throwIfCancelled(this.opts.signal, this.img.path, 'snapshot');
  }

  progress(n: number): void {
    this.progressDone += n;
    this.opts.onProgress?.(Math.min(this.progressDone, this.progressTotal), this.progressTotal);
  }

  async write(hostOffset: number, data: Uint8Array, structure: string): Promise<void> {
    this.checkCancel();
    this.committed = true;
    await writeAt(this.img.file, hostOffset, data, structure);
  }

  async sync(): Promise<void> {
    await this.img.file.sync();
  }

  async flushRefcounts(): Promise<void> {
    if (this.rc.dirty) {
      this.checkCancel();
      this.committed = true;
      await this.rc.flush();
    }
  }

  /** Raises the refcount of every cluster the first `count` entries of `l1` reach by addend... see QEMU's qcow2_update_snapshot_refcount. */
  async pass(l1: Buffer, addend: -1 | 0 | 1, label: string, opts: { writeL1At?: number; dryRun?: boolean } = {}): Promise<boolean> {
    const img = this.img;
    const g = l2Geometry(img.header.clusterBits, img.header.extendedL2);
    const cs = this.cs;
    const n = l1.length / 8;
    const WINDOW = 256;
    let l1Changed = false;
    for (let w = 0; w < n; w += WINDOW) {
      this.checkCancel();
      const end = Math.min(n, w + WINDOW);
      const offs: number[] = [];
      for (let i = w; i < end; i++) {
        const o = l1EntryOffset(l1, i);
        if (o === 0) continue;
        img.checkL2Offset(o, i, label);
        offs.push(o);
      }
      const tables = await readMany(img.file, offs, cs, o => `${label} → L2 table at 0x${o.toString(16)}`);
      const dirty = new Map<number, Buffer>();
      for (let i = w; i < end; i++) {
        const l1Hi = l1.readUInt32BE(i * 8);
        const l2Offset = l1EntryOffset(l1, i);
        if (l2Offset === 0) continue;
        const l2 = dirty.get(l2Offset) ?? Buffer.from(tables.get(l2Offset)!);
        let l2Changed = false;
        for (let j = 0; j < g.l2Size; j++) {
          const p = j * g.l2EntrySize;
          const hi = l2.readUInt32BE(p), lo = l2.readUInt32BE(p + 4);
          let refcount = 0;
          if (isCompressed(hi)) {
            if (addend !== 0) this.rc.addRange(compressedOffset(g, hi, lo), compressedLength(g, hi, lo), addend, `${label}[${i}] → L2[${j}] → compressed data`);
            refcount = 2; // compressed clusters are never written in place: no COPIED flag
          } else {
            const host = entryOffset(hi, lo);
            if (host !== 0) {
              if (host % cs !== 0) throw new Qcow2Error(img.path, `${label}[${i}] → L2[${j}]`, l2Offset + p, `data cluster offset 0x${host.toString(16)} is not cluster-aligned`);
              const ci = host / cs;
              refcount = addend !== 0 ? this.rc.add(ci, addend, `${label}[${i}] → L2[${j}] → data`) : this.rc.get(ci);
            }
          }
          const nhi = withCopied(hi, refcount === 1);
          if (nhi !== hi) { l2.writeUInt32BE(nhi, p); l2Changed = true; }
        }
        const ci = l2Offset / cs;
        const l2rc = addend !== 0 ? this.rc.add(ci, addend, `${label}[${i}] → L2 table`) : this.rc.get(ci);
        if (l2Changed && l2rc > 0) dirty.set(l2Offset, l2);
        const l1HiNew = withCopied(l1Hi, l2rc === 1);
        if (l1HiNew !== l1Hi) { l1.writeUInt32BE(l1HiNew, i * 8); l1Changed = true; }
      }
      if (opts.dryRun) continue;
      // refcounts before the tables whose flags depend on them
      await this.flushRefcounts();
      for (const [off, t] of [...dirty].sort((a, b) => a[0] - b[0])) await this.write(off, t, `${label} → L2 table`);
      if (dirty.size) await this.sync();
      this.progress(end - w);
    }
    if (l1Changed && opts.writeL1At !== undefined && !opts.dryRun) {
      await this.flushRefcounts();
      await this.write(opts.writeL1At, l1, `${label} table`);
      await this.sync();
    }
    return l1Changed;
  }

  /** Writes a new snapshot table and switches the header to it; frees the old table's clusters. */
  async writeTable(entries: Snapshot[]): Promise<void> {
    const img = this.img;
    const bufs = entries.map(encodeSnapshot);
    const size = bufs.reduce((a, b) => a + b.length, 0);
    if (size > L.QCOW_MAX_SNAPSHOTS_SIZE) throw new Qcow2Error(img.path, 'snapshot table', undefined, `would exceed QEMU's ${L.QCOW_MAX_SNAPSHOTS_SIZE}-byte limit`, 'unsupported');
    let offset = 0;
    if (entries.length) {
      offset = this.rc.allocate(Math.ceil(size / this.cs), 'snapshot table');
      await this.flushRefcounts();
      await this.write(offset, Buffer.concat(bufs), 'snapshot table');
      await this.sync();
    }
    const sw = encodeHeaderRun([['nb_snapshots', entries.length], ['snapshots_offset', offset]]);
    await this.write(sw.offset, sw.bytes, headerPath('nb_snapshots'));
    await this.sync();
    const h = img.header;
    if (h.nbSnapshots > 0 && h.snapshotsOffset > 0) {
      const oldSize = img.snapshots.reduce((a, s) => a + s.entrySize, 0);
      this.rc.free(h.snapshotsOffset, oldSize, 'old snapshot table');
    }
    h.nbSnapshots = entries.length;
    h.snapshotsOffset = offset;
  }

  async close(): Promise<void> {
    this.img.invalidateCaches();
    await this.img.close();
  }
}

function l1Clusters(l1Size: number, cs: number): number {
  return Math.max(1, Math.ceil((l1Size * 8) / cs));
}

/** `qemu-img snapshot -c NAME`: a new internal snapshot of the current disk state. */
export async function createSnapshot(path: string, name: string, opts: SnapshotOpOptions = {}): Promise<SnapshotInfo> {
  if (Buffer.byteLength(name, 'utf8') > 0xffff) throw new Qcow2Error(path, 'snapshot name', undefined, 'name is longer than 65535 bytes', 'unsupported');
  const s = await SnapshotSession.open(path, opts);
  try {
    const img = s.img, h = img.header, cs = s.cs;
    if (img.snapshots.length >= L.QCOW_MAX_SNAPSHOTS) throw new Qcow2Error(path, headerPath('nb_snapshots'), HEADER_FIELD.nb_snapshots.offset, `the image already has ${L.QCOW_MAX_SNAPSHOTS} snapshots, QEMU's limit`, 'unsupported');
    let maxId = 0;
    for (const sn of img.snapshots) { const v = parseInt(sn.id, 10); if (Number.isFinite(v) && v > maxId) maxId = v; }
    const id = String(maxId + 1);
    const l1Size = h.l1Size;
    const l1Copy = Buffer.from(img.l1);
    s.progressTotal = l1Size + 2;
    // A dry run over the counts first: overflow (1-bit refcounts, say) is refused before any write.
    // A snapshot adds to each cluster at most the references the active L1 holds, never more than
    // its refcount now: the dry run is not needed when twice the largest refcount fits. (Counting
    // tables instead missed compressed clusters packed into one host cluster: a refused create
    // left its L1 copy leaked.)
    let maxNow = 0;
    for (let c = 0, n = s.rc.endOffset / cs; c < n; c++) { const v = s.rc.get(c); if (v > maxNow) maxNow = v; }
    if (2 * maxNow > s.rc.max) {
      const probe = Buffer.from(img.l1);
      await s.pass(probe, 1, 'L1', { dryRun: true });
      await s.close().catch(() => undefined);
    }
    // the dry run changed the in-memory counts: start again from the file
    const s2 = await SnapshotSession.open(path, opts);
    try {
      const l1Offset = l1Size > 0 ? s2.rc.allocate(l1Clusters(l1Size, cs), 'snapshot L1 table') : 0;
      await s2.flushRefcounts();
      if (l1Size > 0) await s2.write(l1Offset, l1Copy, 'snapshot L1 table');
      await s2.sync();
      s2.progress(1);
      await s2.pass(s2.img.l1, 1, 'L1', { writeL1At: h.l1TableOffset });
      const now = Date.now() * 1000 + Math.floor((performance.now() % 1) * 1000);
      const extra = Buffer.alloc(24);
      const sn: Snapshot = {
        index: img.snapshots.length, hostOffset: 0, entrySize: 0, l1TableOffset: l1Offset, l1Size, id, name,
        dateSec: Math.floor(now / 1e6), dateNsec: (now % 1e6) * 1000, vmClockNsec: 0n, vmStateSize: 0,
        extraDataSize: 24, vmStateSizeLarge: 0n, diskSize: BigInt(h.size), icount: 0n, extraData: extra,
      };
      await s2.writeTable([...s2.img.snapshots, sn]);
      await s2.flushRefcounts();
      s2.progress(1);
      return snapshotInfo(sn);
    } finally {
      await s2.close();
    }
  } finally {
    await s.close().catch(() => undefined);
  }
}

/**
 * `qemu-img snapshot -a NAME` (id first, then name): the disk reverts to the snapshot.
 * `match: 'name'` matches names only (the editor picks by name; a name such as "1" must not
 * select the snapshot whose id is 1).
 */
export async function applySnapshot(path: string, nameOrId: string, opts: SnapshotOpOptions & { match?: 'name' | 'id-or-name' } = {}): Promise<SnapshotInfo> {
  const s = await SnapshotSession.open(path, opts);
  try {
    const img = s.img, h = img.header, cs = s.cs;
    const sn = findSnapshot(img, nameOrId, opts.match ?? 'id-or-name');
    const g = img.g;
    // qemu-img refuses too ("Device has active dirty bitmaps"), enabled or not: the revert changes
    // guest data the bitmaps do not record, so an incremental backup from them would miss it
    if (img.bitmaps.length) throw new Qcow2Error(path, 'bitmap directory', img.header.bitmaps?.bitmapDirectoryOffset, `the image has persistent bitmaps (${img.bitmaps.map(b => b.name).join(', ')}); remove them before reverting to a snapshot`, 'unsupported');
    const diskSize = sn.diskSize === undefined ? h.size : Number(sn.diskSize);
    if (diskSize !== h.size) {
      if (h.version < 3) throw new Qcow2Error(path, headerPath('size'), HEADER_FIELD.size.offset, `the snapshot's disk size (${diskSize}) differs and a version 2 image with snapshots cannot be resized (QEMU refuses too)`, 'unsupported');
    }
    const need = Math.ceil(diskSize / (g.clusterSize * g.l2Size));
    const newL1Size = Math.max(h.l1Size, sn.l1Size, need);
    if (newL1Size > L.QCOW_MAX_L1_SIZE / 8) throw new Qcow2Error(path, headerPath('l1_size'), HEADER_FIELD.l1_size.offset, 'L1 table would exceed QEMU\'s limit', 'unsupported');
    const snL1 = sn.l1Size > 0 ? await img.file.read(sn.l1TableOffset, sn.l1Size * 8, `snapshot "${sn.name}" L1 table`) : Buffer.alloc(0);
    s.progressTotal = sn.l1Size + 2 * newL1Size + h.l1Size;
    // overflow is refused before any write (step 1 flushes window by window): a dry run on a
    // separate session when twice the largest refcount does not fit (see createSnapshot)
    let maxNow = 0;
    for (let c = 0, n = s.rc.endOffset / cs; c < n; c++) { const v = s.rc.get(c); if (v > maxNow) maxNow = v; }
    if (2 * maxNow > s.rc.max) {
      const probe = await SnapshotSession.open(path, opts);
      try {
        await probe.pass(Buffer.from(snL1), 1, `snapshot "${sn.name}" L1`, { dryRun: true });
      } finally {
        await probe.close();
      }
    }
    // 1. refcounts up for what the snapshot reaches (its L1 copy on disk is not rewritten)
    const newL1 = Buffer.alloc(newL1Size * 8);
    snL1.copy(newL1);
    await s.pass(newL1.subarray(0, snL1.length), 1, `snapshot "${sn.name}" L1`);
    // 2. the new active L1 in new clusters
    const newL1Offset = s.rc.allocate(l1Clusters(newL1Size, cs), 'L1 table');
    await s.flushRefcounts();
    await s.write(newL1Offset, newL1, 'L1 table');
    await s.sync();
    // 3. the switch: size, l1_size and l1_table_offset in one header write
    const sw = encodeHeaderRun([['size', diskSize], ['crypt_method', h.cryptMethod], ['l1_size', newL1Size], ['l1_table_offset', newL1Offset]]);
    await s.write(sw.offset, sw.bytes, headerPath('size'));
    await s.sync();
    // 4. the old active L1's clusters lose their reference
    const oldL1 = Buffer.from(img.l1);
    const oldL1Offset = h.l1TableOffset, oldL1Size = h.l1Size;
    await s.pass(oldL1, -1, 'old L1');
    if (oldL1Size > 0) s.rc.free(oldL1Offset, oldL1Size * 8, 'old L1 table');
    await s.flushRefcounts();
    // 5. COPIED flags of the new active tables
    await s.pass(newL1, 0, 'L1', { writeL1At: newL1Offset });
    await s.flushRefcounts();
    return snapshotInfo(sn);
  } finally {
    await s.close();
  }
}

/**
 * `qemu-img snapshot -d NAME`. qemu-img 7.2 matches the name only; `match: 'id-or-name'` also
 * accepts an id (tried first), as the editor offers.
 */
export async function deleteSnapshot(path: string, nameOrId: string, opts: SnapshotOpOptions & { match?: 'name' | 'id-or-name' } = {}): Promise<SnapshotInfo> {
  const s = await SnapshotSession.open(path, opts);
  try {
    const img = s.img, h = img.header;
    const sn = findSnapshot(img, nameOrId, opts.match ?? 'id-or-name');
    s.progressTotal = sn.l1Size + h.l1Size + 1;
    const snL1 = sn.l1Size > 0 ? await img.file.read(sn.l1TableOffset, sn.l1Size * 8, `snapshot "${sn.name}" L1 table`) : Buffer.alloc(0);
    // 1. the table without the entry; header switch; the old table freed
    await s.writeTable(img.snapshots.filter(x => x !== sn));
    await s.flushRefcounts();
    s.progress(1);
    // 2. everything the snapshot reached loses a reference; its L1 is freed
    await s.pass(snL1, -1, `snapshot "${sn.name}" L1`);
    if (sn.l1Size > 0) s.rc.free(sn.l1TableOffset, sn.l1Size * 8, 'snapshot L1 table');
    await s.flushRefcounts();
    // 3. COPIED flags of the active tables
    await s.pass(Buffer.from(img.l1), 0, 'L1', { writeL1At: h.l1TableOffset });
    await s.flushRefcounts();
    return snapshotInfo(sn);
  } finally {
    await s.close();
  }
}
