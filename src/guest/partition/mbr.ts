/**
 * MBR (DOS) partition tables: the four primary entries of sector 0 and the chain of extended boot
 * records (EBRs) that holds the logical partitions. Every EBR link is untrusted: the chain is
 * bounded in length, must stay inside the extended partition and may not revisit an EBR.
 */
import { GuestDisk, readStructure } from '../disk';
import { guestError } from '../errors';
import type { Partition, TableRange } from './types';

export const SECTOR = 512;
const ENTRIES_AT = 446;
const ENTRY_SIZE = 16;
/** Linux allows at most 256 partitions per disk; a longer EBR chain is damage or hostility. */
export const MAX_LOGICAL = 252;
export const PROTECTIVE_TYPE = 0xee;

/** One 16-byte partition entry, as on disk. */
export interface MbrEntry {
  status: number;
  type: number;
  /** Start relative to whatever the entry is relative to (disk, EBR or extended partition), in sectors. */
  lbaStart: number;
  sectors: number;
}

export function isExtendedType(type: number): boolean {
  return type === 0x05 || type === 0x0f || type === 0x85;
}

export function decodeMbrEntries(sector: Buffer): MbrEntry[] {
  const out: MbrEntry[] = [];
  for (let i = 0; i < 4; i++) {
    const o = ENTRIES_AT + i * ENTRY_SIZE;
    out.push({ status: sector[o], type: sector[o + 4], lbaStart: sector.readUInt32LE(o + 8), sectors: sector.readUInt32LE(o + 12) });
  }
  return out;
}

export function hasBootSignature(sector: Buffer): boolean {
  return sector.length >= 512 && sector[510] === 0x55 && sector[511] === 0xaa;
}

/** Status bytes other than 0x00/0x80 mean sector 0 is not a partition table (often a FAT/NTFS boot sector). */
export function plausibleMbr(sector: Buffer): boolean {
  return hasBootSignature(sector) && decodeMbrEntries(sector).every(e => e.status === 0 || e.status === 0x80);
}

const MBR_TYPE_NAMES: Record<number, string> = {
  0x01: 'FAT12', 0x04: 'FAT16 <32M', 0x05: 'Extended', 0x06: 'FAT16', 0x07: 'HPFS/NTFS/exFAT', 0x0b: 'W95 FAT32',
  0x0c: 'W95 FAT32 (LBA)', 0x0e: 'W95 FAT16 (LBA)', 0x0f: "W95 Ext'd (LBA)", 0x82: 'Linux swap / Solaris', 0x83: 'Linux',
  0x85: 'Linux extended', 0x8e: 'Linux LVM', 0xee: 'GPT', 0xef: 'EFI (FAT-12/16/32)', 0xfd: 'Linux raid autodetect',
};

export function mbrTypeName(type: number): string {
  return MBR_TYPE_NAMES[type] ?? `type 0x${type.toString(16)}`;
}

function toPartition(e: MbrEntry, number: number, base: number, extra: Partial<Partition>): Partition {
  return {
    number,
    start: (base + e.lbaStart) * SECTOR,
    size: e.sectors * SECTOR,
    type: e.type.toString(16),
    typeName: mbrTypeName(e.type),
    bootable: e.status === 0x80,
    ...extra,
  };
}

export interface MbrResult {
  id: string;
  partitions: Partition[];
  tableRanges: TableRange[];
  warnings: string[];
}

/** Parses sector 0 (already read) and follows the EBR chain of the first extended partition. */
export async function readMbr(disk: GuestDisk, sector0: Buffer): Promise<MbrResult> {
  const file = disk.name ?? 'disk';
  const partitions: Partition[] = [];
  const tableRanges: TableRange[] = [{ start: 0, length: SECTOR, kind: 'partition table (MBR)' }];
  const warnings: string[] = [];
  let extended: MbrEntry | undefined;
  decodeMbrEntries(sector0).forEach((e, i) => {
    if (e.type === 0 || e.sectors === 0) return;
    if (isExtendedType(e.type)) {
      partitions.push(toPartition(e, i + 1, 0, { extended: true }));
      if (!extended) extended = e;
      else warnings.push(`partition ${i + 1}: a second extended partition is ignored (as Linux does)`);
      return;
    }
    partitions.push(toPartition(e, i + 1, 0, {}));
  });
  if (extended) {
    const extStart = extended.lbaStart, extEnd = extended.lbaStart + extended.sectors;
    const seen = new Set<number>();
    let ebr = extStart, number = 5;
    for (let hop = 0; ; hop++) {
      const path = ['MBR', `EBR ${hop + 1}`];
      if (hop >= MAX_LOGICAL) throw guestError(file, path, ebr * SECTOR, `the chain of extended boot records is longer than ${MAX_LOGICAL} (a loop or damage)`);
      if (seen.has(ebr)) throw guestError(file, path, ebr * SECTOR, 'the chain of extended boot records loops back to an earlier record');
      if (ebr < extStart || ebr >= extEnd) throw guestError(file, path, ebr * SECTOR, `extended boot record lies outside the extended partition (sectors ${extStart}–${extEnd - 1})`);
      seen.add(ebr);
      if ((ebr + 1) * SECTOR > disk.size) throw guestError(file, path, ebr * SECTOR, 'extended boot record lies past the end of the disk');
      const sector = await readStructure(disk, ebr * SECTOR, SECTOR, path);
      if (!hasBootSignature(sector)) {
        // Linux stops at an EBR without the signature; so does fdisk. Not an error: the chain just ends.
        warnings.push(`EBR ${hop + 1} at sector ${ebr} has no 0x55AA signature; the chain ends there`);
        break;
      }
      tableRanges.push({ start: ebr * SECTOR, length: SECTOR, kind: 'partition table (EBR)' });
      let next: MbrEntry | undefined;
      for (const e of decodeMbrEntries(sector)) {
        if (e.type === 0 || e.sectors === 0) continue;
        if (isExtendedType(e.type)) { next ??= e; continue; }
        partitions.push(toPartition(e, number++, ebr, { logical: true }));
      }
      if (!next) break;
      ebr = extStart + next.lbaStart;
    }
  }
  for (const p of partitions) {
    if (p.start + p.size > disk.size) warnings.push(`partition ${p.number} ends past the end of the disk (${p.start + p.size} > ${disk.size} bytes)`);
  }
  return { id: '0x' + sector0.readUInt32LE(440).toString(16).padStart(8, '0'), partitions, tableRanges, warnings };
}
