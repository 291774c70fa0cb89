/**
 * GUID Partition Tables (UEFI spec §5.3): the header at LBA 1, its entry array, both checked with
 * their CRC32s; when the primary copy is damaged, the backup at the disk's last LBA is used (and
 * said so). The entry count and size are untrusted: their product is bounded before reading.
 */
import { crc32 } from '../crc32';
import { GuestDisk, readStructure } from '../disk';
import { guestError } from '../errors';
import type { Partition, TableRange } from './types';

const SIGNATURE = 'EFI PART';
/** 128 entries of 128 bytes is the norm; anything above 1 MiB of entries is refused. */
const MAX_ENTRY_ARRAY = 1024 * 1024;

export interface GptHeader {
  headerSize: number;
  myLba: number;
  alternateLba: number;
  firstUsableLba: number;
  lastUsableLba: number;
  diskGuid: string;
  entriesLba: number;
  entryCount: number;
  entrySize: number;
  entriesCrc: number;
}

/** A GUID as text: the first three fields are little-endian on disk. */
export function formatGuid(b: Buffer, o: number): string {
  const h = (from: number, to: number, rev: boolean): string => {
    const bytes = [...b.subarray(o + from, o + to)];
    if (rev) bytes.reverse();
    return bytes.map(x => x.toString(16).padStart(2, '0')).join('');
  };
  return `${h(0, 4, true)}-${h(4, 6, true)}-${h(6, 8, true)}-${h(8, 10, false)}-${h(10, 16, false)}`.toUpperCase();
}

function u64(b: Buffer, o: number, what: string, file: string, at: number): number {
  const v = b.readBigUInt64LE(o);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw guestError(file, ['GPT header', what], at, `value ${v} is out of range`);
  return Number(v);
}

/** Decodes and verifies one header sector; returns a reason string when it is not a valid header. */
export function decodeGptHeader(sector: Buffer, file: string, at: number): GptHeader | string {
  if (sector.toString('latin1', 0, 8) !== SIGNATURE) return 'no "EFI PART" signature';
  const headerSize = sector.readUInt32LE(12);
  if (headerSize < 92 || headerSize > sector.length) return `header size ${headerSize} is outside 92…${sector.length}`;
  const copy = Buffer.from(sector.subarray(0, headerSize));
  const stored = copy.readUInt32LE(16);
  copy.writeUInt32LE(0, 16);
  if (crc32(copy) !== stored) return 'header CRC32 does not match';
  return {
    headerSize,
    myLba: u64(sector, 24, 'my_lba', file, at),
    alternateLba: u64(sector, 32, 'alternate_lba', file, at),
    firstUsableLba: u64(sector, 40, 'first_usable_lba', file, at),
    lastUsableLba: u64(sector, 48, 'last_usable_lba', file, at),
    diskGuid: formatGuid(sector, 56),
    entriesLba: u64(sector, 72, 'partition_entry_lba', file, at),
    entryCount: sector.readUInt32LE(80),
    entrySize: sector.readUInt32LE(84),
    entriesCrc: sector.readUInt32LE(88),
  };
}

const GPT_TYPE_NAMES: Record<string, string> = {
  'C12A7328-F81F-11D2-BA4B-00A0C93EC93B': 'EFI System',
  '21686148-6449-6E6F-744E-656564454649': 'BIOS boot',
  '0FC63DAF-8483-4772-8E79-3D69D8477DE4': 'Linux filesystem',
  '0657FD6D-A4AB-43C4-84E5-0933C84B4F4F': 'Linux swap',
  'E6D6D379-F507-44C2-A23C-238F2A3DF928': 'Linux LVM',
  'A19D880F-05FC-4D3B-A006-743F0F84911E': 'Linux RAID',
  'CA7D7CCB-63ED-4C53-861C-1742536059CC': 'Linux LUKS',
  '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709': 'Linux root (x86-64)',
  '933AC7E1-2EB4-4F13-B844-0E14E2AEF915': 'Linux home',
  'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7': 'Microsoft basic data',
  'E3C9E316-0B5C-4DB8-817D-F92DF00215AE': 'Microsoft reserved',
  'DE94BBA4-06D1-4D40-A16A-BFD50179D6AC': 'Windows recovery environment',
};

export function gptTypeName(guid: string): string {
  return GPT_TYPE_NAMES[guid] ?? guid;
}

export interface GptResult {
  id: string;
  partitions: Partition[];
  tableRanges: TableRange[];
  warnings: string[];
}

