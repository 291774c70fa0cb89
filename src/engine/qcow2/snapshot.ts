/**
 * The internal snapshot table: entries with their extra data (v3: large VM state size, disk size,
 * instruction count). Parsing is bounded by QEMU's own limits.
 */
import { Qcow2Error } from '../errors';
import { ImageFile } from '../io/reader';
import { formatPath, step } from '../path';
import { headerPath } from './header';
import * as L from './layout';

const E = L.SNAPSHOT_ENTRY, X = L.SNAPSHOT_EXTRA;

export interface Snapshot {
  index: number;
  /** Where this entry starts in the file. */
  hostOffset: number;
  /** Bytes this entry occupies in the table, padding included. */
  entrySize: number;
  l1TableOffset: number;
  l1Size: number;
  id: string;
  name: string;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: bigint;
  vmStateSize: number; // the 32-bit field
  extraDataSize: number;
  vmStateSizeLarge?: bigint;
  diskSize?: bigint;
  icount?: bigint;
  /** Extra data bytes beyond those we understand, kept for rewriting. */
  extraData: Buffer;
}

export interface SnapshotTableRead {
  snapshots: Snapshot[];
  /** QEMU's snapshots_size: bytes from the table's start to the end of the last entry read (its padding not included). */
  size: number;
  /** Repair mode: entries dropped off the end (more than QEMU allows, or past its 64 MiB table limit) — QEMU's nb_clusters_reduced. */
  dropped: number;
  /**
   * Repair mode: entries whose extra data was cut to QEMU's 1024-byte limit — QEMU's
   * extra_data_dropped, which also counts an entry dropped right after its cut.
   */
  extraTruncated: { index: number; hostOffset: number; extraDataSize: number }[];
}

export interface SnapshotReadOptions {
  /**
   * Read as `qemu-img check -r all` does (qcow2_check_read_snapshot_table with BDRV_FIX_ERRORS):
   * entries beyond QEMU's limits are dropped and too much extra data is cut, reported in the result,
   * where a plain open refuses the table.
   */
  repair?: boolean;
}

/** Window over the table's bytes: padded reads (bytes past the end of the file are zeros, as QEMU reads them), 1 MiB at a time. */
function tableReader(file: ImageFile, base: number): (rel: number, len: number) => Promise<Buffer> {
  let wStart = 0, win: Buffer = Buffer.alloc(0);
  return async (rel, len) => {
    if (rel < wStart || rel + len > wStart + win.length) {
      wStart = rel;
      win = await file.readPadded(base + rel, Math.max(len, 1024 * 1024), 'snapshot table');
    }
    return win.subarray(rel - wStart, rel - wStart + len);
  };
}

/**
 * The snapshot table as QEMU 7.2 reads it (block/qcow2-snapshot.c qcow2_do_read_snapshots, after
 * qcow2_validate_table): bytes past the end of the file read as zeros; an entry with more than
 * 1024 bytes of extra data or a table beyond 64 MiB is refused — or, with `repair`, cut and dropped
 * as `qemu-img check -r all` does. The snapshots' L1 tables are not judged here (the check does).
 */
export async function readSnapshotTableChecked(file: ImageFile, nbSnapshots: number, snapshotsOffset: number, clusterSize: number, opts: SnapshotReadOptions = {}): Promise<SnapshotTableRead> {
  const result: SnapshotTableRead = { snapshots: [], size: 0, dropped: 0, extraTruncated: [] };
  let nb = nbSnapshots;
  if (nb > L.QCOW_MAX_SNAPSHOTS) {
    if (!opts.repair) {
      throw new Qcow2Error(file.path, headerPath('nb_snapshots'), L.HEADER_FIELD.nb_snapshots.offset, `${nb} snapshots exceed QEMU's limit of ${L.QCOW_MAX_SNAPSHOTS} (qemu-img check -r all drops the ${nb - L.QCOW_MAX_SNAPSHOTS} overhanging ones)`);
    }
    result.dropped = nb - L.QCOW_MAX_SNAPSHOTS;
    nb = L.QCOW_MAX_SNAPSHOTS;
  }
  // QEMU validates the offset whatever the count
  if (snapshotsOffset % clusterSize !== 0 || !Number.isSafeInteger(snapshotsOffset + nb * L.SNAPSHOT_HEADER_SIZE)) {
    throw new Qcow2Error(file.path, headerPath('snapshots_offset'), L.HEADER_FIELD.snapshots_offset.offset, `snapshot table offset ${snapshotsOffset} is invalid (not cluster-aligned)`);
  }
  if (nb === 0) return result;
  const at = tableReader(file, snapshotsOffset);
  const out = result.snapshots;
  // pos: where QEMU's read stands (relative to the table), length: the table's length with cut extra data
  let pos = 0, length = 0;
  for (let i = 0; i < nb; i++) {
    const before = pos;
    const what = formatPath([step('snapshot', i)]);
    pos = L.alignUp(pos, 8);
    length = L.alignUp(length, 8);
    const hostOffset = snapshotsOffset + pos;
    const hdr = await at(pos, L.SNAPSHOT_HEADER_SIZE);
    const idSize = hdr.readUInt16BE(E.id_str_size);
    const nameSize = hdr.readUInt16BE(E.name_size);
    const extraDataSize = hdr.readUInt32BE(E.extra_data_size);
    let kept = extraDataSize;
    if (extraDataSize > L.SNAPSHOT_MAX_EXTRA_DATA) {
      if (!opts.repair) {
        throw new Qcow2Error(file.path, formatPath([step('snapshot', i, { field: 'extra_data_size' })]), hostOffset + E.extra_data_size, `${extraDataSize} bytes of extra data exceed QEMU's limit of ${L.SNAPSHOT_MAX_EXTRA_DATA} (qemu-img check -r all cuts it)`);
      }
      kept = L.SNAPSHOT_MAX_EXTRA_DATA;
      result.extraTruncated.push({ index: i, hostOffset, extraDataSize });
    }
    const extra = Buffer.from(await at(pos + E.extra_data, kept));
    const idStart = pos + E.extra_data + extraDataSize;
    const strings = await at(idStart, idSize + nameSize);
    const end = idStart + idSize + nameSize;
    length += L.SNAPSHOT_HEADER_SIZE + kept + idSize + nameSize;
    if (length > L.QCOW_MAX_SNAPSHOTS_SIZE || end > 0x7fffffff) {
      if (!opts.repair) {
        throw new Qcow2Error(file.path, what, hostOffset, `snapshot table exceeds QEMU's ${L.QCOW_MAX_SNAPSHOTS_SIZE}-byte limit (qemu-img check -r all drops the ${nb - i} overhanging snapshots)`);
      }
      result.dropped += nb - i;
      pos = before;
      break;
    }
    const sn: Snapshot = {
      index: i, hostOffset, entrySize: L.alignUp(end - pos, 8),
      l1TableOffset: Number(hdr.readBigUInt64BE(E.l1_table_offset)),
      l1Size: hdr.readUInt32BE(E.l1_size),
      id: cString(strings, 0, idSize),
      name: cString(strings, idSize, idSize + nameSize),
      dateSec: hdr.readUInt32BE(E.date_sec),
      dateNsec: hdr.readUInt32BE(E.date_nsec),
      vmClockNsec: hdr.readBigUInt64BE(E.vm_clock_nsec),
      vmStateSize: hdr.readUInt32BE(E.vm_state_size),
      extraDataSize,
      extraData: extra,
    };
    if (kept >= X.vm_state_size_large + 8) sn.vmStateSizeLarge = extra.readBigUInt64BE(X.vm_state_size_large);
    if (kept >= X.disk_size + 8) sn.diskSize = extra.readBigUInt64BE(X.disk_size);
    if (kept >= X.icount + 8) sn.icount = extra.readBigUInt64BE(X.icount);
    out.push(sn);
    pos = end;
  }
  result.size = pos;
  return result;
}

