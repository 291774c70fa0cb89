/**
 * The FAT boot sector's BIOS parameter block (Microsoft's FAT specification, "FAT: General Overview
 * of On-Disk Format"), the FAT type decided by the cluster count as the spec says, and the region
 * layout every other FAT module uses. All fields are untrusted and checked against the partition.
 */
import { guestError, GuestPath } from '../errors';

export type FatType = 'FAT12' | 'FAT16' | 'FAT32';

export interface Bpb {
  bytesPerSector: number;
  sectorsPerCluster: number;
  reservedSectors: number;
  numFats: number;
  rootEntries: number;
  totalSectors: number;
  fatSectors: number;
  /** FAT32: cluster of the root directory. */
  rootCluster: number;
  fsInfoSector: number;
  backupBootSector: number;
  fatType: FatType;
  clusterCount: number;
  clusterBytes: number;
  /** Byte offsets from the start of the file system. */
  fatOffset: number;
  rootDirOffset: number;
  rootDirBytes: number;
  dataOffset: number;
  label?: string;
  /** Boot sector "state" byte bit 0: set by Linux while mounted (dosfstools: "dirty bit"). */
  bootDirty: boolean;
}

export function decodeBpb(b: Buffer, file: string, path: GuestPath, at: number, partitionBytes: number): Bpb {
  const bad = (detail: string): never => { throw guestError(file, [...path, 'boot sector'], at, detail); };
  if (b[510] !== 0x55 || b[511] !== 0xaa) bad('no 0x55AA boot signature');
  const bytesPerSector = b.readUInt16LE(11), sectorsPerCluster = b[13];
  if (![512, 1024, 2048, 4096].includes(bytesPerSector)) bad(`BPB_BytsPerSec ${bytesPerSector} is not 512, 1024, 2048 or 4096`);
  if (sectorsPerCluster === 0 || (sectorsPerCluster & (sectorsPerCluster - 1)) !== 0) bad(`BPB_SecPerClus ${sectorsPerCluster} is not a power of two`);
  const reservedSectors = b.readUInt16LE(14), numFats = b[16], rootEntries = b.readUInt16LE(17);
  if (reservedSectors === 0) bad('BPB_RsvdSecCnt is 0');
  if (numFats === 0 || numFats > 4) bad(`BPB_NumFATs ${numFats} is outside 1…4`);
  const totalSectors = b.readUInt16LE(19) || b.readUInt32LE(32);
  const fatSz16 = b.readUInt16LE(22);
  const fatSectors = fatSz16 || b.readUInt32LE(36);
  if (totalSectors === 0 || fatSectors === 0) bad('total sector count or FAT size is 0');
  if (totalSectors * bytesPerSector > partitionBytes) bad(`${totalSectors} sectors of ${bytesPerSector} bytes do not fit the ${partitionBytes}-byte partition`);
  const rootDirSectors = Math.ceil((rootEntries * 32) / bytesPerSector);
  const dataSector = reservedSectors + numFats * fatSectors + rootDirSectors;
  if (dataSector >= totalSectors) bad(`the data region would start at sector ${dataSector}, past the ${totalSectors}-sector volume`);
  const clusterCount = Math.floor((totalSectors - dataSector) / sectorsPerCluster);
  const fatType: FatType = clusterCount < 4085 ? 'FAT12' : clusterCount < 65525 ? 'FAT16' : 'FAT32';
  const fat32 = fatType === 'FAT32';
  if (fat32 && fatSz16 !== 0) bad('a FAT32 cluster count with a FAT12/16 BPB_FATSz16');
  const entryBits = fatType === 'FAT12' ? 12 : fatType === 'FAT16' ? 16 : 32;
  if (Math.ceil(((clusterCount + 2) * entryBits) / 8) > fatSectors * bytesPerSector) bad(`the FAT (${fatSectors} sectors) is too small for ${clusterCount} clusters`);
  const rootCluster = fat32 ? b.readUInt32LE(44) : 0;
  if (fat32 && (rootCluster < 2 || rootCluster > clusterCount + 1)) bad(`BPB_RootClus ${rootCluster} is outside 2…${clusterCount + 1}`);
  const labelAt = fat32 ? 71 : 43, sigAt = fat32 ? 66 : 38;
  const label = b[sigAt] === 0x29 ? b.toString('latin1', labelAt, labelAt + 11).trim() : '';
  return {
    bytesPerSector, sectorsPerCluster, reservedSectors, numFats, rootEntries, totalSectors, fatSectors,
    rootCluster,
    fsInfoSector: fat32 ? b.readUInt16LE(48) : 0,
    backupBootSector: fat32 ? b.readUInt16LE(50) : 0,
    fatType, clusterCount,
    clusterBytes: sectorsPerCluster * bytesPerSector,
    fatOffset: reservedSectors * bytesPerSector,
    rootDirOffset: (reservedSectors + numFats * fatSectors) * bytesPerSector,
    rootDirBytes: rootDirSectors * bytesPerSector,
    dataOffset: dataSector * bytesPerSector,
    label: label && label !== 'NO NAME' ? label : undefined,
    bootDirty: (b[fat32 ? 65 : 37] & 1) !== 0,
  };
}
