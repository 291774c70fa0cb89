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
  /** The 64-bit fields are bigint: exact beyond 2^53, as QEMU prints them. */
  vmClockNsec: bigint;
  vmStateSize: number; // the 32-bit field
  extraDataSize: number;
  vmStateSizeLarge?: bigint;
  diskSize?: bigint;
  icount?: bigint;
  /** Extra data bytes beyond those we understand, kept for rewriting. */
  extraData: Buffer;
}

export async function readSnapshotTable(file: ImageFile, nbSnapshots: number, snapshotsOffset: number, clusterSize: number): Promise<Snapshot[]> {
  if (nbSnapshots > L.QCOW_MAX_SNAPSHOTS) {
    throw new Qcow2Error(file.path, headerPath('nb_snapshots'), L.HEADER_FIELD.nb_snapshots.offset, `${nbSnapshots} snapshots exceed QEMU's limit of ${L.QCOW_MAX_SNAPSHOTS}`);
  }
  // QEMU validates the offset whatever the count ("Snapshot table offset invalid"), an empty table too
  if (snapshotsOffset % clusterSize !== 0) {
    throw new Qcow2Error(file.path, 'snapshot table', snapshotsOffset, 'offset is not cluster-aligned');
  }
  if (nbSnapshots === 0) return [];
  // Read in growing chunks: each entry is variable-sized, but the whole table is at most 64 MiB.
  let buf: Buffer = Buffer.alloc(0);
  let have = 0;
  const ensure = async (end: number, what: string, at: number) => {
    if (end > L.QCOW_MAX_SNAPSHOTS_SIZE) {
      throw new Qcow2Error(file.path, what, at, `snapshot table exceeds QEMU's ${L.QCOW_MAX_SNAPSHOTS_SIZE}-byte limit`);
    }
    if (end <= have) return;
    const want = Math.min(Math.max(end, have * 2, 65536), L.QCOW_MAX_SNAPSHOTS_SIZE, file.size - snapshotsOffset);
    if (want < end) {
      throw new Qcow2Error(file.path, what, at, `snapshot table runs past the end of the file (0x${file.size.toString(16)})`);
    }
    // a buffer padded to 8 bytes past the end: QEMU does not write the last entry's padding
    buf = Buffer.alloc(L.alignUp(want, 8));
    (await file.read(snapshotsOffset, want, 'snapshot table')).copy(buf);
    have = want;
  };
  const out: Snapshot[] = [];
  let pos = 0;
  for (let i = 0; i < nbSnapshots; i++) {
    const at = snapshotsOffset + pos;
    const what = formatPath([step('snapshot', i)]);
    await ensure(pos + L.SNAPSHOT_HEADER_SIZE, what, at);
    const l1TableOffset = Number(buf.readBigUInt64BE(pos + E.l1_table_offset));
    const l1Size = buf.readUInt32BE(pos + E.l1_size);
    const idSize = buf.readUInt16BE(pos + E.id_str_size);
    const nameSize = buf.readUInt16BE(pos + E.name_size);
    const extraDataSize = buf.readUInt32BE(pos + E.extra_data_size);
    if (extraDataSize > L.SNAPSHOT_MAX_EXTRA_DATA) {
      throw new Qcow2Error(file.path, formatPath([step('snapshot', i, { field: 'extra_data_size' })]), at + E.extra_data_size, `${extraDataSize} bytes of extra data exceed QEMU's limit of ${L.SNAPSHOT_MAX_EXTRA_DATA}`);
    }
    const entrySize = L.alignUp(L.SNAPSHOT_HEADER_SIZE + extraDataSize + idSize + nameSize, 8);
    await ensure(pos + L.SNAPSHOT_HEADER_SIZE + extraDataSize + idSize + nameSize, what, at);
    const extraStart = pos + E.extra_data, idStart = extraStart + extraDataSize, nameStart = idStart + idSize;
    const extra = buf.subarray(extraStart, idStart);
    const sn: Snapshot = {
      index: i, hostOffset: at, entrySize, l1TableOffset, l1Size,
      id: cString(buf, idStart, nameStart),
      name: cString(buf, nameStart, nameStart + nameSize),
      dateSec: buf.readUInt32BE(pos + E.date_sec),
      dateNsec: buf.readUInt32BE(pos + E.date_nsec),
      vmClockNsec: buf.readBigUInt64BE(pos + E.vm_clock_nsec),
      vmStateSize: buf.readUInt32BE(pos + E.vm_state_size),
      extraDataSize,
      extraData: Buffer.from(extra),
    };
    if (extraDataSize >= X.vm_state_size_large + 8) sn.vmStateSizeLarge = extra.readBigUInt64BE(X.vm_state_size_large);
    if (extraDataSize >= X.disk_size + 8) sn.diskSize = extra.readBigUInt64BE(X.disk_size);
    if (extraDataSize >= X.icount + 8) sn.icount = extra.readBigUInt64BE(X.icount);
    if (l1Size > L.QCOW_MAX_L1_SIZE / 8) {
      throw new Qcow2Error(file.path, formatPath([step('snapshot', i, { field: 'l1_size' })]), at + E.l1_size, `snapshot L1 table of ${l1Size} entries exceeds QEMU's limit of ${L.QCOW_MAX_L1_SIZE / 8}`);
    }
    out.push(sn);
    pos += entrySize;
  }
  return out;
}

/** A snapshot id or name as QEMU holds it: a C string, so it ends at the first NUL byte. */
function cString(buf: Buffer, start: number, end: number): string {
  const nul = buf.indexOf(0, start);
  return buf.toString('utf8', start, nul >= 0 && nul < end ? nul : end);
}

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

/** icount when the snapshot recorded none (QEMU writes -1). */
export const NO_ICOUNT = 0xffffffffffffffffn;

/** What a user is shown of one snapshot, as plain numbers (for tables and the editor; info's JSON takes the exact fields from Snapshot). */
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
