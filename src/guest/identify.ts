/**
 * File-system identification by signature (the magic numbers libblkid probes), with the size each
 * file system says it has. Browsable kinds (ext2/3/4, vfat) are opened by their own modules; the
 * others are named and sized only.
 */
import { GuestDisk, readStructure } from './disk';

export type FsKind = 'ext2' | 'ext3' | 'ext4' | 'vfat' | 'ntfs' | 'xfs' | 'btrfs' | 'swap' | 'lvm' | 'luks' | 'iso9660';

export interface Identified {
  fs: FsKind;
  /** Bytes the file system says it spans (may differ from the partition's size). */
  size?: number;
  label?: string;
  uuid?: string;
  /** "FAT16", "LUKS2", "1" (swap version) … */
  version?: string;
}

export const BROWSABLE: ReadonlySet<FsKind> = new Set(['ext2', 'ext3', 'ext4', 'vfat']);

const EXT_MAGIC = 0xef53;
// ext feature bits (e2fsprogs lib/ext2fs/ext2_fs.h) that make libblkid call a file system ext3 or ext4.
const COMPAT_HAS_JOURNAL = 0x4;
const EXT3_INCOMPAT_SUPP = 0x2 | 0x4 | 0x10; // filetype, recover, meta_bg
const EXT3_RO_COMPAT_SUPP = 0x1 | 0x2 | 0x4; // sparse_super, large_file, btree_dir

function trimLabel(s: string): string | undefined {
  const t = s.replace(/\0.*$/s, '').trim();
  return t || undefined;
}

