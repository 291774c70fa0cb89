/**
 * Reading VHD images (fixed and dynamic) as QEMU 7.2 does:
 *
 * - The footer is looked for at offset 0 (a dynamic disk's copy) and then at the end of the file
 *   (a fixed disk has only that one); where it was found decides the layout, as in QEMU.
 * - The disk size comes from the CHS geometry, except for creator apps that size by
 *   `currentSize` (Hyper-V, disk2vhd, XenServer, QEMU's force_size) and for disks at the largest
 *   geometry.
 * - A dynamic disk's data is found through the BAT alone; the per-block sector bitmaps are not
 *   consulted (QEMU sets them all when it allocates a block and ignores them when reading).
 *
 * Every size and offset read from the file is checked before it is used to allocate or read.
 * Differencing disks (a parent VHD) are refused: QEMU would read the parent's data as zeros.
 */
import { Qcow2Error, hex } from '../../errors';
import { FormatFile, hostPieces } from '../file';
import type { BlockLayer, HoleSeeker, StatusExtent } from '../layer';
import { checkGuestRange } from '../raw';
import {
  BAT_UNUSED, DISK_DIFFERENCING, DISK_DYNAMIC, DISK_FIXED, DYNAMIC_COOKIE, FOOTER_COOKIE, FOOTER_SIZE,
  VHD_MAX_GEOMETRY, VHD_MAX_SECTORS, bitmapSize, decodeDynamicHeader, decodeFooter, footerChecksumOk,
  usesCurrentSize, type VhdDynamicHeader, type VhdFooter,
} from './layout';

/** BATs larger than this are refused (a 2040 GiB disk in 2 MiB blocks needs 4 MiB). */
const MAX_BAT_ENTRIES = 16 * 1024 * 1024;

export interface VpcOpenOptions {
  holes?: HoleSeeker;
}

export class VpcImage implements BlockLayer {
  readonly format = 'vpc' as const;
  readonly backing = null;

  private constructor(
    readonly path: string,
    private file: FormatFile,
    readonly footer: VhdFooter,
    /** Where QEMU found the footer: 'dynamic' at offset 0, 'fixed' at the end only. */
    readonly subformat: 'fixed' | 'dynamic',
    readonly virtualSize: number,
    readonly dynamicHeader: VhdDynamicHeader | null,
    private bat: Uint32Array | null,
    private holes: HoleSeeker | undefined,
  ) {}

  /** The block size of a dynamic disk (QEMU's cluster-size), undefined for a fixed one. */
  get clusterSize(): number | undefined {
    return this.dynamicHeader?.blockSize;
  }

  /** BAT entries (512-byte sector numbers of each block's bitmap; BAT_UNUSED where unallocated). */
  get batEntries(): Uint32Array | null {
    return this.bat;
  }

  static async open(path: string, options: VpcOpenOptions = {}): Promise<VpcImage> {
    const file = await FormatFile.open(path);
    try {
      return await VpcImage.parse(path, file, options);
    } catch (e) {
      await file.close();
      throw e;
    }
  }

