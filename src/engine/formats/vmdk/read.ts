// Over 400 lines on purpose: one VMDK reader, as QEMU's block/vmdk.c is one file — the image class and the extent opening with the checks QEMU makes on each header field.
/**
 * Reading VMDK images as QEMU 7.2 does: a hosted sparse file ("KDMV": monolithicSparse and
 * streamOptimized, grain directory in front or, stream-style, after the grains with a footer), or
 * a text descriptor naming extents (monolithicFlat, vmfs, twoGbMaxExtentSparse/Flat; FLAT, VMFS
 * and SPARSE extents, relative names taken from the descriptor's folder).
 *
 * A guest offset maps to an extent, then (sparse) through the grain directory (GD) and a grain
 * table (GT) to a grain: unallocated (reads as zero), zeroed (with the zeroed-grain flag), or
 * data — stored as is or, in streamOptimized, deflated behind a grain marker.
 *
 * The redundant grain directory is not read: QEMU reads through the primary one only.
 *
 * Every size and offset from the file is checked before use: QEMU's own limits first (same
 * messages), then ours (grains over 16 MiB, grain directories over 8 Mi entries — more than any
 * 2 TiB disk needs — are refused instead of allocated). Grain tables and directories must lie
 * inside the file; data grains past the end of the file read as zero, as QEMU reads them.
 * Parent disks (parentFileNameHint) and the ESX-only extent kinds are refused as unsupported.
 */
import * as path from 'node:path';
import { promisify } from 'node:util';
import type * as Zlib from 'node:zlib';
import { nodeZlib } from '../../builtins';
import { Qcow2Error, hex } from '../../errors';
import { FormatFile, hostPieces } from '../file';
import type { BlockLayer, HoleSeeker, StatusExtent } from '../layer';
import { checkGuestRange } from '../raw';
import { parseDescriptor, type ExtentLine } from './descriptor';
import {
  COMPRESSION_DEFLATE, DESCRIPTOR_SECTORS, FLAG_MARKER, FLAG_ZERO_GRAIN, GD_AT_END, GRAIN_MARKER_BYTES,
  GTE_ZEROED, MARKER_EOS, MARKER_FOOTER, SECTOR, VMDK3_MAGIC, VMDK4_MAGIC, decodeHeader, decodeMarker, type SparseHeader,
} from './layout';

let inflateAsync: ((buf: Uint8Array, options: Zlib.ZlibOptions) => Promise<Buffer>) | undefined;
const inflate = (buf: Uint8Array, options: Zlib.ZlibOptions): Promise<Buffer> => (inflateAsync ??= promisify(nodeZlib().inflate) as typeof inflate)(buf, options);

/** QEMU's limits (block/vmdk.c), with its messages. */
const QEMU_MAX_GRAIN_SECTORS = 0x200000n;
const QEMU_MAX_GD_ENTRIES = 32n * 1024n * 1024n;
/** Ours: what a reader allocates for one grain or one grain directory. */
const MAX_GRAIN_BYTES = 16 * 1024 * 1024;
const MAX_GD_ENTRIES = 8 * 1024 * 1024;
/** QEMU reads at most this much of a descriptor file. */
const MAX_DESCRIPTOR_FILE = (1 << 20) - 1;
/** Grain tables kept in memory (2 KiB each), and read at once when stored one after another. */
const GT_CACHE = 256;
const GT_BATCH = 64;

export type VmdkCreateType = 'monolithicSparse' | 'streamOptimized' | 'monolithicFlat' | 'vmfs' | 'twoGbMaxExtentSparse' | 'twoGbMaxExtentFlat';

interface ExtentBase {
  file: FormatFile;
  /** The extent file as QEMU names it in `qemu-img info`. */
  path: string;
  /** The descriptor's extent type ('' for the extent of a monolithic sparse file, as QEMU reports it). */
  type: string;
  /** Guest byte where the extent starts, and its length in bytes. */
  start: number;
  size: number;
}

interface FlatExtent extends ExtentBase {
  kind: 'flat';
  /** Byte offset of the extent's data in its file. */
  flatOffset: number;
}

