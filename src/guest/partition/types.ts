/** What a partition table parser returns, whatever the table kind. */

export interface Partition {
  /** As Linux numbers it: MBR primaries 1–4 by slot, logical partitions 5, 6, … in chain order; GPT by entry slot. 0: a disk without a table. */
  number: number;
  /** Guest byte offset of the first byte. */
  start: number;
  /** Bytes. */
  size: number;
  /** As sfdisk prints it: the MBR type byte in hex ("83"), or the GPT type GUID in upper case. */
  type: string;
  /** A person's name for the type ("Linux filesystem", "EFI System"). */
  typeName: string;
  /** GPT partition name. */
  name?: string;
  /** GPT unique partition GUID. */
  uuid?: string;
  bootable?: boolean;
  /** An MBR extended partition (the container of the logical ones). */
  extended?: boolean;
  logical?: boolean;
}

/** A range of the disk the partition table itself occupies (whose: "partition table"). */
export interface TableRange {
  start: number;
  length: number;
  kind: string;
}

export interface PartitionTable {
  table: 'gpt' | 'mbr' | 'none';
  sectorSize: number;
  /** MBR disk signature ("0x1234abcd") or GPT disk GUID. */
  id?: string;
  partitions: Partition[];
  tableRanges: TableRange[];
  /** Problems that did not stop the parse (a damaged primary GPT read from its backup, a partition past the end of the disk). */
  warnings: string[];
}