async function readCopy(disk: GuestDisk, lba: number, sectorSize: number, which: string): Promise<{ header: GptHeader; entries: Buffer } | string> {
  const file = disk.name ?? 'disk';
  if ((lba + 1) * sectorSize > disk.size) return `${which} header lies past the end of the disk`;
  const h = decodeGptHeader(await readStructure(disk, lba * sectorSize, sectorSize, [`GPT ${which} header`]), file, lba * sectorSize);
  if (typeof h === 'string') return `${which} header: ${h}`;
  if (h.myLba !== lba) return `${which} header says it is at LBA ${h.myLba}, not ${lba}`;
  if (h.entrySize < 128 || h.entrySize % 8 !== 0) return `${which} header: entry size ${h.entrySize} is not a multiple of 8 of at least 128`;
  const bytes = h.entryCount * h.entrySize;
  if (bytes > MAX_ENTRY_ARRAY) return `${which} header: ${h.entryCount} entries of ${h.entrySize} bytes exceed ${MAX_ENTRY_ARRAY} bytes`;
  if (h.entriesLba * sectorSize + bytes > disk.size) return `${which} entry array lies past the end of the disk`;
  const entries = await readStructure(disk, h.entriesLba * sectorSize, bytes, [`GPT ${which} entry array`]);
  if (crc32(entries) !== h.entriesCrc) return `${which} entry array CRC32 does not match`;
  return { header: h, entries };
}

/** Reads the GPT of a disk whose MBR is protective; throws when neither copy is valid. */
export async function readGpt(disk: GuestDisk, sectorSize: number): Promise<GptResult> {
  const file = disk.name ?? 'disk';
  const warnings: string[] = [];
  const lastLba = Math.floor(disk.size / sectorSize) - 1;
  let chosen = await readCopy(disk, 1, sectorSize, 'primary');
  if (typeof chosen === 'string') {
    const primaryProblem = chosen;
    const backup = await readCopy(disk, lastLba, sectorSize, 'backup');
    if (typeof backup === 'string') {
      throw guestError(file, ['GPT'], sectorSize, `no valid GPT: ${primaryProblem}; ${backup}`);
    }
    warnings.push(`primary GPT is damaged (${primaryProblem}); the backup at LBA ${lastLba} was used`);
    chosen = backup;
  }
  const { header, entries } = chosen;
  const partitions: Partition[] = [];
  for (let i = 0; i < header.entryCount; i++) {
    const o = i * header.entrySize;
    if (entries.subarray(o, o + 16).every(x => x === 0)) continue;
    const type = formatGuid(entries, o);
    const first = u64(entries, o + 32, `entry ${i + 1} first_lba`, file, header.entriesLba * sectorSize + o);
    const last = u64(entries, o + 40, `entry ${i + 1} last_lba`, file, header.entriesLba * sectorSize + o);
    if (last < first) {
      warnings.push(`entry ${i + 1}: last LBA ${last} is before first LBA ${first}; ignored`);
      continue;
    }
    let name = entries.toString('utf16le', o + 56, o + 128);
    const nul = name.indexOf('\0');
    if (nul >= 0) name = name.slice(0, nul);
    const p: Partition = { number: i + 1, start: first * sectorSize, size: (last - first + 1) * sectorSize, type, typeName: gptTypeName(type), uuid: formatGuid(entries, o + 16) };
    if (name) p.name = name;
    if (p.start + p.size > disk.size) warnings.push(`partition ${p.number} ends past the end of the disk`);
    partitions.push(p);
  }
  const arrayBytes = header.entryCount * header.entrySize;
  const tableRanges: TableRange[] = [
    { start: sectorSize, length: sectorSize, kind: 'partition table (GPT header)' },
    { start: header.entriesLba * sectorSize, length: arrayBytes, kind: 'partition table (GPT entries)' },
  ];
  if (header.alternateLba > 1 && header.alternateLba <= lastLba) {
    tableRanges.push({ start: header.alternateLba * sectorSize, length: sectorSize, kind: 'partition table (backup GPT header)' });
    const backupArray = (header.alternateLba * sectorSize) - arrayBytes;
    if (header.myLba === 1 && backupArray > 0) tableRanges.push({ start: backupArray, length: arrayBytes, kind: 'partition table (backup GPT entries)' });
  }
  return { id: header.diskGuid, partitions, tableRanges, warnings };
}