interface SparseExtent extends ExtentBase {
  kind: 'sparse';
  header: SparseHeader;
  grainBytes: number;
  grainSectors: number;
  gtEntries: number;
  /** Guest sectors one GD entry covers. */
  gdEntrySectors: number;
  gd: Uint32Array;
  /** Byte offset of the GD in the file (for messages). */
  gdAt: number;
  compressed: boolean;
  hasMarker: boolean;
  hasZeroGrain: boolean;
  gtCache: Map<number, Uint32Array>;
}

type Extent = FlatExtent | SparseExtent;

/** Where one guest byte of a sparse extent lives. */
type GrainMap = { kind: 'unallocated' | 'zeroed'; span: number } | { kind: 'data'; sector: number; span: number };

export interface VmdkExtentInfo {
  filename: string;
  format: string;
  virtualSize: number;
  clusterSize?: number;
  compressed?: boolean;
}

export interface VmdkOpenOptions {
  holes?: HoleSeeker;
}

export class VmdkImage implements BlockLayer {
  readonly format = 'vmdk' as const;
  readonly backing = null;
  private lastGrain: { extent: SparseExtent; sector: number; data: Buffer } | null = null;

  private constructor(
    readonly path: string,
    readonly createType: VmdkCreateType,
    readonly cid: number,
    readonly parentCid: number,
    private extents: Extent[],
    readonly virtualSize: number,
    private holes: HoleSeeker | undefined,
  ) {}

  /** QEMU's cluster-size: the grain size when every extent is sparse with the same grains. */
  get clusterSize(): number | undefined {
    const first = this.extents[0];
    if (first.kind !== 'sparse') return undefined;
    return this.extents.every(e => e.kind === 'sparse' && e.grainBytes === first.grainBytes && e.compressed === first.compressed) ? first.grainBytes : undefined;
  }

  /** The extents as `qemu-img info` lists them under format-specific. */
  get extentInfo(): VmdkExtentInfo[] {
    return this.extents.map(e => e.kind === 'flat'
      ? { filename: e.path, format: e.type, virtualSize: e.size }
      : { filename: e.path, format: e.type, virtualSize: e.size, clusterSize: e.grainBytes, ...(e.compressed ? { compressed: true } : {}) });
  }

  /** GD and GT entries of a sparse extent (for inspection and tests): GD entry i → GT entries. */
  async grainTable(extentIndex: number, gdIndex: number): Promise<Uint32Array | null> {
    const e = this.extents[extentIndex];
    if (!e || e.kind !== 'sparse' || gdIndex >= e.gd.length || e.gd[gdIndex] === 0) return null;
    return this.loadGt(e, gdIndex);
  }

  static async open(imagePath: string, options: VmdkOpenOptions = {}): Promise<VmdkImage> {
    const file = await FormatFile.open(imagePath);
    const opened: FormatFile[] = [file];
    try {
      return await VmdkImage.parse(imagePath, file, opened, options);
    } catch (e) {
      for (const f of opened) await f.close().catch(() => undefined);
      throw e;
    }
  }