  private static async parse(path: string, file: FormatFile, options: VpcOpenOptions): Promise<VpcImage> {
    let footerAt = 0;
    let subformat: 'fixed' | 'dynamic' = 'dynamic';
    let raw = await file.readPadded(0, FOOTER_SIZE, 'VHD footer copy');
    if (raw.toString('latin1', 0, 8) !== FOOTER_COOKIE) {
      if (file.size < FOOTER_SIZE) throw new Qcow2Error(path, 'VHD footer', undefined, `file of ${file.size} bytes is too small for a VHD footer`);
      // QEMU counts the file in whole sectors, so a footer missing only its zero tail still opens.
      footerAt = Math.ceil(file.size / 512) * 512 - FOOTER_SIZE;
      raw = await file.readPadded(footerAt, FOOTER_SIZE, 'VHD footer');
      if (raw.toString('latin1', 0, 8) !== FOOTER_COOKIE) {
        throw new Qcow2Error(path, 'VHD footer', footerAt, `not a VHD image: no "${FOOTER_COOKIE}" footer at the start or the end of the file`);
      }
      subformat = 'fixed';
    }
    const footer = decodeFooter(raw);
    if (!footerChecksumOk(raw)) {
      throw new Qcow2Error(path, 'VHD footer', footerAt, `checksum ${hex(footer.checksum)} is incorrect (the footer is damaged)`);
    }
    if (footer.diskType === DISK_DIFFERENCING) {
      throw new Qcow2Error(path, 'VHD footer', footerAt, 'differencing VHD (with a parent disk) is not supported', 'unsupported');
    }
    if (footer.diskType !== DISK_FIXED && footer.diskType !== DISK_DYNAMIC) {
      throw new Qcow2Error(path, 'VHD footer', footerAt, `unknown disk type ${footer.diskType}`);
    }
    if (subformat === 'fixed' && footer.diskType !== DISK_FIXED) {
      throw new Qcow2Error(path, 'VHD footer', footerAt, 'dynamic disk without the footer copy at offset 0 (the start of the file is damaged)');
    }

    let totalSectors = footer.cylinders * footer.heads * footer.sectorsPerTrack;
    if (usesCurrentSize(footer.creatorApp) || totalSectors === VHD_MAX_GEOMETRY) {
      totalSectors = Number(footer.currentSize / 512n);
    }
    if (totalSectors > VHD_MAX_SECTORS) {
      throw new Qcow2Error(path, 'VHD footer', footerAt, `disk of ${totalSectors} sectors is larger than 2040 GiB, the largest VHD`);
    }
    const virtualSize = totalSectors * 512;
    if (subformat === 'fixed') {
      return new VpcImage(path, file, footer, 'fixed', virtualSize, null, null, options.holes);
    }

    // The dynamic header (QEMU reads and checks its first 512 bytes only: no checksum check).
    if (footer.dataOffset > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new Qcow2Error(path, 'VHD footer', footerAt, `dynamic header offset ${hex(footer.dataOffset)} is past the end of the file`);
    }
    const headerAt = Number(footer.dataOffset);
    const header = decodeDynamicHeader(await file.read(headerAt, 512, 'VHD dynamic disk header'));
    if (header.cookie !== DYNAMIC_COOKIE) {
      throw new Qcow2Error(path, 'VHD dynamic disk header', headerAt, `invalid header magic (no "${DYNAMIC_COOKIE}")`);
    }
    const blockSize = header.blockSize;
    if (blockSize < 512 || (blockSize & (blockSize - 1)) !== 0) {
      throw new Qcow2Error(path, 'VHD dynamic disk header', headerAt, `invalid block size ${blockSize}`);
    }
    if (Math.floor(virtualSize / blockSize) > 0xffffffff) {
      throw new Qcow2Error(path, 'VHD dynamic disk header', headerAt, 'too many blocks');
    }
    const entries = header.maxTableEntries;
    if (entries * blockSize < virtualSize) {
      throw new Qcow2Error(path, 'VHD dynamic disk header', headerAt,
        `BAT of ${entries} entries covers ${entries * blockSize} bytes, less than the ${virtualSize}-byte disk (page table too small)`);
    }
    if (entries > MAX_BAT_ENTRIES) {
      throw new Qcow2Error(path, 'VHD dynamic disk header', headerAt, `BAT of ${entries} entries is beyond the ${MAX_BAT_ENTRIES}-entry limit`, 'unsupported');
    }
    if (header.tableOffset > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new Qcow2Error(path, 'VHD BAT', undefined, `offset ${hex(header.tableOffset)} is past the end of the file`);
    }
    const batAt = Number(header.tableOffset);
    const batRaw = await file.read(batAt, entries * 4, 'VHD BAT');
    const bat = new Uint32Array(entries);
    const bitmap = bitmapSize(blockSize);
    // QEMU's free_data_block_offset: the first byte after the BAT and after every allocated block.
    let end = Math.ceil((batAt + entries * 4) / 512) * 512;
    let endEntry = -1;
    for (let i = 0; i < entries; i++) {
      bat[i] = batRaw.readUInt32BE(i * 4);
      if (bat[i] === BAT_UNUSED) continue;
      const next = bat[i] * 512 + bitmap + blockSize;
      if (next > end) { end = next; endEntry = i; }
    }
    if (end > file.size) {
      const where = endEntry >= 0 ? `BAT[${endEntry}]` : 'VHD BAT';
      const at = endEntry >= 0 ? batAt + endEntry * 4 : batAt;
      throw new Qcow2Error(path, where, at,
        `a block ends at ${hex(end)}, past the end of the file (${hex(file.size)}): the image has been truncated`);
    }
    return new VpcImage(path, file, footer, 'dynamic', virtualSize, header, bat, options.holes);
  }

  /** Host offset of guest byte `guestOffset` of a dynamic disk, or -1 where its block is unallocated. */
  private hostOffset(guestOffset: number): number {
    const blockSize = this.dynamicHeader!.blockSize;
    const index = Math.floor(guestOffset / blockSize);
    if (index >= this.bat!.length || this.bat![index] === BAT_UNUSED) return -1;
    return this.bat![index] * 512 + bitmapSize(blockSize) + (guestOffset % blockSize);
  }

  async readGuest(guestOffset: number, length: number): Promise<Buffer> {
    checkGuestRange(this.path, guestOffset, length, this.virtualSize);
    const out = Buffer.alloc(length);
    if (this.subformat === 'fixed') {
      await this.file.readInto(out, 0, guestOffset, length);
      return out;
    }
    const blockSize = this.dynamicHeader!.blockSize;
    let done = 0;
    while (done < length) {
      const at = guestOffset + done;
      const n = Math.min(length - done, blockSize - (at % blockSize));
      const host = this.hostOffset(at);
      if (host >= 0) await this.file.readInto(out, done, host, n); // inside the file: checked at open
      done += n;
    }
    return out;
  }

  /**
   * As QEMU's vpc block status: a fixed disk is data at its own offset (holes of the file reported
   * as zero when a hole seeker is given); a dynamic disk's allocated blocks are data, unallocated
   * ones read as zero (present, since the format itself says so).
   */
  async layerStatus(start: number, end: number, visit: (e: StatusExtent) => void): Promise<void> {
    end = Math.min(end, this.virtualSize);
    if (end <= start) return;
    if (this.subformat === 'fixed') {
      hostPieces(this.holes, this.file.fd, start, end - start, (at, length, hole) => {
        visit({ start: at, length, present: true, zero: hole, data: true, offset: at, depth: 0 });
      });
      return;
    }
    const blockSize = this.dynamicHeader!.blockSize;
    let at = start;
    while (at < end) {
      const n = Math.min(end - at, blockSize - (at % blockSize));
      const host = this.hostOffset(at);
      if (host >= 0) visit({ start: at, length: n, present: true, zero: false, data: true, offset: host, depth: 0 });
      else visit({ start: at, length: n, present: true, zero: true, data: false, depth: 0 });
      at += n;
    }
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}
