/**
 * The partition table of a guest disk: GPT (behind a protective MBR), MBR with extended/logical
 * partitions, or none (the whole disk is one file system, or empty) — decided as Linux and
 * libblkid decide it.
 */
import { GuestDisk, readStructure } from '../disk';
import { guestError } from '../errors';
import { looksLikeFatBootSector } from '../identify';
import { readGpt } from './gpt';
import { decodeMbrEntries, plausibleMbr, PROTECTIVE_TYPE, readMbr, SECTOR } from './mbr';
import type { PartitionTable } from './types';

export async function readPartitionTable(disk: GuestDisk): Promise<PartitionTable> {
  const none: PartitionTable = {
    table: 'none', sectorSize: SECTOR, tableRanges: [], warnings: [],
    partitions: [{ number: 0, start: 0, size: disk.size, type: '', typeName: 'whole disk' }],
  };
  if (disk.size < SECTOR) return none;
  const sector0 = await readStructure(disk, 0, SECTOR, ['MBR']);
  // A FAT or NTFS boot sector also ends in 0x55AA; libblkid and Linux take it for a file system, not a table.
  if (!plausibleMbr(sector0) || looksLikeFatBootSector(sector0) || sector0.toString('latin1', 3, 11) === 'NTFS    ') return none;
  const entries = decodeMbrEntries(sector0);
  if (entries.some(e => e.type === PROTECTIVE_TYPE)) {
    let lastError: Error | undefined;
    for (const sectorSize of [512, 4096]) {
      try {
        const g = await readGpt(disk, sectorSize);
        return { table: 'gpt', sectorSize, id: g.id, partitions: g.partitions, warnings: g.warnings, tableRanges: [{ start: 0, length: SECTOR, kind: 'partition table (protective MBR)' }, ...g.tableRanges] };
      } catch (e) {
        lastError ??= e instanceof Error ? e : new Error(String(e));
        const sig = disk.size >= 2 * 4096 ? (await readStructure(disk, 4096, 8, ['GPT header'])).toString('latin1') : '';
        if (sig !== 'EFI PART') break; // no 4 KiB-sector GPT either: report the 512-byte attempt
      }
    }
    if (lastError) throw lastError;
    throw guestError(disk.name ?? 'disk', ['MBR'], 0, 'protective MBR but no valid GPT');
  }
  const m = await readMbr(disk, sector0);
  if (m.partitions.length === 0) return { ...none, table: 'mbr', id: m.id, partitions: [], tableRanges: m.tableRanges, warnings: m.warnings };
  return { table: 'mbr', sectorSize: SECTOR, id: m.id, partitions: m.partitions, tableRanges: m.tableRanges, warnings: m.warnings };
}