  private static async parse(imagePath: string, file: FormatFile, opened: FormatFile[], options: VmdkOpenOptions): Promise<VmdkImage> {
    if (file.size < 4) throw new Qcow2Error(imagePath, 'VMDK header', 0, 'file is too small, not a valid image');
    const magic = (await file.read(0, 4, 'VMDK header')).readUInt32BE(0);
    if (magic === VMDK3_MAGIC) throw new Qcow2Error(imagePath, 'VMDK header', 0, 'COWD (vmfsSparse) extents are not supported', 'unsupported');
    if (magic === VMDK4_MAGIC) {
      const extent = await openSparse(file, imagePath, '', 0);
      const desc = await descriptorText(file, 0x200, DESCRIPTOR_SECTORS * SECTOR);
      const { cid, parentCid } = checkDescriptor(imagePath, desc, 0x200);
      return new VmdkImage(imagePath, extent.compressed ? 'streamOptimized' : 'monolithicSparse', cid, parentCid, [extent], extent.size, options.holes);
    }
    // A descriptor file naming its extents.
    const text = await descriptorText(file, 0, Math.min(file.size, MAX_DESCRIPTOR_FILE));
    const desc = parseDescriptor(text);
    if (desc.createType === undefined) throw new Qcow2Error(imagePath, 'VMDK descriptor', 0, 'invalid VMDK image descriptor (no createType)');
    const supported = ['monolithicFlat', 'vmfs', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat'];
    if (!supported.includes(desc.createType)) {
      const known = ['vmfsSparse', 'seSparse'].includes(desc.createType);
      throw new Qcow2Error(imagePath, 'VMDK descriptor', 0, `${known ? 'VMDK' : 'unsupported image'} type '${desc.createType}'${known ? ' is not supported' : ''}`, 'unsupported');
    }
    if (desc.invalidLine !== undefined) throw new Qcow2Error(imagePath, 'VMDK descriptor', 0, `invalid extent line: ${desc.invalidLine}`);
    const { cid, parentCid } = checkDescriptor(imagePath, text.slice(0, DESCRIPTOR_SECTORS * SECTOR), 0);
    const dir = path.dirname(imagePath);
    const extents: Extent[] = [];
    let start = 0;
    for (const line of desc.extents) {
      const extentPath = path.isAbsolute(line.fileName) ? line.fileName : path.join(dir, line.fileName);
      const extentFile = await FormatFile.open(extentPath);
      opened.push(extentFile);
      extents.push(await openExtent(imagePath, extentFile, extentPath, line, start));
      start += extents[extents.length - 1].size;
    }
    if (extents.length === 0) throw new Qcow2Error(imagePath, 'VMDK descriptor', 0, 'no RW extents');
    await file.close();
    opened.splice(opened.indexOf(file), 1);
    return new VmdkImage(imagePath, desc.createType as VmdkCreateType, cid, parentCid, extents, start, options.holes);
  }

  private extentAt(guestOffset: number): Extent {
    for (const e of this.extents) if (guestOffset < e.start + e.size) return e;
    throw new Qcow2Error(this.path, 'VMDK extents', undefined, `guest offset ${hex(guestOffset)} is in no extent`);
  }

  /**
   * Grain table `gdIndex`, from the cache or read together with the tables stored right after it
   * (a walk over a disk reads its tables GT_BATCH at a time instead of one by one).
   */
  private async loadGt(e: SparseExtent, gdIndex: number): Promise<Uint32Array> {
    const cached = e.gtCache.get(gdIndex);
    if (cached) {
      e.gtCache.delete(gdIndex);
      e.gtCache.set(gdIndex, cached);
      return cached;
    }
    const tableBytes = e.gtEntries * 4;
    const stride = Math.ceil(tableBytes / SECTOR);
    let count = 1;
    while (count < GT_BATCH && gdIndex + count < e.gd.length && e.gd[gdIndex + count] === e.gd[gdIndex] + count * stride
      && (e.gd[gdIndex] + count * stride) * SECTOR + tableBytes <= e.file.size) count++;
    const at = e.gd[gdIndex] * SECTOR;
    const raw = await e.file.read(at, (count - 1) * stride * SECTOR + tableBytes, `GD[${gdIndex}] → grain table`);
    let table: Uint32Array | undefined;
    for (let k = 0; k < count; k++) {
      const gt = decodeTable(raw, k * stride * SECTOR, e.gtEntries);
      if (k === 0) table = gt;
      if (e.gtCache.has(gdIndex + k)) continue;
      if (e.gtCache.size >= GT_CACHE) e.gtCache.delete(e.gtCache.keys().next().value as number);
      e.gtCache.set(gdIndex + k, gt);
    }
    return table!;
  }

  /** What holds byte `rel` of a sparse extent, and for how many bytes from there the answer holds. */
  private async grainAt(e: SparseExtent, rel: number): Promise<GrainMap> {
    const sector = Math.floor(rel / SECTOR);
    const gdIndex = Math.floor(sector / e.gdEntrySectors);
    if (gdIndex >= e.gd.length) throw new Qcow2Error(this.path, 'grain directory', e.gdAt, `guest sector ${sector} is beyond its ${e.gd.length} entries`);
    const inGrain = rel % e.grainBytes;
    if (e.gd[gdIndex] === 0) {
      const gtEnd = (gdIndex + 1) * e.gdEntrySectors * SECTOR;
      return { kind: 'unallocated', span: Math.min(e.size, gtEnd) - rel };
    }
    const gt = await this.loadGt(e, gdIndex);
    const first = Math.floor(sector / e.grainSectors) % e.gtEntries;
    const kindOf = (entry: number) => entry === 0 ? 'unallocated' : e.hasZeroGrain && entry === GTE_ZEROED ? 'zeroed' : 'data';
    const kind = kindOf(gt[first]);
    // The answer holds on over following entries of the same kind (data: stored contiguously, uncompressed).
    let last = first;
    while (last + 1 < e.gtEntries && kindOf(gt[last + 1]) === kind
      && (kind !== 'data' || (!e.compressed && gt[last + 1] === gt[last] + e.grainSectors))) last++;
    const span = Math.min((last - first + 1) * e.grainBytes - inGrain, e.size - rel);
    return kind === 'data' ? { kind, sector: gt[first], span } : { kind, span };
  }

  async readGuest(guestOffset: number, length: number): Promise<Buffer> {
    checkGuestRange(this.path, guestOffset, length, this.virtualSize);
    const out = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const at = guestOffset + done;
      const e = this.extentAt(at);
      const rel = at - e.start;
      let n = Math.min(length - done, e.start + e.size - at);
      if (e.kind === 'flat') {
        await e.file.readInto(out, done, e.flatOffset + rel, n);
      } else {
        const g = await this.grainAt(e, rel);
        n = Math.min(n, g.span);
        if (g.kind === 'data') {
          const inGrain = rel % e.grainBytes;
          if (e.compressed) (await this.inflateGrain(e, g.sector, inGrain + n)).copy(out, done, inGrain, inGrain + n);
          else await e.file.readInto(out, done, g.sector * SECTOR + inGrain, n);
        }
      }
      done += n;
    }
    return out;
  }