/** The snapshot table as a plain open reads it (refusing what QEMU refuses to open). */
export async function readSnapshotTable(file: ImageFile, nbSnapshots: number, snapshotsOffset: number, clusterSize: number): Promise<Snapshot[]> {
  return (await readSnapshotTableChecked(file, nbSnapshots, snapshotsOffset, clusterSize)).snapshots;
}

/** A snapshot id or name as QEMU holds it: a C string, so it ends at the first NUL byte. */
function cString(buf: Buffer, start: number, end: number): string {
  const nul = buf.indexOf(0, start);
  return buf.toString('utf8', start, nul >= 0 && nul < end ? nul : end);
}

/** icount when the snapshot recorded none (QEMU writes -1). */
export const NO_ICOUNT = 0xffffffffffffffffn;

/** Serialises one snapshot table entry (header, extra data, id, name, padding). */
export function encodeSnapshot(sn: Snapshot): Buffer {
  const id = Buffer.from(sn.id, 'utf8');
  const name = Buffer.from(sn.name, 'utf8');
  const extra = Buffer.from(sn.extraData);
  if (sn.vmStateSizeLarge !== undefined && extra.length >= X.vm_state_size_large + 8) extra.writeBigUInt64BE(sn.vmStateSizeLarge, X.vm_state_size_large);
  if (sn.diskSize !== undefined && extra.length >= X.disk_size + 8) extra.writeBigUInt64BE(sn.diskSize, X.disk_size);
  if (sn.icount !== undefined && extra.length >= X.icount + 8) extra.writeBigUInt64BE(sn.icount, X.icount);
  const size = L.alignUp(L.SNAPSHOT_HEADER_SIZE + extra.length + id.length + name.length, 8);
  const b = Buffer.alloc(size);
  b.writeBigUInt64BE(BigInt(sn.l1TableOffset), E.l1_table_offset);
  b.writeUInt32BE(sn.l1Size, E.l1_size);
  b.writeUInt16BE(id.length, E.id_str_size);
  b.writeUInt16BE(name.length, E.name_size);
  b.writeUInt32BE(sn.dateSec, E.date_sec);
  b.writeUInt32BE(sn.dateNsec, E.date_nsec);
  b.writeBigUInt64BE(sn.vmClockNsec, E.vm_clock_nsec);
  b.writeUInt32BE(sn.vmStateSize, E.vm_state_size);
  b.writeUInt32BE(extra.length, E.extra_data_size);
  extra.copy(b, E.extra_data);
  id.copy(b, E.extra_data + extra.length);
  name.copy(b, E.extra_data + extra.length + id.length);
  return b;
}

export interface SnapshotInfo {
  id: string;
  name: string;
  vmStateSize: number;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: number;
  icount?: number;
  diskSize?: number;
  l1TableOffset: number;
  l1Size: number;
}

/** What a user is shown of one snapshot (`qemu-img snapshot -l`): the large VM state size when present, icount when recorded. */
export function snapshotInfo(sn: Snapshot): SnapshotInfo {
  return {
    id: sn.id, name: sn.name, vmStateSize: Number(sn.vmStateSizeLarge ?? sn.vmStateSize), dateSec: sn.dateSec, dateNsec: sn.dateNsec,
    vmClockNsec: Number(sn.vmClockNsec), icount: sn.icount === undefined || sn.icount === NO_ICOUNT ? undefined : Number(sn.icount),
    diskSize: sn.diskSize === undefined ? undefined : Number(sn.diskSize), l1TableOffset: sn.l1TableOffset, l1Size: sn.l1Size,
  };
}