function hexUuid(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** The checks dosfstools/libblkid rely on for a FAT boot sector. */
export function looksLikeFatBootSector(b: Buffer): boolean {
  if (b.length < 512 || b[510] !== 0x55 || b[511] !== 0xaa) return false;
  if (!(b[0] === 0xeb || b[0] === 0xe9)) return false;
  const bps = b.readUInt16LE(11), spc = b[13], fats = b[16];
  if (![512, 1024, 2048, 4096].includes(bps) || spc === 0 || (spc & (spc - 1)) !== 0 || fats === 0) return false;
  const fat1216 = b.toString('latin1', 54, 59), fat32 = b.toString('latin1', 82, 87);
  return fat1216 === 'FAT12' || fat1216 === 'FAT16' || fat1216 === 'FAT  ' || fat32 === 'FAT32' || (b.readUInt16LE(22) === 0 && b.readUInt32LE(36) > 0);
}

/** Identifies the file system of a partition (or a whole disk) by its signatures; null if none is known. */
export async function identify(disk: GuestDisk): Promise<Identified | null> {
  const size = disk.size;
  if (size < 1024) return null;
  const head = await readStructure(disk, 0, Math.min(size, 4096), ['signature probe']);

  if (head.toString('latin1', 0, 6) === 'LUKS\xba\xbe') {
    const version = head.readUInt16BE(6);
    return { fs: 'luks', size, version: `LUKS${version}`, uuid: trimLabel(head.toString('latin1', 168, 208)) };
  }
  if (head.toString('latin1', 0, 4) === 'XFSB') {
    const bs = head.readUInt32BE(4), blocks = Number(head.readBigUInt64BE(8));
    return { fs: 'xfs', size: bs * blocks, label: trimLabel(head.toString('latin1', 108, 120)), uuid: hexUuid(head.subarray(32, 48)) };
  }
  if (head.length >= 2048 && head.readUInt16LE(1024 + 56) === EXT_MAGIC) {
    const sb = head.subarray(1024);
    const compat = sb.readUInt32LE(92), incompat = sb.readUInt32LE(96), roCompat = sb.readUInt32LE(100);
    const logBs = sb.readUInt32LE(24);
    const bs = logBs <= 6 ? 1024 << logBs : 0;
    const blocks = sb.readUInt32LE(4) + ((incompat & 0x80) ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
    const fs: FsKind = (incompat & ~EXT3_INCOMPAT_SUPP) || (roCompat & ~EXT3_RO_COMPAT_SUPP) ? 'ext4' : compat & COMPAT_HAS_JOURNAL ? 'ext3' : 'ext2';
    return { fs, size: bs * blocks, label: trimLabel(sb.toString('utf8', 120, 136)), uuid: hexUuid(sb.subarray(104, 120)) };
  }
  if (head.toString('latin1', 3, 11) === 'NTFS    ' && head[510] === 0x55 && head[511] === 0xaa) {
    const bps = head.readUInt16LE(11), sectors = Number(head.readBigUInt64LE(0x28));
    return { fs: 'ntfs', size: bps * (sectors + 1), uuid: head.readBigUInt64LE(0x48).toString(16).toUpperCase().padStart(16, '0') };
  }
  if (looksLikeFatBootSector(head)) {
    const bps = head.readUInt16LE(11), total = head.readUInt16LE(19) || head.readUInt32LE(32);
    const fat32 = head.readUInt16LE(22) === 0;
    const labelAt = fat32 ? 71 : 43;
    const fatSz = fat32 ? head.readUInt32LE(36) : head.readUInt16LE(22);
    const rootSectors = Math.ceil((head.readUInt16LE(17) * 32) / bps);
    const clusters = Math.floor((total - head.readUInt16LE(14) - head[16] * fatSz - rootSectors) / head[13]);
    const version = clusters < 4085 ? 'FAT12' : clusters < 65525 ? 'FAT16' : 'FAT32';
    const label = trimLabel(head.toString('latin1', labelAt, labelAt + 11));
    return { fs: 'vfat', size: bps * total, version, label: label === 'NO NAME' ? undefined : label };
  }
  for (let s = 0; s < 4; s++) {
    const o = s * 512;
    if (head.length >= o + 512 && head.toString('latin1', o, o + 8) === 'LABELONE' && head.toString('latin1', o + 24, o + 32) === 'LVM2 001') {
      const pvAt = o + head.readUInt32LE(o + 20);
      const pv = pvAt + 40 <= head.length ? head : null;
      return { fs: 'lvm', size: pv ? Number(pv.readBigUInt64LE(pvAt + 32)) || size : size, uuid: pv ? pv.toString('latin1', pvAt, pvAt + 32) : undefined };
    }
  }
  for (const page of [4096, 8192, 16384, 65536]) {
    if (page > size) break;
    const tail = page === 4096 ? head.subarray(4086, 4096) : await readStructure(disk, page - 10, 10, ['swap signature']);
    const sig = tail.toString('latin1');
    if (sig === 'SWAPSPACE2' || sig === 'SWAP-SPACE') {
      const lastPage = head.readUInt32LE(1028);
      return { fs: 'swap', size: sig === 'SWAPSPACE2' ? Math.min(size, (lastPage + 1) * page) : size, version: sig === 'SWAPSPACE2' ? '1' : '0', label: trimLabel(head.toString('latin1', 1024 + 28, 1024 + 44)), uuid: hexUuid(head.subarray(1024 + 12, 1024 + 28)) };
    }
  }
  if (size >= 0x8000 + 2048) {
    const pvd = await readStructure(disk, 0x8000, 2048, ['ISO 9660 volume descriptor']);
    if (pvd.toString('latin1', 1, 6) === 'CD001') {
      return { fs: 'iso9660', size: pvd.readUInt32LE(80) * pvd.readUInt16LE(128), label: trimLabel(pvd.toString('latin1', 40, 72)) };
    }
  }
  if (size >= 0x10000 + 4096) {
    const sb = await readStructure(disk, 0x10000, 4096, ['btrfs superblock']);
    if (sb.toString('latin1', 0x40, 0x48) === '_BHRfS_M') {
      return { fs: 'btrfs', size: Number(sb.readBigUInt64LE(0x70)), label: trimLabel(sb.toString('utf8', 0x12b, 0x12b + 256)), uuid: hexUuid(sb.subarray(0x20, 0x30)) };
    }
  }
  return null;
}