  /** A compressed grain's data (at least `needed` bytes of it), as QEMU's vmdk_read_extent checks it. */
  private async inflateGrain(e: SparseExtent, sector: number, needed: number): Promise<Buffer> {
    if (this.lastGrain && this.lastGrain.extent === e && this.lastGrain.sector === sector && this.lastGrain.data.length >= needed) return this.lastGrain.data;
    const at = sector * SECTOR;
    const where = `compressed grain at sector ${sector}`;
    const window = 2 * e.grainBytes; // QEMU reads two grains: marker + deflated data may exceed one
    const buf = await e.file.readPadded(at, window, where);
    let dataAt = 0, dataLen = e.grainBytes;
    if (e.hasMarker) {
      dataAt = GRAIN_MARKER_BYTES;
      dataLen = buf.readUInt32LE(8);
    }
    if (dataLen === 0 || dataAt + dataLen > window) {
      throw new Qcow2Error(this.path, where, at, `grain marker says ${dataLen} compressed bytes (1 to ${window - dataAt} possible)`);
    }
    let data: Buffer;
    try {
      data = await inflate(buf.subarray(dataAt, dataAt + dataLen), { maxOutputLength: e.grainBytes });
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' ? `inflates to more than the ${e.grainBytes}-byte grain` : `does not inflate (${(err as Error).message})`;
      throw new Qcow2Error(this.path, where, at, `deflate data ${why}`);
    }
    if (data.length < needed) throw new Qcow2Error(this.path, where, at, `inflates to ${data.length} bytes, fewer than the ${needed} read from it`);
    this.lastGrain = { extent: e, sector, data };
    return data;
  }

