/**
 * Writing VMDK images for VMware, VirtualBox and OVA packages.
 *
 * monolithicSparse, exactly as `qemu-img convert -O vmdk` (QEMU 7.2) lays it out: header, the
 * descriptor in sectors 1-20, the redundant GD and its grain tables, the GD and its grain tables
 * (all tables reserved up front, tables without grains left as holes), then one 64 KiB grain per
 * grain holding a non-zero byte, in guest order.
 *
 * streamOptimized, in the stream layout of VMware's Virtual Disk Format 5.0 (what ovftool,
 * ESXi and VirtualBox produce and expect): header with the GD "at end", the descriptor, then
 * deflated grains behind grain markers, each grain table after its grains behind a GT marker
 * (tables without grains are not written: their GD entry is 0), the GD behind a GD marker, a
 * footer marker + footer (the header again, with the GD's real offset) and an end-of-stream
 * marker. QEMU 7.2 reads this layout; it writes its own streamOptimized files differently (GD and
 * tables in front as in monolithicSparse, no footer, no end-of-stream marker), which some VMware
 * importers reject.
 *
 * The descriptor text is QEMU's, key for key (version 1, random CID, parentCID ffffffff, IDE
 * adapter with 16 heads, virtualHWVersion 4, toolsVersion 2147483647, options as QEMU's).
 *
 * Write order: data, then tables, the descriptor and the header last, then one sync; the caller
 * writes into a temp file and renames it afterwards. Memory: one copy window, the grain directory
 * (4 bytes per 32 MiB of disk) and one grain table.
 */
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import { Qcow2Error } from '../../errors';
import { forEachDataUnit } from '../copy';
import type { ImageSink, ImageSource, WriteControl } from '../layer';
import { buildDescriptor, sparseExtentLine, type VmdkAdapterType } from './descriptor';
import {
  COMPRESSION_DEFLATE, DEFAULT_GRAIN_SECTORS, DEFAULT_GTES_PER_GT, DESCRIPTOR_OFFSET, DESCRIPTOR_SECTORS, FLAG_COMPRESS,
  FLAG_MARKER, FLAG_NL_DETECT, FLAG_RGD, FLAG_ZERO_GRAIN, GD_AT_END, MARKER_EOS, MARKER_FOOTER, MARKER_GD, MARKER_GT,
  SECTOR, encodeGrainMarker, encodeHeader, encodeMarker, encodeTable,
} from './layout';

const deflate = promisify(zlib.deflate) as (buf: Uint8Array, options: zlib.ZlibOptions) => Promise<Buffer>;

export type VmdkSubformat = 'monolithicSparse' | 'streamOptimized';

export interface VmdkWriteOptions extends WriteControl {
  subformat?: VmdkSubformat;
  /** The file name the descriptor's extent line gives: the final name of the output, not a temp name. */
  fileName: string;
  adapterType?: VmdkAdapterType;
  /** ddb.virtualHWVersion (QEMU's hwversion; default 4). */
  hwVersion?: string;
  /** QEMU's compat6: virtualHWVersion 6 (not together with hwVersion). */
  compat6?: boolean;
  /** ddb.toolsVersion (default 2147483647). */
  toolsVersion?: string;
  /** QEMU's zeroed_grain: version 2 and the zeroed-grain flag (sparse only; all-zero grains are skipped either way). */
  zeroedGrain?: boolean;
  /** The descriptor's CID (default: random). */
  cid?: number;
  /** Names the output in errors. */
  name?: string;
}

export interface VmdkWriteResult {
  subformat: VmdkSubformat;
  virtualSize: number;
  cid: number;
  allocatedGrains: number;
  fileSize: number;
}

/** Grain sector numbers are 32-bit: a hosted sparse file ends before 2 TiB of grains. */
const MAX_SECTOR = 0xffffffff;

export async function writeVmdk(source: ImageSource, sink: ImageSink, options: VmdkWriteOptions): Promise<VmdkWriteResult> {
  const name = options.name ?? options.fileName;
  const subformat = options.subformat ?? 'monolithicSparse';
  if (options.compat6 && options.hwVersion !== undefined) {
    throw new Qcow2Error(name, 'VMDK options', undefined, 'compat6 cannot be enabled with hwversion set', 'unsupported');
  }
  const size = Math.ceil(source.virtualSize / SECTOR) * SECTOR;
  const cid = options.cid ?? randomCid();
  const descriptor = buildDescriptor({
    cid,
    parentCid: 0xffffffff,
    createType: subformat,
    extentLines: sparseExtentLine(size / SECTOR, options.fileName),
    hwVersion: options.compat6 ? '6' : (options.hwVersion ?? '4'),
    size,
    adapterType: options.adapterType ?? 'ide',
    toolsVersion: options.toolsVersion ?? '2147483647',
  });
  const descBytes = Buffer.from(descriptor, 'latin1');
  if (descBytes.length > DESCRIPTOR_SECTORS * SECTOR) {
    throw new Qcow2Error(name, 'VMDK descriptor', SECTOR, `descriptor of ${descBytes.length} bytes does not fit its ${DESCRIPTOR_SECTORS * SECTOR}-byte area (file name too long?)`, 'unsupported');
  }
  const g = geometry(size);
  const write = subformat === 'streamOptimized' ? writeStream : writeSparse;
  const r = await write(source, sink, options, name, g, descBytes);
  await sink.sync();
  return { subformat, virtualSize: size, cid, ...r };
}