  /**
   * As QEMU's vmdk block status: unallocated grains are not present (zero, no backing file), zeroed
   * grains present and zero, data grains data (with their host offset unless compressed); flat
   * extents are data at their own offset, holes of the extent file reported as zero.
   */
  async layerStatus(start: number, end: number, visit: (e: StatusExtent) => void): Promise<void> {
    end = Math.min(end, this.virtualSize);
    let at = start;
    while (at < end) {
      const e = this.extentAt(at);
      const rel = at - e.start;
      let n = Math.min(end - at, e.start + e.size - at);
      if (e.kind === 'flat') {
        hostPieces(this.holes, e.file.fd, e.flatOffset + rel, n, (host, length, hole) => {
          visit({ start: at + (host - e.flatOffset - rel), length, present: true, zero: hole, data: true, offset: host, depth: 0 });
        });
      } else {
        const g = await this.grainAt(e, rel);
        n = Math.min(n, g.span);
        if (g.kind === 'data') {
          const offset = e.compressed ? undefined : g.sector * SECTOR + (rel % e.grainBytes);
          visit({ start: at, length: n, present: true, zero: false, data: true, ...(offset === undefined ? {} : { offset }), depth: 0 });
        } else {
          visit({ start: at, length: n, present: g.kind === 'zeroed', zero: true, data: false, depth: 0 });
        }
      }
      at += n;
    }
  }

  async close(): Promise<void> {
    const files = new Set(this.extents.map(e => e.file));
    for (const f of files) await f.close();
  }
}