interface Geometry {
  capacity: number;
  grainBytes: number;
  gtCount: number;
  gdSectors: number;
  gtSectors: number;
}

function geometry(size: number): Geometry {
  const capacity = size / SECTOR;
  const grains = Math.ceil(capacity / DEFAULT_GRAIN_SECTORS);
  const gtCount = Math.ceil(grains / DEFAULT_GTES_PER_GT);
  return {
    capacity,
    grainBytes: DEFAULT_GRAIN_SECTORS * SECTOR,
    gtCount,
    gdSectors: Math.ceil((gtCount * 4) / SECTOR),
    gtSectors: Math.ceil((DEFAULT_GTES_PER_GT * 4) / SECTOR),
  };
}

/** Collects one grain table at a time; `flush` is called with each completed table that has a grain. */
class TableCursor {
  private index = -1;
  private gt = new Uint32Array(DEFAULT_GTES_PER_GT);
  private used = false;
  constructor(private flush: (gtIndex: number, gt: Uint32Array) => Promise<void>) {}

  /** Moves to the table of `grainIndex`, flushing the previous one (call before choosing the grain's sector). */
  async enter(grainIndex: number): Promise<void> {
    const gtIndex = Math.floor(grainIndex / DEFAULT_GTES_PER_GT);
    if (gtIndex === this.index) return;
    await this.finish();
    this.index = gtIndex;
  }

  set(grainIndex: number, sector: number): void {
    this.gt[grainIndex % DEFAULT_GTES_PER_GT] = sector;
    this.used = true;
  }

  async finish(): Promise<void> {
    if (this.used) await this.flush(this.index, this.gt);
    this.gt = new Uint32Array(DEFAULT_GTES_PER_GT);
    this.used = false;
  }
}

async function writeSparse(source: ImageSource, sink: ImageSink, options: VmdkWriteOptions, name: string, g: Geometry, desc: Buffer) {
  const rgdOffset = DESCRIPTOR_OFFSET + DESCRIPTOR_SECTORS;
  const gdOffset = rgdOffset + g.gdSectors + g.gtSectors * g.gtCount;
  const grainOffset = Math.ceil((gdOffset + g.gdSectors + g.gtSectors * g.gtCount) / DEFAULT_GRAIN_SECTORS) * DEFAULT_GRAIN_SECTORS;
  if (grainOffset > MAX_SECTOR) throw tooLarge(name, source.virtualSize);
  await sink.truncate(grainOffset * SECTOR);

  let next = grainOffset;
  let grains = 0;
  const tables = new TableCursor(async (gtIndex, gt) => {
    const table = encodeTable(gt);
    await sink.write((rgdOffset + g.gdSectors + gtIndex * g.gtSectors) * SECTOR, table);
    await sink.write((gdOffset + g.gdSectors + gtIndex * g.gtSectors) * SECTOR, table);
  });
  const grain = Buffer.alloc(g.grainBytes);
  await forEachDataUnit(source, g.grainBytes, options, name, async (unitStart, data) => {
    if (next + DEFAULT_GRAIN_SECTORS > MAX_SECTOR) throw tooLarge(name, source.virtualSize);
    // Whole grains, as QEMU writes them (a short last grain is zero-filled).
    let out: Uint8Array = data;
    if (data.length < g.grainBytes) { grain.fill(0); data.copy(grain); out = grain; }
    await tables.enter(unitStart / g.grainBytes);
    await sink.write(next * SECTOR, out);
    tables.set(unitStart / g.grainBytes, next);
    next += DEFAULT_GRAIN_SECTORS;
    grains++;
  });
  await tables.finish();

  // Both directories list every table, used or not (the tables are reserved in front).
  const gd = new Uint32Array(g.gtCount);
  for (let i = 0; i < g.gtCount; i++) gd[i] = rgdOffset + g.gdSectors + i * g.gtSectors;
  await sink.write(rgdOffset * SECTOR, encodeTable(gd));
  for (let i = 0; i < g.gtCount; i++) gd[i] = gdOffset + g.gdSectors + i * g.gtSectors;
  await sink.write(gdOffset * SECTOR, encodeTable(gd));
  await sink.write(DESCRIPTOR_OFFSET * SECTOR, desc);
  const zeroed = options.zeroedGrain ?? false;
  await sink.write(0, encodeHeader({
    version: zeroed ? 2 : 1,
    flags: FLAG_RGD | FLAG_NL_DETECT | (zeroed ? FLAG_ZERO_GRAIN : 0),
    capacity: BigInt(g.capacity),
    granularity: BigInt(DEFAULT_GRAIN_SECTORS),
    descOffset: BigInt(DESCRIPTOR_OFFSET),
    descSize: BigInt(DESCRIPTOR_SECTORS),
    gtesPerGt: DEFAULT_GTES_PER_GT,
    rgdOffset: BigInt(rgdOffset),
    gdOffset: BigInt(gdOffset),
    grainOffset: BigInt(grainOffset),
    compressAlgorithm: 0,
  }));
  return { allocatedGrains: grains, fileSize: next * SECTOR };
}