/** `count` little-endian 32-bit entries at `at` of `buf`. */
function decodeTable(buf: Buffer, at: number, count: number): Uint32Array {
  const out = new Uint32Array(count);
  if (LITTLE_ENDIAN) {
    new Uint8Array(out.buffer).set(buf.subarray(at, at + count * 4));
  } else {
    for (let i = 0; i < count; i++) out[i] = buf.readUInt32LE(at + i * 4);
  }
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

async function descriptorText(file: FormatFile, at: number, length: number): Promise<string> {
  return (await file.readPadded(at, length, 'VMDK descriptor')).toString('latin1');
}

/** QEMU refuses a descriptor without CID or parentCID, and we refuse parents. */
function checkDescriptor(file: string, text: string, at: number): { cid: number; parentCid: number } {
  const d = parseDescriptor(text);
  if (d.cid === undefined) throw new Qcow2Error(file, 'VMDK descriptor', at, 'no CID');
  if (d.parentCid === undefined) throw new Qcow2Error(file, 'VMDK descriptor', at, 'no parentCID');
  if (d.parentFileNameHint !== undefined) {
    throw new Qcow2Error(file, 'VMDK descriptor', at, `a parent disk ("${d.parentFileNameHint}") is not supported`, 'unsupported');
  }
  return { cid: d.cid, parentCid: d.parentCid };
}

async function openExtent(descriptor: string, file: FormatFile, extentPath: string, line: ExtentLine, start: number): Promise<Extent> {
  if (line.type === 'FLAT' || line.type === 'VMFS') {
    return { kind: 'flat', file, path: extentPath, type: line.type, start, size: line.sectors * SECTOR, flatOffset: line.flatOffset * SECTOR };
  }
  if (line.type === 'SESPARSE') throw new Qcow2Error(descriptor, `extent "${line.fileName}"`, undefined, 'seSparse extents are not supported', 'unsupported');
  const magic = file.size >= 4 ? (await file.read(0, 4, 'VMDK header')).readUInt32BE(0) : 0;
  if (magic === VMDK3_MAGIC) throw new Qcow2Error(extentPath, 'VMDK header', 0, 'COWD (vmfsSparse) extents are not supported', 'unsupported');
  if (magic !== VMDK4_MAGIC) throw new Qcow2Error(extentPath, 'VMDK header', 0, 'extent is not in VMDK format');
  return openSparse(file, extentPath, line.type, start);
}

/** A hosted sparse extent, checked as QEMU's vmdk_open_vmdk4 checks it (and bounded). */
async function openSparse(file: FormatFile, extentPath: string, type: string, start: number): Promise<SparseExtent> {
  let header = decodeHeader(await file.readPadded(0, SECTOR, 'VMDK header'));
  if (header.capacity === 0n && header.descOffset !== 0n) {
    throw new Qcow2Error(extentPath, 'VMDK header', 0, 'a descriptor embedded in an empty sparse extent is not supported', 'unsupported');
  }
  const fileSectors = Math.ceil(file.size / SECTOR);
  if (header.gdOffset === GD_AT_END) {
    // The footer wins over the header: footer marker, footer, end-of-stream marker at the end.
    const at = fileSectors * SECTOR - 3 * SECTOR;
    if (at < 0) throw new Qcow2Error(extentPath, 'VMDK footer', undefined, 'file is too small for a stream-optimized footer');
    const tail = await file.readPadded(at, 3 * SECTOR, 'VMDK footer');
    const footerMarker = decodeMarker(tail, 0);
    const eos = decodeMarker(tail, 2 * SECTOR);
    if (tail.readUInt32BE(SECTOR) !== VMDK4_MAGIC || footerMarker.size !== 0 || footerMarker.type !== MARKER_FOOTER
      || eos.value !== 0n || eos.size !== 0 || eos.type !== MARKER_EOS) {
      throw new Qcow2Error(extentPath, 'VMDK footer', at, 'invalid footer (footer marker, footer and end-of-stream marker expected at the end of the file)');
    }
    header = decodeHeader(tail, SECTOR);
  }
  const where = 'VMDK header';
  if (header.version > 3) throw new Qcow2Error(extentPath, where, 0, `unsupported VMDK version ${header.version}`, 'unsupported');
  if (header.gtesPerGt > 512) throw new Qcow2Error(extentPath, where, 0, `grain table size too big (${header.gtesPerGt} entries, at most 512)`);
  const gdEntrySectors = (BigInt(header.gtesPerGt) * header.granularity) & 0xffffffffn;
  if (gdEntrySectors === 0n) throw new Qcow2Error(extentPath, where, 0, 'grain directory entry size is invalid (no grain table entries or grains of 0 sectors)');
  const gdEntries = (header.capacity + gdEntrySectors - 1n) / gdEntrySectors;
  if (BigInt(fileSectors) < header.grainOffset) {
    throw new Qcow2Error(extentPath, where, 0, `file truncated, expecting at least ${header.grainOffset * 512n} bytes`);
  }
  if (header.granularity > QEMU_MAX_GRAIN_SECTORS) throw new Qcow2Error(extentPath, where, 0, `invalid granularity of ${header.granularity} sectors, image may be corrupt`);
  if (gdEntries > QEMU_MAX_GD_ENTRIES) throw new Qcow2Error(extentPath, where, 0, `grain directory too big (${gdEntries} entries)`);
  if (header.granularity * 512n > BigInt(MAX_GRAIN_BYTES)) {
    throw new Qcow2Error(extentPath, where, 0, `grains of ${header.granularity * 512n} bytes are beyond the ${MAX_GRAIN_BYTES}-byte limit`, 'unsupported');
  }
  if (gdEntries > BigInt(MAX_GD_ENTRIES)) {
    throw new Qcow2Error(extentPath, where, 0, `grain directory of ${gdEntries} entries is beyond the ${MAX_GD_ENTRIES}-entry limit`, 'unsupported');
  }
  const size = Number(header.capacity) * SECTOR;
  if (!Number.isSafeInteger(size)) throw new Qcow2Error(extentPath, where, 0, `capacity of ${header.capacity} sectors is beyond what we read`, 'unsupported');
  if (header.gdOffset * 512n > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new Qcow2Error(extentPath, 'grain directory', undefined, `offset ${hex(header.gdOffset * 512n)} is past the end of the file`);
  }
  const gdAt = Number(header.gdOffset) * SECTOR;
  const n = Number(gdEntries);
  const gd = decodeTable(await file.read(gdAt, n * 4, 'grain directory'), 0, n);
  return {
    kind: 'sparse', file, path: extentPath, type, start, size, header,
    grainSectors: Number(header.granularity), grainBytes: Number(header.granularity) * SECTOR,
    gtEntries: header.gtesPerGt, gdEntrySectors: Number(gdEntrySectors), gd, gdAt,
    compressed: header.compressAlgorithm === COMPRESSION_DEFLATE,
    hasMarker: (header.flags & FLAG_MARKER) !== 0,
    hasZeroGrain: (header.flags & FLAG_ZERO_GRAIN) !== 0,
    gtCache: new Map(),
  };
}