/** How many grains are deflated ahead of the one being written (zlib runs on the thread pool). */
const DEFLATE_AHEAD = 16;

async function writeStream(source: ImageSource, sink: ImageSink, options: VmdkWriteOptions, name: string, g: Geometry, desc: Buffer) {
  const grainOffset = Math.ceil((DESCRIPTOR_OFFSET + DESCRIPTOR_SECTORS) / DEFAULT_GRAIN_SECTORS) * DEFAULT_GRAIN_SECTORS;
  let pos = grainOffset; // the next free sector
  let grains = 0;
  const gd = new Uint32Array(g.gtCount);
  const tables = new TableCursor(async (gtIndex, gt) => {
    await sink.write(pos * SECTOR, encodeMarker(g.gtSectors, MARKER_GT));
    await sink.write((pos + 1) * SECTOR, encodeTable(gt));
    gd[gtIndex] = pos + 1;
    pos += 1 + g.gtSectors;
  });
  const pending: Array<{ grainIndex: number; compressed: Promise<Buffer> }> = [];
  const writeOne = async () => {
    const { grainIndex, compressed } = pending.shift()!;
    const marker = encodeGrainMarker(grainIndex * DEFAULT_GRAIN_SECTORS, await compressed);
    await tables.enter(grainIndex); // a finished table is written before this grain
    if (pos + marker.length / SECTOR > MAX_SECTOR) throw tooLarge(name, source.virtualSize);
    tables.set(grainIndex, pos);
    await sink.write(pos * SECTOR, marker);
    pos += marker.length / SECTOR;
    grains++;
  };
  await forEachDataUnit(source, g.grainBytes, options, name, async (unitStart, data) => {
    // Only the bytes inside the disk are deflated (a short last grain stays short, as in QEMU);
    // copied, since the copy window is reused while the deflate runs.
    pending.push({ grainIndex: unitStart / g.grainBytes, compressed: deflate(Buffer.from(data), {}) });
    while (pending.length >= DEFLATE_AHEAD) await writeOne();
  });
  while (pending.length) await writeOne();
  await tables.finish();

  await sink.write(pos * SECTOR, encodeMarker(g.gdSectors, MARKER_GD));
  const gdSector = pos + 1;
  await sink.write(gdSector * SECTOR, encodeTable(gd));
  pos = gdSector + g.gdSectors;
  const zeroed = options.zeroedGrain ?? false;
  const header = (gdOffset: bigint) => encodeHeader({
    version: 3,
    flags: FLAG_NL_DETECT | FLAG_COMPRESS | FLAG_MARKER | (zeroed ? FLAG_ZERO_GRAIN : 0),
    capacity: BigInt(g.capacity),
    granularity: BigInt(DEFAULT_GRAIN_SECTORS),
    descOffset: BigInt(DESCRIPTOR_OFFSET),
    descSize: BigInt(DESCRIPTOR_SECTORS),
    gtesPerGt: DEFAULT_GTES_PER_GT,
    rgdOffset: 0n,
    gdOffset,
    grainOffset: BigInt(grainOffset),
    compressAlgorithm: COMPRESSION_DEFLATE,
  });
  await sink.write(pos * SECTOR, encodeMarker(1, MARKER_FOOTER));
  await sink.write((pos + 1) * SECTOR, header(BigInt(gdSector)));
  await sink.write((pos + 2) * SECTOR, encodeMarker(0, MARKER_EOS));
  pos += 3;
  await sink.write(DESCRIPTOR_OFFSET * SECTOR, desc);
  await sink.write(0, header(GD_AT_END));
  return { allocatedGrains: grains, fileSize: pos * SECTOR };
}

/** A random CID; 0xffffffff and 0xfffffffe mean "no parent" / "no content" to VMware, so they are avoided. */
function randomCid(): number {
  for (;;) {
    const cid = randomBytes(4).readUInt32LE(0);
    if (cid < 0xfffffffe) return cid;
  }
}

function tooLarge(name: string, size: number): Qcow2Error {
  return new Qcow2Error(name, 'VMDK grain', undefined, `a ${size}-byte disk does not fit a hosted sparse extent (grain sector numbers are 32-bit)`, 'unsupported');
}
